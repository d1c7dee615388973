//! int8 post-training quantization (`convert --dtype int8`).
//!
//! Three steps, all on the host:
//! 1. **Calibration** ([`calibrate`]): the float model runs through the sampler and timesteps the blob will use, on
//!    N seeded samples; every activation buffer's `|x|` goes into a log-spaced histogram per timestep, and the
//!    clipping value is a percentile of it (default 99.99 %, [`QuantOptions::percentile`]). Scale = clip / 127.
//! 2. **Rewrite** ([`quantize_graph`]): convolutions, group norms and attention cores run on int8 activations with
//!    int8 per-output-channel weights; a skip concatenation keeps one scale per branch; `Quantize` / `Dequantize`
//!    ops are inserted only where int8 and float parts meet. Layers kept in float store f16 weights.
//! 3. **Mixed precision** ([`search`]): the whole sampling is run for a few seeds with the int8 blob and compared
//!    with the float blob (final-sample PSNR). Below the target, each layer's sensitivity is measured with only it
//!    in int8, and the worst layers go back to float, one at a time, until the target is met.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;

use ember_core::format::{DType, NONE};
use ember_core::op::Op;
use ember_core::rng::Pcg32;
use ember_core::sampler::driver::{
    arena_bytes, concat_len, Conditioning, Control, Init, Sampler, SamplerConfig,
};
use ember_core::{BufView, Model};

use crate::error::ConvertError;
use crate::lower::{Graph, NamedTensor, QuantTable};
use crate::source::Tensor;
use crate::AlignedBytes;

/// Options of the int8 conversion.
#[derive(Clone, Debug)]
pub struct QuantOptions {
    /// Calibration samples (`--calibrate N`).
    pub samples: usize,
    /// Percentile of `|x|` used as the clipping value, in percent.
    pub percentile: f64,
    /// Layers to keep in float: an op whose label contains any of these substrings.
    pub keep_float: Vec<String>,
    /// Final-sample PSNR target of the mixed-precision search, dB (0 disables the search).
    pub target_psnr: f64,
    /// Seeds the mixed-precision search compares over.
    pub eval_samples: usize,
    /// Sampler used for calibration and evaluation (`None`: the blob's default).
    pub sampler: Option<SamplerConfig>,
    /// First seed (sample `i` uses `seed + i`; evaluation seeds follow the calibration seeds).
    pub seed: u64,
    /// Draw a progress bar on stderr.
    pub progress: bool,
}

impl Default for QuantOptions {
    fn default() -> Self {
        QuantOptions {
            samples: 32,
            percentile: 99.99,
            keep_float: Vec::new(),
            target_psnr: 30.0,
            eval_samples: 4,
            sampler: None,
            seed: 1_000_000,
            progress: false,
        }
    }
}

const BINS_PER_OCTAVE: f64 = 32.0;
const LOW_OCTAVE: f64 = -40.0;
const N_BINS: usize = 80 * 32;

/// Log-spaced histogram of `|x|` (32 bins per octave from 2^-40 to 2^40, about 2 % wide).
#[derive(Clone, Debug)]
struct Hist {
    counts: Vec<u64>,
    total: u64,
    max: f32,
}

impl Hist {
    fn new() -> Hist {
        Hist {
            counts: vec![0; N_BINS],
            total: 0,
            max: 0.0,
        }
    }
    fn add(&mut self, x: &[f32]) {
        for &v in x {
            let a = v.abs();
            if !a.is_finite() {
                continue;
            }
            self.total += 1;
            if a == 0.0 {
                self.counts[0] += 1;
                continue;
            }
            self.max = self.max.max(a);
            let bin = ((f64::from(a).log2() - LOW_OCTAVE) * BINS_PER_OCTAVE).floor();
            self.counts[(bin.max(0.0) as usize).min(N_BINS - 1)] += 1;
        }
    }
    /// Smallest bin upper edge below which `p` percent of the values lie (never above the maximum seen).
    fn percentile(&self, p: f64) -> f32 {
        let need = (self.total as f64 * p / 100.0).ceil() as u64;
        let mut acc = 0u64;
        for (k, &c) in self.counts.iter().enumerate() {
            acc += c;
            if acc >= need && acc > 0 {
                let edge = ((k as f64 + 1.0) / BINS_PER_OCTAVE + LOW_OCTAVE).exp2() as f32;
                return edge.min(self.max);
            }
        }
        self.max
    }
}

