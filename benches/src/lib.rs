//! Shared helpers of ember's criterion benchmarks (`benches/forward.rs`, `benches/kernels.rs`).
//!
//! The architectures live as diffusers `config.json` files in `benches/configs/`, so the Rust benches and
//! `benches/compare.py` (which builds the same models in PyTorch / ONNX Runtime) measure exactly the same networks.
#![deny(missing_docs)]

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
