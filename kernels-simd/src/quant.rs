//! Int8 reference kernels.
//!
//! Activations are int8 with a symmetric per-tensor scale ([`ActQ`], zero point 0; a skip concatenation keeps one
//! scale per branch), weights int8 with one `f32` scale per output channel. Products accumulate in `i32`; results
//! are either requantized to int8 with a fixed-point multiplier ([`Requant`], as TFLite / CMSIS-NN do) or
//! dequantized to `f32` ([`QOut`]).
//!
//! Like [`crate::generic`], this is scalar code written so LLVM vectorizes the stride-1 loops; it is the fallback on
//! every target and the reference optimized tiers are tested against. The kernels never index out of bounds and
//! never panic: they stop at the shorter of the stated and actual slice lengths, and elements missing from a short
//! input read as zero.

use crate::generic::AttentionGeom;
use crate::{silu, Conv2dGeom, Weights};

/// Quantization of an int8 activation buffer `[c, ...]`: symmetric (zero point 0); channels `< split` use `scale`,
/// channels `>= split` use `scale2` (a skip concatenation keeps one scale per branch). `split >= c` means one scale.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ActQ {
    /// Scale of channels `< split`: `value = q as f32 * scale`.
    pub scale: f32,
    /// First channel that uses `scale2`.
    pub split: usize,
    /// Scale of channels `>= split`.
    pub scale2: f32,
}

impl ActQ {
    /// One scale for every channel (`split = usize::MAX`, `scale2 = s`).
    #[inline]
    pub fn single(s: f32) -> ActQ {
        ActQ {
            scale: s,
            split: usize::MAX,
            scale2: s,
        }
    }

    /// Scale of channel `ch`.
    #[inline(always)]
    pub fn at(&self, ch: usize) -> f32 {
        if ch < self.split {
            self.scale
        } else {
            self.scale2
        }
    }
}

/// Fixed-point multiplier: `apply(x) = round(x * mult / 2^shift)` (round half up, arithmetic shift), as TFLite /
/// CMSIS-NN requantize.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Requant {
    /// Multiplier, `round(m · 2^31)` for the mantissa `m ∈ [0.5, 1)` of the real multiplier.
    pub mult: i32,
    /// Right shift, at most 62.
    pub shift: u32,
}

impl Requant {
    /// The multiplier that maps everything to 0.
    pub const ZERO: Requant = Requant { mult: 0, shift: 0 };

    /// From a positive real multiplier: `(m, e) = frexp(r)`, `m ∈ [0.5, 1)`; `mult = round(m · 2^31)` (when that is
    /// `2^31`: `mult = 2^30`, `e += 1`); `shift = 31 − e`.
    ///
    /// `r` not finite or `<= 0`, or a shift above 62 (`r` below about `2^-31`): [`Requant::ZERO`].
    /// `e > 31` (`r >= 2^31`): saturates to `mult = i32::MAX`, `shift = 0`.
    pub fn from_real(r: f64) -> Requant {
        if !r.is_finite() || r <= 0.0 {
            return Requant::ZERO;
        }
        let (m, mut e) = libm::frexp(r);
        let mut mult = libm::round(m * (1u64 << 31) as f64) as i64;
        if mult == 1i64 << 31 {
            mult = 1i64 << 30;
            e += 1;
        }
        if e > 31 {
            return Requant {
                mult: i32::MAX,
                shift: 0,
            };
        }
        let shift = 31 - e; // >= 0
        if shift > 62 {
            return Requant::ZERO;
        }
        Requant {
            mult: mult as i32,
            shift: shift as u32,
        }
    }

    /// `(x · mult + 2^(shift−1)) >> shift` in `i64`, with `x` clamped to the `i32` range first (so nothing can
    /// overflow); shift 0: `x · mult`. A hand-built shift above 62 acts as 62.
    #[inline(always)]
    pub fn apply(self, x: i64) -> i64 {
        let x = x.clamp(i32::MIN as i64, i32::MAX as i64);
        let p = x * self.mult as i64;
        let s = self.shift.min(62);
        if s == 0 {
            p
        } else {
            (p + (1i64 << (s - 1))) >> s
        }
    }
}

/// `round(v / scale)` (`libm::roundf`, ties away from zero; an `f32` division, not a multiply by the reciprocal),
/// clamped to `[-128, 127]`; NaN gives 0.
///
/// libm's `roundf(d)` is `trunc(d + copysign(0.5 − 2^-25, d))`; here the truncation is Rust's float-to-integer
/// conversion (one instruction with an FPU, where libm's `trunc` is integer bit work), which gives the same integer
/// wherever that is inside `i32`, saturates beyond it (so the clamp gives the same bound) and turns NaN into 0.
/// Checked against the `libm::roundf` formula on a sweep of all floats and every rounding boundary
/// (`quantize_is_libm_round`).
#[inline(always)]
pub fn quantize(v: f32, scale: f32) -> i8 {
    let d = v / scale;
    let half =
        f32::from_bits((d.to_bits() & 0x8000_0000) | (0.5f32 - 0.25 * f32::EPSILON).to_bits());
    ((d + half) as i32).clamp(-128, 127) as i8
}

/// [`quantize`] over a slice (stops at the shorter length).
pub fn quantize_slice(x: &[f32], scale: f32, out: &mut [i8]) {
    for (o, &v) in out.iter_mut().zip(x) {
        *o = quantize(v, scale);
    }
}

/// `out[i] = x[i] as f32 * q.at(i / plane)` (channel-major, `plane` = elements per channel; `plane == 0` does
/// nothing). Stops at the shorter length.
pub fn dequantize_slice(x: &[i8], q: ActQ, plane: usize, out: &mut [f32]) {
    if plane == 0 {
        return;
    }
    for (ch, (xc, oc)) in x.chunks(plane).zip(out.chunks_mut(plane)).enumerate() {
        let s = q.at(ch);
        for (o, &v) in oc.iter_mut().zip(xc) {
            *o = v as f32 * s;
        }
    }
}

/// Symmetric per-output-channel weight quantization (no alloc): `w` is `[cout, rest]` with `rest = w.len() / cout`;
/// `scales[c] = max|w_c| / 127` (1.0 when that maximum is 0 or not finite); `out = roundf(w / scales[c])` clamped
/// to `[-127, 127]` (NaN gives 0). `out` and `scales` stop at their own lengths; `cout == 0` does nothing.
pub fn quantize_weights_per_channel(w: &[f32], cout: usize, out: &mut [i8], scales: &mut [f32]) {
    if cout == 0 {
        return;
    }
    let rest = w.len() / cout;
    for (c, s) in scales.iter_mut().enumerate().take(cout) {
        let row = &w[c * rest..(c + 1) * rest];
        let m = row.iter().fold(0.0f32, |m, &v| m.max(libm::fabsf(v)));
        *s = if m == 0.0 || !m.is_finite() {
            1.0
        } else {
            m / 127.0
        };
    }
    for (c, s) in scales.iter().enumerate().take(cout) {
        let row = &w[c * rest..(c + 1) * rest];
        for (o, &v) in out.iter_mut().skip(c * rest).take(rest).zip(row) {
            let q = libm::roundf(v / *s);
            *o = if q.is_nan() {
                0
            } else {
                q.clamp(-127.0, 127.0) as i8
            };
        }
    }
}

/// Output of an int8 kernel: int8 with its scale, or dequantized `f32`.
#[derive(Debug)]
pub enum QOut<'a> {
    /// Requantized int8 output: `value = data[i] as f32 * scale`.
    I8 {
        /// Output elements.
        data: &'a mut [i8],
        /// Output scale.
        scale: f32,
    },
    /// Dequantized output.
    F32(&'a mut [f32]),
}

impl QOut<'_> {
    /// Output elements (of either kind).
    pub fn len(&self) -> usize {
        match self {
            QOut::I8 { data, .. } => data.len(),
            QOut::F32(data) => data.len(),
        }
    }

    /// Whether the output has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// `i32` scratch elements [`conv2d_i8`] needs: `2 · oh · ow` (accumulator planes for the two input branches).
pub fn conv2d_i8_scratch_len(g: &Conv2dGeom) -> usize {
    2 * g.oh * g.ow
}

/// `acc[p] += Σ_taps wk[t] · x` of one input plane into one output accumulator plane (geometry of
/// [`crate::generic::conv2d`]).
#[inline(always)]
fn accumulate_plane(g: &Conv2dGeom, iplane: &[i8], wk: &[i8], oplane: &mut [i32]) {
    for ky in 0..g.k {
        for kx in 0..g.k {
            let wv = wk.get(ky * g.k + kx).map_or(0, |&v| v as i32);
            if wv == 0 || g.w + g.pad_l < kx + 1 {
                continue;
            }
            // Output columns whose input column ox*stride + kx - pad_l lies in [0, w).
            let ox_lo = if kx >= g.pad_l {
                0
            } else {
                (g.pad_l - kx).div_ceil(g.stride)
            };
            let hi_num = g.w + g.pad_l - (kx + 1); // largest ox*stride allowed
            let ox_hi = (hi_num / g.stride + 1).min(g.ow); // exclusive
            if ox_lo >= ox_hi {
                continue;
            }
            let n = ox_hi - ox_lo;
            let ix0 = ox_lo * g.stride + kx - g.pad_l;
            for (oy, orow) in oplane.chunks_exact_mut(g.ow).enumerate() {
                let iy = oy * g.stride + ky;
                if iy < g.pad_t || iy - g.pad_t >= g.h {
                    continue;
                }
                let irow = &iplane[(iy - g.pad_t) * g.w..(iy - g.pad_t + 1) * g.w];
                let orow = &mut orow[ox_lo..ox_hi];
                if g.stride == 1 {
                    for (o, &i) in orow.iter_mut().zip(&irow[ix0..ix0 + n]) {
                        *o = o.wrapping_add(wv * i as i32);
                    }
                } else {
                    for (o, &i) in orow.iter_mut().zip(irow[ix0..].iter().step_by(g.stride)) {
                        *o = o.wrapping_add(wv * i as i32);
                    }
                }
            }
        }
    }
}

/// Integer accumulation of output channel `co` into `acc_a` (input channels `< split`) and `acc_b` (the others).
fn accumulate_channel(
    g: &Conv2dGeom,
    input: &[i8],
    split: usize,
    w: &[i8],
    co: usize,
    acc_a: &mut [i32],
    acc_b: &mut [i32],
) {
    acc_a.fill(0);
    acc_b.fill(0);
    let plane_in = g.h * g.w;
    if plane_in == 0 {
        return;
    }
    let kk = g.k * g.k;
    for (ci, iplane) in input.chunks_exact(plane_in).take(g.cin).enumerate() {
        let base = (co * g.cin + ci) * kk;
        let wk = match w.get(base..) {
            Some(s) => &s[..kk.min(s.len())],
            None => break,
        };
        let acc = if ci < split { &mut *acc_a } else { &mut *acc_b };
        accumulate_plane(g, iplane, wk, acc);
    }
}

