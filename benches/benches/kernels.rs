//! Every kernel tier this CPU can run (`generic`, `avx2`, `avx512`, ...) at shapes the U-Nets use; a tier the CPU
//! lacks is printed as skipped.
//!
//! `cargo bench -p ember-benches --bench kernels`. Throughput is in MACs for convolutions and attention
//! (criterion's "elem/s" is MAC/s) and in tensor elements for group norm. Bench names are `<kernel>/<tier>`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ember_benches::pseudo_random;
use ember_kernels::generic::{AttentionGeom, GroupNormArgs};
use ember_kernels::quant::{self, ActQ, QOut};
use ember_kernels::registry::{all_tiers, tier, KernelTable};
use ember_kernels::{Conv2dGeom, Weights};

fn config<'a>(
    c: &'a mut Criterion,
    name: &str,
) -> criterion::BenchmarkGroup<'a, criterion::measurement::WallTime> {
    let mut g = c.benchmark_group(name);
    g.sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    g
}

/// The tiers this CPU can run; the others are reported once.
fn tiers() -> Vec<&'static KernelTable> {
    all_tiers()
        .iter()
        .filter_map(|n| {
            let t = tier(n);
            if t.is_none() {
                eprintln!("kernels bench: tier {n} SKIPPED (this CPU cannot run it)");
            }
            t
        })
        .collect()
}

/// 3×3, 64 → 64 channels, 32×32, padding 1: the MNIST student's first-level ResNet convolution, doubled in width.
const CONV: Conv2dGeom = Conv2dGeom {
    cin: 64,
    h: 32,
    w: 32,
    cout: 64,
    k: 3,
    stride: 1,
    pad_t: 1,
    pad_l: 1,
    oh: 32,
    ow: 32,
};

fn conv(c: &mut Criterion) {
    let g = CONV;
    let x = pseudo_random(g.cin * g.h * g.w, 1);
    let w = pseudo_random(g.cout * g.cin * g.k * g.k, 2);
    let b = pseudo_random(g.cout, 3);
    let mut y = vec![0f32; g.cout * g.oh * g.ow];
    let mut grp = config(c, "conv2d_3x3_64to64_32x32_f32");
    grp.throughput(Throughput::Elements(g.macs()));
    for t in tiers() {
        grp.bench_function(t.name, |bn| {
            bn.iter(|| {
                (t.conv2d)(
                    &g,
                    black_box(&x),
                    Weights::F32(&w),
                    Some(Weights::F32(&b)),
                    black_box(&mut y),
                )
            })
        });
    }
    grp.finish();

    // The same layer on weights packed offline in the tier's float family (`quantize-tool pack`), where it has one.
    let mut grp = config(c, "conv2d_3x3_64to64_32x32_f32_packed");
    grp.throughput(Throughput::Elements(g.macs()));
    for t in tiers() {
        let Some((fam, f)) = t.conv2d_packed else {
            continue;
        };
        let Some(len) = ember_kernels::pack::float_len(fam, &g) else {
            continue;
        };
        let mut p = vec![0u8; len];
        if !ember_kernels::pack::float_pack(fam, &g, Weights::F32(&w), &mut p) {
            continue;
        }
        grp.bench_function(t.name, |bn| {
            bn.iter(|| {
                f(
                    &g,
                    black_box(&x),
                    Weights::F32(&w),
                    &p,
                    Some(Weights::F32(&b)),
                    black_box(&mut y),
                )
            })
        });
    }
    grp.finish();

    let xq: Vec<i8> = x.iter().map(|v| (v * 100.0) as i8).collect();
    let wq: Vec<i8> = w.iter().map(|v| (v * 100.0) as i8).collect();
    let ws = vec![0.01f32; g.cout];
    let mut acc = vec![0i32; quant::conv2d_i8_scratch_len(&g)];
    let mut yq = vec![0i8; g.cout * g.oh * g.ow];
    let mut grp = config(c, "conv2d_3x3_64to64_32x32_i8");
    grp.throughput(Throughput::Elements(g.macs()));
    for t in tiers() {
        grp.bench_function(t.name, |bn| {
            bn.iter(|| {
                (t.conv2d_i8)(
                    &g,
                    black_box(&xq),
                    ActQ::single(0.02),
                    &wq,
                    &ws,
                    Some(Weights::F32(&b)),
                    None,
                    None,
                    1.0,
                    &mut acc,
                    QOut::I8 {
                        data: black_box(&mut yq),
                        scale: 0.1,
                    },
                )
            })
        });
    }
    grp.finish();
}

