//! NEON tier (baseline aarch64 Advanced SIMD, e.g. Cortex-A53/A72): direct 2-D convolution, `f32` and int8, on the
//! band tiles of [`super::rows`].
//!
//! * `conv2d` (`f32`): 4 output channels × 16 pixels in 16 `q` accumulators; per input channel and tap one load of
//!   the 4 channels' weights and 4 loads of pixels feed 16 lane-indexed `fmla` (64 MACs). Sums are reordered and
//!   fused relative to the generic kernel, so results differ by rounding only (tested against `1e-5 · Σ|w·x|`).
//! * `conv2d_i8`: 4 output channels × 8 pixels. Input channels come in quads (4 `i8` per pixel, one 32-bit lane);
//!   two quads' products are formed by `smull`/`smull2` + `smlal`/`smlal2` in `i16` (two products of `|x| <= 128`,
//!   `|w| <= 127` stay below 2^15) and added pairwise into `i32` by `sadalp`: 6 instructions per 32 MACs. Integer
//!   sums are exact and the epilogue is the generic one, so the output is **bit-identical** to
//!   [`crate::quant::conv2d_i8`]. A layer with a −128 weight (never produced by the quantizer) runs the generic
//!   kernel.
//! * `group_norm`, `attention` (`f32`): the AVX2 tier's algorithms on 4 lanes (reordered sums, a polynomial `exp`),
//!   within the tolerances of the tier tests.
//! * `f16` weights: `fcvtl`/`fcvtl2` convert 8 halves per pair of instructions (exact, like the `half` crate's
//!   software conversion: checked over all 65 536 bit patterns), for the convolution's weight packing and the
//!   linear layer's rows. Half → single conversion is in the ARMv8.0 Advanced SIMD baseline; FEAT_FP16 (half
//!   arithmetic) is not needed.
//!
//! NEON is part of the aarch64 baseline of the Linux and `aarch64-unknown-none` targets (not of the `-softfloat`
//! ones), so the tier runs on practically every aarch64 CPU; it is still selected only after checking.

use core::arch::aarch64::*;

use super::rows::{self, F32Block, I8Block, ACC};
use crate::quant::{ActQ, QOut};
use crate::{Conv2dGeom, Weights};

/// `f32` convolution (see the module docs).
pub(crate) fn conv2d(
    g: &Conv2dGeom,
    input: &[f32],
    w: Weights<'_>,
    bias: Option<Weights<'_>>,
    out: &mut [f32],
) {
    // SAFETY: this function is only reachable through the NEON kernel table, which `super::tier` returns only
    // after `is_aarch64_feature_detected!("neon")` (or `target_feature = "neon"` without std); `block_f32` needs
    // nothing else.
    unsafe { rows::conv2d_f32(g, input, w, bias, out, block_f32, f16_to_f32) }
}

/// [`crate::generic::f16_to_f32`] with `fcvtl`/`fcvtl2`, 8 values at a time (exact, so bit-identical).
pub(crate) fn f16_to_f32(src: &[half::f16], dst: &mut [f32]) {
    // SAFETY: reachable only through the NEON and dotprod tables, which `super::tier` returns after checking NEON.
    unsafe { f16_to_f32_neon(src, dst) }
}

#[target_feature(enable = "neon")]
unsafe fn f16_to_f32_neon(src: &[half::f16], dst: &mut [f32]) {
    let n = src.len().min(dst.len());
    let mut i = 0;
    while i + 8 <= n {
        // SAFETY: i + 8 <= n, so 8 halves (16 bytes) of `src` and 8 floats of `dst` from i are in bounds; `f16` is
        // a `u16` bit pattern (`repr(transparent)`), and the unaligned 1-byte-aligned forms of ld1/st1 are used.
        let h = vld1q_u16(src.as_ptr().add(i) as *const u16);
        let lo: float32x4_t;
        let hi: float32x4_t;
        // `out` (not `lateout`): `lo` must not share `h`'s register, which `fcvtl2` still reads.
        core::arch::asm!(
            "fcvtl {lo:v}.4s, {h:v}.4h",
            "fcvtl2 {hi:v}.4s, {h:v}.8h",
            h = in(vreg) h,
            lo = out(vreg) lo,
            hi = out(vreg) hi,
            options(pure, nomem, nostack, preserves_flags),
        );
        vst1q_f32(dst.as_mut_ptr().add(i), lo);
        vst1q_f32(dst.as_mut_ptr().add(i + 4), hi);
        i += 8;
    }
    for (d, s) in dst[i..n].iter_mut().zip(&src[i..n]) {
        *d = s.to_f32();
    }
}