/// Int8 2-D convolution with a fused epilogue:
/// `y = (conv(x, w) + bias + chan_add + residual) / div`.
///
/// * `input`: `[cin, h, w]` int8 with `in_q` (channels `< in_q.split` use `in_q.scale`, the others
///   `in_q.scale2`); `w`: `[cout, cin, k, k]` int8 with per-output-channel scales `w_scale`: `[cout]`;
///   `bias`: `[cout]`; `chan_add`: `[cout]` (e.g. a time embedding projected per channel); `residual`: int8
///   `[cout, oh, ow]` with its scale; `acc`: scratch of [`conv2d_i8_scratch_len`] `i32`s; `out`: `[cout, oh, ow]`.
/// * Geometry exactly as [`crate::generic::conv2d`].
/// * Per output pixel of channel `co`, `acc_a` / `acc_b` are the integer sums of `w · x` over the input channels
///   below / from `in_q.split`. With `sa = w_scale[co] · in_q.scale`, `sb = w_scale[co] · in_q.scale2` and
///   `bsum = bias[co] + chan_add[co]` (each 0 when absent), all `f32`:
///   * [`QOut::I8`] with scale `so`: `bias_q = round(bsum / sa)` (0 when `sa == 0`),
///     `ma = Requant::from_real(sa / (div · so))`, `mb` likewise with `sb`, `mr` with the residual's scale `sr`
///     (computed in `f64`, once per output channel); `y = clamp(ma(acc_a + bias_q) + mb(acc_b) + mr(r), -128, 127)`.
///   * [`QOut::F32`]: `y = ((acc_a · sa + acc_b · sb) + bsum + r · sr) / div` in plain `f32` (no residual: `r = 0`,
///     `sr = 0`).
/// * Scales are expected positive (a non-positive multiplier requantizes to 0).
/// * If `acc` is shorter than [`conv2d_i8_scratch_len`], the kernel returns without writing anything.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_i8(
    g: &Conv2dGeom,
    input: &[i8],
    in_q: ActQ,
    w: &[i8],
    w_scale: &[f32],
    bias: Option<Weights<'_>>,
    chan_add: Option<&[f32]>,
    residual: Option<(&[i8], f32)>,
    div: f32,
    acc: &mut [i32],
    out: QOut<'_>,
) {
    let plane = g.oh * g.ow;
    if plane == 0 || g.stride == 0 || acc.len() < 2 * plane {
        return;
    }
    let (acc_a, rest) = acc.split_at_mut(plane);
    let acc_b = &mut rest[..plane];
    let e = ConvEpilogue {
        in_q,
        w_scale,
        bias,
        chan_add,
        residual,
        div,
        plane,
    };
    match out {
        QOut::I8 { data, scale } => {
            for (co, oplane) in data.chunks_exact_mut(plane).take(g.cout).enumerate() {
                accumulate_channel(g, input, in_q.split, w, co, acc_a, acc_b);
                e.channel(co, scale).store_i8(0, acc_a, acc_b, oplane);
            }
        }
        QOut::F32(data) => {
            for (co, oplane) in data.chunks_exact_mut(plane).take(g.cout).enumerate() {
                accumulate_channel(g, input, in_q.split, w, co, acc_a, acc_b);
                e.channel(co, 0.0).store_f32(0, acc_a, acc_b, oplane);
            }
        }
    }
}

/// The per-layer inputs of the int8 convolution epilogue (see [`conv2d_i8`]); every tier finishes its integer
/// accumulators through it, so all tiers produce the same bits.
#[derive(Clone, Copy, Debug)]
pub struct ConvEpilogue<'a> {
    /// Input quantization.
    pub in_q: ActQ,
    /// Per-output-channel weight scales.
    pub w_scale: &'a [f32],
    /// Bias `[cout]`.
    pub bias: Option<Weights<'a>>,
    /// Per-channel addend `[cout]`.
    pub chan_add: Option<&'a [f32]>,
    /// Residual `[cout, oh, ow]` with its scale.
    pub residual: Option<(&'a [i8], f32)>,
    /// Divisor after the residual add.
    pub div: f32,
    /// Output pixels per channel (`oh · ow`).
    pub plane: usize,
}

/// [`ConvEpilogue`] resolved for one output channel: scales, the rounded bias and the fixed-point multipliers.
#[derive(Clone, Copy, Debug)]
pub struct ChannelEpilogue<'a> {
    sa: f32,
    sb: f32,
    bsum: f32,
    sr: f32,
    div: f32,
    bias_q: i64,
    ma: Requant,
    mb: Requant,
    mr: Requant,
    rplane: &'a [i8],
}

impl<'a> ConvEpilogue<'a> {
    /// Resolve output channel `co` for an int8 output of scale `so` (`so` is ignored for an `f32` output).
    pub fn channel(&self, co: usize, so: f32) -> ChannelEpilogue<'a> {
        let ws = self.w_scale.get(co).copied().unwrap_or(0.0);
        let sa = ws * self.in_q.scale;
        let sb = ws * self.in_q.scale2;
        let bsum = self.bias.map_or(0.0, |b| b.get(co))
            + self.chan_add.and_then(|c| c.get(co)).map_or(0.0, |&v| v);
        let (rdata, sr) = self.residual.unwrap_or((&[], 0.0));
        let den = self.div as f64 * so as f64;
        ChannelEpilogue {
            sa,
            sb,
            bsum,
            sr,
            div: self.div,
            bias_q: if sa == 0.0 {
                0
            } else {
                libm::roundf(bsum / sa) as i32 as i64
            },
            ma: Requant::from_real(sa as f64 / den),
            mb: Requant::from_real(sb as f64 / den),
            mr: Requant::from_real(sr as f64 / den),
            rplane: rdata.get(co * self.plane..).unwrap_or(&[]),
        }
    }
}

/// The integer constants of a [`ChannelEpilogue`], for SIMD tiers that vectorize its arithmetic exactly.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
#[derive(Clone, Copy, Debug)]
pub(crate) struct EpilogueParts<'a> {
    pub bias_q: i64,
    pub ma: Requant,
    pub mb: Requant,
    pub mr: Requant,
    pub rplane: &'a [i8],
}

impl<'a> ChannelEpilogue<'a> {
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub(crate) fn parts(&self) -> EpilogueParts<'a> {
        EpilogueParts {
            bias_q: self.bias_q,
            ma: self.ma,
            mb: self.mb,
            mr: self.mr,
            rplane: self.rplane,
        }
    }
}

/// One fixed-point multiplier of a [`FastI8`]: `(x · mult + 2^(s−1)) >> s` as the high word of the 64-bit product
/// shifted right by `s − 32` (a multiplier below 1/2 has `s ≥ 32`); a zero multiplier maps everything to 0.
#[cfg_attr(
    not(any(target_arch = "arm", target_arch = "x86_64")),
    allow(dead_code)
)]
#[derive(Clone, Copy, Debug)]
pub(crate) struct HiRequant {
    pub(crate) mult: i32,
    pub(crate) round: i64,
    pub(crate) rest: u32,
}

#[cfg_attr(not(target_arch = "arm"), allow(dead_code))]
impl HiRequant {
    /// `None` where the shift is below 32 (a multiplier of at least 1/2).
    fn new(r: Requant) -> Option<HiRequant> {
        if r.mult == 0 {
            return Some(HiRequant {
                mult: 0,
                round: 0,
                rest: 0,
            });
        }
        let s = r.shift.min(62);
        (s >= 32).then(|| HiRequant {
            mult: r.mult,
            round: 1i64 << (s - 1),
            rest: s - 32,
        })
    }

    /// [`Requant::apply`] of an `i32`: `|x · mult| ≤ 2^62`, so the sum cannot overflow, and taking the high word,
    /// then shifting by the rest, is the same floor division by `2^s`.
    #[inline(always)]
    fn apply(self, x: i32) -> i32 {
        (((x as i64 * self.mult as i64 + self.round) >> 32) as i32) >> self.rest
    }
}

/// [`Requant::apply`] of an int8 value (a residual element) in one 32 × 32 → 64-bit multiply: for a shift
/// `8 ≤ s < 32` the value is pre-scaled by `2^(32−s)` (at most `2^7 · 2^24`: exact in `i32`) and the rounding
/// constant becomes `2^31`, so the high word is the result; for `s ≥ 32` it is [`HiRequant`]'s form.
#[cfg_attr(
    not(any(target_arch = "arm", target_arch = "x86_64")),
    allow(dead_code)
)]
#[derive(Clone, Copy, Debug)]
pub(crate) struct SmallRequant {
    mult: i32,
    round: i64,
    pub(crate) pre: u32,
    rest: u32,
}

#[cfg_attr(not(target_arch = "arm"), allow(dead_code))]
impl SmallRequant {
    /// `None` where the shift is below 8 (a multiplier of at least 2^23).
    fn new(r: Requant) -> Option<SmallRequant> {
        if r.mult == 0 {
            return Some(SmallRequant {
                mult: 0,
                round: 0,
                pre: 0,
                rest: 0,
            });
        }
        let s = r.shift.min(62);
        if s < 8 {
            return None;
        }
        let (pre, rest) = if s >= 32 { (0, s - 32) } else { (32 - s, 0) };
        Some(SmallRequant {
            mult: r.mult,
            round: 1i64 << (s + pre - 1),
            pre,
            rest,
        })
    }

    /// The multiply after the pre-scaling: `apply(x)` is `self.hi().apply((x as i32) << self.pre)`.
    pub(crate) fn hi(self) -> HiRequant {
        HiRequant {
            mult: self.mult,
            round: self.round,
            rest: self.rest,
        }
    }

    /// `(x · mult + 2^(s−1)) >> s` for `x` in `[-128, 127]`: `(x · 2^pre · mult + 2^(s+pre−1)) >> (s + pre)` is
    /// the same floor division, and `s + pre` is 32 plus `rest`.
    #[inline(always)]
    fn apply(self, x: i8) -> i32 {
        ((((x as i32) << self.pre) as i64 * self.mult as i64 + self.round) >> 32) as i32
            >> self.rest
    }
}

/// A [`ChannelEpilogue`] for an int8 output in 32-bit arithmetic: what [`ChannelEpilogue::store_i8`] computes, with
/// per-channel constants resolved once (a 32-bit core calls it per pixel pair).
#[cfg_attr(
    not(any(target_arch = "arm", target_arch = "x86_64")),
    allow(dead_code)
)]
#[derive(Clone, Copy, Debug)]
pub(crate) struct FastI8<'a> {
    pub(crate) bias: i32,
    pub(crate) ma: HiRequant,
    pub(crate) mb: HiRequant,
    pub(crate) mr: SmallRequant,
    pub(crate) rplane: &'a [i8],
}

