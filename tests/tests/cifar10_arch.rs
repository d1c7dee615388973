//! The exact `google/ddpm-cifar10-32` architecture (35.7 M parameters) converts and runs. Weights are synthesized
//! here (no checkpoint is committed); when `tests/golden/generate.py --cifar10` has written
//! `tests/golden/ddpm-cifar10-32/`, the diffusers outputs there are checked too.

use std::path::Path;

use ember_tests::{max_err, run, tol, GoldenIo};
use quantize_tool::{compile, convert_path, ConvertOptions, RandomSource, UNetConfig, WeightDtype};
use serde_json::json;

fn cifar_config() -> serde_json::Value {
    json!({
        "_class_name": "UNet2DModel", "sample_size": 32, "in_channels": 3, "out_channels": 3,
        "block_out_channels": [128, 256, 256, 256],
        "down_block_types": ["DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"],
        "up_block_types": ["UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"],
        "layers_per_block": 2, "attention_head_dim": null, "downsample_padding": 0, "flip_sin_to_cos": false,
        "freq_shift": 1, "norm_eps": 1e-6, "norm_num_groups": 32, "center_input_sample": false,
        "mid_block_scale_factor": 1, "act_fn": "silu", "time_embedding_type": "positional"
    })
}

#[test]
fn ddpm_cifar10_32_architecture_converts_and_runs() {
    let cfg = UNetConfig::from_json(&cifar_config(), None).unwrap();
    let c = compile(&cfg, &RandomSource { seed: 3 }, None, WeightDtype::F16).unwrap();
    // diffusers reports 35,746,307 parameters for this architecture.
    assert_eq!(c.info.params, 35_746_307);
    println!(
        "ddpm-cifar10-32: {} params, {:.0} M MACs, arena {} B (liveness bound {} B), f16 blob {} B",
        c.info.params,
        c.info.macs() as f64 / 1e6,
        c.info.arena_bytes,
        c.info.liveness_bytes,
        c.blob.len()
    );
    let s = ember_tests::Sample {
        sample: (0..3 * 32 * 32)
            .map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0)
            .collect(),
        timestep: 500.0,
        class_label: None,
        out: vec![],
        out_f16w: None,
    };
    let out = run(&c.blob, &s);
    assert_eq!(out.len(), 3 * 32 * 32);
    assert!(out.iter().all(|x| x.is_finite()));
    assert!(out.iter().any(|&x| x != 0.0));
}

/// Needs the on-demand golden (35.7 M parameters, not committed): `.venv/bin/python tests/golden/generate.py
/// --cifar10`, then `cargo test --release -p ember-tests --test cifar10_arch -- --ignored`.
#[test]
#[ignore = "needs tests/golden/ddpm-cifar10-32 from `generate.py --cifar10`"]
fn ddpm_cifar10_32_matches_diffusers() {
    let case = Path::new(env!("CARGO_MANIFEST_DIR")).join("golden/ddpm-cifar10-32");
    assert!(
        case.join("io.safetensors").is_file(),
        "run tests/golden/generate.py --cifar10 first"
    );
    let c = convert_path(&case, &ConvertOptions::default()).unwrap();
    for (k, s) in GoldenIo::load(&case).samples().iter().enumerate() {
        let (err, mag) = max_err(&run(&c.blob, s), &s.out);
        println!(
            "ddpm-cifar10-32 sample {k}: max err {err:e}, rel {:e}",
            err / mag
        );
        assert!(err <= tol::F32_CLOSE * mag);
    }
}
