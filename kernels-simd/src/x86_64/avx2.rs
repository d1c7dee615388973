//! AVX2 + FMA tier: direct 2-D convolution, `f32` and int8.
//!
//! Both kernels work one output row at a time on a zero-padded copy of the input rows it reads (a "tile" on the
//! stack), so the inner loops need no bounds logic: stride 1 and 2 (as two phase rows), any kernel size and padding.
//! Other strides, and layers whose tile does not fit the stack budget, fall back to the generic kernel.
//!
//! * `conv2d` (`f32`): 4 output channels × 16 pixels of accumulators in registers, one FMA per weight and 8 pixels.
//!   Sums are reordered relative to the generic kernel (and fused), so results differ by rounding only: the tests
//!   bound the difference by `1e-5 · Σ|w·x|` per output.
//! * `conv2d_i8`: pairs of input channels interleaved as `i16` and multiplied by `vpmaddwd` (16 exact MACs per
//!   instruction into `i32`), 32 pixels per step. Integer sums are exact in any order and the epilogue is the
//!   generic one ([`crate::quant::ConvEpilogue`]), so the output is **bit-identical** to [`crate::quant::conv2d_i8`].
//!
//! Every function here is `unsafe` only because of `#[target_feature]`; the safe wrappers are installed in a
//! [`crate::KernelTable`] only after the CPU reported AVX2 and FMA (`super::tier`).

use core::arch::x86_64::*;

use crate::generic;
use crate::quant::{self, ActQ, ConvEpilogue, QOut};
use crate::{Conv2dGeom, Weights};

/// Stack budget of one row tile, in 4-byte elements (128 KiB), and of the weights of one output-channel block.
pub(super) const TILE: usize = 32 * 1024;
/// Weights of one output-channel block, in 4-byte elements.
pub(super) const WBLOCK: usize = 4 * 4096;
/// The large variant for wide layers (e.g. ddpm-cifar10-32's 384-channel concatenations at 32×32): 384 KiB of tile
/// and 80 KiB of weights on the stack. Host tiers only; small layers keep the small, cheaper-to-clear buffers.
pub(super) const TILE_L: usize = 96 * 1024;
/// Weights of one output-channel block, large variant.
pub(super) const WBLOCK_L: usize = 20 * 1024;

/// Which stack buffers a layer needs: `Some(false)` small, `Some(true)` large, `None` not the fast path.
pub(super) fn size_class(g: &Conv2dGeom, rows: usize, wneed: usize) -> Option<bool> {
    let need = rows
        .saturating_mul(g.k * g.stride.max(1))
        .saturating_mul(row_stride(g));
    if !fits(g) {
        None
    } else if need <= TILE && wneed <= WBLOCK {
        Some(false)
    } else if need <= TILE_L && wneed <= WBLOCK_L {
        Some(true)
    } else {
        None
    }
}
/// Largest output row handled (longer rows fall back).
pub(super) const MAX_OW: usize = 512;

/// Row stride of a tile row: the output row plus the kernel's reach in phase columns plus slack for the last
/// (partial) vector block, rounded to 8.
pub(super) fn row_stride(g: &Conv2dGeom) -> usize {
    (g.ow + (g.k - 1) / g.stride.max(1) + 32).next_multiple_of(8)
}

/// Whether the fast path handles `g` (else the generic kernel runs).
pub(super) fn fits(g: &Conv2dGeom) -> bool {
    (1..=2).contains(&g.stride) && g.ow <= MAX_OW && (1..=16).contains(&g.k) && g.oh > 0 && g.ow > 0
}

/// Tile layout: `[r][ky][phase][col]`. Phase row `ph` of (channel row `r`, `ky`) holds padded input column
/// `col·stride + ph` of input row `oy·stride + ky − pad_t` (zero outside the input), so output pixel `px` reads tap
/// `kx` at `tile[r][ky][kx % stride][px + kx / stride]`: stride 2 becomes two stride-1 rows.
#[inline(always)]
pub(super) fn tile_row(g: &Conv2dGeom, r: usize, ky: usize, kx: usize) -> usize {
    ((r * g.k + ky) * g.stride + kx % g.stride) * row_stride(g) + kx / g.stride
}

/// Fill the tile for output row `oy` from `[rows, h, w]` data, `val(r, iy, ix)` giving one input element.
#[inline(always)]
pub(super) fn fill_tile<T: Copy + Default>(
    g: &Conv2dGeom,
    rows: usize,
    oy: usize,
    tile: &mut [T],
    val: impl Fn(usize, usize, usize) -> T,
) {
    let rs = row_stride(g);
    for r in 0..rows {
        for ky in 0..g.k {
            let iy = oy * g.stride + ky;
            let inside = iy >= g.pad_t && iy - g.pad_t < g.h;
            for ph in 0..g.stride {
                let base = tile_row(g, r, ky, ph);
                let row = &mut tile[base..base + rs];
                row.fill(T::default());
                if !inside {
                    continue;
                }
                for (c, t) in row.iter_mut().enumerate() {
                    let pc = c * g.stride + ph;
                    if pc >= g.pad_l && pc - g.pad_l < g.w {
                        *t = val(r, iy - g.pad_t, pc - g.pad_l);
                    }
                }
            }
        }
    }
}

/// [`fill_tile`] for a stride-1 layer a whole row at a time: each tile row is zeros, then its inside columns (the
/// input row `iy` of tile row group `r`, at the left padding) are written by `fill(r, iy, cols)` (a `memcpy` or a
/// vector loop, not a call of `val` per element, which was a third of the `f32` forward and a quarter of the int8
/// one on this tier); where `fill` returns false (an input row that is not whole: malformed input) they go element
/// by element through `val`.
#[inline(always)]
pub(super) fn fill_tile_s1<T: Copy + Default>(
    g: &Conv2dGeom,
    rows: usize,
    oy: usize,
    tile: &mut [T],
    mut fill: impl FnMut(usize, usize, &mut [T]) -> bool,
    val: impl Fn(usize, usize, usize) -> T,
) {
    let rs = row_stride(g);
    for r in 0..rows {
        for ky in 0..g.k {
            let base = tile_row(g, r, ky, 0);
            let Some(row) = tile.get_mut(base..base + rs) else {
                return;
            };
            row.fill(T::default());
            let iy = oy + ky;
            if iy < g.pad_t || iy - g.pad_t >= g.h {
                continue;
            }
            let iy = iy - g.pad_t;
            let Some(mid) = row.get_mut(g.pad_l..(g.pad_l + g.w).min(rs)) else {
                continue;
            };
            if !fill(r, iy, mid) {
                for (ix, t) in mid.iter_mut().enumerate() {
                    *t = val(r, iy, ix);
                }
            }
        }
    }
}

/// `f32` convolution (see the module docs); falls back to [`generic::conv2d`] outside the fast path.
pub(crate) fn conv2d(
    g: &Conv2dGeom,
    input: &[f32],
    w: Weights<'_>,
    bias: Option<Weights<'_>>,
    out: &mut [f32],
) {
    let Some(large) = size_class(g, g.cin, g.cin * g.k * g.k * 4) else {
        // SAFETY: as below (AVX2 table only).
        return unsafe { conv2d_generic_avx2(g, input, w, bias, out) };
    };
    // SAFETY: this function is only reachable through the AVX2 kernel table, which `super::tier` builds after
    // `is_x86_feature_detected!("avx2")` and `("fma")` (or under `target_feature` = avx2 + fma without std); `fits`
    // and the weight block size were checked by `size_class`.
    unsafe {
        if large {
            conv2d_f32_rows::<TILE_L, WBLOCK_L>(g, input, w, bias, out, block_f32_avx2)
        } else {
            conv2d_f32_rows::<TILE, WBLOCK>(g, input, w, bias, out, block_f32_avx2)
        }
    }
}

