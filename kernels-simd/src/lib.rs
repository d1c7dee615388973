//! # ember-kernels
//!
//! The math layer of ember: plain functions that take slices and return results in slices. They know nothing about
//! models, blobs or arenas, allocate nothing and are `#![no_std]`, so the same code runs on a Cortex-M7, a Cortex-A53
//! and an x86 box.
//!
//! Layout conventions shared by every kernel:
//! * activations are channel-major (`[C, H, W]`, batch 1), `f32`;
//! * convolution weights are PyTorch's `[C_out, C_in, K, K]`, linear weights `[out, in]`, stored as `f32`, `f16` or
//!   weight-only int8 ([`Weights`]); the math of the float kernels is always `f32`.
//!
//! The [`quant`] module holds the int8 reference kernels (int8 activations and weights, `i32` accumulation,
//! fixed-point requantization).
//!
//! The [`generic`] module holds the scalar reference kernels: always built, the fallback on every target and the
//! reference that every optimized tier is tested against. Per-ISA tiers install themselves into a [`KernelTable`]
//! ([`registry`]); callers go through the table so a faster tier drops in without touching the runtime.
#![no_std]
#![deny(missing_docs)]

#[cfg(feature = "std")]
extern crate std;

#[cfg(target_arch = "aarch64")]
pub mod aarch64;
#[cfg(target_arch = "arm")]
pub mod arm;
pub mod generic;
pub mod pack;
pub mod parallel;
pub mod quant;
pub mod registry;
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
mod scratch;
#[cfg(target_arch = "x86_64")]
pub mod x86_64;

pub use registry::KernelTable;

use half::f16;

/// A read-only view of a weight tensor as stored in a model blob.
///
/// Reads convert to `f32`; a kernel hoists the conversion out of its inner loop.
#[derive(Clone, Copy, Debug)]
pub enum Weights<'a> {
    /// 32-bit floats.
    F32(&'a [f32]),
    /// IEEE half floats (converted to `f32` on read).
    F16(&'a [f16]),
    /// Signed 8-bit with one `f32` scale per `per` consecutive elements (per output channel):
    /// `value = data[i] as f32 * scale[i / per]`.
    I8 {
        /// Quantized values.
        data: &'a [i8],
        /// One scale per `per` consecutive elements of `data`.
        scale: &'a [f32],
        /// Elements sharing one scale (for `[C_out, ...]` weights: elements per output channel).
        per: usize,
    },
}

impl Weights<'_> {
    /// Number of elements.
    #[inline]
    pub fn len(&self) -> usize {
        match self {
            Weights::F32(s) => s.len(),
            Weights::F16(s) => s.len(),
            Weights::I8 { data, .. } => data.len(),
        }
    }

    /// `true` when the view holds no element.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Element `i` as `f32`; `0.0` when `i` is out of range (callers validate shapes first, so this never happens
    /// on a validated model, and it can never panic). For [`Weights::I8`] also `0.0` when `per` is 0 or the scale
    /// of element `i` is missing.
    #[inline(always)]
    pub fn get(&self, i: usize) -> f32 {
        match self {
            Weights::F32(s) => s.get(i).copied().unwrap_or(0.0),
            Weights::F16(s) => s.get(i).map(|h| h.to_f32()).unwrap_or(0.0),
            Weights::I8 { data, scale, per } => match (data.get(i), i.checked_div(*per)) {
                (Some(&q), Some(c)) => scale.get(c).map_or(0.0, |&s| q as f32 * s),
                _ => 0.0,
            },
        }
    }
}

/// Geometry of a 2-D convolution on a `[C_in, H, W]` input.
///
/// Output is `[C_out, OH, OW]`. Input pixels outside `[0, H) × [0, W)` read as zero, so any top/left padding is
/// `pad_t` / `pad_l` and the bottom/right padding follows from `OH` / `OW` (this expresses PyTorch's symmetric
/// padding and diffusers' asymmetric `(0, 1, 0, 1)` pad of `Downsample2D` alike).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dGeom {
    /// Input channels.
    pub cin: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Output channels.
    pub cout: usize,
    /// Square kernel size.
    pub k: usize,
    /// Stride (both axes).
    pub stride: usize,
    /// Zero rows above the input.
    pub pad_t: usize,
    /// Zero columns left of the input.
    pub pad_l: usize,
    /// Output height.
    pub oh: usize,
    /// Output width.
    pub ow: usize,
}

