//! Shared helpers for ember's integration tests: golden-file loading and named tolerances.

use std::path::{Path, PathBuf};

use quantize_tool::AlignedBytes;
use safetensors::{Dtype, SafeTensors};

/// The committed golden cases (`tests/golden/<case>/`), sorted; the on-demand `ddpm-cifar10-32` is excluded.
pub fn golden_cases() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("golden");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&root)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    v.retain(|p| p.join("io.safetensors").is_file() && !p.ends_with("ddpm-cifar10-32"));
    v.sort();
    v
}

/// The golden input/output tensors of one case.
#[derive(Debug)]
pub struct GoldenIo {
    raw: Vec<u8>,
}

/// One reference evaluation.
#[derive(Debug, Clone)]
pub struct Sample {
    /// `[C, H, W]` input.
    pub sample: Vec<f32>,
    /// Timestep.
    pub timestep: f32,
    /// Class label, for class-conditional models.
    pub class_label: Option<u32>,
    /// diffusers' output with f32 weights.
    pub out: Vec<f32>,
    /// diffusers' output with every weight rounded to f16 (math in f32).
    pub out_f16w: Option<Vec<f32>>,
}

/// Tensor `name` of a golden file as f32 values (f32, or i64 converted), `None` when absent.
pub fn f32s(st: &SafeTensors<'_>, name: &str) -> Option<Vec<f32>> {
    let t = st.tensor(name).ok()?;
    let d = t.data();
    Some(match t.dtype() {
        Dtype::F32 => d
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dtype::I64 => d
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f32)
            .collect(),
        other => panic!("golden tensor {name} has unexpected dtype {other:?}"),
    })
}

impl GoldenIo {
    /// Load `io.safetensors` of a case.
    pub fn load(case: &Path) -> GoldenIo {
        GoldenIo {
            raw: std::fs::read(case.join("io.safetensors")).expect("read io.safetensors"),
        }
    }

    /// The recorded evaluations.
    pub fn samples(&self) -> Vec<Sample> {
        let st = SafeTensors::deserialize(&self.raw).expect("golden io parses");
        let mut v = Vec::new();
        for k in 0.. {
            let Some(sample) = f32s(&st, &format!("sample_{k}")) else {
                break;
            };
            v.push(Sample {
                sample,
                timestep: f32s(&st, &format!("timestep_{k}")).expect("timestep")[0],
                class_label: f32s(&st, &format!("class_labels_{k}")).map(|c| c[0] as u32),
                out: f32s(&st, &format!("out_{k}")).expect("out"),
                out_f16w: f32s(&st, &format!("out_f16w_{k}")),
            });
        }
        v
    }

    /// The generator's metadata (versions, seed).
    pub fn metadata(&self) -> String {
        let (_, m) = SafeTensors::read_metadata(&self.raw).expect("metadata");
        format!("{:?}", m.metadata())
    }
}

/// Run one forward pass of `blob`.
pub fn run(blob: &[u8], s: &Sample) -> Vec<f32> {
    let aligned = AlignedBytes::new(blob);
    let m = ember_core::Model::parse(aligned.as_slice()).expect("blob parses");
    let mut arena = AlignedBytes::zeroed(m.arena_bytes());
    let mut sess = m.bind(arena.as_mut_slice()).expect("bind");
    let mut out = vec![0f32; m.info().output_len()];
    sess.forward(&s.sample, s.timestep, s.class_label, &mut out)
        .expect("forward");
    out
}

/// Largest absolute difference, and the reference's largest magnitude.
pub fn max_err(got: &[f32], want: &[f32]) -> (f32, f32) {
    assert_eq!(got.len(), want.len(), "output length");
    let err = got
        .iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    let mag = want.iter().map(|x| x.abs()).fold(0.0f32, f32::max);
    assert!(got.iter().all(|x| x.is_finite()), "non-finite output");
    (err, mag)
}

/// Named tolerances, relative to the reference's largest magnitude.
/// Re-seal a blob's checksum after an edit.
pub fn fix_crc(b: &mut [u8]) {
    let crc = ember_core::format::crc32(&b[16..]);
    b[12..16].copy_from_slice(&crc.to_le_bytes());
}

/// The deterministic mini-fuzz of the metadata region: set every byte in `16..data_off` to 0xFF and flip one bit of
/// it, re-seal the checksum; parse (and a forward pass, when parse accepts) must return, never panic. Returns how
/// many mutations still parsed.
pub fn metadata_mutation_sweep(blob: &[u8], data_off: usize) -> usize {
    let mut accepted = 0;
    for pos in 16..data_off {
        for v in [0xFFu8, blob[pos] ^ 0x10] {
            let mut b = blob.to_vec();
            b[pos] = v;
            fix_crc(&mut b);
            let a = AlignedBytes::new(&b);
            if let Ok(m) = ember_core::Model::parse(a.as_slice()) {
                accepted += 1;
                if m.arena_bytes() > 1 << 24
                    || m.info().input_len() > 1 << 20
                    || m.info().output_len() > 1 << 20
                {
                    continue;
                }
                let mut arena = AlignedBytes::zeroed(m.arena_bytes());
                let mut s = m
                    .bind(arena.as_mut_slice())
                    .expect("an arena of arena_bytes binds");
                let x = vec![0.25f32; m.info().input_len()];
                let mut out = vec![0f32; m.info().output_len()];
                let label = (m.info().num_classes > 0).then_some(0);
                let _ = s.forward(&x, 3.0, label, &mut out);
            }
        }
    }
    accepted
}

pub mod tol {
    /// f32 weights vs diffusers f32: the bound.
    pub const F32_CLOSE: f32 = 1e-4;
    /// f16-stored weights vs diffusers run with the same f16-rounded weights: only f32 math differences remain,
    /// so the f32 bound applies.
    pub const F16W_EXACT_WEIGHTS: f32 = 1e-4;
    /// f16-stored weights vs diffusers f32: f16 keeps 11 significant bits (relative rounding ≤ 2^-11 ≈ 4.9e-4 per
    /// weight). Through the ~10–20 normalized layers of a path the independent rounding errors add roughly in
    /// quadrature, so a few 2^-11 is expected; the bound is about 10 · 2^-11. Measured on the committed cases
    /// (diffusers 0.42.1): worst 1.4e-3. The tight check of the f16 path is [`F16W_EXACT_WEIGHTS`].
    pub const F16_VS_F32: f32 = 5e-3;
}