/// [`crate::generic::linear`] with `fcvtl` row conversion (bit-identical: the same accumulation order, an exact
/// conversion).
pub(crate) fn linear(
    input: &[f32],
    w: Weights<'_>,
    bias: Option<Weights<'_>>,
    silu_in: bool,
    silu_out: bool,
    out: &mut [f32],
) {
    crate::generic::linear_with(input, w, bias, silu_in, silu_out, out, f16_to_f32)
}

/// int8 convolution, bit-identical to [`crate::quant::conv2d_i8`] (see the module docs).
#[allow(clippy::too_many_arguments)]
pub(crate) fn conv2d_i8(
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
    // SAFETY: NEON table only (see `conv2d`); `block_i8` needs only NEON. It pairs quads, so each branch is padded
    // to an even number of quads (`qalign = 2`), and it adds two products in `i16`, so weights must avoid −128
    // (`no_min_weight = true`: the driver checks and falls back).
    unsafe {
        rows::conv2d_i8(
            g, input, in_q, w, w_scale, bias, chan_add, residual, div, acc, out, None, 2, true,
            block_i8,
        )
    }
}

/// [`conv2d_i8`] on weights packed offline in the [`crate::pack::AARCH64_NEON`] layout (whole layer, this split);
/// a length or alignment that does not fit falls back to packing `w` per call. Bit-identical either way.
#[allow(clippy::too_many_arguments)]
pub(crate) fn conv2d_i8_packed(
    g: &Conv2dGeom,
    input: &[i8],
    in_q: ActQ,
    w: &[i8],
    packed: &[u8],
    w_scale: &[f32],
    bias: Option<Weights<'_>>,
    chan_add: Option<&[f32]>,
    residual: Option<(&[i8], f32)>,
    div: f32,
    acc: &mut [i32],
    out: QOut<'_>,
) {
    // SAFETY: as `conv2d_i8` (NEON table only); the packed layout pads quads to 2, a multiple of this kernel's
    // `qalign`, and the driver switches to that padding when it uses the packed words.
    unsafe {
        rows::conv2d_i8(
            g,
            input,
            in_q,
            w,
            w_scale,
            bias,
            chan_add,
            residual,
            div,
            acc,
            out,
            Some(packed),
            2,
            true,
            block_i8,
        )
    }
}

/// NEON `f32` kernel: 4 channels × 16 pixels, lane-indexed FMA; a last block of at most 8 pixels takes 4 channels
/// × 8 pixels.
///
/// # Safety
/// See [`rows::F32BlockFn`].
#[target_feature(enable = "neon")]
unsafe fn block_f32(a: &F32Block<'_>, out: &mut [[f32; ACC]; 4]) {
    let mut px = 0;
    while px < a.ow {
        if a.ow - px <= 8 {
            block_f32_px::<2>(a, out, px);
        } else {
            block_f32_px::<4>(a, out, px);
        }
        px += 16;
    }
}

/// `V` vectors (4·V pixels from `px`) × 4 channels of [`block_f32`].
#[inline(always)]
unsafe fn block_f32_px<const V: usize>(a: &F32Block<'_>, out: &mut [[f32; ACC]; 4], px: usize) {
    let kk = a.toff.len();
    let tp = a.tile.as_ptr();
    let wp = a.wp.as_ptr();
    let mut acc = [[vdupq_n_f32(0.0); V]; 4];
    for ci in 0..a.cin {
        let xc = tp.add(a.base + ci * a.gstride + px);
        let wc = wp.add(ci * kk * 4);
        for (t, &off) in a.toff.iter().enumerate() {
            // SAFETY (whole block): `base + ci·gstride + toff[t] + px + 4·V − 1` (V <= 4) is inside the tile and
            // `(ci·k² + t)·4 + 3` inside `wp` (the contract of `F32BlockFn`).
            let wv = vld1q_f32(wc.add(4 * t));
            let xr = xc.add(off);
            let x: [float32x4_t; V] = core::array::from_fn(|v| vld1q_f32(xr.add(4 * v)));
            for v in 0..V {
                acc[0][v] = vfmaq_laneq_f32::<0>(acc[0][v], x[v], wv);
                acc[1][v] = vfmaq_laneq_f32::<1>(acc[1][v], x[v], wv);
                acc[2][v] = vfmaq_laneq_f32::<2>(acc[2][v], x[v], wv);
                acc[3][v] = vfmaq_laneq_f32::<3>(acc[3][v], x[v], wv);
            }
        }
    }
    for (o, av) in out.iter_mut().zip(&acc) {
        for (v, &r) in av.iter().enumerate() {
            // SAFETY: px + 4·V − 1 < ow + 16 <= ACC, the accumulator rows' length.
            vst1q_f32(o.as_mut_ptr().add(px + 4 * v), r);
        }
    }
}