/// `f32` convolution on weights of family [`crate::pack::X86_AVX512_F32`]: the layers that
/// [`crate::pack::winograd`] picks (packed in its Winograd layout) run [`super::wino256`], the others (packed for
/// the channels-in-lanes direct kernels) [`super::direct256`]; a layer either declines runs [`conv2d`] on the
/// canonical weights `w`.
pub(crate) fn conv2d_packed(
    g: &Conv2dGeom,
    input: &[f32],
    w: Weights<'_>,
    packed: &[u8],
    bias: Option<Weights<'_>>,
    out: &mut [f32],
) {
    // SAFETY: reachable only through the AVX2 tables (avx2 + fma detected); the kernel checks every length.
    if crate::pack::winograd(g) {
        if unsafe { super::wino256::conv2d_packed(g, input, packed, bias, out) } {
            return;
        }
    } else if unsafe { super::direct256::conv2d_packed(g, input, packed, bias, out) } {
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
    // SAFETY: reachable only through the AVX2 tables (avx2 + fma detected); the kernel checks every length.
    crate::pack::winograd(g)
        && unsafe { super::wino256::conv2d_packed_rows(g, input, packed, bias, out) }
}

/// The generic convolution compiled for AVX2 (8-wide auto-vectorization): strided and oversized layers.
#[target_feature(enable = "avx2,fma")]
unsafe fn conv2d_generic_avx2(
    g: &Conv2dGeom,
    input: &[f32],
    w: Weights<'_>,
    bias: Option<Weights<'_>>,
    out: &mut [f32],
) {
    generic::conv2d_body(g, input, w, bias, out)
}

/// What an f32 block kernel sees: one output row, 4 output channels (weights `[4][cin][k][k]`, missing channels
/// zero) over the row tile; it writes `acc[c][..ow]` (may write up to `ow` rounded up to 32).
pub(super) struct F32Block<'t> {
    /// The row tile (see `tile_row`).
    pub tile: &'t [f32],
    /// Weights of the 4 channels.
    pub w: &'t [f32],
    /// Tile elements per (channel, ky) block.
    pub block: usize,
    /// Offset of tap `kx` inside a block.
    pub koff: [usize; 16],
    /// Input channels.
    pub cin: usize,
    /// Kernel size.
    pub k: usize,
    /// Output row length.
    pub ow: usize,
}

/// A tier's f32 block kernel (`unsafe`: it needs its CPU features and a tile laid out by [`conv2d_f32_rows`]).
pub(super) type F32BlockFn = unsafe fn(&F32Block<'_>, &mut [[f32; MAX_OW + 32]; 4]);

/// The f32 convolution shared by the x86 tiers: row tiles, weight blocks of 4 channels and the bias; `blk` does the
/// multiply-accumulates.
///
/// # Safety
/// `blk` must be callable on this CPU; the caller checked `fits(g, cin)` and the weight block size.
pub(super) unsafe fn conv2d_f32_rows<const T: usize, const WB: usize>(
    g: &Conv2dGeom,
    input: &[f32],
    w: Weights<'_>,
    bias: Option<Weights<'_>>,
    out: &mut [f32],
    blk: F32BlockFn,
) {
    let rs = row_stride(g);
    let per_co = g.cin * g.k * g.k;
    let plane = g.oh * g.ow;
    let plane_in = g.h * g.w;
    let mut tile = [0f32; T];
    let mut wb = [0f32; WB];
    let mut acc = [[0f32; MAX_OW + 32]; 4];
    let mut koff = [0usize; 16];
    for (kx, o) in koff.iter_mut().enumerate().take(g.k) {
        *o = tile_row(g, 0, 0, kx);
    }
    for oy in 0..g.oh {
        let val = |ci: usize, iy: usize, ix: usize| {
            input
                .get(ci * plane_in + iy * g.w + ix)
                .copied()
                .unwrap_or(0.0)
        };
        if g.stride == 1 {
            let copy = |ci: usize, iy: usize, cols: &mut [f32]| {
                let row = ci * plane_in + iy * g.w;
                match input.get(row..row + cols.len()) {
                    Some(x) => {
                        cols.copy_from_slice(x);
                        true
                    }
                    None => false,
                }
            };
            fill_tile_s1(g, g.cin, oy, &mut tile, copy, val);
        } else {
            fill_tile(g, g.cin, oy, &mut tile, val);
        }
        for co0 in (0..g.cout).step_by(4) {
            let nco = (g.cout - co0).min(4);
            // Weights of the block as f32 [c][ci][ky][kx], read in place when they are f32 and complete;
            // otherwise converted (f16 / int8 weight-only) with missing channels zero.
            let wsl: &[f32] = match w {
                Weights::F32(s) if nco == 4 && s.len() >= (co0 + 4) * per_co => {
                    &s[co0 * per_co..(co0 + 4) * per_co]
                }
                _ => {
                    for c in 0..4 {
                        for j in 0..per_co {
                            wb[c * per_co + j] = if c < nco {
                                w.get((co0 + c) * per_co + j)
                            } else {
                                0.0
                            };
                        }
                    }
                    &wb[..4 * per_co]
                }
            };
            let args = F32Block {
                tile: &tile,
                w: wsl,
                block: g.stride * rs,
                koff,
                cin: g.cin,
                k: g.k,
                ow: g.ow,
            };
            // SAFETY: the caller guarantees the CPU features of `blk`; tile and weights are laid out above.
            blk(&args, &mut acc);
            for (c, a) in acc.iter().enumerate().take(nco) {
                let co = co0 + c;
                let b = bias.map_or(0.0, |b| b.get(co));
                let base = co * plane + oy * g.ow;
                if let Some(dst) = out.get_mut(base..base + g.ow) {
                    for (d, &t) in dst.iter_mut().zip(&a[..g.ow]) {
                        *d = t + b;
                    }
                }
            }
        }
    }
}

/// AVX2 block kernel: 4 channels × 16 pixels of FMA accumulators.
#[target_feature(enable = "avx2,fma")]
unsafe fn block_f32_avx2(a: &F32Block<'_>, acc_out: &mut [[f32; MAX_OW + 32]; 4]) {
    let kk = a.k * a.k;
    let per_co = a.cin * kk;
    let mut px = 0;
    while px < a.ow {
        let mut acc = [[_mm256_setzero_ps(); 2]; 4];
        for ci in 0..a.cin {
            for ky in 0..a.k {
                let wrow = ci * kk + ky * a.k;
                let rb = a.tile.as_ptr().add((ci * a.k + ky) * a.block + px);
                for kx in 0..a.k {
                    // SAFETY: px + kx / stride + 15 < ow + (k - 1) / stride + 32 <= rs, inside the tile row.
                    let row = rb.add(*a.koff.get_unchecked(kx));
                    let x0 = _mm256_loadu_ps(row);
                    let x1 = _mm256_loadu_ps(row.add(8));
                    for (c, v) in acc.iter_mut().enumerate() {
                        let wv = _mm256_set1_ps(*a.w.get_unchecked(c * per_co + wrow + kx));
                        v[0] = _mm256_fmadd_ps(wv, x0, v[0]);
                        v[1] = _mm256_fmadd_ps(wv, x1, v[1]);
                    }
                }
            }
        }
        for (c, v) in acc.iter().enumerate() {
            // SAFETY: px + 15 < MAX_OW + 32, the accumulator rows' length.
            _mm256_storeu_ps(acc_out[c].as_mut_ptr().add(px), v[0]);
            _mm256_storeu_ps(acc_out[c].as_mut_ptr().add(px + 8), v[1]);
        }
        px += 16;
    }
}

/// int8 convolution, bit-identical to [`quant::conv2d_i8`] (see the module docs); falls back to it outside the
/// fast path.
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
    let split = in_q.split.min(g.cin);
    let pairs = split.div_ceil(2) + (g.cin - split).div_ceil(2);
    // A pointwise layer is one GEMM over the plane: run it as rows of up to MAX_OW pixels (whole output rows
    // joined), so the per-row costs (tile fill, epilogue set-up) are paid a few times per plane instead of once
    // per output row. The plane's memory layout is the same, so nothing else changes.
    let flat = g.pointwise_joined(MAX_OW);
    let g = &flat.unwrap_or(*g);
    let class = size_class(g, pairs, pairs * g.k * g.k);
    let Some(large) = class.filter(|_| acc.len() >= quant::conv2d_i8_scratch_len(g)) else {
        return quant::conv2d_i8(
            g, input, in_q, w, w_scale, bias, chan_add, residual, div, acc, out,
        );
    };
    let e = ConvEpilogue {
        in_q,
        w_scale,
        bias,
        chan_add,
        residual,
        div,
        plane: g.oh * g.ow,
    };
    // SAFETY: reachable only through the AVX2 kernel table (see `conv2d`); `size_class` checked tile and weights.
    unsafe {
        if large {
            conv2d_i8_rows::<TILE_L, WBLOCK_L>(
                g,
                input,
                split,
                w,
                &e,
                out,
                row_i8_avx2,
                Some(row4_i8_avx2),
            )
        } else {
            conv2d_i8_rows::<TILE, WBLOCK>(
                g,
                input,
                split,
                w,
                &e,
                out,
                row_i8_avx2,
                Some(row4_i8_avx2),
            )
        }
    }
}

