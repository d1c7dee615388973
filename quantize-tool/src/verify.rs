//! `quantize-tool verify`: how far a quantized blob strays from its float reference.
//!
//! Three measurements, all on the sampler's real trajectory:
//! 1. **Per-layer SNR**: the reference model is sampled for a few seeds and every U-Net input along the way (timestep,
//!    sample, class label) is recorded. Each recorded input is then run through *both* blobs, and every labelled layer
//!    (convolution, linear layer, group norm, attention core; see [`layer_label`]) is compared output against output:
//!    `SNR = 10·log10(Σ ref² / Σ (ref − q)²)` over all elements and all inputs. Each layer therefore sees the
//!    quantized model's own (already perturbed) input, so the SNR measures the error accumulated up to that layer.
//! 2. **Final-sample PSNR**: both blobs sample the same seeds ([`quant::final_samples`]); PSNR pooled and per seed.
//! 3. **Sizes**: blob and arena bytes of both.

use std::collections::BTreeMap;

use ember_core::format::{DType, NONE};
use ember_core::op::Op;
use ember_core::rng::Pcg32;
use ember_core::sampler::driver::{
    arena_bytes, concat_len, Conditioning, Control, Init, Sampler, SamplerConfig,
};
use ember_core::{BufView, Model};

use crate::error::ConvertError;
use crate::{inspect, quant, AlignedBytes};

/// Options of [`verify`].
#[derive(Clone, Debug)]
pub struct VerifyOptions {
    /// Seeds sampled (sample `i` uses seed `seed + i` and class [`quant::class_of`]`(i)`).
    pub seeds: usize,
    /// First seed.
    pub seed: u64,
    /// Sampler (`None`: the reference blob's default, [`inspect::default_sampler`]).
    pub sampler: Option<SamplerConfig>,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        VerifyOptions {
            seeds: 4,
            seed: 1,
            sampler: None,
        }
    }
}

/// One layer's comparison.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerSnr {
    /// The layer's label ([`layer_label`]).
    pub label: String,
    /// Op index in the reference blob.
    pub ref_op: u32,
    /// Op index in the quantized blob.
    pub q_op: u32,
    /// Whether the quantized layer writes an int8 buffer.
    pub is_i8: bool,
    /// Whether the quantized layer computes in int8 (int8 weights or activations in); an int8 convolution can
    /// still write a float buffer (e.g. `conv_out`, the model's output).
    pub int8_math: bool,
    /// `Σ ref²` over its outputs.
    pub signal: f64,
    /// `Σ (ref − q)²` over its outputs.
    pub noise: f64,
    /// `10·log10(signal / noise)` in dB (`+∞` when the outputs are identical).
    pub snr_db: f64,
}

/// Sizes of one blob.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sizes {
    /// Blob bytes (flash).
    pub blob: usize,
    /// Arena bytes of the U-Net alone ([`Model::arena_bytes`]).
    pub arena: usize,
    /// Arena bytes of the sampler run with this model (U-Net arena plus the sampler's state).
    pub sampler_arena: usize,
}

/// What [`verify`] found.
#[derive(Clone, Debug)]
pub struct VerifyReport {
    /// The sampler both models ran.
    pub sampler: SamplerConfig,
    /// Seeds `(seed, sample index)` compared.
    pub seeds: Vec<(u64, usize)>,
    /// U-Net passes recorded on the reference trajectory (and replayed through both blobs).
    pub passes: usize,
    /// Per labelled layer of the reference blob, in op order.
    pub layers: Vec<LayerSnr>,
    /// Labels of the reference blob that the quantized blob does not have.
    pub unmatched: Vec<String>,
    /// Final-sample PSNR (quantized vs reference, all seeds pooled), dB.
    pub psnr: f64,
    /// Final-sample PSNR per seed, dB, in seed order.
    pub seed_psnr: Vec<f64>,
    /// Sizes of the quantized blob.
    pub q_sizes: Sizes,
    /// Sizes of the reference blob.
    pub f_sizes: Sizes,
}

impl VerifyReport {
    /// The `n` layers with the lowest SNR, worst first.
    pub fn worst(&self, n: usize) -> Vec<&LayerSnr> {
        let mut v: Vec<&LayerSnr> = self.layers.iter().collect();
        v.sort_by(|a, b| a.snr_db.total_cmp(&b.snr_db));
        v.truncate(n);
        v
    }
}