/// Calibrated clipping values: `clip[row][buffer]` for each calibration timestep.
#[derive(Clone, Debug, PartialEq)]
pub struct Calibration {
    /// Forward-call timesteps, in the order they were first seen.
    pub timesteps: Vec<f32>,
    /// `|x|` clipping value per row and buffer (0 for buffers never written, e.g. scratch).
    pub clip: Vec<Vec<f32>>,
}

impl Calibration {
    /// int8 scale of buffer `b` in row `r`.
    pub fn scale(&self, r: usize, b: u32) -> f32 {
        (self.clip[r][b as usize] / 127.0).max(1e-12)
    }
}

/// The classes sample `i` asks for: `i mod` the real classes (the null class excluded); `None` for unconditional
/// models.
pub fn class_of(m: &Model<'_>, i: usize) -> Option<u32> {
    let info = m.info();
    if info.num_classes == 0 {
        return None;
    }
    let real = info.num_classes - info.null_class().map_or(0, |_| 1);
    let mut c = (i as u32) % real.max(1);
    if let Some(null) = info.null_class() {
        if c >= null {
            c += 1;
        }
    }
    Some(c)
}

/// Extra input channels for a concat-conditioned model (e.g. super-resolution): the calibration has no real
/// conditioning images, so it uses seeded noise of half the unit variance (documented limitation).
fn concat_input(m: &Model<'_>, cfg: &SamplerConfig, seed: u64) -> Result<Vec<f32>, ConvertError> {
    let n = concat_len(m, cfg).map_err(sampler_err)?;
    let mut rng = Pcg32::new(seed, 7);
    Ok((0..n).map(|_| 0.5 * rng.normal_f32()).collect())
}

fn sampler_err(e: ember_core::Error) -> ConvertError {
    ConvertError::Invalid { err: e }
}

struct Bar {
    on: bool,
    what: &'static str,
    total: usize,
}

impl Bar {
    fn show(&self, done: usize) {
        if !self.on {
            return;
        }
        let w = 30;
        let fill = (done * w).checked_div(self.total).unwrap_or(w).min(w);
        eprint!(
            "\r{:<12} [{}{}] {done}/{}",
            self.what,
            "#".repeat(fill),
            " ".repeat(w - fill),
            self.total
        );
        if done == self.total {
            eprintln!();
        }
        let _ = std::io::stderr().flush();
    }
}

/// Run the float model through the sampler for `opts.samples` seeds and record every buffer's range per timestep.
pub fn calibrate(
    m: &Model<'_>,
    cfg: &SamplerConfig,
    opts: &QuantOptions,
) -> Result<Calibration, ConvertError> {
    let nb = m.n_buffers() as usize;
    let mut skip = vec![false; nb];
    for i in 0..m.n_ops() {
        match m.op(i).map_err(sampler_err)? {
            Op::Attention { scores, .. } => skip[scores as usize] = true,
            Op::Conv2d { scratch, .. } if scratch != NONE => skip[scratch as usize] = true,
            _ => {}
        }
    }
    let mut rows: Vec<f32> = Vec::new();
    let mut hists: Vec<Vec<Hist>> = Vec::new();
    let mut arena = AlignedBytes::zeroed(arena_bytes(m, cfg).map_err(sampler_err)?);
    let bar = Bar {
        on: opts.progress,
        what: "calibrating",
        total: opts.samples,
    };
    bar.show(0);
    for i in 0..opts.samples {
        let extra = concat_input(m, cfg, opts.seed + i as u64)?;
        let cond = Conditioning {
            class: class_of(m, i),
            concat: (!extra.is_empty()).then_some(&extra[..]),
            ..Conditioning::default()
        };
        let mut s = Sampler::new(
            m,
            arena.as_mut_slice(),
            *cfg,
            cond,
            Init::Seed(opts.seed + i as u64),
        )
        .map_err(sampler_err)?;
        // The reference kernels: float SIMD tiers round differently, and the blob must not depend on the machine.
        s.set_kernels(&ember_kernels::registry::GENERIC);
        let mut observe = |t: f32, _op: u32, b: u32, v: BufView<'_>| {
            let BufView::F32(x) = v else { return };
            if skip[b as usize] {
                return;
            }
            let r = match rows.iter().position(|&u| u.to_bits() == t.to_bits()) {
                Some(r) => r,
                None => {
                    rows.push(t);
                    hists.push(vec![Hist::new(); nb]);
                    rows.len() - 1
                }
            };
            hists[r][b as usize].add(x);
        };
        s.run_observed(&mut |_| Control::Continue, &mut observe)
            .map_err(sampler_err)?;
        bar.show(i + 1);
    }
    let clip = hists
        .iter()
        .map(|row| row.iter().map(|h| h.percentile(opts.percentile)).collect())
        .collect();
    Ok(Calibration {
        timesteps: rows,
        clip,
    })
}