/// One output channel, 8 pixels, two quads: `ac[v][h] += pairwise(xa[v]·wa + xb[v]·wb)` on the `i16` products of
/// pixels `4v + 2h`, `4v + 2h + 1` (`smull`/`smlal` on the low halves, `smull2`/`smlal2` on the high ones,
/// `sadalp` into `i32`): 12 instructions, 64 MACs. Written as `asm!` because LLVM otherwise rewrites `smull2` of the
/// broadcast weights into `ext` + `smull` and shuffles the accumulators with `mov`s.
///
/// Exact as long as every weight is in `[-127, 127]`: each `i16` lane is a sum of two products of magnitude at most
/// 128 · 127, at most 32512 < 2^15.
#[inline(always)]
unsafe fn mac_2x2(
    ac: &mut [[int32x4_t; 2]; 2],
    xa: &[int8x16_t; 2],
    xb: &[int8x16_t; 2],
    wa: int8x16_t,
    wb: int8x16_t,
) {
    // SAFETY: register-only NEON arithmetic (`nomem`, `nostack`, flags untouched); NEON is enabled in the caller.
    core::arch::asm!(
        "smull  {t0:v}.8h, {xa0:v}.8b, {wa:v}.8b",
        "smull2 {t1:v}.8h, {xa0:v}.16b, {wa:v}.16b",
        "smull  {t2:v}.8h, {xa1:v}.8b, {wa:v}.8b",
        "smull2 {t3:v}.8h, {xa1:v}.16b, {wa:v}.16b",
        "smlal  {t0:v}.8h, {xb0:v}.8b, {wb:v}.8b",
        "smlal2 {t1:v}.8h, {xb0:v}.16b, {wb:v}.16b",
        "smlal  {t2:v}.8h, {xb1:v}.8b, {wb:v}.8b",
        "smlal2 {t3:v}.8h, {xb1:v}.16b, {wb:v}.16b",
        "sadalp {a00:v}.4s, {t0:v}.8h",
        "sadalp {a01:v}.4s, {t1:v}.8h",
        "sadalp {a10:v}.4s, {t2:v}.8h",
        "sadalp {a11:v}.4s, {t3:v}.8h",
        a00 = inout(vreg) ac[0][0],
        a01 = inout(vreg) ac[0][1],
        a10 = inout(vreg) ac[1][0],
        a11 = inout(vreg) ac[1][1],
        xa0 = in(vreg) xa[0],
        xa1 = in(vreg) xa[1],
        xb0 = in(vreg) xb[0],
        xb1 = in(vreg) xb[1],
        wa = in(vreg) wa,
        wb = in(vreg) wb,
        t0 = out(vreg) _,
        t1 = out(vreg) _,
        t2 = out(vreg) _,
        t3 = out(vreg) _,
        options(pure, nomem, nostack, preserves_flags),
    );
}