/// A runtime error of one of the two blobs (`what`: which), e.g. a sampler set-up the model cannot run.
fn core_err(what: &'static str) -> impl Fn(ember_core::Error) -> ConvertError {
    move |err| ConvertError::BadInput {
        path: what.into(),
        msg: err.to_string(),
    }
}

const Q: &str = "quantized blob";
const F: &str = "reference blob";

fn bad(msg: impl Into<String>) -> ConvertError {
    ConvertError::BadInput {
        path: "verify".into(),
        msg: msg.into(),
    }
}

/// `None` when `q` and `f` describe the same model (channels, size, classes), else the first difference.
pub fn model_mismatch(q: &Model<'_>, f: &Model<'_>) -> Option<String> {
    let (a, b) = (q.info(), f.info());
    [
        ("in_channels", a.in_channels, b.in_channels),
        ("out_channels", a.out_channels, b.out_channels),
        ("height", a.height, b.height),
        ("width", a.width, b.width),
        ("num_classes", a.num_classes, b.num_classes),
    ]
    .into_iter()
    .find(|&(_, x, y)| x != y)
    .map(|(what, x, y)| format!("{what} {x} vs {y} in the reference"))
}

/// The op that last wrote buffer `b` before op `before`, looking through `Quantize` / `Dequantize` copies.
fn producer(m: &Model<'_>, mut b: u32, before: u32) -> Option<(u32, Op)> {
    let mut end = before;
    loop {
        let (j, op) = (0..end)
            .rev()
            .filter_map(|j| m.op(j).ok().map(|o| (j, o)))
            .find(|(_, o)| out_of(o) == Some(b))?;
        match op {
            Op::Quantize { input, .. } | Op::Dequantize { input, .. } => {
                b = input;
                end = j;
            }
            _ => return Some((j, op)),
        }
    }
}

/// The buffer an op writes as its result (`None` for in-place ops).
fn out_of(op: &Op) -> Option<u32> {
    match *op {
        Op::TimeProj { out, .. }
        | Op::Linear { out, .. }
        | Op::Conv2d { out, .. }
        | Op::GroupNorm { out, .. }
        | Op::Concat { out, .. }
        | Op::AvgPool2 { out, .. }
        | Op::Upsample2 { out, .. }
        | Op::Attention { out, .. }
        | Op::Quantize { out, .. }
        | Op::Dequantize { out, .. } => Some(out),
        Op::Embedding { .. } | Op::Affine { .. } | Op::Add { .. } => None,
    }
}

/// The label of op `i` of a blob, as [`quant::op_label`] gives it for a graph: a convolution's or linear layer's
/// weight name without `.weight`, a group norm's gamma name, an attention core's query projection with `to_q`
/// replaced by `attn`. `None` for the other ops (and for layers whose names the blob does not store).
pub fn layer_label(m: &Model<'_>, i: u32) -> Option<String> {
    let name = |t: u32| {
        m.tensor_name(t)
            .filter(|n| !n.is_empty())
            .map(|n| n.trim_end_matches(".weight").to_string())
    };
    match m.op(i).ok()? {
        Op::Conv2d { weight, .. } | Op::Linear { weight, .. } => name(weight),
        Op::GroupNorm { gamma, .. } => name(gamma),
        Op::Attention { q, .. } => match producer(m, q, i)? {
            (_, Op::Conv2d { weight, .. } | Op::Linear { weight, .. }) => {
                name(weight).map(|n| n.replace("to_q", "attn"))
            }
            _ => None,
        },
        _ => None,
    }
}

/// Whether op `i` of `m` computes in int8 (a linear layer: has int8 weights; its vector math stays f32).
fn int8_math(m: &Model<'_>, i: u32) -> bool {
    let buf_i8 = |b: u32| m.buffer(b).is_ok_and(|e| e.dtype == DType::I8);
    match m.op(i) {
        Ok(Op::Conv2d { scratch, .. }) => scratch != NONE,
        Ok(Op::Linear { weight, .. }) => m.tensor(weight).is_ok_and(|t| t.dtype == DType::I8),
        Ok(Op::GroupNorm { input, .. }) => buf_i8(input),
        Ok(Op::Attention { q, .. }) => buf_i8(q),
        _ => false,
    }
}

/// Every labelled op of `m`: `(op, label, output buffer)`.
fn labelled(m: &Model<'_>, what: &'static str) -> Result<Vec<(u32, String, u32)>, ConvertError> {
    let mut v = Vec::new();
    for i in 0..m.n_ops() {
        let op = m.op(i).map_err(core_err(what))?;
        if let (Some(l), Some(out)) = (layer_label(m, i), out_of(&op)) {
            v.push((i, l, out));
        }
    }
    Ok(v)
}