/// Channel ranges of the two input branches and the pair index where branch B starts.
#[inline(always)]
pub(super) fn pair_of(split: usize, cin: usize, p: usize) -> (usize, Option<usize>) {
    let pa = split.div_ceil(2);
    let (c0, end) = if p < pa {
        (2 * p, split)
    } else {
        (split + 2 * (p - pa), cin)
    };
    (c0, (c0 + 1 < end).then_some(c0 + 1))
}

/// The part of an int8 convolution a tier supplies: for one output channel and one output row, the integer sums of
/// branch A (pairs `0..pa`) into `row_a[..ow]` and branch B (pairs `pa..pairs`) into `row_b[..ow]` (both may be
/// written up to `ow` rounded up to 32).
pub(super) struct RowArgs<'t> {
    /// The row tile (see `tile_row`), channel pairs interleaved as `i16`.
    pub tile: &'t [i32],
    /// Packed weights of the channel, `[pair][ky][kx]`, same pairing.
    pub wp: &'t [i32],
    /// Tile elements per (pair, ky) block.
    pub block: usize,
    /// Offset of tap `kx` inside a block.
    pub koff: [usize; 16],
    /// Kernel size.
    pub k: usize,
    /// Pairs of branch A.
    pub pa: usize,
    /// All pairs.
    pub pairs: usize,
    /// Output row length.
    pub ow: usize,
}

