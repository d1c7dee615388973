//! Shared verbatim by the firmware and by `host-gen` (`#[path]` include), so both run the same sampler
//! configuration and hash the result the same way.

use ember_core::sampler::driver::{Conditioning, Method, SamplerConfig};

/// The blob's default sampler: DDIM over its explicit timesteps (`steps` 0: the distilled student's 4), η 0,
/// guidance scale 1 (guidance is distilled into the student: one U-Net pass per step).
pub const fn sampler_config() -> SamplerConfig {
    SamplerConfig::new(Method::Ddim, 0)
}

/// Class-conditional generation of `digit`, no other conditioning.
pub fn conditioning(digit: u32) -> Conditioning<'static> {
    Conditioning {
        class: Some(digit),
        ..Conditioning::default()
    }
}

/// FNV-1a over the samples' bit patterns (little-endian bytes): equal exactly when every value is bit-identical.
pub fn fnv1a_bits(x: &[f32]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for v in x {
        for b in v.to_bits().to_le_bytes() {
            h = (h ^ b as u32).wrapping_mul(0x0100_0193);
        }
    }
    h
}

/// Grey ramp for ASCII art, darkest first.
pub const RAMP: &[u8; 10] = b" .:-=+*#%@";

/// One image row as ASCII art: each pixel in [-1, 1] (clamped) becomes two characters of [`RAMP`]. `out` holds
/// `2 * row.len()` bytes (a shorter `out` cuts the row); returns the filled part. Indexes nothing that could panic.
pub fn ascii_row<'o>(row: &[f32], out: &'o mut [u8]) -> &'o [u8] {
    let mut n = 0;
    for (pair, &v) in out.chunks_exact_mut(2).zip(row) {
        let v = if v.is_nan() { -1.0 } else { v.clamp(-1.0, 1.0) };
        let k = ((v + 1.0) * 0.5 * RAMP.len() as f32) as usize;
        let c = RAMP.get(k).copied().unwrap_or(RAMP[RAMP.len() - 1]);
        pair.fill(c);
        n += 2;
    }
    out.get(..n).unwrap_or(&[])
}