fn group_norm(c: &mut Criterion) {
    let (ch, hw, groups) = (64usize, 32 * 32usize, 32usize);
    let x = pseudo_random(ch * hw, 4);
    let gamma = pseudo_random(ch, 5);
    let beta = pseudo_random(ch, 6);
    let mut y = vec![0f32; ch * hw];
    let mut grp = config(c, "group_norm_silu_64x32x32_g32_f32");
    grp.throughput(Throughput::Elements((ch * hw) as u64));
    let a = GroupNormArgs {
        c: ch,
        hw,
        groups,
        eps: 1e-5,
        gamma: Weights::F32(&gamma),
        beta: Weights::F32(&beta),
        scale_shift: None,
        silu: true,
    };
    for t in tiers() {
        grp.bench_function(t.name, |bn| {
            bn.iter(|| (t.group_norm)(&a, black_box(&x), black_box(&mut y)))
        });
    }
    grp.finish();
}

fn attention(c: &mut Criterion) {
    // 64 channels over 16×16 = 256 tokens, 2 heads of 32: the MNIST student's attention.
    let (ch, n) = (64usize, 256usize);
    let g = AttentionGeom {
        heads: 2,
        head_dim: 32,
        n,
    };
    let q = pseudo_random(ch * n, 7);
    let k = pseudo_random(ch * n, 8);
    let v = pseudo_random(ch * n, 9);
    let mut scores = vec![0f32; n];
    let mut out = vec![0f32; ch * n];
    // q·kᵀ and p·v: 2 · n² · C multiply-accumulates (the softmax is not counted).
    let macs = (2 * n * n * ch) as u64;
    let mut grp = config(c, "attention_2x32_256tok_f32");
    grp.throughput(Throughput::Elements(macs));
    for t in tiers() {
        grp.bench_function(t.name, |bn| {
            bn.iter(|| {
                (t.attention)(
                    &g,
                    black_box(&q),
                    black_box(&k),
                    black_box(&v),
                    &mut scores,
                    black_box(&mut out),
                )
            })
        });
    }
    grp.finish();
    let to_i8 = |s: &[f32]| -> Vec<i8> { s.iter().map(|v| (v * 100.0) as i8).collect() };
    let (qq, kq, vq) = (to_i8(&q), to_i8(&k), to_i8(&v));
    let mut oq = vec![0i8; ch * n];
    let mut grp = config(c, "attention_2x32_256tok_i8");
    grp.throughput(Throughput::Elements(macs));
    for t in tiers() {
        grp.bench_function(t.name, |bn| {
            bn.iter(|| {
                (t.attention_i8)(
                    &g,
                    black_box(&qq),
                    0.01,
                    &kq,
                    0.01,
                    &vq,
                    0.01,
                    &mut scores,
                    QOut::I8 {
                        data: black_box(&mut oq),
                        scale: 0.05,
                    },
                )
            })
        });
    }
    grp.finish();
}

/// 512 → 256 with SiLU on the input: a time-embedding projection of ddpm-cifar10-32's resnets (24 per forward),
/// with `f32`, `f16` and int8 (one scale per row) weights.
fn linear(c: &mut Criterion) {
    let (n_in, n_out) = (512usize, 256usize);
    let x = pseudo_random(n_in, 7);
    let w = pseudo_random(n_in * n_out, 8);
    let wh: Vec<half::f16> = w.iter().map(|&v| half::f16::from_f32(v)).collect();
    let wq: Vec<i8> = w.iter().map(|v| (v * 100.0) as i8).collect();
    let s = vec![0.01f32; n_out];
    let b = pseudo_random(n_out, 9);
    let mut y = vec![0f32; n_out];
    for (name, wt) in [
        ("linear_512to256_f32", Weights::F32(&w)),
        ("linear_512to256_f16w", Weights::F16(&wh)),
        (
            "linear_512to256_i8w",
            Weights::I8 {
                data: &wq,
                scale: &s,
                per: n_in,
            },
        ),
    ] {
        let mut grp = config(c, name);
        grp.throughput(Throughput::Elements((n_in * n_out) as u64));
        for t in tiers() {
            grp.bench_function(t.name, |bn| {
                bn.iter(|| {
                    (t.linear)(
                        black_box(&x),
                        wt,
                        Some(Weights::F32(&b)),
                        true,
                        false,
                        black_box(&mut y),
                    )
                })
            });
        }
        grp.finish();
    }
}

criterion_group!(benches, conv, group_norm, attention, linear);
criterion_main!(benches);