/// NEON int8 kernel: 4 channels × 8 pixels, two quads per `smull` + `smlal` + `sadalp` step.
///
/// # Safety
/// See [`rows::I8BlockFn`]; `qa` and `quads` are even.
#[target_feature(enable = "neon")]
unsafe fn block_i8(a: &I8Block<'_>, out_a: &mut [[i32; ACC]; 4], out_b: &mut [[i32; ACC]; 4]) {
    let kk = a.toff.len();
    let tp = a.tile.as_ptr() as *const i8;
    let wp = a.wp.as_ptr() as *const i32;
    let mut px = 0;
    while px < a.ow {
        for (quads, dst) in [(0..a.qa, &mut *out_a), (a.qa..a.quads, &mut *out_b)] {
            // acc[c][v][h]: channel c, pixel vector v (4 pixels), half h (pixels 2h, 2h + 1), each lane the sum
            // of two input channels of one pixel.
            let mut acc = [[[vdupq_n_s32(0); 2]; 2]; 4];
            for q in quads.step_by(2) {
                // Quads q and q + 1: tile words (4 bytes) at element offsets, weights `[quad][tap][4]`.
                let x0 = tp.add(4 * (a.base + q * a.gstride + px));
                let x1 = x0.add(4 * a.gstride);
                let w0 = wp.add(q * kk * 4);
                let w1 = w0.add(kk * 4);
                for (t, &off) in a.toff.iter().enumerate() {
                    // SAFETY (whole block): quads q + 1 < quads, the words read are at most
                    // `base + (q+1)·gstride + toff[t] + px + 7`, inside the tile, and the weights at most
                    // `((q+1)·k² + t)·4 + 3`, inside `wp` (the contract of `I8BlockFn`).
                    let xa = [vld1q_s8(x0.add(4 * off)), vld1q_s8(x0.add(4 * off + 16))];
                    let xb = [vld1q_s8(x1.add(4 * off)), vld1q_s8(x1.add(4 * off + 16))];
                    for (c, ac) in acc.iter_mut().enumerate() {
                        let wa = vreinterpretq_s8_s32(vld1q_dup_s32(w0.add(4 * t + c)));
                        let wb = vreinterpretq_s8_s32(vld1q_dup_s32(w1.add(4 * t + c)));
                        mac_2x2(ac, &xa, &xb, wa, wb);
                    }
                }
            }
            for (o, ac) in dst.iter_mut().zip(&acc) {
                for (v, h) in ac.iter().enumerate() {
                    // [p0 c01, p0 c23, p1 c01, p1 c23] + [p2 .., p3 ..] pairwise: the 4 pixel sums.
                    let s = vpaddq_s32(h[0], h[1]);
                    // SAFETY: px + 7 < ow + 16 <= ACC, the accumulator rows' length.
                    vst1q_s32(o.as_mut_ptr().add(px + 4 * v), s);
                }
            }
        }
        px += 8;
    }
}

/// `exp(x)` for 4 lanes: range reduction `x = n·ln2 + r`, degree-6 polynomial on `|r| <= ln2/2`, scale by `2^n`
/// (relative error below 2e-7 for `x` in [-87, 88]; inputs below -87 give `exp(-87)`, above 88 `exp(88)`), the
/// same scheme as the AVX2 tier's `exp8`.
#[inline(always)]
unsafe fn exp4(x: float32x4_t) -> float32x4_t {
    let x = vminq_f32(vmaxq_f32(x, vdupq_n_f32(-87.0)), vdupq_n_f32(88.0));
    let n = vrndnq_f32(vmulq_f32(x, vdupq_n_f32(core::f32::consts::LOG2_E)));
    // r = x - n·ln2, in two parts for accuracy.
    let r = vfmsq_f32(x, n, vdupq_n_f32(0.693_145_75));
    let r = vfmsq_f32(r, n, vdupq_n_f32(1.428_606_8e-6));
    let mut p = vdupq_n_f32(1.0 / 720.0);
    for c in [1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
        p = vfmaq_f32(vdupq_n_f32(c), p, r);
    }
    let pow2 = vreinterpretq_f32_s32(vshlq_n_s32::<23>(vaddq_s32(
        vcvtq_s32_f32(n),
        vdupq_n_s32(127),
    )));
    vmulq_f32(p, pow2)
}

/// Sum of a slice, 8 lanes at a time (reordered relative to a sequential sum).
#[inline(always)]
unsafe fn sum_f32(x: &[f32]) -> f32 {
    let (mut s0, mut s1) = (vdupq_n_f32(0.0), vdupq_n_f32(0.0));
    let chunks = x.chunks_exact(8);
    let tail = chunks.remainder();
    for c in chunks {
        // SAFETY: `c` holds 8 elements.
        s0 = vaddq_f32(s0, vld1q_f32(c.as_ptr()));
        s1 = vaddq_f32(s1, vld1q_f32(c.as_ptr().add(4)));
    }
    vaddvq_f32(vaddq_f32(s0, s1)) + tail.iter().sum::<f32>()
}

