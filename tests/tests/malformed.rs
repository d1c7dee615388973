//! Bad input gets a typed error, never a panic: malformed blobs, wrong arenas and inputs, unsupported configs,
//! mismatched checkpoints.

use std::collections::BTreeMap;

use ember_core::format::crc32;
use ember_core::{Error, Model, OpFault};
use quantize_tool::source::Tensor;
use quantize_tool::{
    compile, AlignedBytes, ConvertError, RandomSource, TensorSource, UNetConfig, WeightDtype,
};
use serde_json::{json, Value};

fn tiny_config() -> Value {
    json!({
        "sample_size": 8, "in_channels": 1, "out_channels": 1, "block_out_channels": [8, 16],
        "down_block_types": ["DownBlock2D", "AttnDownBlock2D"], "up_block_types": ["AttnUpBlock2D", "UpBlock2D"],
        "layers_per_block": 1, "norm_num_groups": 4, "attention_head_dim": 4, "num_class_embeds": 3
    })
}

fn tiny_blob() -> Vec<u8> {
    let cfg = UNetConfig::from_json(&tiny_config(), None).unwrap();
    compile(&cfg, &RandomSource { seed: 7 }, None, WeightDtype::F32)
        .unwrap()
        .blob
}

use ember_tests::fix_crc;

fn parse(b: &[u8]) -> Result<(), Error> {
    let a = AlignedBytes::new(b);
    Model::parse(a.as_slice()).map(|_| ())
}

#[test]
fn valid_blob_parses_and_runs() {
    let b = AlignedBytes::new(&tiny_blob());
    let m = Model::parse(b.as_slice()).unwrap();
    let mut arena = AlignedBytes::zeroed(m.arena_bytes());
    let mut s = m.bind(arena.as_mut_slice()).unwrap();
    let x = vec![0.5f32; 64];
    let mut out = vec![0f32; 64];
    s.forward(&x, 10.0, Some(2), &mut out).unwrap();
    assert!(out.iter().all(|v| v.is_finite()) && out.iter().any(|&v| v != 0.0));
}

#[test]
fn header_errors_are_typed() {
    let blob = tiny_blob();
    assert_eq!(
        parse(&blob[..10]),
        Err(Error::Truncated {
            needed: 64,
            got: 10
        })
    );
    let mut b = blob.clone();
    b[0] = b'X';
    assert_eq!(parse(&b), Err(Error::BadMagic));
    let mut b = blob.clone();
    b[4] = 2;
    assert!(matches!(
        parse(&b),
        Err(Error::UnsupportedVersion { major: 2, .. })
    ));
    assert!(matches!(
        parse(&blob[..blob.len() - 1]),
        Err(Error::Truncated { .. })
    ));
    let mut b = blob.clone();
    let mid = b.len() / 2;
    b[mid] ^= 0x40;
    assert!(matches!(parse(&b), Err(Error::ChecksumMismatch { .. })));
}

#[test]
fn misaligned_blob_is_refused() {
    let blob = tiny_blob();
    let mut v = vec![0u8; blob.len() + 16];
    let a = AlignedBytes::new(&v);
    drop(a);
    // Place the blob at an odd address inside aligned storage.
    v[1..1 + blob.len()].copy_from_slice(&blob);
    let store = AlignedBytes::new(&v);
    assert_eq!(
        Model::parse(&store.as_slice()[1..]).err(),
        Some(Error::BlobMisaligned)
    );
}

#[test]
fn corrupted_op_is_rejected_with_its_index() {
    let blob = AlignedBytes::new(&tiny_blob());
    let m = Model::parse(blob.as_slice()).unwrap();
    let n_buffers = m.n_buffers();
    // Find the op section via the section table and point op 0's output past the buffer table.
    let raw = blob.as_slice().to_vec();
    let n_sections = u32::from_le_bytes(raw[20..24].try_into().unwrap()) as usize;
    let mut ops_off = None;
    for i in 0..n_sections {
        let e = 64 + i * 16;
        if u32::from_le_bytes(raw[e..e + 4].try_into().unwrap()) == ember_core::format::section::OPS
        {
            ops_off = Some(u32::from_le_bytes(raw[e + 4..e + 8].try_into().unwrap()) as usize);
        }
    }
    let off = ops_off.unwrap();
    let mut b = raw.clone();
    b[off + 4..off + 8].copy_from_slice(&(n_buffers + 5).to_le_bytes()); // op 0 word 1
    fix_crc(&mut b);
    match parse(&b) {
        Err(Error::BadOp {
            index: 0,
            fault: OpFault::BufferIndex(_),
        }) => {}
        other => panic!("expected BadOp index 0, got {other:?}"),
    }
    let mut b = raw.clone();
    b[off..off + 4].copy_from_slice(&999u32.to_le_bytes());
    fix_crc(&mut b);
    assert_eq!(
        parse(&b),
        Err(Error::BadOp {
            index: 0,
            fault: OpFault::UnknownKind(999)
        })
    );
}

