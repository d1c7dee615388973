//! One-run kernel report: the measured multiply-accumulate peak of this core (AVX-512 FMA and VNNI probes), then
//! the f32 and int8 convolution of every layer shape of the committed MNIST student on every tier this CPU runs,
//! with GMAC/s and the fraction of the measured peak (for f32 layers run as Winograd, marked `(W)`, of the direct
//! convolution's MACs, so above 100 % is possible); the large 3×3 layers of ddpm-cifar10-32 on the best tier; then
//! the U-Net forward on 1 and 2 threads.
//!
//! `cargo run --release -p ember-benches --bin kernel-report` (add `-- --json` for one JSON object per row).

use std::hint::black_box;

use ember_benches::{pseudo_random, timed_runs, ConvCase};
use ember_core::Model;
use ember_kernels::registry::{all_tiers, tier};
use ember_kernels::Conv2dGeom;
use quantize_tool::AlignedBytes;

/// Median seconds per call of `f` over `reps` timed runs.
fn time(f: impl FnMut(), reps: usize) -> f64 {
    let v = timed_runs(f, reps);
    v[v.len() / 2]
}

fn main() {
    let json = std::env::args().any(|a| a == "--json");
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/mnist-student");

    // 1. Peaks.
    #[cfg(target_arch = "x86_64")]
    let (fma_peak, vnni_peak) = {
        use ember_kernels::x86_64::peak;
        let p = |f: fn(usize) -> Option<u64>| -> Option<f64> {
            let macs = f(1)? as f64;
            let n = 200_000;
            let s = time(
                || {
                    black_box(f(black_box(n)));
                },
                9,
            );
            Some(macs * n as f64 / s / 1e9)
        };
        (p(peak::fma512), p(peak::vnni512))
    };
    #[cfg(not(target_arch = "x86_64"))]
    let (fma_peak, vnni_peak): (Option<f64>, Option<f64>) = (None, None);
    match (fma_peak, vnni_peak) {
        (Some(f), Some(v)) => println!(
            "measured peak: AVX-512 FMA {f:.1} GMAC/s (f32), vpdpbusd {v:.1} GMAC/s (int8)"
        ),
        _ => println!("measured peak: SKIPPED (no AVX-512 on this CPU)"),
    }

    // 2. Every distinct convolution shape of the student, f32 and int8, per tier.
    let blob = AlignedBytes::read(&root.join("student-4.ember")).expect("committed student blob");
    let m = Model::parse(blob.as_slice()).expect("parse");
    let mut shapes: Vec<Conv2dGeom> = Vec::new();
    for i in 0..m.n_ops() {
        if let Some(g) = m.op(i).ok().and_then(|op| op.conv_geom()) {
            if !shapes.contains(&g) && g.macs() >= 1_000_000 {
                shapes.push(g);
            }
        }
    }
    shapes.sort_by_key(|g| std::cmp::Reverse(g.macs()));
    println!(
        "{:<34} {:>7} {:>8} {:>9} {:>7} {:>9} {:>7}",
        "conv (student shapes; packed weights where the tier reads them)",
        "tier",
        "MMAC",
        "f32 ms",
        "%peak",
        "int8 ms",
        "%peak"
    );
    for g in &shapes {
        report_shape(g, all_tiers(), json, fma_peak, vnni_peak);
    }

    // 2b. The large 3×3 layers of ddpm-cifar10-32 (`benches/configs/ddpm-cifar10-32.json`: 128–512 channels at
    // 32×32, 16×16 and 8×8, each at least 1 ms of its f32 forward), best tier only: the layers the int8 target of
    // "≥ 60 % of the VNNI peak on the large layers" is about.
    let best = ember_kernels::registry::best().name;
    println!("conv (large ddpm-cifar10-32 shapes, best tier)");
    let mk = |cin: usize, cout: usize, hw: usize| Conv2dGeom {
        cin,
        h: hw,
        w: hw,
        cout,
        k: 3,
        stride: 1,
        pad_t: 1,
        pad_l: 1,
        oh: hw,
        ow: hw,
    };
    for (cin, cout, hw) in [
        (256, 256, 32),
        (384, 128, 32),
        (256, 128, 32),
        (128, 128, 32),
        (512, 256, 16),
        (384, 256, 16),
        (256, 256, 16),
        (512, 256, 8),
        (256, 256, 8),
    ] {
        report_shape(&mk(cin, cout, hw), &[best], json, fma_peak, vnni_peak);
    }

    // 3. Whole U-Net forward, best tier, 1 and 2 threads.
    for file in ["student-4.ember", "student-4-int8.ember"] {
        let blob = AlignedBytes::read(&root.join(file)).expect("committed student blob");
        let m = Model::parse(blob.as_slice()).expect("parse");
        let mut arena = AlignedBytes::zeroed(m.arena_bytes());
        let mut s = m.bind(arena.as_mut_slice()).expect("bind");
        let x = pseudo_random(m.info().input_len(), 1);
        let mut out = vec![0f32; m.info().output_len()];
        let mut one = 0.0;
        for threads in [1usize, 2] {
            if threads > 1 {
                s.set_parallel(ember_kernels::parallel::ThreadPool::leak(threads));
            }
            let t = time(
                || {
                    s.forward(&x, 749.0, Some(3), &mut out).expect("forward");
                },
                15,
            );
            if threads == 1 {
                one = t;
            }
            println!(
                "forward {file}: {} thread(s) {:.3} ms ({} kernels){}",
                threads,
                t * 1e3,
                ember_kernels::registry::best().name,
                if threads > 1 {
                    format!(", {:.2}x the 1-thread speed", one / t)
                } else {
                    String::new()
                }
            );
        }
    }
}