/// The label of op `i` used by `--keep-float` and the reports: its weight's module path (`down_blocks.0.resnets.1.conv1`),
/// `….attn` for an attention core (named after its query projection).
pub fn op_label(g: &Graph, i: usize) -> String {
    let name = |t: u32| {
        g.tensors[t as usize]
            .name
            .trim_end_matches(".weight")
            .to_string()
    };
    match g.ops[i] {
        Op::Conv2d { weight, .. } | Op::Linear { weight, .. } => name(weight),
        Op::GroupNorm { gamma, .. } => name(gamma),
        Op::Attention { q, .. } => g
            .ops
            .iter()
            .find_map(|o| match *o {
                Op::Conv2d { out, weight, .. } if out == q => Some(name(weight)),
                _ => None,
            })
            .map(|n| n.replace("to_q", "attn"))
            .unwrap_or_else(|| format!("attention#{i}")),
        ref o => format!("{}#{i}", o.name()),
    }
}

/// Ops that can run in int8 (the units of the mixed-precision choice): convolutions, group norms and attention
/// cores on int8 activations, linear layers with int8 weights (their vector activations stay f32).
pub fn int8_units(g: &Graph) -> Vec<usize> {
    (0..g.ops.len())
        .filter(|&i| {
            matches!(
                g.ops[i],
                Op::Conv2d { .. } | Op::GroupNorm { .. } | Op::Attention { .. } | Op::Linear { .. }
            )
        })
        .collect()
}

struct Rewriter<'g> {
    g: Graph,
    orig: &'g Graph,
    cal: &'g Calibration,
    /// For every buffer of the new graph: scales per row.
    scales: Vec<Vec<(f32, f32)>>,
    converted: BTreeMap<(u32, bool), u32>,
}

