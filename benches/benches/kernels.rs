//! The scalar reference kernels (`ember_kernels::generic`) at shapes the U-Nets use.
//!
//! `cargo bench -p ember-benches --bench kernels`. Throughput is in MACs for conv2d and attention (criterion's
//! "elem/s" is MAC/s) and in tensor elements for group_norm.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ember_benches::pseudo_random;
use ember_kernels::generic::{self, AttentionGeom, GroupNormArgs};
use ember_kernels::{Conv2dGeom, Weights};
use half::f16;

fn config<'a>(
    c: &'a mut Criterion,
    name: &str,
) -> criterion::BenchmarkGroup<'a, criterion::measurement::WallTime> {
    let mut g = c.benchmark_group(name);
    g.sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    g
}

fn conv(c: &mut Criterion) {
    // 3×3, 64 → 64 channels, 32×32, padding 1 (a ResNet conv of the MNIST U-Net's first level, doubled).
    let g = Conv2dGeom {
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
    let x = pseudo_random(g.cin * g.h * g.w, 1);
    let w = pseudo_random(g.cout * g.cin * g.k * g.k, 2);
    let w16: Vec<f16> = w.iter().map(|&v| f16::from_f32(v)).collect();
    let b = pseudo_random(g.cout, 3);
    let mut y = vec![0f32; g.cout * g.oh * g.ow];
    let mut grp = config(c, "conv2d_3x3_64to64_32x32");
    grp.throughput(Throughput::Elements(g.macs()));
    grp.bench_function("f32", |bn| {
        bn.iter(|| {
            generic::conv2d(
                &g,
                black_box(&x),
                Weights::F32(&w),
                Some(Weights::F32(&b)),
                black_box(&mut y),
            )
        })
    });
    grp.bench_function("f16_weights", |bn| {
        bn.iter(|| {
            generic::conv2d(
                &g,
                black_box(&x),
                Weights::F16(&w16),
                Some(Weights::F32(&b)),
                black_box(&mut y),
            )
        })
    });
    grp.finish();
}

fn group_norm(c: &mut Criterion) {
    let (ch, hw, groups) = (64usize, 32 * 32usize, 32usize);
    let x = pseudo_random(ch * hw, 4);
    let gamma = pseudo_random(ch, 5);
    let beta = pseudo_random(ch, 6);
    let mut y = vec![0f32; ch * hw];
    let mut grp = config(c, "group_norm_64x32x32_g32");
    grp.throughput(Throughput::Elements((ch * hw) as u64));
    for silu in [false, true] {
        let a = GroupNormArgs {
            c: ch,
            hw,
            groups,
            eps: 1e-5,
            gamma: Weights::F32(&gamma),
            beta: Weights::F32(&beta),
            scale_shift: None,
            silu,
        };
        grp.bench_function(if silu { "silu" } else { "plain" }, |bn| {
            bn.iter(|| generic::group_norm(&a, black_box(&x), black_box(&mut y)))
        });
    }
    grp.finish();
}

fn attention(c: &mut Criterion) {
    // 64 channels over 16×16 = 256 tokens: the MNIST U-Net's attention (8 heads × 8) and a one-head variant.
    let (ch, n) = (64usize, 256usize);
    let q = pseudo_random(ch * n, 7);
    let k = pseudo_random(ch * n, 8);
    let v = pseudo_random(ch * n, 9);
    let mut scores = vec![0f32; n];
    let mut out = vec![0f32; ch * n];
    let mut grp = config(c, "attention_64ch_256tok");
    // q·kᵀ and p·v: 2 · n² · C multiply-accumulates (the softmax is not counted).
    grp.throughput(Throughput::Elements((2 * n * n * ch) as u64));
    for heads in [8usize, 1] {
        let g = AttentionGeom {
            heads,
            head_dim: ch / heads,
            n,
        };
        grp.bench_function(format!("heads{heads}"), |bn| {
            bn.iter(|| {
                generic::attention(
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
}

criterion_group!(benches, conv, group_norm, attention);
criterion_main!(benches);
