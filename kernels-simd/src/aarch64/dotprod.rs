//! dotprod tier (FEAT_DotProd, e.g. Cortex-A55/A76/A78, Neoverse N1, Apple M1): int8 convolution with `sdot`.
//!
//! `conv2d_i8`: input channels come in quads (4 `i8` of one pixel per 32-bit lane, see [`super::rows`]); one
//! `sdot v.4s, x.16b, w.4b[c]` adds, for 4 pixels, the 4 products of a quad with output channel `c`'s 4 weights:
//! 16 exact MACs into `i32`. The register tile is 4 output channels × 16 pixels (16 accumulators): per quad and tap
//! one load of the 4 channels' weights, 4 loads of pixels and 16 `sdot` (256 MACs). Integer sums are exact and the
//! epilogue is the generic one, so the output is **bit-identical** to [`crate::quant::conv2d_i8`]. Everything else
//! comes from the NEON tier.
//!
//! The `sdot` intrinsics (`vdotq_laneq_s32`) are unstable in Rust 1.96, so `sdot` is written with `asm!` inside a
//! `#[target_feature(enable = "dotprod")]` function, reached only after the CPU reported the feature.

use core::arch::aarch64::*;
use core::arch::asm;

use super::rows::{self, I8Block, ACC};
use crate::quant::{ActQ, QOut};
use crate::{Conv2dGeom, Weights};

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
    // SAFETY: this function is only reachable through the dotprod kernel table, which `super::tier` returns only
    // after `is_aarch64_feature_detected!("dotprod")` (or `target_feature = "dotprod"` without std). `sdot`
    // accumulates in `i32` directly, so any weight is fine and quads need no pairing (`qalign = 1`).
    unsafe {
        rows::conv2d_i8(
            g, input, in_q, w, w_scale, bias, chan_add, residual, div, acc, out, None, 1, false,
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
    // SAFETY: as `conv2d_i8` (dotprod table only); the packed layout pads quads to 2, a multiple of this kernel's
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
            1,
            false,
            block_i8,
        )
    }
}

/// `acc[c][v] += sdot(x[v], w.4b[c])` for 4 channels × 4 pixel vectors: 16 `sdot`, 256 MACs.
#[inline(always)]
unsafe fn sdot_4x4(acc: &mut [[int32x4_t; 4]; 4], x: &[int8x16_t; 4], w: int8x16_t) {
    // SAFETY: register-only arithmetic (`nomem`, `nostack`, flags untouched); the caller runs with `dotprod`
    // enabled, so `sdot` exists on this CPU.
    asm!(
        "sdot {a00:v}.4s, {x0:v}.16b, {w:v}.4b[0]",
        "sdot {a01:v}.4s, {x1:v}.16b, {w:v}.4b[0]",
        "sdot {a02:v}.4s, {x2:v}.16b, {w:v}.4b[0]",
        "sdot {a03:v}.4s, {x3:v}.16b, {w:v}.4b[0]",
        "sdot {a10:v}.4s, {x0:v}.16b, {w:v}.4b[1]",
        "sdot {a11:v}.4s, {x1:v}.16b, {w:v}.4b[1]",
        "sdot {a12:v}.4s, {x2:v}.16b, {w:v}.4b[1]",
        "sdot {a13:v}.4s, {x3:v}.16b, {w:v}.4b[1]",
        "sdot {a20:v}.4s, {x0:v}.16b, {w:v}.4b[2]",
        "sdot {a21:v}.4s, {x1:v}.16b, {w:v}.4b[2]",
        "sdot {a22:v}.4s, {x2:v}.16b, {w:v}.4b[2]",
        "sdot {a23:v}.4s, {x3:v}.16b, {w:v}.4b[2]",
        "sdot {a30:v}.4s, {x0:v}.16b, {w:v}.4b[3]",
        "sdot {a31:v}.4s, {x1:v}.16b, {w:v}.4b[3]",
        "sdot {a32:v}.4s, {x2:v}.16b, {w:v}.4b[3]",
        "sdot {a33:v}.4s, {x3:v}.16b, {w:v}.4b[3]",
        a00 = inout(vreg) acc[0][0],
        a01 = inout(vreg) acc[0][1],
        a02 = inout(vreg) acc[0][2],
        a03 = inout(vreg) acc[0][3],
        a10 = inout(vreg) acc[1][0],
        a11 = inout(vreg) acc[1][1],
        a12 = inout(vreg) acc[1][2],
        a13 = inout(vreg) acc[1][3],
        a20 = inout(vreg) acc[2][0],
        a21 = inout(vreg) acc[2][1],
        a22 = inout(vreg) acc[2][2],
        a23 = inout(vreg) acc[2][3],
        a30 = inout(vreg) acc[3][0],
        a31 = inout(vreg) acc[3][1],
        a32 = inout(vreg) acc[3][2],
        a33 = inout(vreg) acc[3][3],
        x0 = in(vreg) x[0],
        x1 = in(vreg) x[1],
        x2 = in(vreg) x[2],
        x3 = in(vreg) x[3],
        w = in(vreg) w,
        options(pure, nomem, nostack, preserves_flags),
    );
}