/// A tier's row kernel (`unsafe`: it requires its CPU features and a tile laid out by [`conv2d_i8_rows`]).
pub(super) type RowFn = unsafe fn(&RowArgs<'_>, &mut [i32], &mut [i32]);

/// A row kernel for 4 output channels at once: `wp` holds their weights, `per` words apart; channel `c`'s sums go
/// to `row_a[c]` / `row_b[c]` (same contract as [`RowFn`] otherwise).
pub(super) type Row4Fn =
    unsafe fn(&RowArgs<'_>, usize, &mut [[i32; MAX_OW + 32]; 4], &mut [[i32; MAX_OW + 32]; 4]);

/// The int8 convolution shared by the x86 tiers: row tiles, packed weights and the generic epilogue; `row` does the
/// integer sums.
///
/// # Safety
/// `row` must be callable on this CPU; the caller checked `fits(g, pairs)` and the weight block size.
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn conv2d_i8_rows<const T: usize, const WB: usize>(
    g: &Conv2dGeom,
    input: &[i8],
    split: usize,
    w: &[i8],
    e: &ConvEpilogue<'_>,
    out: QOut<'_>,
    row: RowFn,
    row4: Option<Row4Fn>,
) {
    let rs = row_stride(g);
    let kk = g.k * g.k;
    let pa = split.div_ceil(2);
    let pairs = pa + (g.cin - split).div_ceil(2);
    let plane_in = g.h * g.w;
    let plane = g.oh * g.ow;
    let x = |ci: usize, iy: usize, ix: usize| -> i32 {
        input
            .get(ci * plane_in + iy * g.w + ix)
            .map_or(0, |&v| v as i32)
    };
    let mut tile = [0i32; T];
    let mut wp = [0i32; WB];
    let mut rows4_a = [[0i32; MAX_OW + 32]; 4];
    let mut rows4_b = [[0i32; MAX_OW + 32]; 4];
    let (so, mut out) = match out {
        QOut::I8 { data, scale } => (scale, Ok(data)),
        QOut::F32(data) => (0.0, Err(data)),
    };
    let mut koff = [0usize; 16];
    for (kx, o) in koff.iter_mut().enumerate().take(g.k) {
        *o = tile_row(g, 0, 0, kx);
    }
    let block = g.stride * rs;
    // Output channels are taken in chunks whose packed weights fit `wp`, packed once per chunk.
    let per = pairs * kk;
    let chunk = (WB / per.max(1)).clamp(1, g.cout.max(1)).min(CHUNK_MAX);
    let mut chans = [e.channel(0, so); CHUNK_MAX];
    for co0 in (0..g.cout).step_by(chunk) {
        let co1 = (co0 + chunk).min(g.cout);
        // Packed weights: [co][pair][ky][kx], same pairing as the tile.
        for co in co0..co1 {
            for p in 0..pairs {
                let (c0, c1) = pair_of(split, g.cin, p);
                for t in 0..kk {
                    let wv = |c: usize| w.get((co * g.cin + c) * kk + t).map_or(0, |&v| v as i32);
                    let lo = wv(c0) as i16 as u16 as u32;
                    let hi = c1.map_or(0, wv) as i16 as u16 as u32;
                    wp[(co - co0) * per + p * kk + t] = (lo | (hi << 16)) as i32;
                }
            }
        }
        // The chunk's epilogues, resolved once (not per output row).
        for (ch, co) in chans.iter_mut().zip(co0..co1) {
            *ch = e.channel(co, so);
        }
        for oy in 0..g.oh {
            // Tile of channel pairs: (x[c0] as i16) | (x[c1] as i16) << 16, zero-padded.
            let pair = |p: usize, iy: usize, ix: usize| {
                let (c0, c1) = pair_of(split, g.cin, p);
                let lo = x(c0, iy, ix) as i16 as u16 as u32;
                let hi = c1.map_or(0, |c| x(c, iy, ix)) as i16 as u16 as u32;
                (lo | (hi << 16)) as i32
            };
            if g.stride == 1 {
                let interleave = |p: usize, iy: usize, cols: &mut [i32]| {
                    let (c0, c1) = pair_of(split, g.cin, p);
                    let src = |c: usize| {
                        let row = c * plane_in + iy * g.w;
                        input.get(row..row + cols.len())
                    };
                    let x1 = match c1.map(src) {
                        Some(None) => return false,
                        x1 => x1.flatten(),
                    };
                    let Some(x0) = src(c0) else { return false };
                    // SAFETY: every x86 tier that calls this function has AVX2; both rows hold `cols.len()` values.
                    unsafe { pair_row(x0, x1, cols) };
                    true
                };
                fill_tile_s1(g, pairs, oy, &mut tile, interleave, pair);
            } else if g.stride == 2 && input.len() >= (g.cin * plane_in).max(16) {
                // SAFETY: every x86 tier that calls this function has AVX2; the input holds every channel plane
                // and at least 16 bytes.
                unsafe { fill_tile_s2_pairs(g, split, pairs, oy, &mut tile, input) };
            } else {
                fill_tile(g, pairs, oy, &mut tile, pair);
            }
            let mut co = co0;
            while co < co1 {
                // Four channels per pass where the tier has that kernel, else one.
                let four = row4.filter(|_| co + 4 <= co1);
                let nc = if four.is_some() { 4 } else { 1 };
                let args = RowArgs {
                    tile: &tile,
                    wp: &wp[(co - co0) * per..(co - co0 + nc) * per],
                    block,
                    koff,
                    k: g.k,
                    pa,
                    pairs,
                    ow: g.ow,
                };
                // SAFETY: the caller guarantees the CPU features of `row` / `row4`; tile and weights are laid out
                // above (`args.wp` holds `nc` channels of `per` words).
                match four {
                    Some(r4) => r4(&args, per, &mut rows4_a, &mut rows4_b),
                    None => row(&args, &mut rows4_a[0], &mut rows4_b[0]),
                }
                for (c, (ra, rb)) in rows4_a.iter().zip(&rows4_b).enumerate().take(nc) {
                    let co = co + c;
                    let base = co * plane + oy * g.ow;
                    let ch = chans[(co - co0) % CHUNK_MAX];
                    let (ra, rb) = (&ra[..g.ow], &rb[..g.ow]);
                    match &mut out {
                        Ok(d) => {
                            if let Some(dst) = d.get_mut(base..base + g.ow) {
                                // SAFETY: every x86 tier that calls this function has AVX2.
                                store_i8_row(&ch, oy * g.ow, ra, rb, pa < pairs, dst);
                            }
                        }
                        Err(d) => {
                            if let Some(dst) = d.get_mut(base..base + g.ow) {
                                ch.store_f32(oy * g.ow, ra, rb, dst);
                            }
                        }
                    }
                }
                co += nc;
            }
        }
    }
}

/// Padded columns `s .. s + 16` of the int8 row `input[at .. at + w]` (0 outside the row), from one 16-byte window
/// inside `input` (which may start before or end after the row) shuffled into place by `vpshufb`, the columns
/// outside the row zeroed by the shuffle's index: no byte copy, so no store-to-load forwarding stall.
///
/// # Safety
/// AVX2; `input.len() >= 16` and `at + w <= input.len()`.
#[inline]
#[target_feature(enable = "avx2")]
pub(super) unsafe fn padded16(input: &[i8], at: usize, w: usize, s: isize) -> __m128i {
    let j = _mm_setr_epi8(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    let abs = at as isize + s;
    let lo = abs.clamp(0, input.len() as isize - 16);
    // Row column s + j is valid for jl <= j < jh, and lies at byte off + j of the window.
    let (jl, jh) = ((-s).clamp(0, 16) as i8, (w as isize - s).clamp(0, 16) as i8);
    let off = (abs - lo).clamp(-16, 16) as i8;
    let valid = _mm_andnot_si128(
        _mm_cmpgt_epi8(_mm_set1_epi8(jl), j),
        _mm_cmpgt_epi8(_mm_set1_epi8(jh), j),
    );
    let idx = _mm_or_si128(
        _mm_and_si128(valid, _mm_add_epi8(j, _mm_set1_epi8(off))),
        _mm_andnot_si128(valid, _mm_set1_epi8(-128)),
    );
    // SAFETY: 0 <= lo <= input.len() − 16 (caller: len >= 16); valid lanes index the window at off + j in 0 .. 16
    // (the row's bytes lie inside it), the others are zeroed (index bit 7).
    let win = _mm_loadu_si128(input.as_ptr().offset(lo) as *const __m128i);
    _mm_shuffle_epi8(win, idx)
}

/// The pair tile of a stride-2 int8 layer for output row `oy` (the layout of [`fill_tile`] with channel pairs
/// [`pair_of`]), 8 columns of both phase rows per step: the 16 padded columns of both channels from [`padded16`],
/// split into even and odd bytes by one `vpshufb`, sign-extended and interleaved into `i16` pair words.
///
/// # Safety
/// AVX2; `input` holds the `cin` planes of `h · w` and at least 16 bytes; `tile` holds the layer's tile
/// (`pairs · k · 2` rows of [`row_stride`]).
#[target_feature(enable = "avx2")]
unsafe fn fill_tile_s2_pairs(
    g: &Conv2dGeom,
    split: usize,
    pairs: usize,
    oy: usize,
    tile: &mut [i32],
    input: &[i8],
) {
    let rs = row_stride(g);
    let plane_in = g.h * g.w;
    let deint = _mm_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15);
    for p in 0..pairs {
        let (c0, c1) = pair_of(split, g.cin, p);
        for ky in 0..g.k {
            let (b0, b1) = (tile_row(g, p, ky, 0), tile_row(g, p, ky, 1));
            let (Some(_), Some(_)) = (tile.get(b0..b0 + rs), tile.get(b1..b1 + rs)) else {
                return;
            };
            let iy = (oy * 2 + ky).wrapping_sub(g.pad_t);
            if iy >= g.h {
                tile[b0..b0 + rs].fill(0);
                tile[b1..b1 + rs].fill(0);
                continue;
            }
            let mut col = 0;
            while col + 8 <= rs {
                let s = (2 * col) as isize - g.pad_l as isize;
                // (No closures here: they would not inherit this function's target features.)
                let a = _mm_shuffle_epi8(padded16(input, c0 * plane_in + iy * g.w, g.w, s), deint);
                let b = match c1 {
                    Some(c1) => {
                        _mm_shuffle_epi8(padded16(input, c1 * plane_in + iy * g.w, g.w, s), deint)
                    }
                    None => _mm_setzero_si128(),
                };
                // Low 8 bytes: even columns (phase 0), high 8: odd (phase 1).
                for (ph, base) in [(0, b0), (1, b1)] {
                    let (a8, b8) = if ph == 0 {
                        (a, b)
                    } else {
                        (_mm_srli_si128::<8>(a), _mm_srli_si128::<8>(b))
                    };
                    let (a16, b16) = (_mm_cvtepi8_epi16(a8), _mm_cvtepi8_epi16(b8));
                    let words = _mm256_set_m128i(
                        _mm_unpackhi_epi16(a16, b16),
                        _mm_unpacklo_epi16(a16, b16),
                    );
                    // SAFETY: columns col .. col + 8 <= rs of the tile row at `base` (checked above).
                    _mm256_storeu_si256(tile.as_mut_ptr().add(base + col) as *mut __m256i, words);
                }
                col += 8;
            }
        }
    }
}

/// Output channels per chunk of [`conv2d_i8_rows`] at most (their resolved epilogues live on the stack).
const CHUNK_MAX: usize = 64;

/// One row of the int8 pair tile: `cols[i] = (x0[i] as i16) | (x1[i] as i16) << 16` (`x1` absent: 0), 16 columns
/// per step (`vpmovsxbw` of both channels, `vpunpck{l,h}wd` and a 128-bit lane swap), the rest one by one (over the
/// shortest of the slices).
///
/// # Safety
/// The CPU must have AVX2.
#[target_feature(enable = "avx2")]
unsafe fn pair_row(x0: &[i8], x1: Option<&[i8]>, cols: &mut [i32]) {
    let n = cols
        .len()
        .min(x0.len())
        .min(x1.map_or(usize::MAX, <[i8]>::len));
    let mut i = 0;
    while i + 16 <= n {
        // SAFETY: `i + 16 ≤ n`: 16 bytes of each channel row and 16 tile elements.
        let a = _mm256_cvtepi8_epi16(_mm_loadu_si128(x0.as_ptr().add(i) as *const __m128i));
        let b = match x1 {
            Some(x1) => _mm256_cvtepi8_epi16(_mm_loadu_si128(x1.as_ptr().add(i) as *const __m128i)),
            None => _mm256_setzero_si256(),
        };
        let (lo, hi) = (_mm256_unpacklo_epi16(a, b), _mm256_unpackhi_epi16(a, b));
        let d = cols.as_mut_ptr().add(i) as *mut __m256i;
        _mm256_storeu_si256(d, _mm256_permute2x128_si256::<0x20>(lo, hi));
        _mm256_storeu_si256(d.add(1), _mm256_permute2x128_si256::<0x31>(lo, hi));
        i += 16;
    }
    for (ix, t) in cols.iter_mut().enumerate().take(n).skip(i) {
        let lo = x0.get(ix).map_or(0, |&v| v as i16 as u16 as u32);
        let hi = x1
            .and_then(|x1| x1.get(ix))
            .map_or(0, |&v| v as i16 as u16 as u32);
        *t = (lo | (hi << 16)) as i32;
    }
}

/// AVX2 row kernel: `vpmaddwd` on 8 pixels × 4 vectors.
#[target_feature(enable = "avx2,fma")]
unsafe fn row_i8_avx2(a: &RowArgs<'_>, row_a: &mut [i32], row_b: &mut [i32]) {
    let kk = a.k * a.k;
    let mut px = 0;
    while px < a.ow {
        for (branch, dst) in [(0..a.pa, &mut *row_a), (a.pa..a.pairs, &mut *row_b)] {
            let mut acc = [_mm256_setzero_si256(); 4];
            for p in branch {
                for ky in 0..a.k {
                    let rb = a.tile.as_ptr().add((p * a.k + ky) * a.block + px);
                    for kx in 0..a.k {
                        let wv = _mm256_set1_epi32(*a.wp.get_unchecked(p * kk + ky * a.k + kx));
                        // SAFETY: px + kx / stride + 31 < ow + (k - 1) / stride + 32 <= rs, inside the tile row.
                        let row = rb.add(*a.koff.get_unchecked(kx));
                        for (v, acc) in acc.iter_mut().enumerate() {
                            let xv = _mm256_loadu_si256(row.add(8 * v) as *const __m256i);
                            *acc = _mm256_add_epi32(*acc, _mm256_madd_epi16(xv, wv));
                        }
                    }
                }
            }
            for (v, acc) in acc.iter().enumerate() {
                // SAFETY: px + 31 < MAX_OW + 32, the row buffers' length.
                _mm256_storeu_si256(dst.as_mut_ptr().add(px + 8 * v) as *mut __m256i, *acc);
            }
        }
        px += 32;
    }
}

/// AVX2 row kernel for 4 output channels: `vpmaddwd` on 16 pixels (2 vectors) × 4 channels, so each pair of tile
/// vectors serves 4 channels (the one-channel kernel loads a tile vector per `vpmaddwd`).
#[target_feature(enable = "avx2,fma")]
unsafe fn row4_i8_avx2(
    a: &RowArgs<'_>,
    per: usize,
    row_a: &mut [[i32; MAX_OW + 32]; 4],
    row_b: &mut [[i32; MAX_OW + 32]; 4],
) {
    let kk = a.k * a.k;
    let mut px = 0;
    while px < a.ow {
        for (branch, dst) in [(0..a.pa, &mut *row_a), (a.pa..a.pairs, &mut *row_b)] {
            let mut acc = [[_mm256_setzero_si256(); 2]; 4];
            for p in branch {
                for ky in 0..a.k {
                    let rb = a.tile.as_ptr().add((p * a.k + ky) * a.block + px);
                    let wrow = p * kk + ky * a.k;
                    for kx in 0..a.k {
                        // SAFETY: px + kx / stride + 15 < ow + (k - 1) / stride + 32 <= rs, inside the tile row;
                        // `wp` holds 4 channels of `per = pairs · k²` words.
                        let row = rb.add(*a.koff.get_unchecked(kx));
                        let x0 = _mm256_loadu_si256(row as *const __m256i);
                        let x1 = _mm256_loadu_si256(row.add(8) as *const __m256i);
                        for (c, v) in acc.iter_mut().enumerate() {
                            let wv = _mm256_set1_epi32(*a.wp.get_unchecked(c * per + wrow + kx));
                            v[0] = _mm256_add_epi32(v[0], _mm256_madd_epi16(x0, wv));
                            v[1] = _mm256_add_epi32(v[1], _mm256_madd_epi16(x1, wv));
                        }
                    }
                }
            }
            for (d, v) in dst.iter_mut().zip(&acc) {
                // SAFETY: px + 15 < MAX_OW + 32, the row buffers' length.
                _mm256_storeu_si256(d.as_mut_ptr().add(px) as *mut __m256i, v[0]);
                _mm256_storeu_si256(d.as_mut_ptr().add(px + 8) as *mut __m256i, v[1]);
            }
        }
        px += 16;
    }
}

/// `exp(x)` for 8 lanes: range reduction `x = n·ln2 + r`, degree-6 polynomial on `|r| <= ln2/2`, scale by `2^n`
/// (relative error below 2e-7 for `x` in [-87, 88]; inputs below -87 give 0, as `expf` underflows there).
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn exp8(x: __m256) -> __m256 {
    let x = _mm256_max_ps(x, _mm256_set1_ps(-87.0));
    let x = _mm256_min_ps(x, _mm256_set1_ps(88.0));
    let n = _mm256_round_ps(
        _mm256_mul_ps(x, _mm256_set1_ps(core::f32::consts::LOG2_E)),
        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC,
    );
    // r = x - n·ln2, in two parts for accuracy.
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693_145_75), x);
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(1.428_606_8e-6), r);
    let mut p = _mm256_set1_ps(1.0 / 720.0);
    for c in [1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
    }
    let pow2 = _mm256_castsi256_ps(_mm256_slli_epi32(
        _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)),
        23,
    ));
    _mm256_mul_ps(p, pow2)
}

