//! AVX-512 tier (F + BW + VNNI, e.g. Zen 4/5, Ice Lake and later): f32 convolution blocks of 4 channels × 32
//! pixels in `zmm` FMAs, and int8 convolution rows with `vpdpwssd` (16 lanes of two exact `i16` products added into
//! `i32`: 32 MACs per instruction), over the same tiles, packed weights and
//! generic epilogue as the AVX2 tier, so the output is bit-identical to [`crate::quant::conv2d_i8`]. Everything else
//! comes from the AVX2 tier (every AVX-512 CPU has AVX2 + FMA).

use core::arch::x86_64::*;

use super::avx2::{
    conv2d_f32_rows, conv2d_i8_rows, size_class, F32Block, RowArgs, MAX_OW, TILE, TILE_L, WBLOCK,
    WBLOCK_L,
};
use crate::quant::{self, ActQ, ConvEpilogue, QOut};
use crate::{Conv2dGeom, Weights};

/// int8 convolution, bit-identical to [`quant::conv2d_i8`]; falls back to the AVX2 kernel outside the fast path.
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
    conv2d_i8_any(
        g, input, in_q, w, None, w_scale, bias, chan_add, residual, div, acc, out,
    )
}

/// [`conv2d_i8`] with the layer's weights also packed offline in the [`crate::pack::VNNI8`] layout (used when the
/// VNNI kernel takes the layer and `packed` has its length; otherwise as [`conv2d_i8`]).
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
    conv2d_i8_any(
        g,
        input,
        in_q,
        w,
        Some(packed),
        w_scale,
        bias,
        chan_add,
        residual,
        div,
        acc,
        out,
    )
}

#[allow(clippy::too_many_arguments)]
fn conv2d_i8_any(
    g: &Conv2dGeom,
    input: &[i8],
    in_q: ActQ,
    w: &[i8],
    packed: Option<&[u8]>,
    w_scale: &[f32],
    bias: Option<Weights<'_>>,
    chan_add: Option<&[f32]>,
    residual: Option<(&[i8], f32)>,
    div: f32,
    acc: &mut [i32],
    out: QOut<'_>,
) {
    let e = ConvEpilogue {
        in_q,
        w_scale,
        bias,
        chan_add,
        residual,
        div,
        plane: g.oh * g.ow,
    };
    if super::vnni::fits(g, in_q.split, input.len(), w.len(), &out) {
        // SAFETY: reachable only through the AVX-512 table, built after detecting avx512f, avx512bw and avx512vnni.
        unsafe {
            match packed {
                Some(p) => super::vnni::conv2d_i8_packed(g, input, in_q, w, p, &e, out),
                None => super::vnni::conv2d_i8(g, input, in_q, w, &e, out),
            }
        };
        return;
    }
    let split = in_q.split.min(g.cin);
    let pairs = split.div_ceil(2) + (g.cin - split).div_ceil(2);
    let class = size_class(g, pairs, pairs * g.k * g.k);
    let Some(large) = class.filter(|_| acc.len() >= quant::conv2d_i8_scratch_len(g)) else {
        return super::avx2::conv2d_i8(
            g, input, in_q, w, w_scale, bias, chan_add, residual, div, acc, out,
        );
    };
    // SAFETY: reachable only through the AVX-512 table, built after detecting avx512f, avx512bw and avx512vnni
    // (`super::tier`); `size_class` checked the tile and weight block sizes.
    unsafe {
        if large {
            conv2d_i8_rows::<TILE_L, WBLOCK_L>(g, input, split, w, &e, out, row_i8_vnni, None)
        } else {
            conv2d_i8_rows::<TILE, WBLOCK>(g, input, split, w, &e, out, row_i8_vnni, None)
        }
    }
}

/// VNNI row kernel: `vpdpwssd` on 16 pixels × 2 vectors.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn row_i8_vnni(a: &RowArgs<'_>, row_a: &mut [i32], row_b: &mut [i32]) {
    let kk = a.k * a.k;
    let mut px = 0;
    while px < a.ow {
        for (branch, dst) in [(0..a.pa, &mut *row_a), (a.pa..a.pairs, &mut *row_b)] {
            let mut acc = [_mm512_setzero_si512(); 2];
            for p in branch {
                for ky in 0..a.k {
                    let rb = a.tile.as_ptr().add((p * a.k + ky) * a.block + px);
                    for kx in 0..a.k {
                        let wv = _mm512_set1_epi32(*a.wp.get_unchecked(p * kk + ky * a.k + kx));
                        // SAFETY: px + kx / stride + 31 < ow + (k - 1) / stride + 32 <= rs, inside the tile row.
                        let row = rb.add(*a.koff.get_unchecked(kx));
                        for (v, acc) in acc.iter_mut().enumerate() {
                            let xv = _mm512_loadu_si512(row.add(16 * v) as *const __m512i);
                            *acc = _mm512_dpwssd_epi32(*acc, xv, wv);
                        }
                    }
                }
            }
            for (v, acc) in acc.iter().enumerate() {
                // SAFETY: px + 31 < MAX_OW + 32, the row buffers' length.
                _mm512_storeu_si512(dst.as_mut_ptr().add(px + 16 * v) as *mut __m512i, *acc);
            }
        }
        px += 32;
    }
}

