//! Shared helpers of ember's criterion benchmarks (`benches/forward.rs`, `benches/kernels.rs`) and of the
//! `conv-time` and `kernel-report` tools.
//!
//! The architectures live as diffusers `config.json` files in `benches/configs/`, so the Rust benches and
//! `benches/compare.py` (which builds the same models in PyTorch / ONNX Runtime) measure exactly the same networks.
#![deny(missing_docs)]

use std::hint::black_box;
use std::time::Instant;

use ember_kernels::quant::{self, ActQ, QOut};
use ember_kernels::registry::KernelTable;
use ember_kernels::{pack, Conv2dGeom, Weights};
use quantize_tool::{AlignedBytes, RandomSource, UNetConfig, WeightDtype};

/// The MNIST-size U-Net (`[32, 64, 64]`, attention at 16×16), as a diffusers `UNet2DModel` config.
pub const MNIST32_CONFIG: &str = include_str!("../configs/mnist32.json");

/// The `google/ddpm-cifar10-32` architecture (35.7 M parameters), as a diffusers `UNet2DModel` config.
pub const DDPM_CIFAR10_32_CONFIG: &str = include_str!("../configs/ddpm-cifar10-32.json");

/// A compiled model ready to bind: the blob (16-byte aligned) and its arena size.
#[derive(Debug)]
pub struct BenchModel {
    /// The `.ember` blob, aligned.
    pub blob: AlignedBytes,
    /// Multiply-accumulates of one forward pass.
    pub macs: u64,
    /// Arena bytes the blob asks for.
    pub arena_bytes: usize,
    /// Elements of the input sample.
    pub input_len: usize,
    /// Elements of the output.
    pub output_len: usize,
}

/// Compile a diffusers `UNet2DModel` config JSON with seeded random weights (`RandomSource`).
///
/// Panics on a bad config: a benchmark has nothing sensible to do then.
pub fn compile_config(json: &str, dtype: WeightDtype, seed: u64) -> BenchModel {
    let v: serde_json::Value = serde_json::from_str(json).expect("config JSON");
    let cfg = UNetConfig::from_json(&v, None).expect("UNet2DModel config");
    let c = quantize_tool::compile(&cfg, &RandomSource { seed }, None, dtype).expect("compile");
    BenchModel {
        blob: AlignedBytes::new(&c.blob),
        macs: c.info.macs(),
        arena_bytes: c.info.arena_bytes as usize,
        input_len: c.info.input_len(),
        output_len: c.info.output_len(),
    }
}