/// `acc[c][v] += sdot(x[v], w.4b[c])` for 4 channels × 2 pixel vectors: 8 `sdot`, 128 MACs (the 8-pixel tail).
#[inline(always)]
unsafe fn sdot_4x2(acc: &mut [[int32x4_t; 2]; 4], x: &[int8x16_t; 2], w: int8x16_t) {
    // SAFETY: register-only arithmetic (`nomem`, `nostack`, flags untouched); the caller runs with `dotprod`
    // enabled, so `sdot` exists on this CPU.
    asm!(
        "sdot {a00:v}.4s, {x0:v}.16b, {w:v}.4b[0]",
        "sdot {a01:v}.4s, {x1:v}.16b, {w:v}.4b[0]",
        "sdot {a10:v}.4s, {x0:v}.16b, {w:v}.4b[1]",
        "sdot {a11:v}.4s, {x1:v}.16b, {w:v}.4b[1]",
        "sdot {a20:v}.4s, {x0:v}.16b, {w:v}.4b[2]",
        "sdot {a21:v}.4s, {x1:v}.16b, {w:v}.4b[2]",
        "sdot {a30:v}.4s, {x0:v}.16b, {w:v}.4b[3]",
        "sdot {a31:v}.4s, {x1:v}.16b, {w:v}.4b[3]",
        a00 = inout(vreg) acc[0][0],
        a01 = inout(vreg) acc[0][1],
        a10 = inout(vreg) acc[1][0],
        a11 = inout(vreg) acc[1][1],
        a20 = inout(vreg) acc[2][0],
        a21 = inout(vreg) acc[2][1],
        a30 = inout(vreg) acc[3][0],
        a31 = inout(vreg) acc[3][1],
        x0 = in(vreg) x[0],
        x1 = in(vreg) x[1],
        w = in(vreg) w,
        options(pure, nomem, nostack, preserves_flags),
    );
}

/// dotprod int8 kernel: 4 channels × 16 pixels of `sdot` accumulators; a last block of at most 8 pixels (e.g. a
/// whole 8-pixel row) takes 4 channels × 8 pixels instead, so half of the work is not thrown away.
///
/// # Safety
/// See [`rows::I8BlockFn`]; the CPU must have FEAT_DotProd.
#[target_feature(enable = "neon,dotprod")]
unsafe fn block_i8(a: &I8Block<'_>, out_a: &mut [[i32; ACC]; 4], out_b: &mut [[i32; ACC]; 4]) {
    let kk = a.toff.len();
    let tp = a.tile.as_ptr() as *const i8;
    let wp = a.wp.as_ptr() as *const i8;
    let mut px = 0;
    while px < a.ow {
        let narrow = a.ow - px <= 8;
        for (quads, dst) in [(0..a.qa, &mut *out_a), (a.qa..a.quads, &mut *out_b)] {
            if narrow {
                let mut acc = [[vdupq_n_s32(0); 2]; 4];
                for q in quads {
                    let xq = tp.add(4 * (a.base + q * a.gstride + px));
                    let wq = wp.add(16 * q * kk);
                    for (t, &off) in a.toff.iter().enumerate() {
                        // SAFETY (whole block): as in the 16-pixel case below, 8 words fewer.
                        let wv = vld1q_s8(wq.add(16 * t));
                        let xr = xq.add(4 * off);
                        sdot_4x2(&mut acc, &[vld1q_s8(xr), vld1q_s8(xr.add(16))], wv);
                    }
                }
                for (o, ac) in dst.iter_mut().zip(&acc) {
                    for (v, &s) in ac.iter().enumerate() {
                        // SAFETY: px + 7 < ow + 16 <= ACC, the accumulator rows' length.
                        vst1q_s32(o.as_mut_ptr().add(px + 4 * v), s);
                    }
                }
                continue;
            }
            let mut acc = [[vdupq_n_s32(0); 4]; 4];
            for q in quads {
                let xq = tp.add(4 * (a.base + q * a.gstride + px));
                let wq = wp.add(16 * q * kk);
                for (t, &off) in a.toff.iter().enumerate() {
                    // SAFETY (whole block): the words read are at most `base + q·gstride + toff[t] + px + 15`,
                    // inside the tile, and the weights `(q·k² + t)·4 .. + 4` words, inside `wp` (the contract of
                    // `I8BlockFn`).
                    let wv = vld1q_s8(wq.add(16 * t));
                    let xr = xq.add(4 * off);
                    let x = [
                        vld1q_s8(xr),
                        vld1q_s8(xr.add(16)),
                        vld1q_s8(xr.add(32)),
                        vld1q_s8(xr.add(48)),
                    ];
                    sdot_4x4(&mut acc, &x, wv);
                }
            }
            for (o, ac) in dst.iter_mut().zip(&acc) {
                for (v, &s) in ac.iter().enumerate() {
                    // SAFETY: px + 15 < ow + 16 <= ACC, the accumulator rows' length.
                    vst1q_s32(o.as_mut_ptr().add(px + 4 * v), s);
                }
            }
        }
        px += 16;
    }
}