impl Rewriter<'_> {
    fn new_buf(&mut self, n: u32, dtype: DType, split: u32, scales: Vec<(f32, f32)>) -> u32 {
        self.g.buffers.push(n);
        self.g.dtypes.push(dtype);
        self.g.splits.push(split);
        self.scales.push(scales);
        (self.g.buffers.len() - 1) as u32
    }
    fn zeros(&self) -> Vec<(f32, f32)> {
        vec![(0.0, 0.0); self.cal.timesteps.len()]
    }
    fn cal_scales(&self, b: u32) -> Vec<(f32, f32)> {
        (0..self.cal.timesteps.len())
            .map(|r| {
                let s = self.cal.scale(r, b);
                (s, s)
            })
            .collect()
    }
    /// Make original buffer `b` (produced in `dtype`) int8 with its calibrated scale.
    fn set_i8(&mut self, b: u32) {
        self.g.dtypes[b as usize] = DType::I8;
        self.scales[b as usize] = self.cal_scales(b);
    }
    /// An int8 view of `b`: itself, or a quantized copy (one scale).
    fn need_i8(&mut self, b: u32) -> u32 {
        if b == NONE || self.g.dtype(b) == DType::I8 {
            return b;
        }
        if let Some(&c) = self.converted.get(&(b, true)) {
            return c;
        }
        let n = self.g.buffers[b as usize];
        let sc = self.scale_source(b);
        let c = self.new_buf(n, DType::I8, 0, sc);
        self.g.ops.push(Op::Quantize {
            input: b,
            out: c,
            n,
        });
        self.converted.insert((b, true), c);
        c
    }
    /// Scales for a quantized copy of float buffer `b` (its calibration; a converted copy maps to its source).
    fn scale_source(&self, b: u32) -> Vec<(f32, f32)> {
        if (b as usize) < self.orig.buffers.len() {
            self.cal_scales(b)
        } else {
            self.zeros()
        }
    }
    /// A float view of `b`: itself, or a dequantized copy.
    fn need_f32(&mut self, b: u32) -> u32 {
        if b == NONE || self.g.dtype(b) != DType::I8 {
            return b;
        }
        if let Some(&c) = self.converted.get(&(b, false)) {
            return c;
        }
        let n = self.g.buffers[b as usize];
        let split = self.g.split(b);
        let plane = if split == 0 { n } else { gcd(split, n) };
        let z = self.zeros();
        let c = self.new_buf(n, DType::F32, 0, z);
        self.g.ops.push(Op::Dequantize {
            input: b,
            out: c,
            n,
            plane,
        });
        self.converted.insert((b, false), c);
        c
    }
    /// Replace tensor `t` by its int8 per-output-channel quantization (and append the scales).
    fn quantize_weight(&mut self, t: u32) {
        let src = &self.orig.tensors[t as usize];
        let cout = src.tensor.shape[0];
        let mut q = vec![0i8; src.tensor.data.len()];
        let mut scales = vec![0f32; cout];
        ember_kernels::quant::quantize_weights_per_channel(
            &src.tensor.data,
            cout,
            &mut q,
            &mut scales,
        );
        let s_idx = self.g.tensors.len() as u32;
        self.g.tensors.push(NamedTensor {
            name: format!("{}.scale", src.name),
            tensor: Tensor {
                shape: vec![cout],
                data: scales,
            },
            store: Some(DType::F32),
            quant: NONE,
        });
        let dst = &mut self.g.tensors[t as usize];
        dst.tensor.data = q.iter().map(|&v| f32::from(v)).collect();
        dst.store = Some(DType::I8);
        dst.quant = s_idx;
    }
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// Rewrite float graph `g` for int8 activations: every unit ([`int8_units`]) not in `float_ops` runs in int8.
pub fn quantize_graph(g: &Graph, cal: &Calibration, float_ops: &BTreeSet<usize>) -> Graph {
    let nb = g.buffers.len();
    let mut rw = Rewriter {
        g: Graph {
            ops: Vec::new(),
            buffers: g.buffers.clone(),
            tensors: g.tensors.clone(),
            input: g.input,
            output: g.output,
            dtypes: vec![DType::F32; nb],
            splits: vec![0; nb],
            quant: None,
        },
        orig: g,
        cal,
        scales: vec![vec![(0.0, 0.0); cal.timesteps.len()]; nb],
        converted: BTreeMap::new(),
    };
    let units: BTreeSet<usize> = int8_units(g).into_iter().collect();
    for (i, op) in g.ops.iter().enumerate() {
        let int8 = units.contains(&i) && !float_ops.contains(&i);
        let mut op = *op;
        match &mut op {
            Op::Conv2d {
                input,
                out,
                oh,
                ow,
                weight,
                bias,
                residual,
                scratch,
                ..
            } => {
                // A residual with two scales cannot ride on the fixed-point epilogue: keep such a conv in float.
                let split_res = *residual != NONE && rw.g.split(*residual) != 0;
                if int8 && !split_res {
                    *input = rw.need_i8(*input);
                    if *out != g.output {
                        *residual = rw.need_i8(*residual);
                        rw.set_i8(*out);
                    } else {
                        *residual = rw.need_f32(*residual);
                    }
                    let z = rw.zeros();
                    *scratch = rw.new_buf(2 * *oh * *ow, DType::I32, 0, z);
                    rw.quantize_weight(*weight);
                    if *bias != NONE {
                        rw.g.tensors[*bias as usize].store = Some(DType::F32);
                    }
                } else {
                    *input = rw.need_f32(*input);
                    *residual = rw.need_f32(*residual);
                }
            }
            Op::GroupNorm { input, out, .. } => {
                if int8 {
                    *input = rw.need_i8(*input);
                    rw.set_i8(*out);
                } else {
                    *input = rw.need_f32(*input);
                }
            }
            Op::Attention { q, k, v, out, .. } => {
                if int8 {
                    // Projections written with two scales never reach here (only concats split).
                    *q = rw.need_i8(*q);
                    *k = rw.need_i8(*k);
                    *v = rw.need_i8(*v);
                    rw.set_i8(*out);
                } else {
                    *q = rw.need_f32(*q);
                    *k = rw.need_f32(*k);
                    *v = rw.need_f32(*v);
                }
            }
            Op::Concat { a, b, out, na, .. } => {
                let single =
                    |rw: &Rewriter<'_>, x: u32| rw.g.dtype(x) == DType::I8 && rw.g.split(x) == 0;
                if single(&rw, *a) && single(&rw, *b) {
                    let (sa, sb) = (
                        rw.scales[*a as usize].clone(),
                        rw.scales[*b as usize].clone(),
                    );
                    rw.g.dtypes[*out as usize] = DType::I8;
                    rw.g.splits[*out as usize] = *na;
                    rw.scales[*out as usize] =
                        sa.iter().zip(&sb).map(|(x, y)| (x.0, y.0)).collect();
                } else {
                    *a = rw.need_f32(*a);
                    *b = rw.need_f32(*b);
                }
            }
            Op::Upsample2 { input, out, .. } => {
                if rw.g.dtype(*input) == DType::I8 && rw.g.split(*input) == 0 {
                    rw.g.dtypes[*out as usize] = DType::I8;
                    rw.scales[*out as usize] = rw.scales[*input as usize].clone();
                } else {
                    *input = rw.need_f32(*input);
                }
            }
            Op::AvgPool2 { input, out, .. } => {
                if rw.g.dtype(*input) == DType::I8 && rw.g.split(*input) == 0 {
                    rw.set_i8(*out);
                } else {
                    *input = rw.need_f32(*input);
                }
            }
            Op::Linear { input, weight, .. } => {
                // Weight-only int8 (per output row): the time-embedding vectors stay f32.
                *input = rw.need_f32(*input);
                if int8 {
                    rw.quantize_weight(*weight);
                }
            }
            Op::Add { b, .. } => *b = rw.need_f32(*b),
            Op::TimeProj { .. }
            | Op::Embedding { .. }
            | Op::Affine { .. }
            | Op::Quantize { .. }
            | Op::Dequantize { .. } => {}
        }
        rw.g.ops.push(op);
    }
    let rows = cal.timesteps.len();
    let nbuf = rw.g.buffers.len();
    let mut scales = vec![(0.0f32, 0.0f32); rows * nbuf];
    for b in 0..nbuf {
        if rw.g.dtypes[b] != DType::I8 {
            continue;
        }
        for r in 0..rows {
            scales[r * nbuf + b] = rw.scales[b][r];
        }
    }
    rw.g.quant = Some(QuantTable {
        timesteps: cal.timesteps.clone(),
        scales,
    });
    rw.g
}