/// Deterministic values in [-1, 1) (xorshift64), for inputs and weights of kernel benches.
pub fn pseudo_random(n: usize, seed: u64) -> Vec<f32> {
    let mut h = seed ^ 0x2545_F491_4F6C_DD1D;
    (0..n)
        .map(|_| {
            h ^= h << 13;
            h ^= h >> 7;
            h ^= h << 17;
            (h >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

/// Seconds per call of `f` over `reps` timed runs of at least ~20 ms each (after a warm-up), sorted ascending: the
/// minimum is the steadiest figure for comparing kernel variants on a shared host, the median for a report.
pub fn timed_runs(mut f: impl FnMut(), reps: usize) -> Vec<f64> {
    f();
    let t0 = Instant::now();
    f();
    let one = t0.elapsed().as_secs_f64().max(1e-7);
    let inner = ((0.02 / one) as usize).clamp(1, 10_000);
    let mut v: Vec<f64> = (0..reps.max(1))
        .map(|_| {
            let t = Instant::now();
            for _ in 0..inner {
                f();
            }
            t.elapsed().as_secs_f64() / inner as f64
        })
        .collect();
    v.sort_by(f64::total_cmp);
    v
}

/// One convolution shape set up for timing: pseudo-random f32 input, weights and bias, their int8 counterparts
/// (activation scale 0.02, weight scales 0.01, output scale 0.1) and the output buffers.
#[derive(Debug)]
pub struct ConvCase {
    /// The geometry.
    pub g: Conv2dGeom,
    x: Vec<f32>,
    w: Vec<f32>,
    b: Vec<f32>,
    xq: Vec<i8>,
    wq: Vec<i8>,
    ws: Vec<f32>,
    y: Vec<f32>,
    yq: Vec<i8>,
    acc: Vec<i32>,
}

/// Seconds per call of one convolution: f32 and int8, as [`timed_runs`] gives them (sorted ascending).
#[derive(Debug)]
pub struct ConvTimes {
    /// f32 convolution.
    pub f32: Vec<f64>,
    /// int8 convolution (int8 output).
    pub int8: Vec<f64>,
}

impl ConvCase {
    /// Buffers for `g`.
    pub fn new(g: Conv2dGeom) -> ConvCase {
        let x = pseudo_random(g.cin * g.h * g.w, 1);
        let w = pseudo_random(g.cout * g.cin * g.k * g.k, 2);
        ConvCase {
            xq: x.iter().map(|v| (v * 100.0) as i8).collect(),
            wq: w.iter().map(|v| (v * 100.0) as i8).collect(),
            b: pseudo_random(g.cout, 3),
            ws: vec![0.01; g.cout],
            y: vec![0.0; g.cout * g.oh * g.ow],
            yq: vec![0; g.cout * g.oh * g.ow],
            acc: vec![0; quant::conv2d_i8_scratch_len(&g)],
            x,
            w,
            g,
        }
    }

    /// Time the f32 and int8 convolution on tier `t` over `reps` runs each, with the weights packed as
    /// `quantize-tool pack` writes them where the tier reads a packed layout, placed `align_off` bytes past a
    /// 64-byte boundary (0 is what a blob gives; other values are an experiment knob).
    pub fn time(&mut self, t: &KernelTable, reps: usize, align_off: usize) -> ConvTimes {
        let g = &self.g;
        let mut fstore = Vec::new();
        let fp = t.conv2d_packed.and_then(|(fam, f)| {
            let len = pack::float_len(fam, g)?;
            fstore = vec![0u8; len + 64 + align_off];
            let at = (64 - fstore.as_ptr() as usize % 64) % 64 + align_off;
            pack::float_pack(fam, g, Weights::F32(&self.w), &mut fstore[at..at + len])
                .then_some((f, at..at + len))
        });
        let qp = t.conv2d_i8_packed.and_then(|(fam, f)| {
            let mut p = vec![0u8; pack::int8_len(fam, g, g.cin)?];
            pack::int8_pack(fam, g, g.cin, &self.wq, &mut p).then_some((f, p))
        });
        let (x, w, b, y) = (&self.x, &self.w, &self.b, &mut self.y);
        let f32_times = timed_runs(
            || match &fp {
                Some((f, r)) => f(
                    g,
                    x,
                    Weights::F32(w),
                    &fstore[r.clone()],
                    Some(Weights::F32(b)),
                    y,
                ),
                None => (t.conv2d)(g, x, Weights::F32(w), Some(Weights::F32(b)), y),
            },
            reps,
        );
        black_box(&self.y);
        let (xq, wq, ws, yq, acc) = (&self.xq, &self.wq, &self.ws, &mut self.yq, &mut self.acc);
        let int8_times = timed_runs(
            || {
                let o = QOut::I8 {
                    data: yq,
                    scale: 0.1,
                };
                let (aq, bias) = (ActQ::single(0.02), Some(Weights::F32(b)));
                match &qp {
                    Some((f, p)) => f(g, xq, aq, wq, p, ws, bias, None, None, 1.0, acc, o),
                    None => (t.conv2d_i8)(g, xq, aq, wq, ws, bias, None, None, 1.0, acc, o),
                }
            },
            reps,
        );
        black_box(&self.yq);
        ConvTimes {
            f32: f32_times,
            int8: int8_times,
        }
    }
}