impl Conv2dGeom {
    /// Multiply-accumulates of one evaluation (counting padded taps, as is customary).
    pub fn macs(&self) -> u64 {
        (self.cout as u64)
            * (self.oh as u64)
            * (self.ow as u64)
            * (self.cin as u64)
            * (self.k as u64)
            * (self.k as u64)
    }

    /// A 1×1, stride-1, unpadded layer as the same layer over rows of `m` output rows joined, `m` the most rows
    /// whose pixels fit `max_row` and that divide the plane's rows: one GEMM over the plane, so a row kernel's
    /// per-row costs (tile fill, epilogue set-up) are paid a few times per plane instead of once per output row. The
    /// plane's memory layout is the same. `None` for other layers, or where no rows can be joined.
    pub fn pointwise_joined(&self, max_row: usize) -> Option<Conv2dGeom> {
        let pointwise = self.k == 1
            && self.stride == 1
            && self.pad_t == 0
            && self.pad_l == 0
            && (self.oh, self.ow) == (self.h, self.w)
            && self.ow > 0;
        if !pointwise {
            return None;
        }
        let m = (1..=(max_row / self.ow).min(self.oh))
            .rev()
            .find(|m| self.oh.is_multiple_of(*m))?;
        (m > 1).then_some(Conv2dGeom {
            h: self.oh / m,
            w: self.ow * m,
            oh: self.oh / m,
            ow: self.ow * m,
            ..*self
        })
    }
}

/// `x · sigmoid(x)`, the SiLU / swish activation (`x / (1 + expf(−x))`, with `libm::expf`'s bits).
#[inline(always)]
pub fn silu(x: f32) -> f32 {
    x / (1.0 + expf(-x))
}

/// `libm::expf(x)`, bit for bit, for every `x`: for `2^-14 < |x| < 87.34` (`|x|`'s bits strictly between
/// `0x39000000` and `0x42aeac50`) libm's own arithmetic (FreeBSD's `e_expf.c`: `k = round(x / ln 2)`, the
/// reduction by `k · ln 2` split in two parts, the degree-2 rational approximation, and `scalbnf(y, k)`, which for
/// `|k| ≤ 126` is one multiply by the normal `2^k`) without its special-case branches and its `scalbnf` call;
/// libm itself for the rest (tiny, huge, infinite and NaN arguments). About half the instructions on a
/// Cortex-M; checked against libm on every float of the inlined domain (`expf_is_libm_expf`).
#[inline]
pub fn expf(x: f32) -> f32 {
    const LN2_HI: f32 = f32::from_bits(0x3f31_7200);
    const LN2_LO: f32 = f32::from_bits(0x35bf_be8e);
    const INV_LN2: f32 = f32::from_bits(0x3fb8_aa3b);
    const P1: f32 = f32::from_bits(0x3e2a_aa8f);
    const P2: f32 = f32::from_bits(0xbb35_5215);
    let bits = x.to_bits();
    let hx = bits & 0x7fff_ffff;
    if hx <= 0x3900_0000 || hx >= 0x42ae_ac50 {
        return libm::expf(x);
    }
    let neg = bits >> 31 != 0;
    let (hi, lo, r, k) = if hx > 0x3eb1_7218 {
        // |x| > 0.5 ln 2: k = ±1 up to 1.5 ln 2, else (x / ln 2 ± 1/2) truncated.
        let k = if hx > 0x3f85_1592 {
            (INV_LN2 * x + if neg { -0.5 } else { 0.5 }) as i32
        } else if neg {
            -1
        } else {
            1
        };
        let kf = k as f32;
        let hi = x - kf * LN2_HI;
        let lo = kf * LN2_LO;
        (hi, lo, hi - lo, k)
    } else {
        (x, 0.0, x, 0)
    };
    let xx = r * r;
    let c = r - xx * (P1 + xx * P2);
    let y = 1.0 + (r * c / (2.0 - c) - lo + hi);
    if k == 0 {
        y
    } else {
        // |x| < 87.34 keeps k in [-126, 126]: 2^k is a normal float.
        y * f32::from_bits(((k + 127) as u32) << 23)
    }
}