/// Final samples (clamped to [-1, 1]) of `seeds` through the sampler, one thread per available core.
pub fn final_samples(
    m: &Model<'_>,
    cfg: &SamplerConfig,
    seeds: &[(u64, usize)],
) -> Result<Vec<Vec<f32>>, ConvertError> {
    let need = arena_bytes(m, cfg).map_err(sampler_err)?;
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(seeds.len().max(1));
    let chunks: Vec<&[(u64, usize)]> = seeds.chunks(seeds.len().div_ceil(threads).max(1)).collect();
    let results: Vec<Result<Vec<Vec<f32>>, ConvertError>> = std::thread::scope(|sc| {
        let hs: Vec<_> = chunks
            .iter()
            .map(|chunk| {
                sc.spawn(move || {
                    let mut arena = AlignedBytes::zeroed(need);
                    let mut out = Vec::new();
                    for &(seed, i) in chunk.iter() {
                        let extra = concat_input(m, cfg, seed)?;
                        let cond = Conditioning {
                            class: class_of(m, i),
                            concat: (!extra.is_empty()).then_some(&extra[..]),
                            ..Conditioning::default()
                        };
                        let mut s =
                            Sampler::new(m, arena.as_mut_slice(), *cfg, cond, Init::Seed(seed))
                                .map_err(sampler_err)?;
                        // Reference kernels, so the search and the blob are the same on every machine.
                        s.set_kernels(&ember_kernels::registry::GENERIC);
                        s.run(&mut |_| Control::Continue).map_err(sampler_err)?;
                        out.push(s.sample().iter().map(|v| v.clamp(-1.0, 1.0)).collect());
                    }
                    Ok(out)
                })
            })
            .collect();
        hs.into_iter()
            .map(|h| h.join().expect("sampling thread"))
            .collect()
    });
    let mut all = Vec::new();
    for r in results {
        all.extend(r?);
    }
    Ok(all)
}

