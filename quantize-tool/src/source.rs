//! Where weights come from: a safetensors checkpoint (or anything else that can hand out named f32 tensors).

use std::collections::BTreeMap;

use safetensors::{tensor::TensorView, Dtype, SafeTensors};

use crate::error::ConvertError;

/// A named tensor in f32.
#[derive(Clone, Debug)]
pub struct Tensor {
    /// Shape.
    pub shape: Vec<usize>,
    /// Row-major data.
    pub data: Vec<f32>,
}

/// A source of named checkpoint tensors.
pub trait TensorSource {
    /// The tensor called `name`, if present (`expected` is the shape the config implies; sources that synthesize
    /// weights use it, checkpoints ignore it and the caller compares).
    fn get(&self, name: &str, expected: &[usize]) -> Result<Option<Tensor>, ConvertError>;
    /// All tensor names (to report unused ones).
    fn names(&self) -> Vec<String>;
}

/// Old diffusers attention names (`google/ddpm-*` checkpoints) → current ones; diffusers converts them on load too.
pub fn canonical_name(name: &str) -> String {
    for (old, new) in [
        (".query.", ".to_q."),
        (".key.", ".to_k."),
        (".value.", ".to_v."),
        (".proj_attn.", ".to_out.0."),
    ] {
        if name.contains(old) && name.contains("attentions.") {
            return name.replacen(old, new, 1);
        }
    }
    name.to_string()
}

/// A safetensors file held in memory, with metadata.
#[derive(Debug)]
pub struct SafetensorsSource {
    tensors: BTreeMap<String, Tensor>,
    /// The file's `__metadata__`.
    pub metadata: BTreeMap<String, String>,
}

fn to_f32(name: &str, v: &TensorView<'_>) -> Result<Vec<f32>, ConvertError> {
    let b = v.data();
    let data: Vec<f32> = match v.dtype() {
        Dtype::F32 => b
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dtype::F16 => b
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::BF16 => b
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        other => {
            return Err(ConvertError::TensorDtype {
                name: name.to_string(),
                dtype: format!("{other:?}"),
            })
        }
    };
    if data.iter().any(|x| !x.is_finite()) {
        return Err(ConvertError::NonFinite {
            name: name.to_string(),
        });
    }
    Ok(data)
}

impl SafetensorsSource {
    /// Parse safetensors bytes (`path` is for messages).
    pub fn from_bytes(bytes: &[u8], path: &str) -> Result<SafetensorsSource, ConvertError> {
        let st = SafeTensors::deserialize(bytes).map_err(|e| ConvertError::Safetensors {
            path: path.to_string(),
            msg: e.to_string(),
        })?;
        let (_, meta) =
            SafeTensors::read_metadata(bytes).map_err(|e| ConvertError::Safetensors {
                path: path.to_string(),
                msg: e.to_string(),
            })?;
        let metadata: BTreeMap<String, String> = meta
            .metadata()
            .as_ref()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default();
        let mut tensors = BTreeMap::new();
        for (name, view) in st.tensors() {
            let data = to_f32(&name, &view)?;
            tensors.insert(
                canonical_name(&name),
                Tensor {
                    shape: view.shape().to_vec(),
                    data,
                },
            );
        }
        Ok(SafetensorsSource { tensors, metadata })
    }

    /// Read a `.safetensors` file.
    pub fn open(path: &std::path::Path) -> Result<SafetensorsSource, ConvertError> {
        let p = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|e| ConvertError::Io {
            path: p.clone(),
            msg: e.to_string(),
        })?;
        Self::from_bytes(&bytes, &p)
    }
}

impl TensorSource for SafetensorsSource {
    fn get(&self, name: &str, _expected: &[usize]) -> Result<Option<Tensor>, ConvertError> {
        Ok(self.tensors.get(name).cloned())
    }
    fn names(&self) -> Vec<String> {
        self.tensors.keys().cloned().collect()
    }
}

/// Deterministic pseudo-random weights for any requested name and shape (benchmarks and size studies of an
/// architecture without a checkpoint). Values are uniform in ±1/√fan_in, like PyTorch's default init; norm scales 1.
#[derive(Debug, Default)]
pub struct RandomSource {
    /// Seed.
    pub seed: u64,
}

impl RandomSource {
    /// A tensor for `name` with `shape`.
    pub fn make(&self, name: &str, shape: &[usize]) -> Tensor {
        let n: usize = shape.iter().product();
        let mut h: u64 = self.seed ^ 0x9E37_79B9_7F4A_7C15;
        for b in name.bytes() {
            h = (h ^ b as u64).wrapping_mul(0x100_0000_01B3);
        }
        let fan_in: usize = shape.iter().skip(1).product::<usize>().max(1);
        let bound = 1.0 / (fan_in as f32).sqrt();
        let norm_weight = name.contains("norm") && name.ends_with(".weight");
        let data = (0..n)
            .map(|_| {
                h ^= h << 13;
                h ^= h >> 7;
                h ^= h << 17;
                let u = (h >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0;
                if norm_weight {
                    1.0 + 0.1 * u
                } else {
                    u * bound
                }
            })
            .collect();
        Tensor {
            shape: shape.to_vec(),
            data,
        }
    }
}

impl TensorSource for RandomSource {
    fn get(&self, name: &str, expected: &[usize]) -> Result<Option<Tensor>, ConvertError> {
        Ok(Some(self.make(name, expected)))
    }
    fn names(&self) -> Vec<String> {
        Vec::new()
    }
}