#[test]
fn arena_and_input_errors_are_typed() {
    let b = AlignedBytes::new(&tiny_blob());
    let m = Model::parse(b.as_slice()).unwrap();
    let need = m.arena_bytes();
    let mut small = AlignedBytes::zeroed(need - 16);
    assert_eq!(
        m.bind(small.as_mut_slice()).err(),
        Some(Error::ArenaTooSmall {
            needed: need as u32,
            got: (need - 16) as u32
        })
    );
    let mut big = AlignedBytes::zeroed(need + 16);
    assert_eq!(
        m.bind(&mut big.as_mut_slice()[4..]).err(),
        Some(Error::ArenaMisaligned)
    );
    let mut arena = AlignedBytes::zeroed(need);
    let mut s = m.bind(arena.as_mut_slice()).unwrap();
    let mut out = vec![0f32; 64];
    assert_eq!(
        s.forward(&[0.0; 63], 1.0, Some(0), &mut out),
        Err(Error::InputLen {
            expected: 64,
            got: 63
        })
    );
    assert_eq!(
        s.forward(&[0.0; 64], 1.0, Some(0), &mut out[..5]),
        Err(Error::OutputLen {
            expected: 64,
            got: 5
        })
    );
    assert_eq!(
        s.forward(&[0.0; 64], 1.0, None, &mut out),
        Err(Error::ClassLabelRequired)
    );
    assert_eq!(
        s.forward(&[0.0; 64], 1.0, Some(3), &mut out),
        Err(Error::ClassLabelOutOfRange {
            label: 3,
            num_classes: 3
        })
    );
    assert_eq!(
        s.forward(&[0.0; 64], f32::NAN, Some(0), &mut out),
        Err(Error::BadTimestep)
    );
}

/// A deterministic mini-fuzz: set every byte of the metadata region (header, tables, op list) to 0xFF and flip one bit of it,
/// re-seal the checksum, and require parse (and forward, when parse accepts) to return, never to panic.
#[test]
fn every_metadata_byte_mutation_is_handled() {
    let blob = tiny_blob();
    let data_off = {
        let n = u32::from_le_bytes(blob[20..24].try_into().unwrap()) as usize;
        (0..n)
            .map(|i| 64 + i * 16)
            .find(|&e| {
                u32::from_le_bytes(blob[e..e + 4].try_into().unwrap())
                    == ember_core::format::section::DATA
            })
            .map(|e| u32::from_le_bytes(blob[e + 4..e + 8].try_into().unwrap()) as usize)
            .unwrap()
    };
    let accepted = ember_tests::metadata_mutation_sweep(&blob, data_off);
    assert!(
        accepted > 0,
        "some mutations (e.g. of float parameters) must still parse"
    );
}

// ---- converter errors ----

fn cfg_err(v: Value) -> String {
    match UNetConfig::from_json(&v, None) {
        Err(ConvertError::Config { field, .. }) => field,
        other => panic!("expected a config error, got {other:?}"),
    }
}

#[test]
fn unsupported_config_options_name_the_field() {
    let with = |k: &str, v: Value| {
        let mut c = tiny_config();
        c[k] = v;
        c
    };
    assert_eq!(
        cfg_err(with("time_embedding_type", json!("fourier"))),
        "time_embedding_type"
    );
    assert_eq!(cfg_err(with("act_fn", json!("gelu"))), "act_fn");
    assert_eq!(
        cfg_err(with("class_embed_type", json!("identity"))),
        "class_embed_type"
    );
    assert_eq!(
        cfg_err(with("mid_block_type", json!("UNetMidBlock2DCrossAttn"))),
        "mid_block_type"
    );
    assert_eq!(
        cfg_err(with(
            "down_block_types",
            json!(["CrossAttnDownBlock2D", "DownBlock2D"])
        )),
        "down_block_types"
    );
    assert_eq!(
        cfg_err(with("up_block_types", json!(["UpBlock2D"]))),
        "up_block_types"
    );
    assert_eq!(
        cfg_err(with("resnet_time_scale_shift", json!("spatial"))),
        "resnet_time_scale_shift"
    );
    assert_eq!(cfg_err(with("sample_size", json!(9))), "sample_size");
    assert_eq!(
        cfg_err(with("norm_num_groups", json!(3))),
        "norm_num_groups"
    );
    assert_eq!(
        cfg_err(with("_class_name", json!("UNet2DConditionModel"))),
        "_class_name"
    );
    assert_eq!(cfg_err(with("in_channels", json!("one"))), "in_channels");
}

