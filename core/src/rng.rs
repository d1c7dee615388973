//! A portable, seedable random number generator for the samplers' noise: the same seed gives the same bits on every
//! target (x86-64, AArch64, Cortex-M with or without an FPU, wasm).
//!
//! # Generator: PCG32
//!
//! [`Pcg32`] is O'Neill's PCG-XSH-RR 64/32 (`pcg32_random_r` of the reference `pcg_basic.c`): a 64-bit linear
//! congruential state with a permuted 32-bit output. It was chosen because it is small (16 bytes of state, one
//! 64-bit multiply-add per output, which a Cortex-M4/M7 does with a handful of `UMULL`/`MLA`), statistically strong
//! (passes TestU01 BigCrush), offers 2^63 independent streams for the same seed (one per image of a batch, say),
//! and has published reference outputs to pin against: seeded with `(42, 54)` like `pcg32-demo`, it must give
//! `0xa15c02b7 0x7b47f409 0xba1d3330 …` (checked by the tests). It is not cryptographic.
//!
//! # Floats
//!
//! * [`Pcg32::uniform_f32`] is in the open interval `(0, 1)`: the top 24 bits of an output, forced odd, times
//!   2^-24, i.e. one of the 2^23 values `(2k + 1) / 2^24`. Every step is exact (a 24-bit integer converts to f32
//!   exactly, and scaling by a power of two is exact), never 0 and never 1, and the mean is exactly 1/2.
//! * [`Pcg32::normal_f32`] is a standard normal sample by the Box–Muller transform on two such uniforms:
//!   `r = sqrt(-2 ln u1)`, `θ = 2π u2`, giving `r cos θ` and then (on the next call) `r sin θ`. Because `u1 ≥ 2^-24`
//!   the logarithm is finite and `|z| ≤ sqrt(48 ln 2) ≈ 5.77`: no NaN or infinity can come out, and the tail beyond
//!   5.77 σ (probability 8e-9) is cut.
//!
//! # Why the bits are identical everywhere
//!
//! The integer part is wrapping `u64` arithmetic. The float part uses only IEEE-754 basic operations, which every
//! target rounds identically, and `libm`'s `logf`, `sincosf` and `sqrtf`: pure-Rust ports of musl/FreeBSD's msun,
//! themselves written with those basic operations and bit manipulation, so they give the same bits whether the
//! target has an FPU or emulates floats in software. Rust never fuses `a * b + c` into an FMA behind the
//! programmer's back, never reassociates float operations and never computes with excess precision (on every
//! target with SSE2, NEON or VFP; the x87-only `i586` targets are the exception). The few functions `libm`
//! implements with a hardware instruction where one exists (`sqrt`, `fma`, `rint`, …) are correctly rounded either
//! way, so they do not change results. Nothing here depends on the platform's C library.

use core::f32::consts::TAU;

/// PCG multiplier (Knuth's MMIX LCG multiplier, as in `pcg_basic.c`).
const MULTIPLIER: u64 = 6_364_136_223_846_793_005;
/// 2^-24.
const TWO_POW_M24: f32 = 1.0 / 16_777_216.0;

/// PCG32 (PCG-XSH-RR 64/32) with uniform and standard-normal `f32` sampling. See the [module](self) docs.
///
/// ```
/// use ember_core::rng::Pcg32;
/// let mut rng = Pcg32::new(42, 54);
/// assert_eq!(rng.next_u32(), 0xa15c02b7); // pcg32-demo's first output
/// let mut noise = [0f32; 16];
/// rng.fill_normal(&mut noise);
/// assert!(noise.iter().all(|z| z.is_finite()));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pcg32 {
    state: u64,
    inc: u64,
    /// The second Box–Muller output (f32 bits), returned by the next [`Pcg32::normal_f32`]. Keeping it makes a
    /// sequence of fills equal to one fill of the same total length.
    spare: Option<u32>,
}

impl Pcg32 {
    /// Seed like the reference `pcg32_srandom_r(rng, seed, stream)`: `seed` picks the starting point and `stream`
    /// one of 2^63 distinct sequences (its top bit is ignored). Different streams with the same seed are
    /// independent, e.g. one per image of a batch.
    pub const fn new(seed: u64, stream: u64) -> Pcg32 {
        let inc = (stream << 1) | 1;
        // pcg32_srandom_r: state = 0; step; state += seed; step.
        let state = inc
            .wrapping_add(seed)
            .wrapping_mul(MULTIPLIER)
            .wrapping_add(inc);
        Pcg32 {
            state,
            inc,
            spare: None,
        }
    }

