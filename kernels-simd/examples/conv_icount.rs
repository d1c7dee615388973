//! Runs one convolution kernel of one tier `iters` times on a fixed, seeded layer, for instruction counting under
//! an instruction-counting emulator (scripts/aarch64-icount.sh runs it under `qemu-aarch64` with a counting TCG
//! plugin, twice with different `iters`, and divides the difference by the MACs).
//!
//! `conv_icount <tier> <i8|f32|f16> <cin> <cout> <h> <w> <k> <iters>`: a stride-1, "same"-padded `k × k`
//! convolution of a `[cin, h, w]` input (`f16`: `f32` activations, `f16` weights); or
//! `conv_icount <tier> linear16 <in> <out> 1 1 1 <iters>`: a linear layer with `f16` weights. Prints the tier, the MACs of one evaluation and a checksum of the output (so the work
//! cannot be optimized away, and tiers can be compared).

use ember_kernels::quant::{self, ActQ, QOut};
use ember_kernels::registry::tier;
use ember_kernels::{Conv2dGeom, Weights};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let num = |i: usize| -> usize { args.get(i).and_then(|s| s.parse().ok()).unwrap_or(0) };
    let (tname, kind) = (
        args.first().map_or("generic", |s| s.as_str()),
        args.get(1).map_or("i8", |s| s.as_str()),
    );
    let (cin, cout, h, w, k, iters) = (num(2), num(3), num(4), num(5), num(6), num(7));
    if cin == 0 || cout == 0 || h == 0 || w == 0 || k == 0 {
        eprintln!("usage: conv_icount <tier> <i8|f32> <cin> <cout> <h> <w> <k> <iters>");
        std::process::exit(2);
    }
    let Some(t) = tier(tname) else {
        eprintln!("tier {tname} is not available on this CPU / build");
        std::process::exit(3);
    };
    let pad = (k - 1) / 2;
    let g = Conv2dGeom {
        cin,
        h,
        w,
        cout,
        k,
        stride: 1,
        pad_t: pad,
        pad_l: pad,
        oh: h + 2 * pad + 1 - k,
        ow: w + 2 * pad + 1 - k,
    };
    let mut s = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    let len = cout * g.oh * g.ow;
    let mut sum = 0f64;
    let mut macs = g.macs();
    if kind == "linear16" {
        let x: Vec<f32> = (0..cin)
            .map(|_| (next() % 2001) as f32 / 1000.0 - 1.0)
            .collect();
        let wt: Vec<half::f16> = (0..cout * cin)
            .map(|_| half::f16::from_f32((next() % 2001) as f32 / 1000.0 - 1.0))
            .collect();
        let mut out = vec![0f32; cout];
        for _ in 0..iters {
            (t.linear)(&x, Weights::F16(&wt), None, false, false, &mut out);
        }
        sum = out.iter().map(|&v| v as f64).sum();
        macs = (cin * cout) as u64;
    } else if kind == "f16" {
        let x: Vec<f32> = (0..cin * h * w)
            .map(|_| (next() % 2001) as f32 / 1000.0 - 1.0)
            .collect();
        let wt: Vec<half::f16> = (0..cout * cin * k * k)
            .map(|_| half::f16::from_f32((next() % 2001) as f32 / 1000.0 - 1.0))
            .collect();
        let mut out = vec![0f32; len];
        for _ in 0..iters {
            (t.conv2d)(&g, &x, Weights::F16(&wt), None, &mut out);
        }
        sum = out.iter().map(|&v| v as f64).sum();
    } else if kind == "f32" {
        let x: Vec<f32> = (0..cin * h * w)
            .map(|_| (next() % 2001) as f32 / 1000.0 - 1.0)
            .collect();
        let wt: Vec<f32> = (0..cout * cin * k * k)
            .map(|_| (next() % 2001) as f32 / 1000.0 - 1.0)
            .collect();
        let mut out = vec![0f32; len];
        for _ in 0..iters {
            (t.conv2d)(&g, &x, Weights::F32(&wt), None, &mut out);
        }
        sum = out.iter().map(|&v| v as f64).sum();
    } else {
        let x: Vec<i8> = (0..cin * h * w).map(|_| next() as u8 as i8).collect();
        let wt: Vec<i8> = (0..cout * cin * k * k)
            .map(|_| ((next() % 255) as i32 - 127) as i8)
            .collect();
        let ws = vec![0.01f32; cout];
        let mut acc = vec![0i32; quant::conv2d_i8_scratch_len(&g)];
        let mut out = vec![0i8; len];
        for _ in 0..iters {
            (t.conv2d_i8)(
                &g,
                &x,
                ActQ::single(0.02),
                &wt,
                &ws,
                None,
                None,
                None,
                1.0,
                &mut acc,
                QOut::I8 {
                    data: &mut out,
                    scale: 0.5,
                },
            );
        }
        for v in &out {
            sum += *v as f64;
        }
    }
    println!(
        "tier {} {kind} cin {cin} cout {cout} {h}x{w} k {k}: macs {} iters {iters} checksum {sum}",
        t.name, macs
    );
}