#[cfg_attr(not(target_arch = "arm"), allow(dead_code))]
impl FastI8<'_> {
    /// `store_i8`'s value for sums `a` (first input part), `b` (second; `None`: no channels in that part, a sum
    /// of 0) and residual element `r` (`None`: none, a term of 0): `a + bias` saturated to `i32` is the clamp
    /// `Requant::apply` does; the two sums' terms are at most `2^30` in magnitude (`s ≥ 32`), so their sum is
    /// exact in `i32`, as the `i64` adds are; the residual's is at most `2^7 · 2^31 / 2^8 = 2^30`, and a
    /// saturating `i32` add of it lands beyond the int8 clamp exactly when the `i64` sum does. A zero sum or
    /// residual contributes 0 (`apply(0)` rounds `2^(s−1) / 2^s` down), so leaving a term out is the same.
    #[inline(always)]
    fn value(&self, a: i32, b: Option<i32>, r: Option<i8>) -> i8 {
        let mut y = self.ma.apply(a.saturating_add(self.bias));
        if let Some(b) = b {
            y += self.mb.apply(b);
        }
        if let Some(r) = r {
            y = y.saturating_add(self.mr.apply(r));
        }
        y.clamp(-128, 127) as i8
    }

    /// [`ChannelEpilogue::store_i8`]: `out[j]` from `acc_a[j]`, `acc_b[j]` (`None`: all 0) and the residual at
    /// pixel `p0 + j` (0 past the end of the residual plane, as there), over the shortest of the slices.
    #[inline(always)]
    pub(crate) fn store(&self, p0: usize, acc_a: &[i32], acc_b: Option<&[i32]>, out: &mut [i8]) {
        let n = out
            .len()
            .min(acc_a.len())
            .min(acc_b.map_or(usize::MAX, <[i32]>::len));
        let r = self.rplane.get(p0..).unwrap_or(&[]);
        let pairs = out.iter_mut().zip(acc_a);
        match (acc_b, r.len()) {
            (None, 0) => pairs.for_each(|(o, &a)| *o = self.value(a, None, None)),
            (Some(b), 0) => pairs
                .zip(b)
                .for_each(|((o, &a), &b)| *o = self.value(a, Some(b), None)),
            (None, rl) if rl >= n => pairs
                .zip(r)
                .for_each(|((o, &a), &r)| *o = self.value(a, None, Some(r))),
            (Some(b), rl) if rl >= n => pairs
                .zip(b)
                .zip(r)
                .for_each(|(((o, &a), &b), &r)| *o = self.value(a, Some(b), Some(r))),
            // A residual plane ending inside this run (malformed input): element by element.
            (b, _) => {
                for (j, (o, &a)) in pairs.take(n).enumerate() {
                    let bj = b.map(|b| b.get(j).copied().unwrap_or(0));
                    *o = self.value(a, bj, Some(r.get(j).copied().unwrap_or(0)));
                }
            }
        }
    }
}

impl<'a> ChannelEpilogue<'a> {
    /// This channel's [`FastI8`], where both sums' multipliers are below 1/2 (or zero) and the residual's has a
    /// shift of at least 8.
    #[cfg_attr(
        not(any(target_arch = "arm", target_arch = "x86_64")),
        allow(dead_code)
    )]
    pub(crate) fn fast_i8(&self) -> Option<FastI8<'a>> {
        Some(FastI8 {
            bias: i32::try_from(self.bias_q).ok()?,
            ma: HiRequant::new(self.ma)?,
            mb: HiRequant::new(self.mb)?,
            mr: SmallRequant::new(self.mr)?,
            rplane: self.rplane,
        })
    }
}

impl ChannelEpilogue<'_> {
    /// `out[j] = requant(acc_a[j], acc_b[j], residual[p0 + j])` for an int8 output; `p0` is the pixel index of
    /// `out[0]` within the channel.
    #[inline]
    pub fn store_i8(&self, p0: usize, acc_a: &[i32], acc_b: &[i32], out: &mut [i8]) {
        if self.rplane.get(p0..).is_none_or(|r| r.is_empty()) {
            // No residual here (the common case): its term is exactly 0 for every element (a missing residual
            // reads as 0 and `apply(0) = (0 + 2^(s−1)) >> s = 0`), and so is the second part's wherever its sum is
            // 0 (no channels past the split); adding 0 changes nothing, so those terms are skipped. Same elements
            // as the general loop (the shortest of `out`, `acc_a`, `acc_b`).
            for ((o, &a), &b) in out.iter_mut().zip(acc_a).zip(acc_b) {
                let mut y = self.ma.apply(a as i64 + self.bias_q);
                if b != 0 {
                    y = y.saturating_add(self.mb.apply(b as i64));
                }
                *o = y.clamp(-128, 127) as i8;
            }
            return;
        }
        for (j, ((o, &a), &b)) in out.iter_mut().zip(acc_a).zip(acc_b).enumerate() {
            let r = self.rplane.get(p0 + j).map_or(0, |&v| v as i64);
            let y = self
                .ma
                .apply(a as i64 + self.bias_q)
                .saturating_add(self.mb.apply(b as i64))
                .saturating_add(self.mr.apply(r));
            *o = y.clamp(-128, 127) as i8;
        }
    }
    /// One output row of this channel from its sums `ra`, `rb` (`ra.len()` pixels, plane position `p0`) into
    /// `dst[base ..]`: an int8 output through `store_i8` (a tier's vectorized form of [`Self::store_i8`]), a float
    /// one through [`Self::store_f32`]; nothing where the row does not lie inside `dst`.
    #[cfg_attr(
        not(any(target_arch = "x86_64", target_arch = "aarch64")),
        allow(dead_code)
    )]
    pub(crate) fn store_row(
        &self,
        dst: &mut Result<&mut [i8], &mut [f32]>,
        base: usize,
        p0: usize,
        (ra, rb): (&[i32], &[i32]),
        store_i8: impl FnOnce(&Self, usize, &[i32], &[i32], &mut [i8]),
    ) {
        let n = ra.len();
        match dst {
            Ok(d) => {
                if let Some(o) = d.get_mut(base..base + n) {
                    store_i8(self, p0, ra, rb, o);
                }
            }
            Err(d) => {
                if let Some(o) = d.get_mut(base..base + n) {
                    self.store_f32(p0, ra, rb, o);
                }
            }
        }
    }

    /// The `f32` output: `((acc_a · sa + acc_b · sb) + bsum + r · sr) / div`.
    #[inline]
    pub fn store_f32(&self, p0: usize, acc_a: &[i32], acc_b: &[i32], out: &mut [f32]) {
        for (j, ((o, &a), &b)) in out.iter_mut().zip(acc_a).zip(acc_b).enumerate() {
            let r = self.rplane.get(p0 + j).map_or(0.0, |&v| v as f32);
            *o = ((a as f32 * self.sa + b as f32 * self.sb) + self.bsum + r * self.sr) / self.div;
        }
    }
}

/// Arguments of [`group_norm_i8`] (same meanings as [`crate::generic::GroupNormArgs`], plus the quantization).
#[derive(Clone, Copy, Debug)]
pub struct GroupNormI8Args<'a> {
    /// Channels.
    pub c: usize,
    /// Pixels per channel (`H·W`).
    pub hw: usize,
    /// Groups; `c` is a multiple of it.
    pub groups: usize,
    /// Added to the variance.
    pub eps: f32,
    /// Per-channel scale `[c]`.
    pub gamma: Weights<'a>,
    /// Per-channel shift `[c]`.
    pub beta: Weights<'a>,
    /// Optional FiLM modulation `[2c]`: `y = y · (1 + scale) + shift` with `scale = ss[..c]`, `shift = ss[c..]`.
    pub scale_shift: Option<&'a [f32]>,
    /// Apply SiLU to the result.
    pub silu: bool,
    /// Quantization of the input.
    pub in_q: ActQ,
    /// Scale of the int8 output.
    pub out_scale: f32,
}

/// Group normalization of an int8 `[c, hw]` input to an int8 output, with optional FiLM modulation and fused SiLU.
///
/// Statistics are exact integer sums per channel (`Σx`, `Σx²` in `i64`) combined in `f64` with each channel's
/// scale: `mean = Σ s_c·S1_c / n`, `var = max(Σ s_c²·S2_c / n − mean², 0)`, `inv = 1 / sqrt(var + eps)`. Per channel
/// `mul = s_c · inv · gamma_c`, `add = beta_c − mean · inv · gamma_c` (rounded to `f32`; FiLM as in
/// [`crate::generic::group_norm`]), per element `y = x · mul + add` in `f32`, optional SiLU, then
/// [`quantize`]`(y, out_scale)`.
pub fn group_norm_i8(a: &GroupNormI8Args<'_>, input: &[i8], out: &mut [i8]) {
    group_norm_i8_by(a, input, out, channel_sums, GnChannel::apply_slice);
}

/// `(Σ x, Σ x²)` over one channel, exactly (integers: any order gives the same sums). Blocks of 2^16 values are
/// summed in `i32` (at most 2^16 · 2^14 = 2^30 for `Σ x²`) and widened once per block: on a 32-bit core a 64-bit
/// add per element was half the loop.
pub(crate) fn channel_sums(xc: &[i8]) -> (i64, i64) {
    let (mut s1, mut s2) = (0i64, 0i64);
    for blk in xc.chunks(1 << 16) {
        let (mut a1, mut a2) = (0i32, 0i32);
        for &x in blk {
            let x = x as i32;
            a1 += x;
            a2 += x * x;
        }
        s1 += a1 as i64;
        s2 += a2 as i64;
    }
    (s1, s2)
}

/// The element function of [`group_norm_i8`] for one channel: `quantize(act(x · mul + add), out_scale)` with
/// `act` SiLU or the identity (multiply, then add: never fused).
#[derive(Clone, Copy, Debug)]
pub struct GnChannel {
    /// Dequantization, normalization, affine and FiLM scale folded into one multiplier.
    pub mul: f32,
    /// The matching offset.
    pub add: f32,
    /// Apply SiLU.
    pub silu: bool,
    /// Output scale.
    pub out_scale: f32,
}

impl GnChannel {
    /// One element.
    #[inline(always)]
    pub fn apply(&self, x: i8) -> i8 {
        let y = x as f32 * self.mul + self.add;
        quantize(if self.silu { silu(y) } else { y }, self.out_scale)
    }

    /// A channel's elements (stops at the shorter slice). When the channel holds fewer distinct input values
    /// than elements (its range `min..=max` is shorter than the slice), the function is tabulated over that range
    /// first: the same bits with fewer `expf` (a 32×32 channel of activations typically spans well under the 256
    /// int8 values, and an 8×8 one under its 64 elements).
    pub fn apply_slice(&self, xc: &[i8], yc: &mut [i8]) {
        self.apply_slice_with(xc, yc, range_i8, lookup_i8, |x, y| self.apply_each(x, y), 1);
    }

