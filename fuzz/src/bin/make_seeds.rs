//! Writes the seed corpus of `parse_forward` (fuzz/corpus/parse_forward/): tiny valid blobs made by
//! `quantize_tool::compile` with random weights, plus truncated and garbage inputs.
//!
//! Every corpus file is `control byte ++ blob` (see fuzz_targets/parse_forward.rs). Run from the repository root:
//! `cargo run --manifest-path fuzz/Cargo.toml --features seeds --bin make_seeds [OUT_DIR]`.

use std::path::PathBuf;

use ember_core::ScheduleInfo;
use quantize_tool::{compile, RandomSource, UNetConfig, WeightDtype};
use serde_json::{json, Value};

fn base() -> Value {
    json!({
        "sample_size": 8,
        "in_channels": 1,
        "out_channels": 1,
        "block_out_channels": [4, 8],
        "down_block_types": ["DownBlock2D", "AttnDownBlock2D"],
        "up_block_types": ["AttnUpBlock2D", "UpBlock2D"],
        "layers_per_block": 1,
        "norm_num_groups": 4,
        "attention_head_dim": 4
    })
}

fn with(mut v: Value, extra: Value) -> Value {
    for (k, x) in extra.as_object().unwrap() {
        v[k] = x.clone();
    }
    v
}

fn main() {
    let out = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "fuzz/corpus/parse_forward".into()));
    std::fs::create_dir_all(&out).unwrap();
    let sched = ScheduleInfo {
        num_train_timesteps: 1000,
        beta_start: 1e-4,
        beta_end: 0.02,
        beta_schedule: 0,
        prediction_type: 0,
        variance_type: 0,
        clip_sample: 1,
        clip_sample_range: 1.0,
        timestep_spacing: 0,
        steps_offset: 0,
        scheduler_class: 1,
    };
    // One resolution level, no attention.
    let tiny = json!({
        "sample_size": 4, "in_channels": 1, "out_channels": 1, "block_out_channels": [4],
        "down_block_types": ["DownBlock2D"], "up_block_types": ["UpBlock2D"], "layers_per_block": 1,
        "norm_num_groups": 2, "attention_head_dim": 2, "add_attention": false
    });
    // Smallest: a narrow time embedding too (the source of the control-byte, truncated and garbage seeds).
    // (`"mid_block_type": null` would be smaller, but quantize-tool then emits a Concat of a buffer with itself,
    // which the validator rejects as Aliasing.)
    let mini = with(tiny.clone(), json!({"time_embedding_dim": 8}));
    // (name, config, schedule, dtypes)
    let f16 = &[WeightDtype::F16][..];
    let both = &[WeightDtype::F32, WeightDtype::F16][..];
    let configs: Vec<(&str, Value, Option<ScheduleInfo>, &[WeightDtype])> = vec![
        ("base", base(), None, f16),
        ("class3", with(base(), json!({"num_class_embeds": 3})), Some(sched), f16),
        ("scaleshift_center", with(base(), json!({"resnet_time_scale_shift": "scale_shift", "center_input_sample": true})), None, f16),
        ("tiny", tiny.clone(), Some(sched), both),
        ("tiny_class3_scaleshift_center", with(tiny.clone(), json!({
            "num_class_embeds": 3, "resnet_time_scale_shift": "scale_shift", "center_input_sample": true
        })), None, &[WeightDtype::F32]),
        ("tiny_class_timestep", with(tiny.clone(), json!({
            "class_embed_type": "timestep", "num_class_embeds": 4, "in_channels": 2, "sample_size": [4, 2]
        })), None, f16),
        ("tiny_resnet_updown", with(tiny.clone(), json!({
            "block_out_channels": [4, 4],
            "down_block_types": ["ResnetDownsampleBlock2D", "DownBlock2D"],
            "up_block_types": ["UpBlock2D", "ResnetUpsampleBlock2D"],
            "downsample_type": "resnet", "upsample_type": "resnet", "out_channels": 2
        })), None, f16),
        ("mini", mini, None, f16),
    ];
    let mut total = 0usize;
    let mut write = |name: String, bytes: Vec<u8>| {
        total += bytes.len();
        println!("{name}: {} bytes", bytes.len());
        std::fs::write(out.join(name), bytes).unwrap();
    };
    let mut smallest: Option<Vec<u8>> = None;
    for (name, cfg_json, schedule, dtypes) in &configs {
        let cfg = UNetConfig::from_json(cfg_json, None).unwrap_or_else(|e| panic!("{name}: {e}"));
        for &dtype in *dtypes {
            let dname = if dtype == WeightDtype::F32 { "f32" } else { "f16" };
            let c = compile(&cfg, &RandomSource { seed: 7 }, *schedule, dtype).unwrap_or_else(|e| panic!("{name}: {e}"));
            // Control byte 0x01: patch the CRC (so mutations reach validation), t = 0, zero sample, valid label.
            let mut b = vec![0x01u8];
            b.extend_from_slice(&c.blob);
            write(format!("{name}-{dname}.bin"), b);
            if smallest.as_ref().is_none_or(|s| c.blob.len() < s.len()) {
                smallest = Some(c.blob.clone());
            }
        }
    }
    let blob = smallest.unwrap();
    // Same blob with other control bits: NaN timestep (0x07); stored CRC checked as is with t = 999, a ramp sample
    // and an unexpected class label (0x1a).
    for (ctl, tag) in [(0x07u8, "nan-timestep"), (0x1a, "nocrc-ramp-badlabel")] {
        let mut b = vec![ctl];
        b.extend_from_slice(&blob);
        write(format!("mini-{tag}.bin"), b);
    }
    // Truncated: header only, half (the header's total length then exceeds the data).
    for (tag, n) in [("header", 64), ("half", blob.len() / 2)] {
        let mut b = vec![0x01u8];
        b.extend_from_slice(&blob[..n]);
        write(format!("trunc-{tag}.bin"), b);
    }
    // Garbage: bad magic, wrong major version (both rejected before the length check, so 256 bytes suffice),
    // flipped bytes all over (CRC patched), and plain noise.
    let mut bad_magic = vec![0x01u8];
    bad_magic.extend_from_slice(&blob[..256]);
    bad_magic[1] = b'X';
    write("garbage-magic.bin".into(), bad_magic);
    let mut bad_ver = vec![0x01u8];
    bad_ver.extend_from_slice(&blob[..256]);
    bad_ver[1 + 4] = 9;
    write("garbage-version.bin".into(), bad_ver);
    let mut flipped = vec![0x01u8];
    flipped.extend_from_slice(&blob);
    for i in (200..flipped.len()).step_by(97) {
        flipped[i] ^= 0x5a;
    }
    write("garbage-flipped.bin".into(), flipped);
    let mut h = 0x1234_5678_9abc_def0u64;
    let noise: Vec<u8> = (0..512)
        .map(|_| {
            h ^= h << 13;
            h ^= h >> 7;
            h ^= h << 17;
            (h >> 24) as u8
        })
        .collect();
    write("garbage-noise.bin".into(), noise);
    write("garbage-empty.bin".into(), Vec::new());
    println!("total {total} bytes");
}
