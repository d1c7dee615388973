//! The evaluation classifier of `models/eval/classifier.py` (`MnistCNN`, "ember-mnist-cnn-v1") in plain Rust, so
//! scripts/firmware.sh can check the digit the firmware drew without Python:
//!
//! ```text
//! conv1 1->32 3x3 pad 1, ReLU, maxpool 2      32x32 -> 16x16
//! conv2 32->64 3x3 pad 1, ReLU, maxpool 2     16x16 -> 8x8
//! flatten 4096 -> fc1 128, ReLU -> fc2 10     logits (dropout is training-only)
//! ```
//!
//! Input `[1, 32, 32]` in [-1, 1]; weights from `models/eval/classifier.safetensors` (PyTorch layouts: conv
//! `[out, in, 3, 3]`, linear `[out, in]`). Parity with PyTorch: the test below against
//! `classifier-golden.safetensors` (written by `models/eval/classifier_golden.py`).
use std::error::Error;
use std::path::Path;

use safetensors::{Dtype, SafeTensors};

/// Architecture tag the weights must carry (`ember.arch` metadata).
pub const ARCH: &str = "ember-mnist-cnn-v1";
/// Image side.
pub const SIDE: usize = 32;

/// The classifier's weights, f32.
pub struct MnistCnn {
    conv1_w: Vec<f32>,
    conv1_b: Vec<f32>,
    conv2_w: Vec<f32>,
    conv2_b: Vec<f32>,
    fc1_w: Vec<f32>,
    fc1_b: Vec<f32>,
    fc2_w: Vec<f32>,
    fc2_b: Vec<f32>,
}

/// The predicted digit, its softmax probability and the logits.
#[derive(Clone, Debug)]
pub struct Prediction {
    pub digit: usize,
    pub prob: f32,
    pub logits: [f32; 10],
}

fn tensor(st: &SafeTensors<'_>, name: &str, shape: &[usize]) -> Result<Vec<f32>, Box<dyn Error>> {
    let t = st.tensor(name).map_err(|e| format!("{name}: {e}"))?;
    if t.dtype() != Dtype::F32 || t.shape() != shape {
        return Err(format!(
            "{name}: {:?} {:?}, expected F32 {shape:?}",
            t.dtype(),
            t.shape()
        )
        .into());
    }
    Ok(t.data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect())
}

impl MnistCnn {
    /// Load `classifier.safetensors`, checking its architecture tag and every tensor's dtype and shape.
    pub fn load(path: &Path) -> Result<Self, Box<dyn Error>> {
        let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let (_, meta) = SafeTensors::read_metadata(&bytes)?;
        let arch = meta
            .metadata()
            .as_ref()
            .and_then(|m| m.get("ember.arch").cloned());
        if arch.as_deref().is_some_and(|a| a != ARCH) {
            return Err(
                format!("{}: architecture {arch:?}, expected {ARCH}", path.display()).into(),
            );
        }
        let st = SafeTensors::deserialize(&bytes)?;
        Ok(MnistCnn {
            conv1_w: tensor(&st, "conv1.weight", &[32, 1, 3, 3])?,
            conv1_b: tensor(&st, "conv1.bias", &[32])?,
            conv2_w: tensor(&st, "conv2.weight", &[64, 32, 3, 3])?,
            conv2_b: tensor(&st, "conv2.bias", &[64])?,
            fc1_w: tensor(&st, "fc1.weight", &[128, 64 * 8 * 8])?,
            fc1_b: tensor(&st, "fc1.bias", &[128])?,
            fc2_w: tensor(&st, "fc2.weight", &[10, 128])?,
            fc2_b: tensor(&st, "fc2.bias", &[10])?,
        })
    }

    /// Logits of one image `[1, 32, 32]` (row-major, values in [-1, 1]).
    pub fn logits(&self, image: &[f32]) -> Result<[f32; 10], Box<dyn Error>> {
        if image.len() != SIDE * SIDE {
            return Err(
                format!("image has {} values, expected {}", image.len(), SIDE * SIDE).into(),
            );
        }
        let a = conv3x3_relu(image, 1, SIDE, &self.conv1_w, &self.conv1_b);
        let a = maxpool2(&a, 32, SIDE);
        let a = conv3x3_relu(&a, 32, SIDE / 2, &self.conv2_w, &self.conv2_b);
        let a = maxpool2(&a, 64, SIDE / 2);
        let h: Vec<f32> = linear(&a, &self.fc1_w, &self.fc1_b)
            .into_iter()
            .map(|v| v.max(0.0))
            .collect();
        let out = linear(&h, &self.fc2_w, &self.fc2_b);
        let mut logits = [0.0f32; 10];
        logits.copy_from_slice(&out);
        Ok(logits)
    }

    /// Argmax and softmax probability of one image; values are clamped to [-1, 1] first, as
    /// `models/eval/table.py` does with raw samples.
    pub fn predict(&self, image: &[f32]) -> Result<Prediction, Box<dyn Error>> {
        if let Some(i) = image.iter().position(|v| !v.is_finite()) {
            return Err(format!("image value {i} is not finite").into());
        }
        let x: Vec<f32> = image.iter().map(|v| v.clamp(-1.0, 1.0)).collect();
        let logits = self.logits(&x)?;
        let (digit, &top) = logits
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .ok_or("no logits")?;
        let sum: f64 = logits.iter().map(|&l| f64::from(l - top).exp()).sum();
        Ok(Prediction {
            digit,
            prob: (1.0 / sum) as f32,
            logits,
        })
    }
}