    /// The next uniformly distributed `u32` (`pcg32_random_r`).
    #[inline]
    pub fn next_u32(&mut self) -> u32 {
        let old = self.state;
        self.state = old.wrapping_mul(MULTIPLIER).wrapping_add(self.inc);
        let xorshifted = (((old >> 18) ^ old) >> 27) as u32;
        let rot = (old >> 59) as u32;
        xorshifted.rotate_right(rot)
    }

    /// A uniform sample in the open interval `(0, 1)`: one of `(2k + 1) / 2^24`, `k < 2^23`. Uses one
    /// [`Pcg32::next_u32`].
    #[inline]
    pub fn uniform_f32(&mut self) -> f32 {
        ((self.next_u32() >> 8) | 1) as f32 * TWO_POW_M24
    }

    /// A standard-normal sample (mean 0, variance 1) by Box–Muller. Each pair of calls uses two uniforms (two
    /// [`Pcg32::next_u32`]); the second call of a pair returns the stored sine half. Always finite,
    /// `|z| ≤ 5.78`.
    pub fn normal_f32(&mut self) -> f32 {
        if let Some(bits) = self.spare.take() {
            return f32::from_bits(bits);
        }
        let u1 = self.uniform_f32();
        let u2 = self.uniform_f32();
        let (z0, z1) = box_muller(u1, u2);
        self.spare = Some(z1.to_bits());
        z0
    }

    /// Fill `out` with standard-normal samples ([`Pcg32::normal_f32`] in order). Filling in several calls gives the
    /// same values as one call over the concatenation.
    pub fn fill_normal(&mut self, out: &mut [f32]) {
        for z in out {
            *z = self.normal_f32();
        }
    }
}