/// f32 convolution (within the f32 tolerance of generic, like AVX2); falls back to the AVX2 kernel outside the fast
/// path.
pub(crate) fn conv2d(
    g: &Conv2dGeom,
    input: &[f32],
    w: Weights<'_>,
    bias: Option<Weights<'_>>,
    out: &mut [f32],
) {
    if super::gemm512::fits(g, input.len(), w.len(), out.len()) {
        // SAFETY: reachable only through the AVX-512 table (avx512f detected).
        unsafe { super::gemm512::conv2d(g, input, w, bias, out) };
        return;
    }
    let Some(large) = size_class(g, g.cin, g.cin * g.k * g.k * 4) else {
        return super::avx2::conv2d(g, input, w, bias, out);
    };
    // SAFETY: AVX-512 table only (see `conv2d_i8`); `size_class` checked the tile and weight block sizes.
    unsafe {
        if large {
            conv2d_f32_rows::<TILE_L, WBLOCK_L>(g, input, w, bias, out, block_f32_avx512)
        } else {
            conv2d_f32_rows::<TILE, WBLOCK>(g, input, w, bias, out, block_f32_avx512)
        }
    }
}

/// [`conv2d`] with the layer's weights also packed offline for family `x86_64-avx512-f32`: Winograd F(2×2, 3×3)
/// (`wino512.rs`) on the 3×3 layers [`crate::pack::winograd`] picks (weights in [`crate::pack::wino16_pack`]'s
/// layout); on the others ([`crate::pack::fma16_pack`]) the channels-in-lanes kernel (`direct512.rs`) where it takes the layer and
/// `packed` has its length, the implicit GEMM's column path on the same bytes for pointwise and 4×4 layers
/// (`gemm512::cols_first`), otherwise [`conv2d`] (which packs per call).
pub(crate) fn conv2d_packed(
    g: &Conv2dGeom,
    input: &[f32],
    w: Weights<'_>,
    packed: &[u8],
    bias: Option<Weights<'_>>,
    out: &mut [f32],
) {
    // SAFETY (all): reachable only through the AVX-512 table (avx512f detected); the kernels check every length.
    // The family packs the layers `winograd` picks in the Winograd layout, every other one in `fma16_pack`'s.
    if crate::pack::winograd(g) {
        if !unsafe { super::wino512::conv2d_packed(g, input, packed, bias, out) } {
            conv2d(g, input, w, bias, out)
        }
        return;
    }
    if super::gemm512::cols_first(g)
        && unsafe { super::gemm512::conv2d_cols16(g, input, w, packed, bias, out) }
    {
        return;
    }
    if unsafe { super::direct512::conv2d_packed(g, input, packed, bias, out) } {
        return;
    }
    conv2d(g, input, w, bias, out)
}

/// [`conv2d_packed`] for the output rows of `out` only, on the Winograd layers (false, nothing written, for the
/// others or where a length does not fit).
pub(crate) fn conv2d_packed_rows(
    g: &Conv2dGeom,
    input: &[f32],
    packed: &[u8],
    bias: Option<Weights<'_>>,
    out: &crate::parallel::RowsOut<'_>,
) -> bool {
    // SAFETY: reachable only through the AVX-512 table (avx512f detected); the kernel checks every length.
    crate::pack::winograd(g)
        && unsafe { super::wino512::conv2d_packed_rows(g, input, packed, bias, out) }
}

/// AVX-512 block kernel: 4 channels × 32 pixels of FMA accumulators.
#[target_feature(enable = "avx512f")]
unsafe fn block_f32_avx512(a: &F32Block<'_>, acc_out: &mut [[f32; MAX_OW + 32]; 4]) {
    let kk = a.k * a.k;
    let per_co = a.cin * kk;
    let mut px = 0;
    while px < a.ow {
        let mut acc = [[_mm512_setzero_ps(); 2]; 4];
        for ci in 0..a.cin {
            for ky in 0..a.k {
                let wrow = ci * kk + ky * a.k;
                let rb = a.tile.as_ptr().add((ci * a.k + ky) * a.block + px);
                for kx in 0..a.k {
                    // SAFETY: px + kx / stride + 31 < ow + (k - 1) / stride + 32 <= rs, inside the tile row.
                    let row = rb.add(*a.koff.get_unchecked(kx));
                    let x0 = _mm512_loadu_ps(row);
                    let x1 = _mm512_loadu_ps(row.add(16));
                    for (c, v) in acc.iter_mut().enumerate() {
                        let wv = _mm512_set1_ps(*a.w.get_unchecked(c * per_co + wrow + kx));
                        v[0] = _mm512_fmadd_ps(wv, x0, v[0]);
                        v[1] = _mm512_fmadd_ps(wv, x1, v[1]);
                    }
                }
            }
        }
        for (c, v) in acc.iter().enumerate() {
            // SAFETY: px + 31 < MAX_OW + 32, the accumulator rows' length.
            _mm512_storeu_ps(acc_out[c].as_mut_ptr().add(px), v[0]);
            _mm512_storeu_ps(acc_out[c].as_mut_ptr().add(px + 16), v[1]);
        }
        px += 32;
    }
}
