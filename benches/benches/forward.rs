//! One U-Net forward pass through `ember_core::Session::forward`, weights from `RandomSource`.
//!
//! `cargo bench -p ember-benches --bench forward` (add `-- --quick` or a filter such as `mnist32` to shorten it).
//! Throughput is in MACs, so criterion prints MAC/s ("elem/s").

use std::hint::black_box;
use std::time::Duration;

use criterion::{
    criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput,
};
use ember_benches::{
    compile_config, pseudo_random, BenchModel, DDPM_CIFAR10_32_CONFIG, MNIST32_CONFIG,
};
use quantize_tool::{AlignedBytes, WeightDtype};

fn bench_model(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    id: &str,
    m: &BenchModel,
) {
    let model = ember_core::Model::parse(m.blob.as_slice()).expect("parse");
    let mut arena = AlignedBytes::zeroed(model.arena_bytes());
    let mut session = model.bind(arena.as_mut_slice()).expect("bind");
    let x = pseudo_random(m.input_len, 1);
    let mut out = vec![0f32; m.output_len];
    group.throughput(Throughput::Elements(m.macs));
    group.bench_function(BenchmarkId::from_parameter(id), |b| {
        b.iter(|| {
            session
                .forward(black_box(&x), black_box(500.0), None, &mut out)
                .expect("forward");
            black_box(&out);
        })
    });
}

/// The committed MNIST student, f32 and int8, on every kernel tier this CPU can run (`student_<dtype>/<tier>`), and
/// with its convolutions packed for the tier's kernel families as the host runner does at load
/// (`<dtype>-packed/<tier>`, where the tier reads packed weights).
fn student(c: &mut Criterion) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/mnist-student");
    let mut g = c.benchmark_group("unet_forward_mnist_student");
    g.sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    for file in ["student-4.ember", "student-4-int8.ember"] {
        let blob = AlignedBytes::read(&root.join(file)).expect("committed student blob");
        let dtype = if file.contains("int8") { "int8" } else { "f32" };
        for name in ember_kernels::registry::all_tiers() {
            let Some(t) = ember_kernels::registry::tier(name) else {
                eprintln!("forward bench: tier {name} SKIPPED (this CPU cannot run it)");
                continue;
            };
            let plain = ember_core::Model::parse(blob.as_slice()).expect("parse");
            let fams: Vec<u32> = [
                t.conv2d_packed.map(|p| p.0),
                t.conv2d_i8_packed.map(|p| p.0),
            ]
            .into_iter()
            .flatten()
            .collect();
            let packed = quantize_tool::pack::section(&plain, &fams)
                .expect("pack")
                .map(|sec| {
                    quantize_tool::write::add_section(
                        blob.as_slice(),
                        ember_core::format::section::PACKED,
                        &sec,
                        ember_core::format::SECTION_OPTIONAL,
                    )
                    .expect("add the PACKED section")
                });
            for (what, b) in [
                (dtype.to_string(), Some(&blob)),
                (format!("{dtype}-packed"), packed.as_ref()),
            ] {
                let Some(b) = b else { continue };
                let model = ember_core::Model::parse(b.as_slice()).expect("parse");
                let mut arena = AlignedBytes::zeroed(model.arena_bytes());
                let mut session = model.bind(arena.as_mut_slice()).expect("bind");
                let x = pseudo_random(model.info().input_len(), 1);
                let mut out = vec![0f32; model.info().output_len()];
                g.throughput(Throughput::Elements(model.info().macs()));
                session.set_kernels(t);
                g.bench_function(
                    BenchmarkId::from_parameter(format!("{what}/{name}")),
                    |bch| {
                        bch.iter(|| {
                            session
                                .forward(black_box(&x), black_box(749.0), Some(3), &mut out)
                                .expect("forward");
                            black_box(&out);
                        })
                    },
                );
            }
        }
    }
    g.finish();
}

fn unet_forward(c: &mut Criterion) {
    // Small model: ~0.1 s per pass with the scalar kernels; 10 samples of a few passes each.
    {
        let mut g = c.benchmark_group("unet_forward");
        g.sample_size(10)
            .sampling_mode(SamplingMode::Flat)
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(4));
        for (id, dtype) in [
            ("mnist32_f32", WeightDtype::F32),
            ("mnist32_f16", WeightDtype::F16),
        ] {
            let m = compile_config(MNIST32_CONFIG, dtype, 0);
            bench_model(&mut g, id, &m);
        }
        g.finish();
    }
    // ddpm-cifar10-32: ~6 GMAC per pass, >1 s each with scalar kernels. Flat sampling, one pass per sample, the
    // minimum of 10 samples (criterion's warm-up is one pass or so): ~15 s in all.
    {
        let mut g = c.benchmark_group("unet_forward");
        g.sample_size(10)
            .sampling_mode(SamplingMode::Flat)
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(12));
        let m = compile_config(DDPM_CIFAR10_32_CONFIG, WeightDtype::F32, 0);
        bench_model(&mut g, "ddpm_cifar10_32_f32", &m);
        g.finish();
    }
}

criterion_group!(benches, student, unet_forward);
criterion_main!(benches);