/// Horizontal sum of 8 lanes.
#[target_feature(enable = "avx2,fma")]
unsafe fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    _mm_cvtss_f32(s)
}

/// Attention (layout of [`generic::attention`]), vectorized over keys: scores with FMA, a polynomial `exp`
/// ([`exp8`]) in the max-subtracted softmax, and `Σ_j p_j v_j` as 8-lane dot products. Within `2e-6` relative of
/// the generic kernel on softmax-weighted sums (tested).
pub(crate) fn attention(
    g: &generic::AttentionGeom,
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
        return generic::attention(g, q, k, v, scores, out);
    }
    // SAFETY: AVX2 table only; every slice was checked to hold `total` (scores `n`) elements above.
    unsafe { attention_avx2(g, q, k, v, scores, out) }
}

#[target_feature(enable = "avx2,fma")]
unsafe fn attention_avx2(
    g: &generic::AttentionGeom,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    scores: &mut [f32],
    out: &mut [f32],
) {
    let (n, d) = (g.n, g.head_dim);
    let scale = 1.0 / libm::sqrtf(d as f32);
    let n8 = n - n % 8;
    let sp = scores.as_mut_ptr();
    for h in 0..g.heads {
        let base = h * d * n;
        let (qh, kh, vh) = (
            q.as_ptr().add(base),
            k.as_ptr().add(base),
            v.as_ptr().add(base),
        );
        let oh = out.as_mut_ptr().add(base);
        for i in 0..n {
            // s_j = scale · Σ_d q[d][i] k[d][j]
            let mut j = 0;
            while j < n8 {
                let mut acc = _mm256_setzero_ps();
                for dd in 0..d {
                    let qv = _mm256_set1_ps(*qh.add(dd * n + i));
                    acc = _mm256_fmadd_ps(qv, _mm256_loadu_ps(kh.add(dd * n + j)), acc);
                }
                _mm256_storeu_ps(sp.add(j), _mm256_mul_ps(acc, _mm256_set1_ps(scale)));
                j += 8;
            }
            for j in n8..n {
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
            let mv = _mm256_set1_ps(m);
            let mut sum = _mm256_setzero_ps();
            let mut j = 0;
            while j < n8 {
                let e = exp8(_mm256_sub_ps(_mm256_loadu_ps(sp.add(j)), mv));
                _mm256_storeu_ps(sp.add(j), e);
                sum = _mm256_add_ps(sum, e);
                j += 8;
            }
            let mut tail = 0.0f32;
            for j in n8..n {
                let e = libm::expf(*sp.add(j) - m);
                *sp.add(j) = e;
                tail += e;
            }
            let inv = 1.0 / (hsum(sum) + tail);
            for dd in 0..d {
                let vr = vh.add(dd * n);
                let mut acc = _mm256_setzero_ps();
                let mut j = 0;
                while j < n8 {
                    acc = _mm256_fmadd_ps(
                        _mm256_loadu_ps(vr.add(j)),
                        _mm256_loadu_ps(sp.add(j)),
                        acc,
                    );
                    j += 8;
                }
                let mut t = hsum(acc);
                for j in n8..n {
                    t += *vr.add(j) * *sp.add(j);
                }
                *oh.add(dd * n + i) = t * inv;
            }
        }
    }
}

/// Group norm (+ FiLM, + SiLU) with 8-lane sums and the polynomial `exp` for SiLU; the statistics are summed in a
/// different order than [`generic::group_norm`], so results agree within `1e-5` (tested), not bit for bit.
pub(crate) fn group_norm(a: &generic::GroupNormArgs<'_>, input: &[f32], out: &mut [f32]) {
    if !a.vector_ok(input, out) {
        return generic::group_norm(a, input, out);
    }
    // SAFETY: AVX2 table only; `input` and `out` hold `c · hw` elements (`vector_ok`).
    unsafe { group_norm_avx2(a, input, out) }
}

#[target_feature(enable = "avx2,fma")]
unsafe fn group_norm_avx2(a: &generic::GroupNormArgs<'_>, input: &[f32], out: &mut [f32]) {
    let cpg = a.c / a.groups;
    let glen = cpg * a.hw;
    let g8 = glen - glen % 8;
    let h8 = a.hw - a.hw % 8;
    for g in 0..a.groups {
        let x = input.as_ptr().add(g * glen);
        let mut s = _mm256_setzero_ps();
        let mut j = 0;
        while j < g8 {
            s = _mm256_add_ps(s, _mm256_loadu_ps(x.add(j)));
            j += 8;
        }
        let mut sum = hsum(s);
        for j in g8..glen {
            sum += *x.add(j);
        }
        let mean = sum / glen as f32;
        let mv = _mm256_set1_ps(mean);
        let mut q = _mm256_setzero_ps();
        let mut j = 0;
        while j < g8 {
            let d = _mm256_sub_ps(_mm256_loadu_ps(x.add(j)), mv);
            q = _mm256_fmadd_ps(d, d, q);
            j += 8;
        }
        let mut var = hsum(q);
        for j in g8..glen {
            let d = *x.add(j) - mean;
            var += d * d;
        }
        let rstd = 1.0 / libm::sqrtf(var / glen as f32 + a.eps);
        for jc in 0..cpg {
            let (mul, add) = a.channel_affine(g * cpg + jc, mean, rstd);
            let xc = x.add(jc * a.hw);
            let yc = out.as_mut_ptr().add(g * glen + jc * a.hw);
            let (m8, a8, one) = (
                _mm256_set1_ps(mul),
                _mm256_set1_ps(add),
                _mm256_set1_ps(1.0),
            );
            let mut p = 0;
            while p < h8 {
                let mut y = _mm256_fmadd_ps(_mm256_loadu_ps(xc.add(p)), m8, a8);
                if a.silu {
                    let e = exp8(_mm256_sub_ps(_mm256_setzero_ps(), y));
                    y = _mm256_div_ps(y, _mm256_add_ps(one, e));
                }
                _mm256_storeu_ps(yc.add(p), y);
                p += 8;
            }
            for p in h8..a.hw {
                let y = *xc.add(p) * mul + add;
                *yc.add(p) = if a.silu { crate::silu(y) } else { y };
            }
        }
    }
}

/// [`quant::exp_det`] on 8 lanes, the same operations in the same order (multiply then add, never fused), so the
/// bits are the scalar function's.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn exp_det8(x: __m256) -> __m256 {
    // `f32::clamp` keeps a NaN: `vmaxps` / `vminps` return their second operand when either is NaN, so x goes
    // second.
    let x = _mm256_min_ps(
        _mm256_set1_ps(88.0),
        _mm256_max_ps(_mm256_set1_ps(-87.0), x),
    );
    let n = _mm256_round_ps(
        _mm256_mul_ps(x, _mm256_set1_ps(core::f32::consts::LOG2_E)),
        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC,
    );
    let r = _mm256_sub_ps(x, _mm256_mul_ps(n, _mm256_set1_ps(quant::EXP_C1)));
    let r = _mm256_sub_ps(r, _mm256_mul_ps(n, _mm256_set1_ps(quant::EXP_C2)));
    let mut p = _mm256_set1_ps(quant::EXP_POLY[0]);
    for &c in &quant::EXP_POLY[1..] {
        p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(c));
    }
    let pow2 = _mm256_castsi256_ps(_mm256_slli_epi32(
        _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)),
        23,
    ));
    _mm256_mul_ps(p, pow2)
}

