//! The smoke test's deterministic input, shared verbatim by the firmware and by `host-gen` (`#[path]` include), so
//! both engines see bit-identical samples.

/// Timestep passed to `forward`.
pub const TIMESTEP: f32 = 500.0;
/// Class label passed to `forward`.
pub const LABEL: u32 = 3;

/// Fill `x` with an xorshift32 sequence mapped exactly onto `[-1, 1)` (24-bit values times 2^-23, minus 1: every
/// step is exact in `f32`, so no rounding can differ between targets).
pub fn fill(x: &mut [f32]) {
    let mut s: u32 = 0x1234_5678;
    for v in x.iter_mut() {
        s ^= s << 13;
        s ^= s >> 17;
        s ^= s << 5;
        *v = (s >> 8) as f32 * (1.0 / 8_388_608.0) - 1.0;
    }
}

/// FNV-1a over the outputs' bit patterns: equal exactly when every output is bit-identical.
pub fn fnv1a_bits(x: &[f32]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for v in x {
        for b in v.to_bits().to_le_bytes() {
            h = (h ^ b as u32).wrapping_mul(0x0100_0193);
        }
    }
    h
}

/// Sum in index order (same order on both sides).
pub fn sum(x: &[f32]) -> f32 {
    x.iter().fold(0.0f32, |a, &v| a + v)
}

use ember_core::sampler::driver::{Conditioning, Corrector, Method, SamplerConfig};

/// Seed of every sampler run.
pub const SEED: u64 = 5;
/// Number of sampler configurations the smoke test runs.
pub const N_SAMPLERS: usize = 6;

/// Sampler `i`: every method, 2 steps, classifier-free guidance 2.0 (two U-Net passes per step); DDIM with η 0.5,
/// DDPM with the Langevin corrector.
pub fn sampler_config(i: usize) -> SamplerConfig {
    let methods = [
        Method::Ddpm,
        Method::Ddim,
        Method::Euler,
        Method::EulerAncestral,
        Method::DpmSolver2m,
        Method::Consistency,
    ];
    let method = methods[i % methods.len()];
    SamplerConfig {
        guidance_scale: 2.0,
        eta: if method == Method::Ddim { 0.5 } else { 0.0 },
        corrector: (method == Method::Ddpm).then_some(Corrector { snr: 0.16, steps: 1 }),
        ..SamplerConfig::new(method, 2)
    }
}

/// Class 3, no other conditioning.
pub fn conditioning() -> Conditioning<'static> {
    Conditioning { class: Some(LABEL), ..Conditioning::default() }
}
