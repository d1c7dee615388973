//! Time one convolution shape on one tier with weights packed offline where the tier reads them: the quick loop
//! for kernel work on shapes the committed student does not have (e.g. ddpm-cifar10-32's 256–512-channel layers).
//!
//! `cargo run --release -p ember-benches --bin conv-time -- CIN COUT HW K STRIDE [TIER]` (TIER defaults to the
//! best this CPU runs). Prints f32 and int8 milliseconds and GMAC/s (fastest of 7 timed runs of ≥ 20 ms each: the
//! host is shared, and the minimum is the steadiest figure for comparing kernel variants).

use std::hint::black_box;
use std::time::Instant;

use ember_benches::pseudo_random;
use ember_kernels::quant::{self, ActQ, QOut};
use ember_kernels::registry::{best, tier};
use ember_kernels::{Conv2dGeom, Weights};

fn time(mut f: impl FnMut()) -> f64 {
    f();
    let t0 = Instant::now();
    f();
    let one = t0.elapsed().as_secs_f64().max(1e-7);
    let inner = ((0.02 / one) as usize).clamp(1, 10_000);
    let mut v: Vec<f64> = (0..7)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..inner {
                f();
            }
            t.elapsed().as_secs_f64() / inner as f64
        })
        .collect();
    v.sort_by(f64::total_cmp);
    v[0]
}

fn main() {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let n = |i: usize| -> usize {
        a.get(i).and_then(|s| s.parse().ok()).unwrap_or_else(|| {
            eprintln!("usage: conv-time CIN COUT HW K STRIDE [TIER]");
            std::process::exit(2)
        })
    };
    let (cin, cout, hw, k, s) = (n(0), n(1), n(2), n(3), n(4));
    let t = match a.get(5) {
        Some(name) => tier(name).unwrap_or_else(|| {
            eprintln!("unknown or unsupported tier {name}");
            std::process::exit(2)
        }),
        None => best(),
    };
    let pad = (k - 1) / 2;
    let o = (hw + 2 * pad - k) / s + 1;
    let g = Conv2dGeom {
        cin,
        h: hw,
        w: hw,
        cout,
        k,
        stride: s,
        pad_t: pad,
        pad_l: pad,
        oh: o,
        ow: o,
    };
    let x = pseudo_random(g.cin * g.h * g.w, 1);
    let w = pseudo_random(g.cout * g.cin * g.k * g.k, 2);
    let b = pseudo_random(g.cout, 3);
    let xq: Vec<i8> = x.iter().map(|v| (v * 100.0) as i8).collect();
    let wq: Vec<i8> = w.iter().map(|v| (v * 100.0) as i8).collect();
    let ws = vec![0.01f32; g.cout];
    let mut y = vec![0f32; g.cout * g.oh * g.ow];
    let mut yq = vec![0i8; g.cout * g.oh * g.ow];
    let mut acc = vec![0i32; quant::conv2d_i8_scratch_len(&g)];
    // Packed weights at a 64-byte boundary plus ALIGN_OFF bytes (an experiment knob; 0 by default).
    let off: usize = std::env::var("ALIGN_OFF")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut fstore = vec![0u8; 0];
    let fp = t.conv2d_packed.and_then(|(fam, f)| {
        let len = ember_kernels::pack::float_len(fam, &g)?;
        fstore = vec![0u8; len + 128];
        let at = (64 - fstore.as_ptr() as usize % 64) % 64 + off;
        let p = &mut fstore[at..at + len];
        ember_kernels::pack::float_pack(fam, &g, Weights::F32(&w), p).then_some((f, at, len))
    });
    let fp = fp.map(|(f, at, len)| (f, &fstore[at..at + len]));
    let qp = t.conv2d_i8_packed.map(|(_, f)| {
        let mut p = vec![0u8; ember_kernels::pack::vnni8_len(&g, g.cin)];
        ember_kernels::pack::vnni8_pack(&g, g.cin, &wq, &mut p);
        (f, p)
    });
    let tf = time(|| match &fp {
        Some((f, p)) => f(&g, &x, Weights::F32(&w), p, Some(Weights::F32(&b)), &mut y),
        None => (t.conv2d)(&g, &x, Weights::F32(&w), Some(Weights::F32(&b)), &mut y),
    });
    black_box(&y);
    let tq = time(|| {
        let o = QOut::I8 {
            data: &mut yq,
            scale: 0.1,
        };
        let (aq, bias) = (ActQ::single(0.02), Some(Weights::F32(&b)));
        match &qp {
            Some((f, p)) => f(&g, &xq, aq, &wq, p, &ws, bias, None, None, 1.0, &mut acc, o),
            None => (t.conv2d_i8)(&g, &xq, aq, &wq, &ws, bias, None, None, 1.0, &mut acc, o),
        }
    });
    let m = g.macs() as f64;
    println!(
        "{cin}->{cout} k{k} s{s} out {o}x{o} ({} tier, {:.1} MMAC): f32 {:.3} ms {:.1} GMAC/s, int8 {:.3} ms {:.1} GMAC/s",
        t.name,
        m / 1e6,
        tf * 1e3,
        m / tf / 1e9,
        tq * 1e3,
        m / tq / 1e9
    );
}