/// Largest `n · head_dim` of the int8 attention fast path (the transposed `v` of one head lives on the stack).
const ATT_VT: usize = 32 * 1024;
/// Channel-pair words of one head's keys for the `vpmaddwd` scores (64 KiB; larger heads take the `vpmulld` loop).
const ATT_KP: usize = 16 * 1024;
/// Channel-pair words of one query (heads of up to 512 channels).
const ATT_QP: usize = 256;

/// int8 attention, bit-identical to [`quant::attention_i8`]: exact integer scores 8 keys at a time, [`exp_det8`],
/// the softmax sum in key order (scalar, as generic), and `Σ_j e_j · v_j` in key order for 8 channels at a time
/// (multiply, then add: the generic rounding per channel).
#[allow(clippy::too_many_arguments)]
pub(crate) fn attention_i8(
    g: &generic::AttentionGeom,
    q: &[i8],
    sq: f32,
    k: &[i8],
    sk: f32,
    v: &[i8],
    sv: f32,
    scores: &mut [f32],
    out: QOut<'_>,
) {
    let total = g.heads * g.head_dim * g.n;
    let out_len = out.len();
    if g.n == 0
        || g.head_dim == 0
        || g.n * g.head_dim > ATT_VT
        || scores.len() < g.n
        || q.len() < total
        || k.len() < total
        || v.len() < total
        || out_len < total
    {
        return quant::attention_i8(g, q, sq, k, sk, v, sv, scores, out);
    }
    // SAFETY: AVX2 table only; every slice holds `total` elements (scores `n`), checked above.
    unsafe { attention_i8_avx2(g, q, sq, k, sk, v, sv, scores, out) }
}