/// Time the f32 and int8 convolution `g` on each tier of `names` this CPU runs (weights packed offline where the
/// tier reads a packed layout) and print one row per tier.
fn report_shape(
    g: &Conv2dGeom,
    names: &[&'static str],
    json: bool,
    fma_peak: Option<f64>,
    vnni_peak: Option<f64>,
) {
    let mut case = ConvCase::new(*g);
    for &name in names {
        let Some(t) = tier(name) else {
            continue;
        };
        let times = case.time(t, 7, 0);
        let (tf, tq) = (times.f32[3], times.int8[3]);
        let macs = g.macs() as f64;
        let (gf, gq) = (macs / tf / 1e9, macs / tq / 1e9);
        let pct =
            |r: f64, p: Option<f64>| p.map_or("-".to_string(), |p| format!("{:.0}", 100.0 * r / p));
        // A tier reading packed float weights runs the layers `pack::winograd` picks as Winograd F(2x2, 3x3): its
        // f32 figures count the direct convolution's MACs (it executes 4/9 of them), marked "(W)".
        let wino = t.conv2d_packed.is_some() && ember_kernels::pack::winograd(g);
        let shape = format!(
            "{}->{} k{} s{} {}x{}{}",
            g.cin,
            g.cout,
            g.k,
            g.stride,
            g.oh,
            g.ow,
            if wino { " (W)" } else { "" }
        );
        if json {
            println!(
                "{{\"shape\": {shape:?}, \"tier\": {name:?}, \"macs\": {}, \"f32_ms\": {:.4}, \"f32_gmacs\": {gf:.2}, \"int8_ms\": {:.4}, \"int8_gmacs\": {gq:.2}}}",
                g.macs(),
                tf * 1e3,
                tq * 1e3
            );
        } else {
            println!(
                "{shape:<34} {name:>7} {:>8.1} {:>9.4} {:>7} {:>9.4} {:>7}",
                macs / 1e6,
                tf * 1e3,
                pct(gf, fma_peak),
                tq * 1e3,
                pct(gq, vnni_peak)
            );
        }
    }
}