/// One seed's outcome: passes recorded, `(signal, noise)` per layer.
type SeedAcc = (usize, Vec<(f64, f64)>);

/// One recorded U-Net input.
struct Pass {
    t: f32,
    sample: Vec<f32>,
    label: Option<u32>,
}

/// `b` as f32 (int8 dequantized element-wise with its one or two scales).
fn to_f32(v: BufView<'_>, dst: &mut Vec<f32>) {
    dst.clear();
    match v {
        BufView::F32(x) => dst.extend_from_slice(x),
        BufView::I8(x, q) => dst.extend(x.iter().enumerate().map(|(e, &v)| f32::from(v) * q.at(e))),
        BufView::I32(x) => dst.extend(x.iter().map(|&v| v as f32)),
    }
}

/// Compare quantized blob `q` with float reference `f` (see the module docs). Both must describe the same model
/// ([`model_mismatch`]) and be able to run the sampler.
pub fn verify(
    q: &Model<'_>,
    f: &Model<'_>,
    opts: &VerifyOptions,
) -> Result<VerifyReport, ConvertError> {
    if let Some(m) = model_mismatch(q, f) {
        return Err(bad(format!("the blobs describe different models: {m}")));
    }
    if opts.seeds == 0 {
        return Err(bad("at least one seed is needed"));
    }
    if f.schedule().is_none() {
        return Err(bad(
            "the reference blob has no noise schedule: it cannot be sampled",
        ));
    }
    let cfg = opts.sampler.unwrap_or_else(|| inspect::default_sampler(f));
    let sizes = |m: &Model<'_>, what: &'static str| -> Result<Sizes, ConvertError> {
        Ok(Sizes {
            blob: m.blob_len(),
            arena: m.arena_bytes(),
            sampler_arena: arena_bytes(m, &cfg).map_err(core_err(what))?,
        })
    };
    let (q_sizes, f_sizes) = (sizes(q, Q)?, sizes(f, F)?);

    // Layers, matched by label.
    let f_layers = labelled(f, F)?;
    let q_by_label: BTreeMap<String, (u32, u32)> = labelled(q, Q)?
        .into_iter()
        .map(|(i, l, out)| (l, (i, out)))
        .collect();
    let mut layers = Vec::new();
    let mut unmatched = Vec::new();
    for (i, l, _) in &f_layers {
        match q_by_label.get(l) {
            Some(&(qi, qout)) => layers.push(LayerSnr {
                label: l.clone(),
                ref_op: *i,
                q_op: qi,
                is_i8: q.buffer(qout).map_err(core_err(Q))?.dtype == DType::I8,
                int8_math: int8_math(q, qi),
                signal: 0.0,
                noise: 0.0,
                snr_db: f64::INFINITY,
            }),
            None => unmatched.push(l.clone()),
        }
    }
    // op index -> (layer, output buffer), per model.
    let mut f_slot: BTreeMap<u32, (usize, u32)> = BTreeMap::new();
    let mut q_slot: BTreeMap<u32, (usize, u32)> = BTreeMap::new();
    for (k, lay) in layers.iter().enumerate() {
        let fout = f_layers
            .iter()
            .find(|(i, _, _)| *i == lay.ref_op)
            .map_or(NONE, |x| x.2);
        f_slot.insert(lay.ref_op, (k, fout));
        q_slot.insert(lay.q_op, (k, q_by_label[&lay.label].1));
    }

    let seeds: Vec<(u64, usize)> = (0..opts.seeds).map(|i| (opts.seed + i as u64, i)).collect();
    let guided = cfg.guidance_scale != 1.0;
    let null = f.info().null_class();

    // Per seed: record the reference trajectory's U-Net inputs, replay each through both blobs.
    let nl = layers.len();
    let per_seed = |seed: u64, i: usize| -> Result<SeedAcc, ConvertError> {
        let class = quant::class_of(f, i);
        let mut passes: Vec<Pass> = Vec::new();
        {
            let mut arena = AlignedBytes::zeroed(f_sizes.sampler_arena);
            // Same extra input channels as `quant::final_samples` (seeded noise; no real conditioning images).
            let n_extra = concat_len(f, &cfg).map_err(core_err(F))?;
            let mut rng = Pcg32::new(seed, 7);
            let extra: Vec<f32> = (0..n_extra).map(|_| 0.5 * rng.normal_f32()).collect();
            let cond = Conditioning {
                class,
                concat: (!extra.is_empty()).then_some(&extra[..]),
                ..Conditioning::default()
            };
            let mut s = Sampler::new(f, arena.as_mut_slice(), cfg, cond, Init::Seed(seed))
                .map_err(core_err(F))?;
            let mut observe = |t: f32, op: u32, _b: u32, v: BufView<'_>| {
                if op != NONE {
                    return;
                }
                let mut sample = Vec::new();
                to_f32(v, &mut sample);
                // With guidance every timestep runs the conditional pass, then the unconditional one.
                let label = if guided && passes.len() % 2 == 1 {
                    null
                } else {
                    class
                };
                passes.push(Pass { t, sample, label });
            };
            s.run_observed(&mut |_| Control::Continue, &mut observe)
                .map_err(core_err(F))?;
        }
        let mut acc = vec![(0f64, 0f64); nl];
        let mut fa = AlignedBytes::zeroed(f.arena_bytes());
        let mut qa = AlignedBytes::zeroed(q.arena_bytes());
        let mut fs = f.bind(fa.as_mut_slice()).map_err(core_err(F))?;
        let mut qs = q.bind(qa.as_mut_slice()).map_err(core_err(Q))?;
        let mut out = vec![0f32; f.info().output_len()];
        let mut refs: Vec<Vec<f32>> = vec![Vec::new(); nl];
        let mut tmp = Vec::new();
        for p in &passes {
            let mut obs_f = |_t: f32, op: u32, b: u32, v: BufView<'_>| {
                if let Some(&(k, out)) = f_slot.get(&op) {
                    if out == b {
                        to_f32(v, &mut refs[k]);
                    }
                }
            };
            fs.forward_observed(&p.sample, p.t, p.label, &mut out, &mut obs_f)
                .map_err(core_err(F))?;
            let mut mismatch = None;
            let mut obs_q = |_t: f32, op: u32, b: u32, v: BufView<'_>| {
                if let Some(&(k, out)) = q_slot.get(&op) {
                    if out != b {
                        return;
                    }
                    to_f32(v, &mut tmp);
                    let r = &refs[k];
                    if r.len() != tmp.len() {
                        mismatch = Some(k);
                        return;
                    }
                    let (mut s, mut n) = (0f64, 0f64);
                    for (&x, &y) in r.iter().zip(&tmp) {
                        let (x, y) = (f64::from(x), f64::from(y));
                        s += x * x;
                        n += (x - y) * (x - y);
                    }
                    acc[k].0 += s;
                    acc[k].1 += n;
                }
            };
            qs.forward_observed(&p.sample, p.t, p.label, &mut out, &mut obs_q)
                .map_err(core_err(Q))?;
            if let Some(k) = mismatch {
                return Err(bad(format!(
                    "layer `{}` has {} outputs in the reference and a different number in the quantized blob",
                    layers[k].label,
                    refs[k].len()
                )));
            }
        }
        Ok((passes.len(), acc))
    };
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(seeds.len());
    let chunks: Vec<&[(u64, usize)]> = seeds.chunks(seeds.len().div_ceil(threads)).collect();
    let results: Vec<Result<Vec<SeedAcc>, ConvertError>> = std::thread::scope(|sc| {
        let hs: Vec<_> = chunks
            .iter()
            .map(|chunk| {
                let per_seed = &per_seed;
                sc.spawn(move || chunk.iter().map(|&(s, i)| per_seed(s, i)).collect())
            })
            .collect();
        hs.into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(bad("a verification thread panicked")))
            })
            .collect()
    });
    let mut passes = 0;
    for r in results {
        for (n, acc) in r? {
            passes += n;
            for (l, (s, e)) in layers.iter_mut().zip(acc) {
                l.signal += s;
                l.noise += e;
            }
        }
    }
    for l in &mut layers {
        l.snr_db = if l.noise == 0.0 {
            f64::INFINITY
        } else {
            10.0 * (l.signal / l.noise).log10()
        };
    }

    // Final samples.
    let fr = quant::final_samples(f, &cfg, &seeds)?;
    let qr = quant::final_samples(q, &cfg, &seeds)?;
    let psnr = quant::psnr(&fr, &qr);
    let seed_psnr = fr
        .iter()
        .zip(&qr)
        .map(|(a, b)| quant::psnr(std::slice::from_ref(a), std::slice::from_ref(b)))
        .collect();
    Ok(VerifyReport {
        sampler: cfg,
        seeds,
        passes,
        layers,
        unmatched,
        psnr,
        seed_psnr,
        q_sizes,
        f_sizes,
    })
}