/// A source that serves another source's tensors, with edits.
struct Edited {
    base: BTreeMap<String, Tensor>,
}

impl TensorSource for Edited {
    fn get(&self, name: &str, _e: &[usize]) -> Result<Option<Tensor>, ConvertError> {
        Ok(self.base.get(name).cloned())
    }
    fn names(&self) -> Vec<String> {
        self.base.keys().cloned().collect()
    }
}

/// Record every tensor a full random model asks for.
struct Recorder(std::cell::RefCell<BTreeMap<String, Tensor>>);
impl TensorSource for Recorder {
    fn get(&self, name: &str, e: &[usize]) -> Result<Option<Tensor>, ConvertError> {
        let t = RandomSource { seed: 1 }.make(name, e);
        self.0.borrow_mut().insert(name.to_string(), t.clone());
        Ok(Some(t))
    }
    fn names(&self) -> Vec<String> {
        Vec::new()
    }
}

#[test]
fn checkpoint_mismatches_name_the_tensor() {
    let cfg = UNetConfig::from_json(&tiny_config(), None).unwrap();
    let rec = Recorder(Default::default());
    compile(&cfg, &rec, None, WeightDtype::F32).unwrap();
    let full = rec.0.into_inner();
    assert!(compile(&cfg, &Edited { base: full.clone() }, None, WeightDtype::F32).is_ok());

    let mut missing = full.clone();
    missing.remove("down_blocks.1.attentions.0.to_k.weight");
    match compile(&cfg, &Edited { base: missing }, None, WeightDtype::F32) {
        Err(ConvertError::MissingTensor { name, .. }) => {
            assert_eq!(name, "down_blocks.1.attentions.0.to_k.weight")
        }
        other => panic!("{other:?}"),
    }
    let mut wrong = full.clone();
    wrong.get_mut("conv_in.weight").unwrap().shape = vec![8, 2, 3, 3];
    match compile(&cfg, &Edited { base: wrong }, None, WeightDtype::F32) {
        Err(ConvertError::TensorShape {
            name,
            expected,
            got,
        }) => {
            assert_eq!(name, "conv_in.weight");
            assert_eq!(expected, vec![8, 1, 3, 3]);
            assert_eq!(got, vec![8, 2, 3, 3]);
        }
        other => panic!("{other:?}"),
    }
    let mut extra = full.clone();
    extra.insert(
        "down_blocks.0.resnets.1.conv1.weight".into(),
        Tensor {
            shape: vec![1],
            data: vec![0.0],
        },
    );
    match compile(&cfg, &Edited { base: extra }, None, WeightDtype::F32) {
        Err(ConvertError::UnusedTensors { names, count: 1 }) => {
            assert_eq!(
                names,
                vec!["down_blocks.0.resnets.1.conv1.weight".to_string()]
            )
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn memory_plan_reuses_and_stays_near_the_liveness_bound() {
    let b = AlignedBytes::new(&tiny_blob());
    let m = Model::parse(b.as_slice()).unwrap();
    let info = m.info();
    let total: u64 = (0..m.n_buffers())
        .map(|i| m.buffer(i).unwrap().nbytes().div_ceil(16) * 16)
        .sum();
    assert!(
        info.arena_bytes as u64 >= info.liveness_bytes as u64,
        "no plan beats the liveness bound"
    );
    assert!(
        (info.arena_bytes as u64) < total / 2,
        "buffers are reused: arena {} vs sum {total}",
        info.arena_bytes
    );
}

/// Named regressions from fuzzing / code review (`fuzz/regressions/*.bin`, the fuzz target's format: a control
/// byte whose bit 0 asks to re-seal the CRC, then the blob). Each must be refused by `parse`. The two `usize32-*`
/// files overflowed index arithmetic on 32-bit targets (Cortex-M) before it was made checked.
#[test]
fn fuzz_regressions_are_rejected() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/regressions");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().and_then(|x| x.to_str()) != Some("bin") {
            continue;
        }
        let raw = std::fs::read(&p).unwrap();
        let (ctl, body) = raw.split_first().unwrap();
        let mut b = body.to_vec();
        if ctl & 1 != 0 && b.len() >= 16 {
            let total =
                (u32::from_le_bytes(b[8..12].try_into().unwrap()) as usize).clamp(16, b.len());
            let crc = crc32(&b[16..total]);
            b[12..16].copy_from_slice(&crc.to_le_bytes());
        }
        assert!(parse(&b).is_err(), "{} must be rejected", p.display());
        n += 1;
    }
    assert!(n >= 2, "regression files present");
}