#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma")]
unsafe fn attention_i8_avx2(
    g: &generic::AttentionGeom,
    q: &[i8],
    sq: f32,
    k: &[i8],
    sk: f32,
    v: &[i8],
    sv: f32,
    scores: &mut [f32],
    mut out: QOut<'_>,
) {
    let (n, d) = (g.n, g.head_dim);
    let qk = sq * sk * (1.0 / libm::sqrtf(d as f32));
    let n8 = n - n % 8;
    let sp = scores.as_mut_ptr();
    let mut vt = [0f32; ATT_VT];
    let mut accs = [0f32; 1024];
    let mut kp = [0i32; ATT_KP];
    let mut qp = [0i32; ATT_QP];
    for h in 0..g.heads {
        let base = h * d * n;
        let (qh, kh, vh) = (
            q.as_ptr().add(base),
            k.as_ptr().add(base),
            v.as_ptr().add(base),
        );
        // v transposed to [j][d], as f32 (exact).
        for dd in 0..d {
            for j in 0..n {
                vt[j * d + dd] = *vh.add(dd * n + j) as f32;
            }
        }
        // k as i16 pairs of channels, `[dd / 2][j]` words (an odd last channel paired with 0), for `vpmaddwd`.
        let pd = d.div_ceil(2);
        let packed = pd * n <= ATT_KP && pd <= ATT_QP;
        if packed {
            for pp in 0..pd {
                for j in 0..n {
                    let lo = *kh.add(2 * pp * n + j) as i16 as u16 as u32;
                    let hi = if 2 * pp + 1 < d {
                        *kh.add((2 * pp + 1) * n + j) as i16 as u16 as u32
                    } else {
                        0
                    };
                    kp[pp * n + j] = (lo | (hi << 16)) as i32;
                }
            }
        }
        for i in 0..n {
            let mut j = 0;
            if packed {
                // This query's channel pairs, likewise.
                for (pp, w) in qp.iter_mut().enumerate().take(pd) {
                    let lo = *qh.add(2 * pp * n + i) as i16 as u16 as u32;
                    let hi = if 2 * pp + 1 < d {
                        *qh.add((2 * pp + 1) * n + i) as i16 as u16 as u32
                    } else {
                        0
                    };
                    *w = (lo | (hi << 16)) as i32;
                }
                while j < n8 {
                    let mut acc = _mm256_setzero_si256();
                    for (pp, &w) in qp.iter().enumerate().take(pd) {
                        let kv = _mm256_loadu_si256(kp.as_ptr().add(pp * n + j) as *const __m256i);
                        acc = _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_set1_epi32(w), kv));
                    }
                    _mm256_storeu_ps(
                        sp.add(j),
                        _mm256_mul_ps(_mm256_cvtepi32_ps(acc), _mm256_set1_ps(qk)),
                    );
                    j += 8;
                }
            }
            while j < n8 {
                let mut acc = _mm256_setzero_si256();
                for dd in 0..d {
                    let qv = _mm256_set1_epi32(*qh.add(dd * n + i) as i32);
                    let kv =
                        _mm256_cvtepi8_epi32(_mm_loadl_epi64(kh.add(dd * n + j) as *const __m128i));
                    acc = _mm256_add_epi32(acc, _mm256_mullo_epi32(qv, kv));
                }
                _mm256_storeu_ps(
                    sp.add(j),
                    _mm256_mul_ps(_mm256_cvtepi32_ps(acc), _mm256_set1_ps(qk)),
                );
                j += 8;
            }
            for j in n8..n {
                let mut a = 0i32;
                for dd in 0..d {
                    a = a.wrapping_add(*qh.add(dd * n + i) as i32 * *kh.add(dd * n + j) as i32);
                }
                *sp.add(j) = a as f32 * qk;
            }
            let mut m = f32::NEG_INFINITY;
            for j in 0..n {
                m = m.max(*sp.add(j));
            }
            let mv = _mm256_set1_ps(m);
            let mut j = 0;
            while j < n8 {
                _mm256_storeu_ps(
                    sp.add(j),
                    exp_det8(_mm256_sub_ps(_mm256_loadu_ps(sp.add(j)), mv)),
                );
                j += 8;
            }
            for j in n8..n {
                *sp.add(j) = quant::exp_det(*sp.add(j) - m);
            }
            let mut sum = 0.0f32;
            for j in 0..n {
                sum += *sp.add(j);
            }
            let f = sv / sum;
            // acc[d] = Σ_j e_j · v[d][j], j in order, 8 channels per vector (d <= 1024 here, else per chunk).
            for d0 in (0..d).step_by(1024) {
                let dn = (d - d0).min(1024);
                let dn8 = dn - dn % 8;
                accs[..dn].fill(0.0);
                // Blocks of 32 channels with the sums in 4 registers (each still a multiply, then an add, in key
                // order); the channels past the last block through `accs` below.
                let mut c32 = 0;
                while c32 + 32 <= dn {
                    let mut a = [_mm256_setzero_ps(); 4];
                    for j in 0..n {
                        let ev = _mm256_set1_ps(*sp.add(j));
                        let row = vt.as_ptr().add(j * d + d0 + c32);
                        for (v, a) in a.iter_mut().enumerate() {
                            *a = _mm256_add_ps(
                                *a,
                                _mm256_mul_ps(ev, _mm256_loadu_ps(row.add(8 * v))),
                            );
                        }
                    }
                    for (v, a) in a.iter().enumerate() {
                        _mm256_storeu_ps(accs.as_mut_ptr().add(c32 + 8 * v), *a);
                    }
                    c32 += 32;
                }
                for j in 0..n {
                    if c32 == dn {
                        break;
                    }
                    let e = *sp.add(j);
                    let ev = _mm256_set1_ps(e);
                    let row = vt.as_ptr().add(j * d + d0);
                    let mut c = c32;
                    while c < dn8 {
                        let a = _mm256_loadu_ps(accs.as_ptr().add(c));
                        let prod = _mm256_mul_ps(ev, _mm256_loadu_ps(row.add(c)));
                        _mm256_storeu_ps(accs.as_mut_ptr().add(c), _mm256_add_ps(a, prod));
                        c += 8;
                    }
                    for (c, a) in accs.iter_mut().enumerate().take(dn).skip(dn8.max(c32)) {
                        *a += e * *row.add(c);
                    }
                }
                for (c, &a) in accs[..dn].iter().enumerate() {
                    let y = a * f;
                    let o = base + (d0 + c) * n + i;
                    match &mut out {
                        QOut::I8 { data, scale } => data[o] = quant::quantize(y, *scale),
                        QOut::F32(data) => data[o] = y,
                    }
                }
            }
        }
    }
}