/// `Σ (x − m)²`, 8 lanes at a time.
#[inline(always)]
unsafe fn sum_sq_dev(x: &[f32], m: f32) -> f32 {
    let (mut s0, mut s1) = (vdupq_n_f32(0.0), vdupq_n_f32(0.0));
    let mv = vdupq_n_f32(m);
    let chunks = x.chunks_exact(8);
    let tail = chunks.remainder();
    for c in chunks {
        // SAFETY: `c` holds 8 elements.
        let d0 = vsubq_f32(vld1q_f32(c.as_ptr()), mv);
        let d1 = vsubq_f32(vld1q_f32(c.as_ptr().add(4)), mv);
        s0 = vfmaq_f32(s0, d0, d0);
        s1 = vfmaq_f32(s1, d1, d1);
    }
    vaddvq_f32(vaddq_f32(s0, s1)) + tail.iter().map(|&v| (v - m) * (v - m)).sum::<f32>()
}

/// Group norm (+ FiLM, + SiLU) with 8-lane sums and [`exp4`] for SiLU; the statistics are summed in a different
/// order than [`crate::generic::group_norm`], so results agree within `1e-5` (tested), not bit for bit.
pub(crate) fn group_norm(a: &crate::generic::GroupNormArgs<'_>, input: &[f32], out: &mut [f32]) {
    if !a.vector_ok(input, out) {
        return crate::generic::group_norm(a, input, out);
    }
    let n = a.c * a.hw;
    // SAFETY: NEON table only (see `conv2d`); the kernel reads and writes through bounds-checked slices.
    unsafe { group_norm_neon(a, &input[..n], &mut out[..n]) }
}

#[target_feature(enable = "neon")]
unsafe fn group_norm_neon(a: &crate::generic::GroupNormArgs<'_>, input: &[f32], out: &mut [f32]) {
    let cpg = a.c / a.groups;
    let glen = cpg * a.hw;
    for (g, (x, y)) in input
        .chunks_exact(glen)
        .zip(out.chunks_exact_mut(glen))
        .enumerate()
    {
        let mean = sum_f32(x) / glen as f32;
        let var = sum_sq_dev(x, mean) / glen as f32;
        let rstd = 1.0 / libm::sqrtf(var + a.eps);
        for (jc, (xc, yc)) in x
            .chunks_exact(a.hw)
            .zip(y.chunks_exact_mut(a.hw))
            .enumerate()
        {
            let (mul, add) = a.channel_affine(g * cpg + jc, mean, rstd);
            let (mv, av, one) = (vdupq_n_f32(mul), vdupq_n_f32(add), vdupq_n_f32(1.0));
            let mut xs = xc.chunks_exact(4);
            let mut ys = yc.chunks_exact_mut(4);
            for (xq, yq) in (&mut xs).zip(&mut ys) {
                // SAFETY: `xq` and `yq` hold 4 elements each.
                let mut v = vfmaq_f32(av, vld1q_f32(xq.as_ptr()), mv);
                if a.silu {
                    v = vdivq_f32(v, vaddq_f32(one, exp4(vnegq_f32(v))));
                }
                vst1q_f32(yq.as_mut_ptr(), v);
            }
            for (yv, &xv) in ys.into_remainder().iter_mut().zip(xs.remainder()) {
                let v = xv * mul + add;
                *yv = if a.silu { crate::silu(v) } else { v };
            }
        }
    }
}

/// Attention (layout of [`crate::generic::attention`]), vectorized over keys as in the AVX2 tier: scores with FMA,
/// [`exp4`] in the max-subtracted softmax, `Σ_j p_j v_j` as 4-lane dot products. Within `2e-6` of the generic kernel
/// on softmax-weighted sums (tested).
pub(crate) fn attention(
    g: &crate::generic::AttentionGeom,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    scores: &mut [f32],
    out: &mut [f32],
) {
    let total = g.heads * g.head_dim * g.n;
    if g.n == 0
        || g.head_dim == 0
        || scores.len() < g.n
        || q.len() < total
        || k.len() < total
        || v.len() < total
        || out.len() < total
    {
        return crate::generic::attention(g, q, k, v, scores, out);
    }
    // SAFETY: NEON table only (see `conv2d`); every slice holds `total` elements (scores `n`), checked above;
    // `out` is borrowed mutably, so all of it may be written.
    unsafe { attention_neon(g, q, k, v, scores, out.as_mut_ptr(), (0, g.n)) }
}

/// Most tokens of [`attention_rows`]: each worker's score row lives on its stack (4 KiB).
const ROWS_NMAX: usize = 1024;

