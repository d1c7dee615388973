//! `quantize_tool::verify`: a tiny random model converted to f32 and int8, compared layer by layer.

use ember_core::op::Op;
use ember_core::sampler::driver::{Method, SamplerConfig};
use ember_core::Model;
use quantize_tool::quant::QuantOptions;
use quantize_tool::verify::{verify, VerifyOptions};
use quantize_tool::{compile_int8, compile_with, AlignedBytes, RandomSource, Sampling, UNetConfig};
use quantize_tool::{ConvertError, WeightDtype};
use serde_json::json;

/// A small class-conditional model with attention (last class = null class, so guidance works).
fn config(sample: usize) -> UNetConfig {
    UNetConfig::from_json(
        &json!({
            "sample_size": sample, "in_channels": 1, "out_channels": 1,
            "block_out_channels": [8, 16], "layers_per_block": 1, "norm_num_groups": 4,
            "down_block_types": ["DownBlock2D", "AttnDownBlock2D"],
            "up_block_types": ["AttnUpBlock2D", "UpBlock2D"], "attention_head_dim": 4,
            "num_class_embeds": 3
        }),
        None,
    )
    .unwrap()
}

fn sampling() -> Sampling {
    let schedule = quantize_tool::config::schedule_from_json(
        &json!({"_class_name": "DDIMScheduler", "num_train_timesteps": 1000}),
    )
    .unwrap();
    Sampling {
        schedule: Some(schedule),
        null_class: Some(2),
        ..Sampling::default()
    }
}

fn sampler() -> SamplerConfig {
    SamplerConfig::new(Method::Ddim, 2)
}

fn layer_ops(m: &Model<'_>) -> usize {
    (0..m.n_ops())
        .filter(|&i| {
            matches!(
                m.op(i).unwrap(),
                Op::Conv2d { .. } | Op::Linear { .. } | Op::GroupNorm { .. } | Op::Attention { .. }
            )
        })
        .count()
}

#[test]
fn int8_against_f32_and_f32_against_itself() {
    let cfg = config(8);
    let src = RandomSource { seed: 5 };
    let s = sampling();
    let f = AlignedBytes::new(&compile_with(&cfg, &src, &s, WeightDtype::F32).unwrap().blob);
    let q = compile_int8(
        &cfg,
        &src,
        &s,
        &QuantOptions {
            samples: 2,
            eval_samples: 1,
            target_psnr: 0.0,
            sampler: Some(sampler()),
            ..QuantOptions::default()
        },
        None,
    )
    .unwrap();
    let q = AlignedBytes::new(&q.compiled.blob);
    let (fm, qm) = (
        Model::parse(f.as_slice()).unwrap(),
        Model::parse(q.as_slice()).unwrap(),
    );
    let opts = VerifyOptions {
        seeds: 2,
        seed: 1,
        sampler: Some(sampler()),
    };

    let r = verify(&qm, &fm, &opts).unwrap();
    assert_eq!(r.layers.len(), layer_ops(&fm), "{:?}", r.unmatched);
    assert!(r.unmatched.is_empty());
    assert_eq!(r.passes, 2 * 2);
    assert!(r.layers.iter().any(|l| l.is_i8));
    assert!(r.layers.iter().any(|l| l.label.ends_with(".attn")));
    for l in r.layers.iter().filter(|l| l.is_i8 || l.int8_math) {
        assert!(l.snr_db.is_finite(), "{l:?}");
        assert!(l.noise > 0.0 && l.signal > 0.0, "{l:?}");
    }
    assert!(r.psnr.is_finite());
    assert_eq!(r.seed_psnr.len(), 2);
    assert!(r.q_sizes.blob < r.f_sizes.blob);
    assert!(r.q_sizes.arena < r.f_sizes.arena);
    assert_eq!(r.f_sizes.blob, fm.blob_len());

    // The reference against itself, with guidance (conditional + unconditional passes): no error anywhere.
    let guided = VerifyOptions {
        sampler: Some(SamplerConfig {
            guidance_scale: 2.0,
            ..sampler()
        }),
        ..opts
    };
    let same = verify(&fm, &fm, &guided).unwrap();
    assert_eq!(same.passes, 2 * 2 * 2);
    assert_eq!(same.layers.len(), layer_ops(&fm));
    assert!(same
        .layers
        .iter()
        .all(|l| l.snr_db == f64::INFINITY && !l.is_i8));
    assert_eq!(same.psnr, f64::INFINITY);
    assert!(same.seed_psnr.iter().all(|p| *p == f64::INFINITY));
    // The int8 blob runs the guided sampler too.
    let g = verify(&qm, &fm, &guided).unwrap();
    assert!(g
        .layers
        .iter()
        .filter(|l| l.is_i8)
        .all(|l| l.snr_db.is_finite()));
}

#[test]
fn different_models_are_refused() {
    let src = RandomSource { seed: 5 };
    let s = sampling();
    let a = AlignedBytes::new(
        &compile_with(&config(8), &src, &s, WeightDtype::F32)
            .unwrap()
            .blob,
    );
    let b = AlignedBytes::new(
        &compile_with(&config(16), &src, &s, WeightDtype::F32)
            .unwrap()
            .blob,
    );
    let (am, bm) = (
        Model::parse(a.as_slice()).unwrap(),
        Model::parse(b.as_slice()).unwrap(),
    );
    let e = verify(&am, &bm, &VerifyOptions::default()).unwrap_err();
    assert!(matches!(e, ConvertError::BadInput { .. }));
    assert!(e.to_string().contains("height 8 vs 16"), "{e}");
    // Zero seeds and an impossible sampler are errors, not panics.
    let e = verify(
        &am,
        &am,
        &VerifyOptions {
            seeds: 0,
            ..VerifyOptions::default()
        },
    )
    .unwrap_err();
    assert!(e.to_string().contains("seed"), "{e}");
    let e = verify(
        &am,
        &am,
        &VerifyOptions {
            sampler: Some(SamplerConfig {
                guidance_scale: f32::NAN,
                ..sampler()
            }),
            ..VerifyOptions::default()
        },
    )
    .unwrap_err();
    assert!(matches!(e, ConvertError::BadInput { .. }), "{e}");
}
