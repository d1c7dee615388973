//! Time one convolution shape on one tier with weights packed offline where the tier reads them: the quick loop
//! for kernel work on shapes the committed student does not have (e.g. ddpm-cifar10-32's 256–512-channel layers).
//!
//! `cargo run --release -p ember-benches --bin conv-time -- CIN COUT HW K STRIDE [TIER]` (TIER defaults to the
//! best this CPU runs). Prints f32 and int8 milliseconds and GMAC/s (fastest of 7 timed runs of ≥ 20 ms each: the
//! host is shared, and the minimum is the steadiest figure for comparing kernel variants).

use ember_benches::ConvCase;
use ember_kernels::registry::{best, tier};
use ember_kernels::Conv2dGeom;

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
    // Packed weights at a 64-byte boundary plus ALIGN_OFF bytes (an experiment knob; 0 by default).
    let off: usize = std::env::var("ALIGN_OFF")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let times = ConvCase::new(g).time(t, 7, off);
    let (tf, tq) = (times.f32[0], times.int8[0]);
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