/// [`attention`] for the query tokens `out.rows()` only (false, nothing written, for more than [`ROWS_NMAX`]
/// tokens or where the output is not `[heads·head_dim][n][1]`).
pub(crate) fn attention_rows(
    g: &crate::generic::AttentionGeom,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    out: &crate::parallel::RowsOut<'_>,
) -> bool {
    let total = g.heads * g.head_dim * g.n;
    let (r0, r1) = out.rows();
    if g.n == 0
        || g.head_dim == 0
        || g.n > ROWS_NMAX
        || q.len() < total
        || k.len() < total
        || v.len() < total
        || out.len() < total
        || out.shape() != (g.n, 1)
        || r0 > r1
        || r1 > g.n
    {
        return false;
    }
    let mut scores = [0f32; ROWS_NMAX];
    // SAFETY: as in `attention`, with this call's own score row of ROWS_NMAX >= n floats; the output is
    // `[heads·head_dim][n]` (shape checked) of at least `total` elements, and the kernel writes only the tokens
    // [r0, r1) of each channel, the ones `RowsOut::as_mut_ptr` lets this worker write.
    unsafe { attention_neon(g, q, k, v, &mut scores, out.as_mut_ptr(), (r0, r1)) };
    true
}

/// The attention of the query tokens `rows` (`r0 ≤ r1 ≤ n`), written through `out`, which must be valid for
/// writes of `[heads·head_dim][n]` floats at the tokens `rows` of every channel.
#[target_feature(enable = "neon")]
unsafe fn attention_neon(
    g: &crate::generic::AttentionGeom,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    scores: &mut [f32],
    out: *mut f32,
    rows: (usize, usize),
) {
    let (n, d) = (g.n, g.head_dim);
    let scale = 1.0 / libm::sqrtf(d as f32);
    let n4 = n - n % 4;
    let sp = scores.as_mut_ptr();
    for h in 0..g.heads {
        // SAFETY (whole loop): every pointer below stays inside head `h`'s `d · n` elements of q, k, v and out
        // (`(h + 1) · d · n <= total`, checked by the caller) or inside the first `n` scores: indices are
        // `dd · n + i` / `dd · n + j` with `dd < d`, `i, j < n` (vector loads at `j < n4`, 4 lanes); out is
        // written only at tokens `i` in `rows`.
        let base = h * d * n;
        let (qh, kh, vh) = (
            q.as_ptr().add(base),
            k.as_ptr().add(base),
            v.as_ptr().add(base),
        );
        let oh = out.add(base);
        for i in rows.0..rows.1 {
            let mut j = 0;
            while j < n4 {
                let mut acc = vdupq_n_f32(0.0);
                for dd in 0..d {
                    acc = vfmaq_n_f32(acc, vld1q_f32(kh.add(dd * n + j)), *qh.add(dd * n + i));
                }
                vst1q_f32(sp.add(j), vmulq_n_f32(acc, scale));
                j += 4;
            }
            for j in n4..n {
                let mut acc = 0.0f32;
                for dd in 0..d {
                    acc += *qh.add(dd * n + i) * *kh.add(dd * n + j);
                }
                *sp.add(j) = acc * scale;
            }
            let mut m = f32::NEG_INFINITY;
            for j in 0..n {
                m = m.max(*sp.add(j));
            }
            let mv = vdupq_n_f32(m);
            let mut sum = vdupq_n_f32(0.0);
            let mut j = 0;
            while j < n4 {
                let e = exp4(vsubq_f32(vld1q_f32(sp.add(j)), mv));
                vst1q_f32(sp.add(j), e);
                sum = vaddq_f32(sum, e);
                j += 4;
            }
            let mut tail = 0.0f32;
            for j in n4..n {
                let e = libm::expf(*sp.add(j) - m);
                *sp.add(j) = e;
                tail += e;
            }
            let inv = 1.0 / (vaddvq_f32(sum) + tail);
            for dd in 0..d {
                let vr = vh.add(dd * n);
                let mut acc = vdupq_n_f32(0.0);
                let mut j = 0;
                while j < n4 {
                    acc = vfmaq_f32(acc, vld1q_f32(vr.add(j)), vld1q_f32(sp.add(j)));
                    j += 4;
                }
                let mut t = vaddvq_f32(acc);
                for j in n4..n {
                    t += *vr.add(j) * *sp.add(j);
                }
                *oh.add(dd * n + i) = t * inv;
            }
        }
    }
}