/// PSNR in dB of `b` against `a` over all samples pooled, for data in [-1, 1] (peak-to-peak 2).
pub fn psnr(a: &[Vec<f32>], b: &[Vec<f32>]) -> f64 {
    let (mut se, mut n) = (0f64, 0usize);
    for (x, y) in a.iter().zip(b) {
        for (p, q) in x.iter().zip(y) {
            se += (f64::from(*p) - f64::from(*q)).powi(2);
            n += 1;
        }
    }
    if se == 0.0 {
        return f64::INFINITY;
    }
    10.0 * (4.0 / (se / n.max(1) as f64)).log10()
}

/// Outcome of [`search`].
#[derive(Clone, Debug)]
pub struct SearchReport {
    /// Ops kept in float, with their labels.
    pub float_ops: Vec<(usize, String)>,
    /// PSNR of the all-int8 graph (before any layer went back to float), dB.
    pub psnr_all_int8: f64,
    /// PSNR of the chosen graph, dB.
    pub psnr: f64,
    /// Per-layer sensitivity (PSNR with only that layer in int8), when the search needed it.
    pub sensitivity: Vec<(String, f64)>,
    /// Whether the target was met.
    pub met: bool,
}

/// The mixed-precision search: start with every unit in int8 except the `--keep-float` ones; while the
/// final-sample PSNR is below the target, move the most sensitive remaining layer back to float.
///
/// `build` compiles a graph into a blob.
pub fn search(
    g: &Graph,
    cal: &Calibration,
    cfg: &SamplerConfig,
    opts: &QuantOptions,
    reference: &[Vec<f32>],
    seeds: &[(u64, usize)],
    build: &dyn Fn(&Graph) -> Result<Vec<u8>, ConvertError>,
) -> Result<(Graph, SearchReport), ConvertError> {
    let units = int8_units(g);
    let mut float: BTreeSet<usize> = units
        .iter()
        .copied()
        .filter(|&i| {
            let l = op_label(g, i);
            opts.keep_float.iter().any(|p| l.contains(p.as_str()))
        })
        .collect();
    let eval = |fl: &BTreeSet<usize>| -> Result<f64, ConvertError> {
        let q = quantize_graph(g, cal, fl);
        let blob = AlignedBytes::new(&build(&q)?);
        let m = Model::parse(blob.as_slice()).map_err(sampler_err)?;
        Ok(psnr(reference, &final_samples(&m, cfg, seeds)?))
    };
    let first = eval(&float)?;
    let mut report = SearchReport {
        float_ops: Vec::new(),
        psnr_all_int8: first,
        psnr: first,
        sensitivity: Vec::new(),
        met: first >= opts.target_psnr,
    };
    if !report.met && opts.target_psnr > 0.0 {
        let cand: Vec<usize> = units
            .iter()
            .copied()
            .filter(|i| !float.contains(i))
            .collect();
        let bar = Bar {
            on: opts.progress,
            what: "sensitivity",
            total: cand.len(),
        };
        let mut sens = Vec::new();
        for (j, &u) in cand.iter().enumerate() {
            let only: BTreeSet<usize> = units.iter().copied().filter(|&x| x != u).collect();
            sens.push((u, eval(&only)?));
            bar.show(j + 1);
        }
        sens.sort_by(|a, b| a.1.total_cmp(&b.1));
        report.sensitivity = sens.iter().map(|&(u, p)| (op_label(g, u), p)).collect();
        for &(u, _) in &sens {
            float.insert(u);
            report.psnr = eval(&float)?;
            if opts.progress {
                eprintln!(
                    "  float {:<40} -> PSNR {:.2} dB",
                    op_label(g, u),
                    report.psnr
                );
            }
            if report.psnr >= opts.target_psnr {
                report.met = true;
                break;
            }
        }
    }
    report.float_ops = float.iter().map(|&i| (i, op_label(g, i))).collect();
    Ok((quantize_graph(g, cal, &float), report))
}