    /// `y[i] = self.apply(x[i])`, one element at a time (stops at the shorter slice).
    pub fn apply_each(&self, x: &[i8], y: &mut [i8]) {
        for (y, &x) in y.iter_mut().zip(x) {
            *y = self.apply(x);
        }
    }

    /// [`GnChannel::apply_slice`] with a tier's `range(x) = (min x, max x)` (any value for an empty `x`),
    /// `lookup(lut, lo, x, y)`: `y[i] = lut[(x[i] − lo) as u8]` over the shorter slice, and `eval(x, y)`:
    /// `y[i] = self.apply(x[i])` over the shorter slice (the tier's vector form of [`GnChannel::apply_each`]), which
    /// builds the table of the range or, for a channel with as many distinct values as elements, runs on it directly.
    /// The table is evaluated over the range rounded up to `lanes` entries (the tier's vector width: the entries
    /// past the range, never looked up, cost less than a scalar tail).
    #[inline(always)]
    pub(crate) fn apply_slice_with(
        &self,
        xc: &[i8],
        yc: &mut [i8],
        range: impl Fn(&[i8]) -> (i8, i8),
        lookup: impl Fn(&[i8; 256], i8, &[i8], &mut [i8]),
        eval: impl Fn(&[i8], &mut [i8]),
        lanes: usize,
    ) {
        let n = xc.len().min(yc.len());
        let (xc, yc) = (&xc[..n], &mut yc[..n]);
        if n == 0 {
            return;
        }
        let (lo, hi) = range(xc);
        let span = (hi as i32 - lo as i32 + 1).max(0) as usize;
        if span < n {
            let len = span.next_multiple_of(lanes.max(1)).min(256);
            let mut vals = [0i8; 256];
            for (e, v) in vals.iter_mut().enumerate().take(len) {
                *v = lo.wrapping_add(e as u8 as i8);
            }
            let mut lut = [0i8; 256];
            eval(&vals[..len], &mut lut[..len]);
            lookup(&lut, lo, xc, yc);
        } else {
            eval(xc, yc);
        }
    }
}

/// `(min x, max x)` of an int8 slice (`(127, -128)` when empty).
pub(crate) fn range_i8(x: &[i8]) -> (i8, i8) {
    x.iter()
        .fold((i8::MAX, i8::MIN), |(l, h), &v| (l.min(v), h.max(v)))
}

/// `y[i] = lut[(x[i] − lo) as u8]` (the table of a range starting at `lo`; stops at the shorter slice).
pub(crate) fn lookup_i8(lut: &[i8; 256], lo: i8, x: &[i8], y: &mut [i8]) {
    for (y, &x) in y.iter_mut().zip(x) {
        // `x − lo` is the offset in the range: the wrapping byte difference is that offset.
        *y = lut[x.wrapping_sub(lo) as u8 as usize];
    }
}

/// [`group_norm_i8`] with the per-channel sums and element loop supplied by a kernel tier (`sums(x)` must return
/// [`channel_sums`]`(x)`, `per_channel(ch, x, y)` must compute `y[i] = ch.apply(x[i])`).
pub(crate) fn group_norm_i8_by(
    a: &GroupNormI8Args<'_>,
    input: &[i8],
    out: &mut [i8],
    sums: impl Fn(&[i8]) -> (i64, i64),
    per_channel: impl Fn(&GnChannel, &[i8], &mut [i8]),
) {
    if a.groups == 0 || a.hw == 0 {
        return;
    }
    let cpg = a.c / a.groups;
    let glen = cpg * a.hw;
    if glen == 0 {
        return;
    }
    for (g, (xin, yout)) in input
        .chunks_exact(glen)
        .zip(out.chunks_exact_mut(glen))
        .take(a.groups)
        .enumerate()
    {
        let mut sum = 0.0f64;
        let mut sumsq = 0.0f64;
        for (j, xc) in xin.chunks_exact(a.hw).enumerate() {
            let s = a.in_q.at(g * cpg + j) as f64;
            let (s1, s2) = sums(xc);
            sum += s * s1 as f64;
            sumsq += s * s * s2 as f64;
        }
        let n = glen as f64;
        let mean = sum / n;
        let var = (sumsq / n - mean * mean).max(0.0);
        let inv = 1.0 / libm::sqrt(var + a.eps as f64);
        for (j, (xc, yc)) in xin
            .chunks_exact(a.hw)
            .zip(yout.chunks_exact_mut(a.hw))
            .enumerate()
        {
            let c = g * cpg + j;
            let s_c = a.in_q.at(c) as f64;
            let gm = a.gamma.get(c) as f64;
            let (mul, add) = crate::generic::film(
                a.scale_shift,
                a.c,
                c,
                (s_c * inv * gm) as f32,
                (a.beta.get(c) as f64 - mean * inv * gm) as f32,
            );
            let ch = GnChannel {
                mul,
                add,
                silu: a.silu,
                out_scale: a.out_scale,
            };
            per_channel(&ch, xc, yc);
        }
    }
}

/// Columns of the score row accumulated at once in `i32` (a stack block; the scratch is `f32`).
const SCORE_BLOCK: usize = 64;

/// The attention loop of [`attention_i8`], generic over the output element.
#[allow(clippy::too_many_arguments)]
fn attention_i8_into<T>(
    g: &AttentionGeom,
    q: &[i8],
    k: &[i8],
    v: &[i8],
    qk_scale: f32,
    sv: f32,
    scores: &mut [f32],
    out: &mut [T],
    store: impl Fn(f32) -> T,
) {
    let n = g.n;
    let hl = g.head_dim * n;
    let mut blk = [0i32; SCORE_BLOCK];
    for (((qh, kh), vh), oh) in q
        .chunks_exact(hl)
        .zip(k.chunks_exact(hl))
        .zip(v.chunks_exact(hl))
        .zip(out.chunks_exact_mut(hl))
        .take(g.heads)
    {
        for i in 0..n {
            for (j0, sblk) in (0..n)
                .step_by(SCORE_BLOCK)
                .zip(scores.chunks_mut(SCORE_BLOCK))
            {
                let acc = &mut blk[..sblk.len()];
                acc.fill(0);
                for (qrow, krow) in qh.chunks_exact(n).zip(kh.chunks_exact(n)) {
                    let qv = qrow[i] as i32;
                    // (`j0 < n = krow.len()`; `get` keeps a bounds panic out of the firmware.)
                    for (a, &kv) in acc.iter_mut().zip(krow.get(j0..).unwrap_or(&[])) {
                        *a = a.wrapping_add(qv * kv as i32);
                    }
                }
                for (s, &a) in sblk.iter_mut().zip(acc.iter()) {
                    *s = a as f32 * qk_scale;
                }
            }
            let mut m = f32::NEG_INFINITY;
            for &s in scores.iter() {
                m = m.max(s);
            }
            let mut sum = 0.0f32;
            for s in scores.iter_mut() {
                *s = exp_det(*s - m);
                sum += *s;
            }
            let f = sv / sum;
            for (vrow, orow) in vh.chunks_exact(n).zip(oh.chunks_exact_mut(n)) {
                let mut acc = 0.0f32;
                for (&e, &x) in scores.iter().zip(vrow) {
                    acc += e * x as f32;
                }
                orow[i] = store(acc * f);
            }
        }
    }
}