/// [`generic::f16_to_f32`] with F16C (`vcvtph2ps`, exact like the software conversion), 8 values at a time.
pub(crate) fn f16_to_f32(src: &[half::f16], dst: &mut [f32]) {
    // SAFETY: reachable only through the AVX2 and AVX-512 tables, built after detecting F16C (`super::has_avx2`).
    unsafe { f16_to_f32_f16c(src, dst) }
}

#[target_feature(enable = "avx,f16c")]
unsafe fn f16_to_f32_f16c(src: &[half::f16], dst: &mut [f32]) {
    let n = src.len().min(dst.len());
    let mut i = 0;
    while i + 8 <= n {
        // SAFETY: i + 8 <= n, so 8 halves (16 bytes) of `src` and 8 floats of `dst` from i are in bounds.
        let h = _mm_loadu_si128(src.as_ptr().add(i) as *const __m128i);
        _mm256_storeu_ps(dst.as_mut_ptr().add(i), _mm256_cvtph_ps(h));
        i += 8;
    }
    for (d, s) in dst[i..n].iter_mut().zip(&src[i..n]) {
        *d = s.to_f32();
    }
}

/// [`generic::linear`] with F16C row conversion (bit-identical: the same accumulation order, an exact conversion).
pub(crate) fn linear(
    input: &[f32],
    w: Weights<'_>,
    bias: Option<Weights<'_>>,
    silu_in: bool,
    silu_out: bool,
    out: &mut [f32],
) {
    generic::linear_with(input, w, bias, silu_in, silu_out, out, f16_to_f32)
}

/// [`quant::ChannelEpilogue::store_i8`] for one output row with AVX2, 8 pixels per step, bit-identical: the
/// 32-bit form of the epilogue ([`quant::FastI8`], where the channel has one: both sums' multipliers below 1/2 and a
/// residual shift of at least 8) lane by lane. `a + bias` saturates in `i32` (overflow found from the signs), each
/// term is the high word of a `vpmuldq` product plus the rounding constant (even and odd lanes multiplied
/// separately), shifted right by the rest of the shift; the residual's value is pre-scaled by `2^pre` first; the
/// residual's term is added with `i32` saturation and saturating packs (`i32 → i16 → i8`) are the final clamp.
/// `use_b` false: the second input part has no channels (its sums and term are 0). A channel without that form,
/// a residual plane ending inside the row and the last `len % 8` pixels take the scalar code.
///
/// # Safety
/// The CPU must have AVX2.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn store_i8_row(
    ch: &quant::ChannelEpilogue<'_>,
    p0: usize,
    a: &[i32],
    b: &[i32],
    use_b: bool,
    out: &mut [i8],
) {
    let n = out.len().min(a.len()).min(b.len());
    let vn = match ch.fast_i8() {
        Some(f)
            if f.rplane
                .get(p0..)
                .is_none_or(|r| r.is_empty() || r.len() >= n) =>
        {
            let r = f.rplane.get(p0..).unwrap_or(&[]);
            let vn = n / 8 * 8;
            let mut i = 0;
            while i < vn {
                // SAFETY: pixels `i..i + 8` with `i + 8 ≤ vn ≤ n`: inside `a`, `b`, `out` and (when present) `r`.
                let av = _mm256_loadu_si256(a.as_ptr().add(i) as *const __m256i);
                let mut y = hi_term(adds_epi32(av, _mm256_set1_epi32(f.bias)), f.ma);
                if use_b {
                    let bv = _mm256_loadu_si256(b.as_ptr().add(i) as *const __m256i);
                    y = _mm256_add_epi32(y, hi_term(bv, f.mb));
                }
                if !r.is_empty() {
                    let rv =
                        _mm256_cvtepi8_epi32(_mm_loadl_epi64(r.as_ptr().add(i) as *const __m128i));
                    let rv = _mm256_sll_epi32(rv, _mm_cvtsi32_si128(f.mr.pre as i32));
                    y = adds_epi32(y, hi_term(rv, f.mr.hi()));
                }
                let p16 = _mm256_packs_epi32(y, y);
                let p8 = _mm256_packs_epi16(p16, p16);
                let lo = _mm_cvtsi128_si32(_mm256_castsi256_si128(p8)) as u32;
                let hi = _mm_cvtsi128_si32(_mm256_extracti128_si256::<1>(p8)) as u32;
                let o = out.as_mut_ptr().add(i);
                (o as *mut u32).write_unaligned(lo);
                (o.add(4) as *mut u32).write_unaligned(hi);
                i += 8;
            }
            vn
        }
        _ => 0,
    };
    if vn < n {
        let (Some(a), Some(b), Some(o)) = (a.get(vn..n), b.get(vn..n), out.get_mut(vn..n)) else {
            return;
        };
        ch.store_i8(p0 + vn, a, b, o);
    }
}

/// `(x · mult + round) >> 32 >> rest` per `i32` lane ([`quant::HiRequant::apply`]): `vpmuldq` multiplies the even
/// lanes' values, the odd ones after a 32-bit shift; the high words of the even products move down and blend with
/// the odd ones. Every result fits `i32` (`|x · mult| ≤ 2^62`).
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn hi_term(x: __m256i, q: quant::HiRequant) -> __m256i {
    let m = _mm256_set1_epi32(q.mult);
    let r = _mm256_set1_epi64x(q.round);
    let pe = _mm256_add_epi64(_mm256_mul_epi32(x, m), r);
    let po = _mm256_add_epi64(_mm256_mul_epi32(_mm256_srli_epi64::<32>(x), m), r);
    let hi = _mm256_blend_epi32::<0b1010_1010>(_mm256_srli_epi64::<32>(pe), po);
    _mm256_sra_epi32(hi, _mm_cvtsi32_si128(q.rest as i32))
}

/// `a.saturating_add(b)` per `i32` lane: a wrapped sum whose sign differs from both operands' overflowed, and
/// takes `i32::MAX` or `i32::MIN` by `a`'s sign.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn adds_epi32(a: __m256i, b: __m256i) -> __m256i {
    let s = _mm256_add_epi32(a, b);
    let ov = _mm256_and_si256(_mm256_xor_si256(s, a), _mm256_xor_si256(s, b));
    let sat = _mm256_xor_si256(_mm256_srai_epi32::<31>(a), _mm256_set1_epi32(i32::MAX));
    _mm256_castps_si256(_mm256_blendv_ps(
        _mm256_castsi256_ps(s),
        _mm256_castsi256_ps(sat),
        _mm256_castsi256_ps(ov),
    ))
}