/// 3×3 convolution, padding 1, stride 1, then ReLU: `x [cin, n, n]` -> `[cout, n, n]`; accumulates in f64.
fn conv3x3_relu(x: &[f32], cin: usize, n: usize, w: &[f32], b: &[f32]) -> Vec<f32> {
    let cout = b.len();
    let mut y = vec![0.0f32; cout * n * n];
    for o in 0..cout {
        for r in 0..n {
            for c in 0..n {
                let mut acc = f64::from(b[o]);
                for i in 0..cin {
                    for kr in 0..3 {
                        let rr = r as isize + kr as isize - 1;
                        if rr < 0 || rr >= n as isize {
                            continue;
                        }
                        for kc in 0..3 {
                            let cc = c as isize + kc as isize - 1;
                            if cc < 0 || cc >= n as isize {
                                continue;
                            }
                            let xv = x[(i * n + rr as usize) * n + cc as usize];
                            let wv = w[((o * cin + i) * 3 + kr) * 3 + kc];
                            acc += f64::from(xv) * f64::from(wv);
                        }
                    }
                }
                y[(o * n + r) * n + c] = (acc as f32).max(0.0);
            }
        }
    }
    y
}

/// 2×2 max pooling, stride 2: `[ch, n, n]` -> `[ch, n/2, n/2]`.
fn maxpool2(x: &[f32], ch: usize, n: usize) -> Vec<f32> {
    let h = n / 2;
    let mut y = vec![0.0f32; ch * h * h];
    for k in 0..ch {
        for r in 0..h {
            for c in 0..h {
                let at = |dr: usize, dc: usize| x[(k * n + 2 * r + dr) * n + 2 * c + dc];
                y[(k * h + r) * h + c] = at(0, 0).max(at(0, 1)).max(at(1, 0)).max(at(1, 1));
            }
        }
    }
    y
}

/// `y = W x + b` with `W [out, in]` row-major; accumulates in f64.
fn linear(x: &[f32], w: &[f32], b: &[f32]) -> Vec<f32> {
    b.iter()
        .zip(w.chunks_exact(x.len()))
        .map(|(&bias, row)| {
            let dot: f64 = row
                .iter()
                .zip(x)
                .map(|(&a, &v)| f64::from(a) * f64::from(v))
                .sum();
            (f64::from(bias) + dot) as f32
        })
        .collect()
}

/// An MNIST digit (28×28 bytes) as the classifier's input: padded by 2 px of background and scaled to [-1, 1]
/// exactly as `models/train/data.py` does (`x / 127.5 - 1` in f32).
#[cfg(test)]
fn mnist_input(raw: &[u8]) -> Vec<f32> {
    let mut x = vec![0.0f32; SIDE * SIDE];
    for (r, row) in raw.chunks_exact(28).enumerate().take(28) {
        for (c, &b) in row.iter().enumerate() {
            x[(r + 2) * SIDE + c + 2] = f32::from(b);
        }
    }
    x.iter().map(|&v| v / 127.5f32 - 1.0f32).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn here() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
    }

    /// The Rust forward against PyTorch's logits for the held-out digits in `classifier-golden.safetensors`:
    /// every logit within 1e-4 of the image's largest |logit|, and the same argmax.
    #[test]
    fn matches_pytorch_logits() {
        let cnn = MnistCnn::load(&here().join("../../models/eval/classifier.safetensors")).unwrap();
        let bytes = std::fs::read(here().join("classifier-golden.safetensors")).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let images = st.tensor("images").unwrap();
        let labels = st.tensor("labels").unwrap();
        let golden = tensor(&st, "logits", &[labels.data().len(), 10]).unwrap();
        let n = labels.data().len();
        assert!(n >= 8, "golden file holds {n} digits");
        let mut worst = 0.0f32;
        for (k, raw) in images.data().chunks_exact(28 * 28).enumerate() {
            let want = &golden[10 * k..10 * k + 10];
            let got = cnn.logits(&mnist_input(raw)).unwrap();
            let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            for (g, w) in got.iter().zip(want) {
                let rel = (g - w).abs() / scale;
                worst = worst.max(rel);
                assert!(
                    rel <= 1e-4,
                    "digit {k}: logit {g} vs PyTorch {w} (rel {rel:.2e})"
                );
            }
            let p = cnn.predict(&mnist_input(raw)).unwrap();
            assert_eq!(p.digit, usize::from(labels.data()[k]), "digit {k}");
            assert!(p.prob > 0.0 && p.prob <= 1.0);
        }
        println!("{n} held-out digits: Rust logits within {worst:.2e} (relative) of PyTorch's");
    }

    #[test]
    fn rejects_bad_images() {
        let cnn = MnistCnn::load(&here().join("../../models/eval/classifier.safetensors")).unwrap();
        assert!(cnn.predict(&[0.0; 10]).is_err());
        let mut x = vec![0.0f32; SIDE * SIDE];
        x[7] = f32::NAN;
        assert!(cnn.predict(&x).is_err());
    }
}