/// `exp(x)` with an exactly specified sequence of `f32` operations, so every kernel tier (scalar or SIMD) produces
/// the same bits: clamp to [-87, 88]; `n = rint(x · log2 e)` (ties to even); `r = (x − n·c1) − n·c2` with
/// `c1 + c2 = ln 2`; a degree-6 Taylor polynomial of `r` by Horner's rule (each step a multiply, then an add — never
/// fused); times `2^n` built from the exponent bits. Within 5e-7 (relative) of `expf` on [-87, 88] (tested).
#[inline(always)]
pub fn exp_det(x: f32) -> f32 {
    let x = x.clamp(-87.0, 88.0);
    let n = libm::rintf(x * core::f32::consts::LOG2_E);
    let r = x - n * EXP_C1;
    let r = r - n * EXP_C2;
    let mut p = EXP_POLY[0];
    for &c in &EXP_POLY[1..] {
        p = p * r + c;
    }
    p * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

/// High part of ln 2 for [`exp_det`] (exact in 16 bits).
pub const EXP_C1: f32 = 0.693_145_75;
/// Low part of ln 2 for [`exp_det`].
pub const EXP_C2: f32 = 1.428_606_8e-6;
/// Horner coefficients of [`exp_det`], highest degree first: 1/720, 1/120, 1/24, 1/6, 1/2, 1, 1.
pub const EXP_POLY: [f32; 7] = [
    1.0 / 720.0,
    1.0 / 120.0,
    1.0 / 24.0,
    1.0 / 6.0,
    0.5,
    1.0,
    1.0,
];

/// Multi-head scaled dot-product self-attention on int8 `q`, `k`, `v` (scales `sq`, `sk`, `sv`).
///
/// Layout as [`crate::generic::attention`]: channel-major `[heads·head_dim, n]`, `scores` scratch of `n` floats
/// (one score row at a time). Score `s_j = (Σ_d q_d,i · k_d,j as i32) as f32 · (sq · sk · scale)` with
/// `scale = 1 / sqrtf(head_dim)` and the product computed once in that order; stable softmax ([`exp_det`], `f32`
/// sum in `j` order); `acc = Σ_j e_j · v_j as f32` (`j` order), `y = acc · (sv / sum)`, then [`quantize`]`(y, so)` for
/// [`QOut::I8`] or `y` for [`QOut::F32`].
#[allow(clippy::too_many_arguments)]
pub fn attention_i8(
    g: &AttentionGeom,
    q: &[i8],
    sq: f32,
    k: &[i8],
    sk: f32,
    v: &[i8],
    sv: f32,
    scores: &mut [f32],
    out: QOut<'_>,
) {
    let n = g.n;
    if n == 0 || g.head_dim == 0 || scores.len() < n {
        return;
    }
    let scale = 1.0 / libm::sqrtf(g.head_dim as f32);
    let qk = sq * sk * scale;
    let scores = &mut scores[..n];
    match out {
        QOut::I8 { data, scale: so } => {
            attention_i8_into(g, q, k, v, qk, sv, scores, data, |y| quantize(y, so))
        }
        QOut::F32(data) => attention_i8_into(g, q, k, v, qk, sv, scores, data, |y| y),
    }
}

/// 2×2 average pooling with stride 2 on int8 (floor for odd sizes, as [`crate::generic::avg_pool2`]):
/// `[c, h, w] → [c, h/2, w/2]`; the `i32` sum of the four inputs is requantized with
/// `Requant::from_real(in_scale / (4 · out_scale))` and clamped to `[-128, 127]`.
pub fn avg_pool2_i8(
    input: &[i8],
    in_scale: f32,
    c: usize,
    h: usize,
    w: usize,
    out: &mut [i8],
    out_scale: f32,
) {
    let (oh, ow) = (h / 2, w / 2);
    if oh == 0 || ow == 0 {
        return;
    }
    let m = Requant::from_real(in_scale as f64 / (4.0 * out_scale as f64));
    for (ip, op) in input
        .chunks_exact(h * w)
        .zip(out.chunks_exact_mut(oh * ow))
        .take(c)
    {
        for (oy, orow) in op.chunks_exact_mut(ow).enumerate() {
            let r0 = &ip[2 * oy * w..2 * oy * w + w];
            let r1 = &ip[(2 * oy + 1) * w..(2 * oy + 1) * w + w];
            for (ox, o) in orow.iter_mut().enumerate() {
                let s = r0[2 * ox] as i32
                    + r0[2 * ox + 1] as i32
                    + r1[2 * ox] as i32
                    + r1[2 * ox + 1] as i32;
                *o = m.apply(s as i64).clamp(-128, 127) as i8;
            }
        }
    }
}

/// Nearest-neighbour ×2 upsampling on int8 (the scale is unchanged): `[c, h, w] → [c, 2h, 2w]`.
pub fn upsample_nearest2_i8(input: &[i8], c: usize, h: usize, w: usize, out: &mut [i8]) {
    if h == 0 || w == 0 {
        return;
    }
    for (ip, op) in input
        .chunks_exact(h * w)
        .zip(out.chunks_exact_mut(4 * h * w))
        .take(c)
    {
        for (irow, orows) in ip.chunks_exact(w).zip(op.chunks_exact_mut(4 * w)) {
            let (a, b) = orows.split_at_mut(2 * w);
            for (x, &v) in irow.iter().enumerate() {
                a[2 * x] = v;
                a[2 * x + 1] = v;
            }
            b.copy_from_slice(a);
        }
    }
}

#[cfg(test)]
mod tests {
    //! The int8 kernels against f64 / f32 references on the dequantized tensors.
    extern crate std;
    use super::*;

    /// The definition [`quantize`] replaced: `libm::roundf`, then NaN → 0 and the clamp.
    fn quantize_libm(d: f32) -> i8 {
        let q = libm::roundf(d);
        if q.is_nan() {
            0
        } else {
            q.clamp(-128.0, 127.0) as i8
        }
    }

    /// Every 61st float (all exponents, both signs, NaN and the infinities among them) and every float within 4
    /// ulps of each half-integer and integer up to ±200, against libm's rounding.
    #[test]
    fn quantize_is_libm_round() {
        let mut bits = 0u32;
        loop {
            let d = f32::from_bits(bits);
            assert_eq!(quantize(d, 1.0), quantize_libm(d), "{d:e} ({bits:#x})");
            let Some(b) = bits.checked_add(61) else { break };
            bits = b;
        }
        for k in -400i32..=400 {
            let c = k as f32 / 2.0;
            for sign in [1.0f32, -1.0] {
                let c = sign * c;
                for o in -4i32..=4 {
                    let d = f32::from_bits((c.to_bits() as i32 + o) as u32);
                    assert_eq!(quantize(d, 1.0), quantize_libm(d), "{d:e}");
                }
            }
        }
        for d in [
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            0.0,
            -0.0,
            3e9,
            -3e9,
        ] {
            assert_eq!(quantize(d, 1.0), quantize_libm(d), "{d:e}");
        }
    }

    /// All 2^32 floats (tens of seconds in release): `cargo test --release -p ember-kernels --lib -- --ignored`.
    #[test]
    #[ignore]
    fn quantize_is_libm_round_everywhere() {
        for bits in 0..=u32::MAX {
            let d = f32::from_bits(bits);
            assert_eq!(quantize(d, 1.0), quantize_libm(d), "{bits:#x}");
        }
    }

    /// [`crate::expf`] against `libm::expf` on every 7th float of its inlined domain (both signs) and across its
    /// edges; [`crate::silu`] follows.
    #[test]
    fn expf_is_libm_expf() {
        for sign in [0u32, 0x8000_0000] {
            let mut h = 0x3900_0000 - 64;
            while h <= 0x42ae_ac50 + 64 {
                let x = f32::from_bits(sign | h);
                assert_eq!(crate::expf(x).to_bits(), libm::expf(x).to_bits(), "{x:e}");
                h += if (0x3900_0000 + 64..0x42ae_ac50 - 64).contains(&h) {
                    7
                } else {
                    1
                };
            }
        }
        for x in [
            0.0f32,
            -0.0,
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            88.7,
            -104.0,
            1e-30,
        ] {
            assert_eq!(crate::expf(x).to_bits(), libm::expf(x).to_bits(), "{x:e}");
        }
    }

    /// All 2^32 floats: `cargo test --release -p ember-kernels --lib -- --ignored`.
    #[test]
    #[ignore]
    fn expf_is_libm_expf_everywhere() {
        for bits in 0..=u32::MAX {
            let x = f32::from_bits(bits);
            assert_eq!(
                crate::expf(x).to_bits(),
                libm::expf(x).to_bits(),
                "{bits:#x}"
            );
        }
    }

    #[test]
    fn exp_det_is_close_to_expf() {
        let mut worst = 0.0f64;
        let mut x = -87.0f32;
        while x <= 88.0 {
            let (a, b) = (exp_det(x) as f64, libm::expf(x) as f64);
            worst = worst.max(((a - b) / b).abs());
            x += 0.0137;
        }
        assert!(worst < 5e-7, "worst relative error {worst:e}");
        assert_eq!(exp_det(0.0), 1.0);
        assert!(exp_det(-1000.0) < 1e-37 && exp_det(f32::NAN).is_nan());
    }
    use crate::generic::{self, GroupNormArgs};
    use std::vec;
    use std::vec::Vec;

    /// 64-bit LCG (Knuth's MMIX constants), high bits out.
    struct Lcg(u64);
    impl Lcg {
        fn next_u32(&mut self) -> u32 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (self.0 >> 32) as u32
        }
        /// Uniform in [-1, 1).
        fn f(&mut self) -> f32 {
            (self.next_u32() >> 8) as f32 / (1u32 << 23) as f32 - 1.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next_u32() as usize) % n
        }
        fn i8(&mut self) -> i8 {
            self.next_u32() as u8 as i8
        }
        fn vec(&mut self, n: usize) -> Vec<f32> {
            (0..n).map(|_| self.f()).collect()
        }
        fn vec_i8(&mut self, n: usize) -> Vec<i8> {
            (0..n).map(|_| self.i8()).collect()
        }
    }

    fn max_abs(v: &[f64]) -> f64 {
        v.iter().fold(0.0, |m, x| m.max(x.abs()))
    }

    fn round_clamp(v: f64) -> i64 {
        v.round().clamp(-128.0, 127.0) as i64
    }

    fn assert_within_1(got: &[i8], want: &[i64], what: &str) {
        assert_eq!(got.len(), want.len());
        for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
            assert!((g as i64 - w).abs() <= 1, "{what}: element {i}: {g} vs {w}");
        }
    }

    /// The Cortex-M tiers' 32-bit epilogue ([`FastI8`]) against [`ChannelEpilogue::store_i8`], wherever
    /// `fast_i8` offers it: random and extreme multipliers (every shift from 0 to 63, zero, saturated), biases, sums
    /// (including `i32::MIN` / `MAX`) and residual planes (full, short, missing). Runs on every host, not only
    /// under QEMU, so a wrong bound in its overflow argument fails here first.
    #[test]
    fn fast_i8_epilogue_matches_store_i8() {
        let mut r = Lcg(77);
        let rq = |r: &mut Lcg| match r.below(8) {
            0 => Requant::ZERO,
            1 => Requant {
                mult: i32::MAX,
                shift: r.below(64) as u32,
            },
            2 => Requant::from_real(r.f().abs() as f64 * 4.0),
            _ => Requant {
                mult: (r.next_u32() >> 1) as i32 | (1 << 30),
                // Mostly where the fast path applies (and just below), sometimes anywhere.
                shift: if r.below(4) == 0 {
                    r.below(64)
                } else {
                    30 + r.below(34)
                } as u32,
            },
        };
        let edge = [i32::MIN, i32::MAX, 0, -1, 1, i32::MIN + 1, i32::MAX - 1];
        let (mut offered, mut with_residual) = (0, 0);
        for case in 0..20_000 {
            let len = 1 + r.below(40);
            let plane = r.vec_i8(len);
            let rlen = match r.below(4) {
                0 => 0,
                1 => r.below(plane.len()),
                _ => plane.len(),
            };
            let ch = ChannelEpilogue {
                sa: 0.0,
                sb: 0.0,
                bsum: 0.0,
                sr: 0.0,
                div: 1.0,
                bias_q: match r.below(6) {
                    0 => i64::from(i32::MAX) + 1,
                    1 => i64::from(edge[r.below(edge.len())]),
                    _ => (r.next_u32() as i32 >> r.below(32)) as i64,
                },
                ma: rq(&mut r),
                mb: rq(&mut r),
                mr: rq(&mut r),
                rplane: &plane[..rlen],
            };
            let Some(f) = ch.fast_i8() else { continue };
            offered += 1;
            with_residual += usize::from(rlen > 0);
            let n = 1 + r.below(8);
            let sum = |r: &mut Lcg| {
                if r.below(4) == 0 {
                    edge[r.below(edge.len())]
                } else {
                    r.next_u32() as i32 >> r.below(32)
                }
            };
            let a: Vec<i32> = (0..n).map(|_| sum(&mut r)).collect();
            // A second part that is empty (all 0) in a quarter of the cases, else partly zero.
            let no_b = r.below(4) == 0;
            let b: Vec<i32> = (0..n)
                .map(|_| {
                    if no_b || r.below(3) == 0 {
                        0
                    } else {
                        sum(&mut r)
                    }
                })
                .collect();
            let p0 = r.below(plane.len() + 2);
            let (mut want, mut got) = (vec![0i8; n], vec![0i8; n]);
            ch.store_i8(p0, &a, &b, &mut want);
            f.store(p0, &a, Some(&b), &mut got);
            if b.iter().all(|&v| v == 0) {
                let mut got_a = vec![0i8; n];
                f.store(p0, &a, None, &mut got_a);
                assert_eq!(got_a, want, "case {case} without b");
            }
            assert_eq!(got, want, "case {case}: {ch:?}, p0 {p0}, a {a:?}, b {b:?}");
        }
        // The generator must reach the fast path often, with and without a residual.
        assert!(
            offered > 5_000 && with_residual > 2_000,
            "{offered} / {with_residual}"
        );
    }

    #[test]
    fn requant_matches_real_multiplier() {
        let mut r = Lcg(1);
        for _ in 0..2000 {
            // log-uniform in [1e-6, 100]
            let real = 10f64.powf(-6.0 + 8.0 * (r.f() as f64 + 1.0) / 2.0);
            let m = Requant::from_real(real);
            assert!(m.shift <= 62 && m.mult >= 1 << 30, "{real}: {m:?}");
            for _ in 0..50 {
                // |x·r| <= 2^29 so the 2^-31 relative error of `mult` stays below half a unit.
                let lim = ((1u64 << 29) as f64 / real).min(i32::MAX as f64) as i64;
                let mag = 10f64.powf(9.5 * (r.f() as f64 + 1.0) / 2.0) as i64 % (lim + 1);
                let x = if r.below(2) == 0 { mag } else { -mag };
                let want = (x as f64 * real).round() as i64;
                let got = m.apply(x);
                assert!((got - want).abs() <= 1, "r={real} x={x}: {got} vs {want}");
            }
            for x in -300i64..300 {
                let want = (x as f64 * real).round() as i64;
                assert!((m.apply(x) - want).abs() <= 1);
            }
        }
        // Exact powers of two: exact, ties round half up.
        let half = Requant::from_real(0.5);
        assert_eq!(
            half,
            Requant {
                mult: 1 << 30,
                shift: 31
            }
        );
        assert_eq!(half.apply(3), 2);
        assert_eq!(half.apply(-3), -1);
        assert_eq!(half.apply(-4), -2);
        assert_eq!(Requant::from_real(1.0).apply(-123_456), -123_456);
        // Mantissa rounding up to 2^31.
        let near1 = Requant::from_real(1.0 - 1e-12);
        assert_eq!(
            near1,
            Requant {
                mult: 1 << 30,
                shift: 30
            }
        );
    }

    #[test]
    fn requant_edge_cases() {
        for r in [
            0.0,
            -0.0,
            -1.0,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            1e-300,
            1e-20,
            2f64.powi(-40),
        ] {
            let m = Requant::from_real(r);
            assert_eq!(m, Requant::ZERO, "{r}");
            assert_eq!(m.apply(i64::MAX), 0);
            assert_eq!(m.apply(-12345), 0);
        }
        // Smallest multipliers still represented: shift 62.
        let tiny = Requant::from_real(2f64.powi(-32));
        assert_eq!(tiny.shift, 62);
        assert_eq!(tiny.apply(i32::MAX as i64), 0); // just below 0.5
        assert_eq!(tiny.apply(i32::MIN as i64), 0); // -0.5 rounds half up to 0
        let tiny3 = Requant::from_real(3.0 * 2f64.powi(-33));
        assert_eq!(
            tiny3,
            Requant {
                mult: 3 << 29,
                shift: 62
            }
        );
        assert_eq!(tiny3.apply(i32::MAX as i64), 1); // about 0.75
        assert_eq!(
            Requant::from_real(2f64.powi(-31)).apply(i32::MIN as i64),
            -1
        );
        // Huge: saturated, never overflows.
        for r in [2f64.powi(31), 1e12, f64::MAX] {
            let m = Requant::from_real(r);
            assert_eq!(
                m,
                Requant {
                    mult: i32::MAX,
                    shift: 0
                }
            );
            assert_eq!(m.apply(2), 2 * i32::MAX as i64);
            assert_eq!(m.apply(i64::MIN), i32::MIN as i64 * i32::MAX as i64);
        }
        let just_below = Requant::from_real(2f64.powi(31) * 0.75);
        assert_eq!(just_below.shift, 0);
        assert_eq!(just_below.apply(1), 3 << 29);
        // x is clamped to the i32 range; hand-built extreme multipliers never overflow.
        let one = Requant::from_real(1.0);
        assert_eq!(one.apply(i64::MAX), i32::MAX as i64);
        assert_eq!(one.apply(i64::MIN), i32::MIN as i64);
        let wild = Requant {
            mult: i32::MIN,
            shift: 200,
        };
        assert_eq!(wild.apply(i64::MIN), 1);
        let wild0 = Requant {
            mult: i32::MIN,
            shift: 0,
        };
        assert_eq!(wild0.apply(i64::MIN), 1i64 << 62);
    }

    #[test]
    fn quantize_rounds_ties_away_clamps_and_zeroes_nan() {
        assert_eq!(quantize(0.5, 1.0), 1);
        assert_eq!(quantize(-0.5, 1.0), -1);
        assert_eq!(quantize(1.5, 1.0), 2);
        assert_eq!(quantize(2.5, 1.0), 3);
        assert_eq!(quantize(-2.5, 1.0), -3);
        assert_eq!(quantize(0.49, 1.0), 0);
        assert_eq!(quantize(0.3, 0.1), 3); // 0.3f32 / 0.1f32 rounds to 3.0000002
        assert_eq!(quantize(1000.0, 1.0), 127);
        assert_eq!(quantize(-1000.0, 1.0), -128);
        assert_eq!(quantize(-128.4, 1.0), -128);
        assert_eq!(quantize(127.49, 1.0), 127);
        assert_eq!(quantize(f32::INFINITY, 1.0), 127);
        assert_eq!(quantize(f32::NEG_INFINITY, 1.0), -128);
        assert_eq!(quantize(f32::NAN, 1.0), 0);
        assert_eq!(quantize(1.0, f32::NAN), 0);
        assert_eq!(quantize(0.0, 0.0), 0);
        assert_eq!(quantize(1.0, 0.0), 127);

        let x = [0.26f32, -0.74, 100.0, f32::NAN, 0.125];
        let mut q = [9i8; 4];
        quantize_slice(&x, 0.25, &mut q);
        assert_eq!(q, [1, -3, 127, 0]);
        let mut d = [7f32; 6];
        dequantize_slice(
            &[1, -2, 3, 4, 5],
            ActQ {
                scale: 0.5,
                split: 1,
                scale2: 2.0,
            },
            2,
            &mut d,
        );
        assert_eq!(d, [0.5, -1.0, 6.0, 8.0, 10.0, 7.0]);
        dequantize_slice(&[1, 2], ActQ::single(1.0), 0, &mut d);
        assert_eq!(d[0], 0.5);
        assert_eq!(ActQ::single(3.0).at(usize::MAX - 1), 3.0);
    }

    #[test]
    fn weight_quantization_per_channel() {
        let w = [0.5f32, -1.0, 0.25, 0.0, 0.0, 0.0, 3.0, f32::INFINITY, 1.0];
        let mut q = [0i8; 9];
        let mut s = [0f32; 3];
        quantize_weights_per_channel(&w, 3, &mut q, &mut s);
        assert_eq!(s, [1.0 / 127.0, 1.0, 1.0]);
        assert_eq!(q, [64, -127, 32, 0, 0, 0, 3, 127, 1]);
        // Random rows: max maps to ±127, all within half a step.
        let mut r = Lcg(5);
        let w = r.vec(4 * 27);
        let mut q = vec![0i8; w.len()];
        let mut s = vec![0f32; 4];
        quantize_weights_per_channel(&w, 4, &mut q, &mut s);
        for c in 0..4 {
            let row = &w[c * 27..(c + 1) * 27];
            assert!(q[c * 27..(c + 1) * 27].iter().any(|&v| v.abs() == 127));
            for (i, &v) in row.iter().enumerate() {
                assert!((q[c * 27 + i] as f32 * s[c] - v).abs() <= 0.5001 * s[c]);
            }
        }
        // Short outputs and zero channels never panic.
        quantize_weights_per_channel(&w, 4, &mut q[..5], &mut s[..2]);
        quantize_weights_per_channel(&w, 0, &mut q, &mut s);
        quantize_weights_per_channel(&[], 3, &mut q, &mut s);
        assert_eq!(s[..3], [1.0, 1.0, 1.0]);
        quantize_weights_per_channel(&w[..2], 3, &mut q, &mut s);
    }

    #[test]
    fn weights_i8_get() {
        let data = [1i8, -2, 3, 4, 5];
        let scale = [0.5f32, 2.0];
        let w = Weights::I8 {
            data: &data,
            scale: &scale,
            per: 2,
        };
        assert_eq!(w.len(), 5);
        assert!(!w.is_empty());
        let got: Vec<f32> = (0..6).map(|i| w.get(i)).collect();
        assert_eq!(got, [0.5, -1.0, 6.0, 8.0, 0.0, 0.0]); // element 4 has no scale, 5 no data
        let z = Weights::I8 {
            data: &data,
            scale: &scale,
            per: 0,
        };
        assert_eq!(z.get(0), 0.0);
        assert_eq!(z.get(usize::MAX), 0.0);
        // Float kernels accept int8 weights.
        let mut out = [0f32; 2];
        let x = [1.0f32, 1.0];
        generic::linear(&x, w, None, false, false, &mut out);
        assert_eq!(out, [-0.5, 14.0]);
    }

    struct ConvCase {
        g: Conv2dGeom,
        split: Option<usize>,
        bias: bool,
        chan_add: bool,
        residual: bool,
        div: f32,
    }

    fn geom(
        cin: usize,
        cout: usize,
        h: usize,
        w: usize,
        k: usize,
        stride: usize,
        pads: [usize; 4],
    ) -> Conv2dGeom {
        let [pad_t, pad_l, pad_b, pad_r] = pads;
        Conv2dGeom {
            cin,
            h,
            w,
            cout,
            k,
            stride,
            pad_t,
            pad_l,
            oh: (h + pad_t + pad_b - k) / stride + 1,
            ow: (w + pad_l + pad_r - k) / stride + 1,
        }
    }

    /// Runs one case in both output modes; returns the largest I8 deviation from `round(ref / so)`.
    fn run_conv_case(r: &mut Lcg, c: &ConvCase) -> i64 {
        let g = &c.g;
        let plane = g.oh * g.ow;
        let in_q = match c.split {
            Some(s) => ActQ {
                scale: 0.021,
                split: s,
                scale2: 0.047,
            },
            None => ActQ::single(0.031),
        };
        let x = r.vec_i8(g.cin * g.h * g.w);
        let wf: Vec<f32> = r
            .vec(g.cout * g.cin * g.k * g.k)
            .iter()
            .map(|v| v * 0.3)
            .collect();
        let mut wq = vec![0i8; wf.len()];
        let mut ws = vec![0f32; g.cout];
        quantize_weights_per_channel(&wf, g.cout, &mut wq, &mut ws);
        let bias: Vec<f32> = r.vec(g.cout);
        let add: Vec<f32> = r.vec(g.cout).iter().map(|v| v * 0.5).collect();
        let res = r.vec_i8(g.cout * plane);
        let sr = 0.013f32;

        // f64 reference on the dequantized tensors.
        let mut want = vec![0f64; g.cout * plane];
        for co in 0..g.cout {
            for oy in 0..g.oh {
                for ox in 0..g.ow {
                    let mut acc = 0f64;
                    for ci in 0..g.cin {
                        for ky in 0..g.k {
                            for kx in 0..g.k {
                                let iy = (oy * g.stride + ky) as isize - g.pad_t as isize;
                                let ix = (ox * g.stride + kx) as isize - g.pad_l as isize;
                                if iy < 0 || ix < 0 || iy >= g.h as isize || ix >= g.w as isize {
                                    continue;
                                }
                                let xv = x[ci * g.h * g.w + iy as usize * g.w + ix as usize] as f64
                                    * in_q.at(ci) as f64;
                                let wv = wq[((co * g.cin + ci) * g.k + ky) * g.k + kx] as f64
                                    * ws[co] as f64;
                                acc += xv * wv;
                            }
                        }
                    }
                    if c.bias {
                        acc += bias[co] as f64;
                    }
                    if c.chan_add {
                        acc += add[co] as f64;
                    }
                    let p = oy * g.ow + ox;
                    if c.residual {
                        acc += res[co * plane + p] as f64 * sr as f64;
                    }
                    want[co * plane + p] = acc / c.div as f64;
                }
            }
        }

        let bias_w = c.bias.then_some(Weights::F32(&bias));
        let add_s = c.chan_add.then_some(&add[..]);
        let res_s = c.residual.then_some((&res[..], sr));
        let mut acc = vec![0i32; conv2d_i8_scratch_len(g)];
        let mut y = vec![f32::NAN; g.cout * plane];
        conv2d_i8(
            g,
            &x,
            in_q,
            &wq,
            &ws,
            bias_w,
            add_s,
            res_s,
            c.div,
            &mut acc,
            QOut::F32(&mut y),
        );
        let m = max_abs(&want);
        for (i, (&a, &b)) in y.iter().zip(&want).enumerate() {
            assert!(
                (a as f64 - b).abs() <= 1e-5 * m + 1e-30,
                "{g:?} F32 element {i}: {a} vs {b}"
            );
        }
        // I8: `so` chosen so the range uses most of int8, plus a tighter one that saturates.
        let mut worst = 0;
        for so in [(m / 100.0) as f32, (m / 300.0) as f32] {
            let mut q = vec![99i8; g.cout * plane];
            conv2d_i8(
                g,
                &x,
                in_q,
                &wq,
                &ws,
                bias_w,
                add_s,
                res_s,
                c.div,
                &mut acc,
                QOut::I8 {
                    data: &mut q,
                    scale: so,
                },
            );
            for (&a, &b) in q.iter().zip(&want) {
                worst = worst.max((a as i64 - round_clamp(b / so as f64)).abs());
            }
        }
        worst
    }

    #[test]
    fn conv2d_i8_matches_reference() {
        let mut r = Lcg(0xe3b0_c442_98fc_1c14);
        let cases = [
            // k=3 pad 1 stride 1
            ConvCase {
                g: geom(5, 4, 7, 7, 3, 1, [1, 1, 1, 1]),
                split: None,
                bias: true,
                chan_add: false,
                residual: false,
                div: 1.0,
            },
            // k=3 stride 2 asymmetric (0, 1, 0, 1) padding: oh = h / 2
            ConvCase {
                g: geom(3, 6, 8, 6, 3, 2, [0, 0, 1, 1]),
                split: None,
                bias: true,
                chan_add: false,
                residual: false,
                div: 1.0,
            },
            ConvCase {
                g: geom(4, 3, 7, 5, 3, 2, [1, 1, 1, 1]),
                split: None,
                bias: true,
                chan_add: true,
                residual: false,
                div: 1.0,
            },
            // k=1
            ConvCase {
                g: geom(8, 5, 5, 7, 1, 1, [0, 0, 0, 0]),
                split: None,
                bias: true,
                chan_add: false,
                residual: false,
                div: 1.0,
            },
            // split input (skip concat)
            ConvCase {
                g: geom(6, 4, 5, 5, 3, 1, [1, 1, 1, 1]),
                split: Some(2),
                bias: true,
                chan_add: false,
                residual: false,
                div: 1.0,
            },
            ConvCase {
                g: geom(6, 3, 7, 5, 1, 1, [0, 0, 0, 0]),
                split: Some(5),
                bias: false,
                chan_add: false,
                residual: false,
                div: 1.0,
            },
            // residual, chan_add, div
            ConvCase {
                g: geom(4, 4, 5, 7, 3, 1, [1, 1, 1, 1]),
                split: None,
                bias: true,
                chan_add: true,
                residual: true,
                div: 1.0,
            },
            ConvCase {
                g: geom(4, 4, 7, 7, 3, 1, [1, 1, 1, 1]),
                split: Some(1),
                bias: true,
                chan_add: true,
                residual: true,
                div: 1.414,
            },
            // bias absent, div != 1
            ConvCase {
                g: geom(3, 2, 5, 5, 3, 1, [1, 1, 1, 1]),
                split: None,
                bias: false,
                chan_add: false,
                residual: true,
                div: 2.0,
            },
            // odd / tiny sizes, cout = 1
            ConvCase {
                g: geom(2, 1, 1, 1, 3, 1, [1, 1, 1, 1]),
                split: None,
                bias: true,
                chan_add: false,
                residual: false,
                div: 1.0,
            },
            ConvCase {
                g: geom(3, 1, 1, 5, 3, 1, [1, 1, 1, 1]),
                split: None,
                bias: true,
                chan_add: true,
                residual: true,
                div: 1.0,
            },
            ConvCase {
                g: geom(1, 1, 7, 1, 1, 1, [0, 0, 0, 0]),
                split: None,
                bias: false,
                chan_add: false,
                residual: false,
                div: 1.0,
            },
            ConvCase {
                g: geom(2, 3, 5, 5, 5, 2, [2, 2, 2, 2]),
                split: Some(1),
                bias: true,
                chan_add: false,
                residual: false,
                div: 1.0,
            },
        ];
        for c in &cases {
            let worst = run_conv_case(&mut r, c);
            assert!(worst <= 1, "{:?}: I8 off by {worst}", c.g);
        }
        // Random shapes and options.
        for case in 0..300 {
            let k = [1, 3, 3, 5][case % 4];
            let stride = 1 + case % 2;
            let (h, w) = (1 + r.below(9), 1 + r.below(9));
            let pads = [r.below(k), r.below(k), r.below(k), r.below(k)];
            if h + pads[0] + pads[2] < k || w + pads[1] + pads[3] < k {
                continue;
            }
            let cin = 1 + r.below(6);
            let g = geom(cin, 1 + r.below(4), h, w, k, stride, pads);
            let c = ConvCase {
                g,
                split: (r.below(2) == 0).then(|| r.below(cin + 1)),
                bias: r.below(2) == 0,
                chan_add: r.below(2) == 0,
                residual: r.below(2) == 0,
                div: [1.0, 2.0, 1.414][r.below(3)],
            };
            let worst = run_conv_case(&mut r, &c);
            assert!(worst <= 1, "{:?}: I8 off by {worst}", c.g);
        }
    }

    #[test]
    fn conv2d_i8_short_slices_and_zero_sizes() {
        let g = geom(2, 2, 3, 3, 3, 1, [1, 1, 1, 1]);
        let x = [1i8; 18];
        let w = [1i8; 36];
        let ws = [1.0f32; 2];
        let q = ActQ::single(1.0);
        let mut acc = [0i32; 18];
        // Scratch too short: nothing written.
        let mut y = [7f32; 18];
        conv2d_i8(
            &g,
            &x,
            q,
            &w,
            &ws,
            None,
            None,
            None,
            1.0,
            &mut acc[..17],
            QOut::F32(&mut y),
        );
        assert!(y.iter().all(|&v| v == 7.0));
        // Full run: center pixel sees 9 taps × 2 channels.
        conv2d_i8(
            &g,
            &x,
            q,
            &w,
            &ws,
            None,
            None,
            None,
            1.0,
            &mut acc,
            QOut::F32(&mut y),
        );
        assert_eq!(y[4], 18.0);
        assert_eq!(y[0], 8.0);
        // Short everything: no panic; the missing input channel reads as zero.
        let mut yi = [0i8; 12];
        conv2d_i8(
            &g,
            &x[..10],
            q,
            &w[..20],
            &ws[..1],
            Some(Weights::F32(&[1.0])),
            Some(&[]),
            Some((&[1i8; 3], 1.0)),
            1.0,
            &mut acc,
            QOut::I8 {
                data: &mut yi,
                scale: 1.0,
            },
        );
        assert_eq!(yi[4], 10); // 9 taps of channel 0 + bias 1; channel 1 of w missing
        assert!(yi[9..].iter().all(|&v| v == 0)); // channel 1 has no scale: multiplier 0
        conv2d_i8(
            &g,
            &[],
            q,
            &[],
            &[],
            None,
            None,
            None,
            1.0,
            &mut acc,
            QOut::F32(&mut []),
        );
        conv2d_i8(
            &g,
            &[],
            q,
            &[],
            &[],
            None,
            None,
            None,
            1.0,
            &mut acc,
            QOut::F32(&mut y),
        );
        assert!(y.iter().all(|&v| v == 0.0));
        // Zero sizes and degenerate geometry.
        for g in [
            Conv2dGeom { h: 0, w: 0, ..g },
            Conv2dGeom { cin: 0, ..g },
            Conv2dGeom { cout: 0, ..g },
            Conv2dGeom { oh: 0, ..g },
            Conv2dGeom { stride: 0, ..g },
            Conv2dGeom { k: 0, ..g },
            Conv2dGeom { h: 0, ..g },
        ] {
            conv2d_i8(
                &g,
                &x,
                q,
                &w,
                &ws,
                None,
                None,
                None,
                0.0,
                &mut acc,
                QOut::F32(&mut y),
            );
            conv2d_i8(
                &g,
                &x,
                q,
                &w,
                &ws,
                None,
                None,
                None,
                0.0,
                &mut acc,
                QOut::I8 {
                    data: &mut yi,
                    scale: 0.0,
                },
            );
        }
        assert_eq!(conv2d_i8_scratch_len(&g), 18);
    }

    fn run_group_norm_case(
        r: &mut Lcg,
        c: usize,
        hw: usize,
        groups: usize,
        in_q: ActQ,
        film: bool,
        silu: bool,
    ) {
        let x: Vec<i8> = (0..c * hw)
            .map(|i| (r.i8() as i32 / 2 + (i / hw) as i32 * 7 - 20) as i8)
            .collect();
        let gamma: Vec<f32> = r.vec(c).iter().map(|v| 1.0 + 0.5 * v).collect();
        let beta = r.vec(c);
        let ss: Vec<f32> = r.vec(2 * c).iter().map(|v| v * 0.5).collect();
        let mut xf = vec![0f32; c * hw];
        dequantize_slice(&x, in_q, hw, &mut xf);
        let mut yf = vec![0f32; c * hw];
        generic::group_norm(
            &GroupNormArgs {
                c,
                hw,
                groups,
                eps: 1e-5,
                gamma: Weights::F32(&gamma),
                beta: Weights::F32(&beta),
                scale_shift: film.then_some(&ss[..]),
                silu,
            },
            &xf,
            &mut yf,
        );
        let so = yf.iter().fold(0f32, |m, v| m.max(v.abs())) / 120.0;
        let mut q = vec![0i8; c * hw];
        group_norm_i8(
            &GroupNormI8Args {
                c,
                hw,
                groups,
                eps: 1e-5,
                gamma: Weights::F32(&gamma),
                beta: Weights::F32(&beta),
                scale_shift: film.then_some(&ss[..]),
                silu,
                in_q,
                out_scale: so,
            },
            &x,
            &mut q,
        );
        let want: Vec<i64> = yf.iter().map(|&v| quantize(v, so) as i64).collect();
        assert_within_1(&q, &want, "group_norm_i8");
    }

    #[test]
    fn group_norm_i8_matches_f32_kernel() {
        let mut r = Lcg(77);
        let split = ActQ {
            scale: 0.02,
            split: 5,
            scale2: 0.09,
        };
        for (film, silu) in [(false, false), (false, true), (true, false), (true, true)] {
            run_group_norm_case(&mut r, 12, 10, 3, ActQ::single(0.03), film, silu);
            run_group_norm_case(&mut r, 12, 10, 3, split, film, silu);
            run_group_norm_case(&mut r, 8, 49, 4, split, film, silu);
            run_group_norm_case(&mut r, 6, 1, 2, ActQ::single(0.5), film, silu);
            run_group_norm_case(&mut r, 4, 7, 1, split, film, silu);
        }
        // Constant input: variance 0, output beta.
        let x = [5i8; 8];
        let mut q = [0i8; 8];
        let args = GroupNormI8Args {
            c: 2,
            hw: 4,
            groups: 1,
            eps: 1e-5,
            gamma: Weights::F32(&[1.0, 1.0]),
            beta: Weights::F32(&[0.5, -0.25]),
            scale_shift: None,
            silu: false,
            in_q: ActQ::single(0.1),
            out_scale: 0.25,
        };
        group_norm_i8(&args, &x, &mut q);
        assert_eq!(q, [2, 2, 2, 2, -1, -1, -1, -1]);
        // Short / empty / zero sizes never panic.
        group_norm_i8(&args, &x[..5], &mut q);
        group_norm_i8(&args, &x, &mut q[..3]);
        group_norm_i8(&args, &[], &mut []);
        for a in [
            GroupNormI8Args { groups: 0, ..args },
            GroupNormI8Args { hw: 0, ..args },
            GroupNormI8Args { c: 0, ..args },
            GroupNormI8Args {
                c: 1,
                groups: 2,
                ..args
            },
            GroupNormI8Args {
                gamma: Weights::F32(&[]),
                beta: Weights::F32(&[]),
                scale_shift: Some(&[1.0]),
                ..args
            },
        ] {
            group_norm_i8(&a, &x, &mut q);
        }
    }

    fn run_attention_case(
        r: &mut Lcg,
        heads: usize,
        d: usize,
        n: usize,
        sq: f32,
        sk: f32,
        sv: f32,
    ) {
        let len = heads * d * n;
        let (q, k, v) = (r.vec_i8(len), r.vec_i8(len), r.vec_i8(len));
        let deq = |t: &[i8], s: f32| t.iter().map(|&x| x as f32 * s).collect::<Vec<f32>>();
        let g = AttentionGeom {
            heads,
            head_dim: d,
            n,
        };
        let mut scores = vec![0f32; n];
        let mut want = vec![0f32; len];
        generic::attention(
            &g,
            &deq(&q, sq),
            &deq(&k, sk),
            &deq(&v, sv),
            &mut scores,
            &mut want,
        );
        let mut y = vec![f32::NAN; len];
        attention_i8(&g, &q, sq, &k, sk, &v, sv, &mut scores, QOut::F32(&mut y));
        let m = want.iter().fold(0f32, |m, x| m.max(x.abs()));
        for (i, (&a, &b)) in y.iter().zip(&want).enumerate() {
            assert!(
                (a - b).abs() <= 1e-5 * m,
                "attention F32 element {i}: {a} vs {b}"
            );
        }
        let so = m / 110.0;
        let mut yq = vec![0i8; len];
        attention_i8(
            &g,
            &q,
            sq,
            &k,
            sk,
            &v,
            sv,
            &mut scores,
            QOut::I8 {
                data: &mut yq,
                scale: so,
            },
        );
        let wq: Vec<i64> = want.iter().map(|&x| quantize(x, so) as i64).collect();
        assert_within_1(&yq, &wq, "attention_i8");
        // I8 output is exactly the quantized F32 output.
        for (&a, &b) in yq.iter().zip(&y) {
            assert_eq!(a, quantize(b, so));
        }
    }

    #[test]
    fn attention_i8_matches_f32_kernel() {
        let mut r = Lcg(31337);
        run_attention_case(&mut r, 3, 4, 17, 0.03, 0.02, 0.01);
        run_attention_case(&mut r, 2, 8, 64, 0.05, 0.04, 0.02);
        run_attention_case(&mut r, 1, 16, 150, 0.02, 0.02, 0.05); // several score blocks, ragged tail
        run_attention_case(&mut r, 2, 1, 1, 0.1, 0.1, 0.1);
        run_attention_case(&mut r, 1, 32, 65, 0.01, 0.01, 0.3);
        // Short / empty / zero sizes never panic.
        let g = AttentionGeom {
            heads: 2,
            head_dim: 2,
            n: 3,
        };
        let t = [1i8; 12];
        let mut s = [0f32; 3];
        let mut o = [0f32; 12];
        attention_i8(
            &g,
            &t,
            1.0,
            &t,
            1.0,
            &t,
            1.0,
            &mut s[..2],
            QOut::F32(&mut o),
        );
        attention_i8(
            &g,
            &t[..7],
            1.0,
            &t,
            1.0,
            &t[..1],
            1.0,
            &mut s,
            QOut::F32(&mut o),
        );
        attention_i8(
            &g,
            &t,
            1.0,
            &t,
            1.0,
            &t,
            1.0,
            &mut s,
            QOut::F32(&mut o[..5]),
        );
        attention_i8(
            &g,
            &[],
            1.0,
            &[],
            1.0,
            &[],
            1.0,
            &mut [],
            QOut::I8 {
                data: &mut [],
                scale: 1.0,
            },
        );
        for g in [
            AttentionGeom { heads: 0, ..g },
            AttentionGeom { head_dim: 0, ..g },
            AttentionGeom { n: 0, ..g },
        ] {
            attention_i8(&g, &t, 1.0, &t, 1.0, &t, 1.0, &mut s, QOut::F32(&mut o));
        }
        attention_i8(&g, &t, 1.0, &t, 1.0, &t, 1.0, &mut s, QOut::F32(&mut o));
        assert!(o.iter().all(|&v| (v - 1.0).abs() < 1e-6));
    }

    #[test]
    fn avg_pool2_i8_and_upsample() {
        let mut r = Lcg(4242);
        for (c, h, w) in [(2, 3, 5), (3, 8, 6), (1, 2, 2), (2, 7, 7), (1, 1, 5)] {
            let x = r.vec_i8(c * h * w);
            for (si, so) in [(0.05f32, 0.05f32), (0.05, 0.03), (0.02, 0.07), (0.1, 0.011)] {
                let mut xf = vec![0f32; x.len()];
                dequantize_slice(&x, ActQ::single(si), h * w, &mut xf);
                let n = c * (h / 2) * (w / 2);
                let mut want = vec![0f32; n];
                generic::avg_pool2(&xf, c, h, w, &mut want);
                let mut got = vec![0i8; n];
                avg_pool2_i8(&x, si, c, h, w, &mut got, so);
                let wq: Vec<i64> = want.iter().map(|&v| quantize(v, so) as i64).collect();
                assert_within_1(&got, &wq, "avg_pool2_i8");
            }
            let mut up = vec![0i8; 4 * c * h * w];
            upsample_nearest2_i8(&x, c, h, w, &mut up);
            for ch in 0..c {
                for y in 0..2 * h {
                    for xx in 0..2 * w {
                        assert_eq!(
                            up[(ch * 2 * h + y) * 2 * w + xx],
                            x[(ch * h + y / 2) * w + xx / 2]
                        );
                    }
                }
            }
        }
        // Same scale, sums that are multiples of 4 are exact; ties round half up.
        let mut o = [0i8; 1];
        avg_pool2_i8(&[4, 8, -4, 0], 1.0, 1, 2, 2, &mut o, 1.0);
        assert_eq!(o, [2]);
        avg_pool2_i8(&[1, 1, 0, 0], 1.0, 1, 2, 2, &mut o, 1.0);
        assert_eq!(o, [1]);
        avg_pool2_i8(&[-1, -1, 0, 0], 1.0, 1, 2, 2, &mut o, 1.0);
        assert_eq!(o, [0]);
        avg_pool2_i8(&[127; 4], 1.0, 1, 2, 2, &mut o, 0.5);
        assert_eq!(o, [127]);
        // Short / empty / zero sizes never panic.
        let x = [1i8; 16];
        let mut out = [0i8; 64];
        avg_pool2_i8(&x[..5], 1.0, 1, 4, 4, &mut out, 1.0);
        avg_pool2_i8(&x, 1.0, 1, 4, 4, &mut out[..2], 1.0);
        avg_pool2_i8(&x, 1.0, 3, 1, 4, &mut out, 1.0);
        avg_pool2_i8(&x, 0.0, 1, 4, 4, &mut out, 0.0);
        avg_pool2_i8(&[], 1.0, 0, 0, 0, &mut [], 1.0);
        upsample_nearest2_i8(&x[..5], 1, 4, 4, &mut out);
        upsample_nearest2_i8(&x, 1, 4, 4, &mut out[..10]);
        upsample_nearest2_i8(&x, 2, 0, 4, &mut out);
        upsample_nearest2_i8(&[], 0, 0, 0, &mut []);
    }

    #[test]
    fn registry_points_at_quant_kernels() {
        let t = crate::registry::GENERIC;
        let g = geom(1, 1, 2, 2, 1, 1, [0, 0, 0, 0]);
        let mut acc = [0i32; 8];
        let mut y = [0f32; 4];
        (t.conv2d_i8)(
            &g,
            &[1, 2, 3, 4],
            ActQ::single(0.5),
            &[2],
            &[1.0],
            None,
            None,
            None,
            1.0,
            &mut acc,
            QOut::F32(&mut y),
        );
        assert_eq!(y, [1.0, 2.0, 3.0, 4.0]);
        let _ = (t.group_norm_i8, t.attention_i8);
    }
}