/// Box–Muller: two independent standard normals from two uniforms in `(0, 1)`.
#[inline]
fn box_muller(u1: f32, u2: f32) -> (f32, f32) {
    // u1 ≥ 2^-24: ln u1 ≥ -16.64, so r ≤ 5.77 and finite; u1 < 1: r > 0.
    let r = libm::sqrtf(-2.0 * libm::logf(u1));
    let (s, c) = libm::sincosf(TAU * u2);
    (r * c, r * s)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `pcg32-demo` from pcg-random.org (`pcg_basic.c`), round 1: `pcg32_srandom_r(&rng, 42u, 54u)`.
    #[test]
    fn matches_the_reference_pcg32() {
        let mut rng = Pcg32::new(42, 54);
        let want = [
            0xa15c02b7u32,
            0x7b47f409,
            0xba1d3330,
            0x83d2f293,
            0xbfa4784b,
            0xcbed606e,
        ];
        for w in want {
            assert_eq!(rng.next_u32(), w);
        }
    }

    /// Pinned first values for a fixed seed: a change to the generator, the uniform mapping or Box–Muller changes
    /// every sampler's output, so it must not happen silently. (Computed once with this implementation.)
    #[test]
    fn pinned_floats() {
        let mut rng = Pcg32::new(0, 0);
        let u: [u32; 4] = core::array::from_fn(|_| rng.uniform_f32().to_bits());
        assert_eq!(u, PINNED_UNIFORM);
        let mut rng = Pcg32::new(2024, 7);
        let mut z = [0f32; 8];
        rng.fill_normal(&mut z);
        assert_eq!(z.map(f32::to_bits), PINNED_NORMAL);
    }

    /// 0.8935742, 0.21723014, 0.36051482, 0.3754446.
    const PINNED_UNIFORM: [u32; 4] = [0x3f64c147, 0x3e5e7194, 0x3eb89566, 0x3ec03a46];
    /// -0.22217207, -0.25893903, 0.8938085, 0.18756253, -0.8938538, 1.2693415, -1.5327524, -0.4453921 (an f64
    /// Box–Muller on the same uniforms agrees to 1e-7).
    const PINNED_NORMAL: [u32; 8] = [
        0xbe638113, 0xbe8493a8, 0x3f64d0a2, 0x3e401064, 0xbf64d39a, 0x3fa279c8, 0xbfc4313b,
        0xbee40a6f,
    ];

    #[test]
    fn seeds_and_streams_differ() {
        let first = |seed, stream| {
            let mut r = Pcg32::new(seed, stream);
            [r.next_u32(), r.next_u32(), r.next_u32(), r.next_u32()]
        };
        assert_ne!(first(1, 0), first(2, 0));
        assert_ne!(first(1, 0), first(1, 1));
        assert_eq!(first(1, 0), first(1, 0));
        // The stream's top bit is ignored, as in the reference.
        assert_eq!(first(5, 3), first(5, 3 | 1 << 63));
    }

    #[test]
    fn uniform_is_open_and_exact() {
        let mut rng = Pcg32::new(3, 0);
        let n = 100_000;
        let (mut sum, mut sum2) = (0f64, 0f64);
        for _ in 0..n {
            let u = rng.uniform_f32();
            assert!(u > 0.0 && u < 1.0);
            let k = u / TWO_POW_M24;
            assert_eq!(k, libm::truncf(k)); // an exact odd multiple of 2^-24
            assert_eq!(k as u32 % 2, 1);
            sum += f64::from(u);
            sum2 += f64::from(u) * f64::from(u);
        }
        let mean = sum / n as f64;
        let var = sum2 / n as f64 - mean * mean;
        // 5 standard errors: sd(mean) = sqrt(1/12 / n) = 9.1e-4; sd(var) = sqrt(1/180 / n) ≈ 2.4e-4.
        assert!((mean - 0.5).abs() < 5.0 * 9.2e-4, "mean {mean}");
        assert!((var - 1.0 / 12.0).abs() < 5.0 * 2.4e-4, "var {var}");
    }

    #[test]
    fn normal_moments() {
        let mut rng = Pcg32::new(12345, 1);
        let n = 100_000;
        let mut z = [0f32; 1000];
        let (mut s1, mut s2, mut s3, mut s4, mut within1) = (0f64, 0f64, 0f64, 0f64, 0u32);
        for _ in 0..n / z.len() {
            rng.fill_normal(&mut z);
            for &x in &z {
                assert!(x.is_finite());
                let x = f64::from(x);
                s1 += x;
                s2 += x * x;
                s3 += x * x * x;
                s4 += x * x * x * x;
                within1 += u32::from(x.abs() < 1.0);
            }
        }
        let nf = n as f64;
        let (mean, m2, m3, m4) = (s1 / nf, s2 / nf, s3 / nf, s4 / nf);
        // Bounds are 5 standard errors for n = 1e5: sd(mean) = 1/sqrt(n) = 3.2e-3, sd(E z²) = sqrt(2/n) = 4.5e-3,
        // sd(E z³) = sqrt(15/n) = 1.2e-2, sd(E z⁴) = sqrt(96/n) = 3.1e-2, sd(P(|z|<1)) = 1.5e-3.
        assert!(mean.abs() < 5.0 * 3.2e-3, "mean {mean}");
        assert!((m2 - 1.0).abs() < 5.0 * 4.5e-3, "variance {m2}");
        assert!(m3.abs() < 5.0 * 1.2e-2, "third moment {m3}");
        assert!((m4 - 3.0).abs() < 5.0 * 3.1e-2, "fourth moment {m4}");
        let p1 = f64::from(within1) / nf;
        assert!((p1 - 0.682_689).abs() < 5.0 * 1.5e-3, "P(|z| < 1) = {p1}");
    }

    #[test]
    fn box_muller_extremes_are_finite() {
        let lo = TWO_POW_M24; // smallest uniform
        let hi = 1.0 - TWO_POW_M24; // largest uniform
        for u1 in [lo, 3.0 * lo, 0.5, hi] {
            for u2 in [lo, 0.25, 0.5, 0.75, hi] {
                let (a, b) = box_muller(u1, u2);
                assert!(a.is_finite() && b.is_finite(), "{u1} {u2}");
                assert!(a.abs() <= 5.78 && b.abs() <= 5.78, "{u1} {u2}: {a} {b}");
            }
        }
        let (a, _) = box_muller(lo, lo);
        assert!(a > 5.7, "largest radius {a}");
    }

    #[test]
    fn many_normals_are_finite_and_bounded() {
        let mut rng = Pcg32::new(u64::MAX, u64::MAX);
        for _ in 0..1_000_000 {
            let z = rng.normal_f32();
            assert!(z.is_finite() && z.abs() <= 5.78);
        }
    }

    #[test]
    fn chunked_fill_equals_one_fill() {
        let mut a = Pcg32::new(9, 9);
        let mut b = a.clone();
        let mut whole = [0f32; 12];
        a.fill_normal(&mut whole);
        let mut parts = [0f32; 12];
        let (x, y) = parts.split_at_mut(7);
        b.fill_normal(x);
        b.fill_normal(y);
        assert_eq!(whole.map(f32::to_bits), parts.map(f32::to_bits));
        assert_eq!(a, b);
    }
}
