//! Runs one convolution kernel of one tier `iters` times on a fixed, seeded layer, for instruction counting under
//! an instruction-counting emulator (scripts/aarch64-icount.sh runs it under `qemu-aarch64` with a counting TCG
//! plugin, twice with different `iters`, and divides the difference by the MACs).
//!
//! `conv_icount <tier> <i8|i8p|f32|f32p|f16> <cin> <cout> <h> <w> <k> <iters>`: a stride-1, "same"-padded `k × k`
//! convolution of a `[cin, h, w]` input (`f16`: `f32` activations, `f16` weights; `i8p`: int8 with the weights
//! packed beforehand in the tier's offline layout, as a blob's PACKED section holds them); or
//! `conv_icount <tier> linear16 <in> <out> 1 1 1 <iters>`: a linear layer with `f16` weights; or
//! `conv_icount <tier> <attn8|attn> <heads> <head_dim> <tokens> 1 1 <iters>`: self-attention, int8 or f32. Prints the tier, the MACs of one evaluation and a checksum of the output (so the work
//! cannot be optimized away, and tiers can be compared).

use ember_kernels::quant::{self, ActQ, QOut};
use ember_kernels::registry::tier;
use ember_kernels::{pack, Conv2dGeom, Weights};

/// Bytes of the tier's packed int8 layout for `g` (0 for a tier without one, or one that does not pack `g`).
fn len_of_packed(t: &ember_kernels::registry::KernelTable, g: &Conv2dGeom, split: usize) -> usize {
    t.conv2d_i8_packed
        .and_then(|(f, _)| pack::int8_len(f, g, split))
        .unwrap_or(0)
}

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
    } else if kind == "attn8" || kind == "attn" {
        // Self-attention over `h` tokens, `cin` heads of `cout` channels: int8 (scales as in a calibrated blob,
        // int8 output) or f32. MACs: q·k and p·v, 2 · heads · head_dim · n².
        let ga = ember_kernels::generic::AttentionGeom {
            heads: cin,
            head_dim: cout,
            n: h,
        };
        let total = cin * cout * h;
        let mut scores = vec![0f32; h];
        if kind == "attn8" {
            let mk = |next: &mut dyn FnMut() -> u64| -> Vec<i8> {
                (0..total).map(|_| next() as u8 as i8).collect()
            };
            let (q, kk, v) = (mk(&mut next), mk(&mut next), mk(&mut next));
            let mut out = vec![0i8; total];
            for _ in 0..iters {
                let o = QOut::I8 {
                    data: &mut out,
                    scale: 0.04,
                };
                (t.attention_i8)(&ga, &q, 0.02, &kk, 0.03, &v, 0.05, &mut scores, o);
            }
            sum = out.iter().map(|&v| v as f64).sum();
        } else {
            let mk = |next: &mut dyn FnMut() -> u64| -> Vec<f32> {
                (0..total)
                    .map(|_| (next() % 2001) as f32 / 1000.0 - 1.0)
                    .collect()
            };
            let (q, kk, v) = (mk(&mut next), mk(&mut next), mk(&mut next));
            let mut out = vec![0f32; total];
            for _ in 0..iters {
                (t.attention)(&ga, &q, &kk, &v, &mut scores, &mut out);
            }
            sum = out.iter().map(|&v| v as f64).sum();
        }
        macs = 2 * (cin * cout * h * h) as u64;
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
    } else if kind == "f32" || kind == "f32p" {
        let x: Vec<f32> = (0..cin * h * w)
            .map(|_| (next() % 2001) as f32 / 1000.0 - 1.0)
            .collect();
        let wt: Vec<f32> = (0..cout * cin * k * k)
            .map(|_| (next() % 2001) as f32 / 1000.0 - 1.0)
            .collect();
        let mut out = vec![0f32; len];
        // `f32p`: the weights packed beforehand in the tier's float family (Winograd layers on aarch64).
        let packed = (kind == "f32p")
            .then(|| {
                let (fam, f) = t.conv2d_packed?;
                let mut p = vec![0u8; pack::float_len(fam, &g)?];
                pack::float_pack(fam, &g, Weights::F32(&wt), &mut p).then_some((f, p))
            })
            .flatten();
        if kind == "f32p" && packed.is_none() {
            eprintln!("tier {tname} packs no float layout for this layer");
            std::process::exit(3);
        }
        for _ in 0..iters {
            match &packed {
                Some((f, p)) => f(&g, &x, Weights::F32(&wt), p, None, &mut out),
                None => (t.conv2d)(&g, &x, Weights::F32(&wt), None, &mut out),
            }
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
        // `i8p`: the weights packed beforehand in the tier's offline layout (what `quantize-tool pack` stores),
        // in 4-byte-aligned memory as in a loaded blob.
        let packed: Option<(ember_kernels::registry::Conv2dI8PackedFn, Vec<u32>)> = (kind == "i8p")
            .then(|| {
                let (fam, f) = t.conv2d_i8_packed?;
                let n = pack::int8_len(fam, &g, cin)?;
                let mut words = vec![0u32; n.div_ceil(4)];
                let ok = pack::int8_pack(
                    fam,
                    &g,
                    cin,
                    &wt,
                    &mut bytemuck::cast_slice_mut(&mut words)[..n],
                );
                ok.then_some((f, words))
            })
            .flatten();
        if kind == "i8p" && packed.is_none() {
            eprintln!("tier {tname} reads no packed int8 layout");
            std::process::exit(3);
        }
        for _ in 0..iters {
            let q = QOut::I8 {
                data: &mut out,
                scale: 0.5,
            };
            match &packed {
                Some((f, words)) => {
                    let bytes: &[u8] = bytemuck::cast_slice(words);
                    f(
                        &g,
                        &x,
                        ActQ::single(0.02),
                        &wt,
                        &bytes[..len_of_packed(t, &g, cin)],
                        &ws,
                        None,
                        None,
                        None,
                        1.0,
                        &mut acc,
                        q,
                    )
                }
                None => (t.conv2d_i8)(
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
                    q,
                ),
            }
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
