//! Drivers shared by the aarch64 tiers: band tiles of the zero-padded input, packed weights of 4 output channels,
//! the int8 epilogue (generic's arithmetic, 4 pixels per NEON step); a tier supplies only the register-tile kernel
//! (`F32BlockFn` / `I8BlockFn`).
//!
//! Tile layout, for a band of output rows `oy0 .. oy0 + B`: `[group][r][phase][col]` with `r` the padded input row
//! `oy0·stride + r` (`nrows = (B − 1)·stride + k` rows per group, each input row stored once, not once per `ky`),
//! and phase row `ph` holding padded input column `col·stride + ph`, so output pixel `px` of band row `ry` reads tap
//! `(ky, kx)` at `group·gstride + ry·stride²·rs + toff[ky·k + kx] + px` and stride 2 becomes two stride-1 rows.
//! A group is one `f32` input channel, or (int8) a *quad* of 4 input channels packed as 4 bytes of one `u32`
//! (channel `4q + i` in byte `i`), which is what `sdot` and `smull`/`sadalp` multiply.

use crate::pack;
use crate::quant::{self, ActQ, ConvEpilogue, QOut};
use crate::registry::F16ToF32Fn;
use crate::{generic, Conv2dGeom, Weights};

/// Largest output row handled (longer rows fall back to the generic kernels).
pub(super) const MAX_OW: usize = 512;
/// Length of one accumulator row: `MAX_OW` plus the slack of the last (partial) 16-pixel block.
pub(super) const ACC: usize = MAX_OW + 16;
/// Stack budget of the band tile, in 4-byte elements (128 KiB).
pub(super) const TILE: usize = 32 * 1024;
/// Stack budget of the packed weights of one chunk of output channels, in 4-byte elements (128 KiB).
pub(super) const WBUF: usize = 32 * 1024;
/// Largest kernel size handled.
pub(super) const MAX_K: usize = 16;

/// Elements of one tile row: the output row, the kernel's reach in phase columns and 16 elements of slack for the
/// last (partial) block of 16 pixels, rounded to 4.
fn row_stride(g: &Conv2dGeom) -> usize {
    (g.ow + (g.k - 1) / g.stride + 16).next_multiple_of(4)
}

/// Band geometry of a layer: output rows per band, tile rows per group, elements per group, row stride.
#[derive(Clone, Copy, Debug)]
struct Band {
    /// Output rows per band.
    rows: usize,
    /// Padded input rows per group.
    nrows: usize,
    /// Tile elements per group (`nrows · stride · rs`).
    gstride: usize,
    /// Tile elements per row.
    rs: usize,
}

/// The band geometry for `groups` groups, or `None` when the layer is outside the fast path (stride other than
/// 1 and 2, kernel larger than [`MAX_K`], rows longer than [`MAX_OW`], or not even one output row fits the tile).
fn band(g: &Conv2dGeom, groups: usize) -> Option<Band> {
    if !(1..=2).contains(&g.stride)
        || !(1..=MAX_K).contains(&g.k)
        || g.ow == 0
        || g.oh == 0
        || g.ow > MAX_OW
        || groups == 0
    {
        return None;
    }
    let rs = row_stride(g);
    let per_row = groups.checked_mul(g.stride)?.checked_mul(rs)?;
    let rows_fit = TILE / per_row;
    if rows_fit < g.k {
        return None;
    }
    let rows = ((rows_fit - g.k) / g.stride + 1).min(g.oh);
    let nrows = (rows - 1) * g.stride + g.k;
    Some(Band {
        rows,
        nrows,
        gstride: nrows * g.stride * rs,
        rs,
    })
}

/// Tile offsets of the taps `(ky, kx)` relative to the first tap (see the module docs).
fn tap_offsets(g: &Conv2dGeom, rs: usize) -> [usize; MAX_K * MAX_K] {
    let mut toff = [0usize; MAX_K * MAX_K];
    for ky in 0..g.k {
        for kx in 0..g.k {
            toff[ky * g.k + kx] = (ky * g.stride + kx % g.stride) * rs + kx / g.stride;
        }
    }
    toff
}

/// Fill the band tile starting at output row `oy0`: everything zero, then for every group, in-image input row `iy`
/// and phase, `put(group, iy, ix0, cols)` writes the in-image columns `cols` of that tile row, whose first element
/// is input column `ix0` and the next ones every `stride` columns.
fn fill_band<T: Copy + Default>(
    g: &Conv2dGeom,
    b: &Band,
    groups: usize,
    oy0: usize,
    tile: &mut [T],
    mut put: impl FnMut(usize, usize, usize, &mut [T]),
) {
    for grp in 0..groups {
        for r in 0..b.nrows {
            let iy = oy0 * g.stride + r;
            let inside = iy >= g.pad_t && iy - g.pad_t < g.h;
            for ph in 0..g.stride {
                let base = ((grp * b.nrows + r) * g.stride + ph) * b.rs;
                let Some(row) = tile.get_mut(base..base + b.rs) else {
                    return;
                };
                row.fill(T::default());
                // Columns `c` inside the image: pad_l <= c·stride + ph < pad_l + w.
                let lo = g.pad_l.saturating_sub(ph).div_ceil(g.stride);
                let hi = (g.pad_l + g.w)
                    .saturating_sub(ph)
                    .div_ceil(g.stride)
                    .min(b.rs);
                if inside && lo < hi {
                    put(
                        grp,
                        iy - g.pad_t,
                        lo * g.stride + ph - g.pad_l,
                        &mut row[lo..hi],
                    );
                }
            }
        }
    }
}

/// What an `f32` register-tile kernel sees: 4 output channels of one output row.
#[derive(Debug)]
pub(super) struct F32Block<'t> {
    /// The band tile (one group per input channel).
    pub tile: &'t [f32],
    /// Packed weights `[ci][tap][4 channels]` (missing channels zero).
    pub wp: &'t [f32],
    /// Tile offset of the output row (`ry · stride² · rs`).
    pub base: usize,
    /// Tile elements per input channel.
    pub gstride: usize,
    /// Tap offsets, `k²` of them.
    pub toff: &'t [usize],
    /// Input channels.
    pub cin: usize,
    /// Output row length.
    pub ow: usize,
}

/// A tier's `f32` kernel: writes `acc[c][..ow]` (and may write up to `ow` rounded up to 16).
///
/// # Safety
/// Needs its CPU features, and a block built by [`conv2d_f32`]: for every input channel `ci < cin`, tap `t` and
/// pixel `px < ow` rounded up to 16, `base + ci · gstride + toff[t] + px < tile.len()`, and `wp` holds
/// `cin · toff.len() · 4` elements.
pub(super) type F32BlockFn = unsafe fn(&F32Block<'_>, &mut [[f32; ACC]; 4]);

/// Calls `f(r, w[start + r])` for `r < len`: an `f32` row read directly, an `f16` row converted by `cvt` 64 values
/// at a time, anything else (int8, or a row out of range) through [`Weights::get`].
fn weight_row(
    w: Weights<'_>,
    start: usize,
    len: usize,
    cvt: F16ToF32Fn,
    mut f: impl FnMut(usize, f32),
) {
    if let Weights::F32(wf) = w {
        if let Some(row) = wf.get(start..start + len) {
            row.iter().enumerate().for_each(|(r, &v)| f(r, v));
            return;
        }
    }
    if let Weights::F16(h) = w {
        if let Some(row) = h.get(start..start + len) {
            let mut buf = [0f32; 64];
            for (c, hs) in row.chunks(64).enumerate() {
                cvt(hs, &mut buf);
                for (i, &v) in buf.iter().take(hs.len()).enumerate() {
                    f(c * 64 + i, v);
                }
            }
            return;
        }
    }
    for r in 0..len {
        f(r, w.get(start + r));
    }
}

/// `f32` convolution through `blk` (`f16` weights converted by `cvt`), or [`generic::conv2d`] outside the fast
/// path.
///
/// # Safety
/// `blk` must be callable on this CPU.
pub(super) unsafe fn conv2d_f32(
    g: &Conv2dGeom,
    input: &[f32],
    w: Weights<'_>,
    bias: Option<Weights<'_>>,
    out: &mut [f32],
    blk: F32BlockFn,
    cvt: F16ToF32Fn,
) {
    // A pointwise layer runs as rows of several output rows joined (one GEMM over the plane, fewer row set-ups).
    let joined = g.pointwise_joined(MAX_OW);
    let g = &joined.unwrap_or(*g);
    let kk = g.k * g.k;
    let per_block = g.cin * kk * 4;
    // A short (invalid) input goes to the generic kernel, which defines what it gives.
    let ok = per_block > 0 && per_block <= WBUF && input.len() >= g.cin * g.h * g.w;
    let bd = band(g, g.cin).filter(|_| ok);
    let Some(bd) = bd else {
        return generic::conv2d(g, input, w, bias, out);
    };
    let blocks = g.cout.div_ceil(4);
    let chunk = (WBUF / per_block).clamp(1, blocks.max(1));
    let plane = g.oh * g.ow;
    let plane_in = g.h * g.w;
    let toff = tap_offsets(g, bd.rs);
    let mut tile = [0f32; TILE];
    let mut wp = [0f32; WBUF];
    let mut acc = [[0f32; ACC]; 4];
    for b0 in (0..blocks).step_by(chunk) {
        let b1 = (b0 + chunk).min(blocks);
        // Packed weights [block][ci][tap][4], converted to f32 once per chunk (missing channels zero). Channel
        // `co`'s weights are one contiguous row of `cin·k²`, whose element r = ci·k² + t goes to r·4 + j.
        for (bw, b) in wp.chunks_exact_mut(per_block).zip(b0..b1) {
            for j in 0..4 {
                let co = 4 * b + j;
                if co < g.cout {
                    weight_row(w, co * g.cin * kk, g.cin * kk, cvt, |r, v| {
                        if let Some(d) = bw.get_mut(r * 4 + j) {
                            *d = v;
                        }
                    });
                } else {
                    bw.iter_mut().skip(j).step_by(4).for_each(|d| *d = 0.0);
                }
            }
        }
        for oy0 in (0..g.oh).step_by(bd.rows) {
            fill_band(g, &bd, g.cin, oy0, &mut tile, |ci, iy, ix0, cols| {
                let start = ci * plane_in + iy * g.w + ix0;
                let end = (ci * plane_in + (iy + 1) * g.w).min(input.len());
                let src = input.get(start..end).unwrap_or(&[]);
                if g.stride == 1 {
                    for (t, &v) in cols.iter_mut().zip(src) {
                        *t = v;
                    }
                } else {
                    for (t, &v) in cols.iter_mut().zip(src.iter().step_by(g.stride)) {
                        *t = v;
                    }
                }
            });
            let oy1 = (oy0 + bd.rows).min(g.oh);
            for b in b0..b1 {
                let bias4: [f32; 4] =
                    core::array::from_fn(|j| bias.map_or(0.0, |bw| bw.get(4 * b + j)));
                for oy in oy0..oy1 {
                    let args = F32Block {
                        tile: &tile,
                        wp: &wp[(b - b0) * per_block..(b - b0 + 1) * per_block],
                        base: (oy - oy0) * g.stride * g.stride * bd.rs,
                        gstride: bd.gstride,
                        toff: &toff[..kk],
                        cin: g.cin,
                        ow: g.ow,
                    };
                    // SAFETY: the caller guarantees `blk`'s CPU features. Bounds: the band holds `cin` groups of
                    // `gstride = nrows · stride · rs` elements (`band` checked they fit `TILE`); the largest offset
                    // read in a group is ((ry·stride + ky)·stride + ph)·rs + kx/stride + px + 15 with ry < rows,
                    // ky < k, ph < stride, px + 15 < ow + 16, and (k−1)/stride + ow + 16 <= rs, which is below
                    // ((rows−1)·stride + k)·stride·rs = gstride. `wp` holds cin·k²·4 elements (one block).
                    unsafe { blk(&args, &mut acc) };
                    for (j, (a, &bv)) in acc.iter().zip(&bias4).enumerate() {
                        let co = 4 * b + j;
                        if co >= g.cout {
                            break;
                        }
                        let base = co * plane + oy * g.ow;
                        if let Some(dst) = out.get_mut(base..base + g.ow) {
                            for (d, &t) in dst.iter_mut().zip(&a[..g.ow]) {
                                *d = t + bv;
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Zeros standing in for a missing channel of a quad (longer than any tile row times the stride, and than `k²`).
static ZEROS: [i8; 2048] = [0; 2048];

/// `dst[i]` = bytes `src[0][i·stride]`, …, `src[3][i·stride]` (little-endian: channel `4q + b` in byte `b`); stops
/// at the shortest source.
#[inline(always)]
fn pack4(dst: &mut [u32], src: [&[i8]; 4], stride: usize) {
    let word =
        |a: i8, b: i8, c: i8, d: i8| u32::from_le_bytes([a as u8, b as u8, c as u8, d as u8]);
    if stride == 1 {
        for ((((t, &a), &b), &c), &d) in dst
            .iter_mut()
            .zip(src[0])
            .zip(src[1])
            .zip(src[2])
            .zip(src[3])
        {
            *t = word(a, b, c, d);
        }
    } else {
        let s = |i: usize| src[i].iter().step_by(stride);
        for ((((t, &a), &b), &c), &d) in dst.iter_mut().zip(s(0)).zip(s(1)).zip(s(2)).zip(s(3)) {
            *t = word(a, b, c, d);
        }
    }
}

/// What an int8 register-tile kernel sees: 4 output channels of one output row, the quads of both input branches.
#[derive(Debug)]
pub(super) struct I8Block<'t> {
    /// The band tile (one group per quad of input channels, 4 `i8` per `u32`).
    pub tile: &'t [u32],
    /// Packed weights `[quad][tap][4 channels]`, each `u32` the 4 `i8` weights of one output channel and quad.
    pub wp: &'t [u32],
    /// Tile offset of the output row (`ry · stride² · rs`).
    pub base: usize,
    /// Tile elements per quad.
    pub gstride: usize,
    /// Tap offsets, `k²` of them.
    pub toff: &'t [usize],
    /// Quads of branch A (input channels below the split).
    pub qa: usize,
    /// All quads.
    pub quads: usize,
    /// Output row length.
    pub ow: usize,
}

/// A tier's int8 kernel: the exact integer sums of branch A (quads `0..qa`) into `acc_a[c][..ow]` and of branch B
/// (quads `qa..quads`) into `acc_b[c][..ow]` (both may be written up to `ow` rounded up to 16), wrapping in `i32`
/// like [`quant::conv2d_i8`].
///
/// # Safety
/// Needs its CPU features, and a block built by [`conv2d_i8`]: for every quad `q < quads`, tap `t` and pixel
/// `px < ow` rounded up to 16, `base + q · gstride + toff[t] + px < tile.len()`; `wp` holds `quads · toff.len() · 4`
/// elements; `qa` and `quads` are multiples of the `qalign` the tier asked for.
pub(super) type I8BlockFn = unsafe fn(&I8Block<'_>, &mut [[i32; ACC]; 4], &mut [[i32; ACC]; 4]);

/// int8 convolution through `blk`, bit-identical to [`quant::conv2d_i8`] (same integer sums, same epilogue), or
/// [`quant::conv2d_i8`] itself outside the fast path. Quads of each branch are padded with zero channels to a
/// multiple of `qalign`; with `no_min_weight` the layer also falls back when a weight is −128 (a kernel that adds
/// two `i8` products in `i16` needs `|w| <= 127`; `quantize_weights_per_channel` never makes −128).
///
/// # Safety
/// `blk` must be callable on this CPU; `qalign >= 1`.
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn conv2d_i8(
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
    pre: Option<&[u8]>,
    qalign: usize,
    no_min_weight: bool,
    blk: I8BlockFn,
) {
    // A pointwise layer runs as rows of several output rows joined (one GEMM over the plane, fewer row set-ups).
    let joined = g.pointwise_joined(MAX_OW);
    let g = &joined.unwrap_or(*g);
    let kk = g.k * g.k;
    let split = in_q.split.min(g.cin);
    // Weights packed offline ([`pack::neon4_pack`]): used in place when they have the layer's exact length and
    // 4-byte alignment (blobs are loaded aligned and sections are 64-byte aligned); their quads are padded to
    // `NEON4_QALIGN`, a multiple of every tier's `qalign`, so the kernel runs with that padding.
    let pre_words: Option<&[u32]> = pre
        .filter(|p| p.len() == pack::neon4_len(g, split) && cfg!(target_endian = "little"))
        .and_then(|p| {
            // SAFETY: every bit pattern is a valid `u32`; `align_to` returns only correctly aligned middle parts.
            let (head, words, tail) = unsafe { p.align_to::<u32>() };
            (head.is_empty() && tail.is_empty()).then_some(words)
        });
    let qalign = if pre_words.is_some() {
        pack::NEON4_QALIGN
    } else {
        qalign.max(1)
    };
    let (qa, quads) = pack::neon4_quads(g.cin, split, qalign);
    let per_block = quads * kk * 4;
    let nw = g.cout * g.cin * kk;
    // Short (invalid) inputs or weights go to the generic kernel, so the fast path reads only whole slices.
    let ok = acc.len() >= quant::conv2d_i8_scratch_len(g)
        && per_block > 0
        && per_block <= WBUF
        && w.len() >= nw
        && input.len() >= g.cin * g.h * g.w
        && !(no_min_weight && w[..nw].iter().fold(0i8, |m, &v| m.min(v)) == i8::MIN);
    let Some(bd) = band(g, quads).filter(|_| ok) else {
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
    let blocks = g.cout.div_ceil(4);
    let chunk = match pre_words {
        Some(_) => blocks.max(1),
        None => (WBUF / per_block).clamp(1, blocks.max(1)),
    };
    let plane = g.oh * g.ow;
    let plane_in = g.h * g.w;
    let toff = tap_offsets(g, bd.rs);
    let (so, mut out) = match out {
        QOut::I8 { data, scale } => (scale, Ok(data)),
        QOut::F32(data) => (0.0, Err(data)),
    };
    let mut tile = [0u32; TILE];
    let mut wbuf = [0u32; WBUF];
    let mut ra = [[0i32; ACC]; 4];
    let mut rb = [[0i32; ACC]; 4];
    for b0 in (0..blocks).step_by(chunk) {
        let b1 = (b0 + chunk).min(blocks);
        // Packed weights [block][quad][tap][4 channels], input channel 4q + i of the quad in byte i: offline, or
        // packed here once per chunk of blocks.
        let wp: &[u32] = match pre_words {
            Some(pw) => pw.get(b0 * per_block..b1 * per_block).unwrap_or(&[]),
            None => {
                for (bw, b) in wbuf.chunks_exact_mut(per_block).zip(b0..b1) {
                    pack::neon4_pack_block(g, split, qalign, w, 4 * b, bw);
                }
                &wbuf
            }
        };
        for oy0 in (0..g.oh).step_by(bd.rows) {
            fill_band(g, &bd, quads, oy0, &mut tile, |q, iy, ix0, cols| {
                let src: [&[i8]; 4] = core::array::from_fn(|byte| {
                    pack::neon4_channel(q, byte, qa, split, g.cin)
                        .and_then(|c| {
                            input
                                .get(c * plane_in + iy * g.w + ix0..(c * plane_in + (iy + 1) * g.w))
                        })
                        .unwrap_or(&ZEROS)
                });
                pack4(cols, src, g.stride);
            });
            let oy1 = (oy0 + bd.rows).min(g.oh);
            for b in b0..b1 {
                // The 4 channels' epilogues, resolved once per band.
                let nco = (g.cout - 4 * b).min(4);
                let chans: [_; 4] = core::array::from_fn(|j| e.channel(4 * b + j.min(nco - 1), so));
                for oy in oy0..oy1 {
                    let args = I8Block {
                        tile: &tile,
                        wp: &wp[(b - b0) * per_block..(b - b0 + 1) * per_block],
                        base: (oy - oy0) * g.stride * g.stride * bd.rs,
                        gstride: bd.gstride,
                        toff: &toff[..kk],
                        qa,
                        quads,
                        ow: g.ow,
                    };
                    // SAFETY: the caller guarantees `blk`'s CPU features; bounds exactly as in `conv2d_f32` with
                    // quads for channels (`band` was computed for `quads` groups); `wp` holds one block of
                    // quads·k²·4 words; `qa` and `quads` are multiples of `qalign` by construction.
                    unsafe { blk(&args, &mut ra, &mut rb) };
                    for (j, ch) in chans.iter().enumerate().take(nco) {
                        let base = (4 * b + j) * plane + oy * g.ow;
                        let (a, bb) = (&ra[j][..g.ow], &rb[j][..g.ow]);
                        match &mut out {
                            Ok(d) => {
                                if let Some(dst) = d.get_mut(base..base + g.ow) {
                                    // (No second part: its sums are 0 and its term too.)
                                    store_i8_row(ch, oy * g.ow, a, bb, qa < quads, dst);
                                }
                            }
                            Err(d) => {
                                if let Some(dst) = d.get_mut(base..base + g.ow) {
                                    ch.store_f32(oy * g.ow, a, bb, dst);
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// [`quant::ChannelEpilogue::store_i8`] for one output row with NEON, 4 pixels per step and bit-identical: the
/// scalar code's `i64` arithmetic lane by lane. `a + bias` is saturated to `i32` by `sqxtn` (the clamp of
/// `Requant::apply`), multiplied by `smull`, the rounding constant added and the sum shifted by `sshl` with `−s` (an
/// arithmetic shift right, i.e. the floor division); with every shift at least 2 each term is below `2^61` in
/// magnitude, so the scalar code's saturating `i64` adds never saturate and plain adds agree; saturating narrows
/// (`i64 → i32 → i16 → i8`) are the final clamp. `use_b` false: the second input part has no channels (its sums
/// and term are 0). Rows with a smaller shift, a residual plane ending inside the row, and the last `len % 4`
/// pixels take the scalar code. (The scalar epilogue was about 34 instructions per output pixel, a third of the
/// packed `dotprod` convolution at 64 → 64, 16×16.)
pub(super) fn store_i8_row(
    ch: &quant::ChannelEpilogue<'_>,
    p0: usize,
    a: &[i32],
    b: &[i32],
    use_b: bool,
    out: &mut [i8],
) {
    use core::arch::aarch64::*;
    let p = ch.parts();
    let n = out.len().min(a.len()).min(b.len());
    let r = p.rplane.get(p0..).unwrap_or(&[]);
    let has_r = !r.is_empty();
    let ok = p.ma.shift >= 2
        && (!use_b || p.mb.shift >= 2)
        && (!has_r || (p.mr.shift >= 2 && r.len() >= n));
    let vn = if ok { n / 4 * 4 } else { 0 };
    if vn > 0 {
        // (A shift above 62 acts as 62, as in `Requant::apply`.)
        let consts = |q: quant::Requant| {
            let s = q.shift.min(62);
            (q.mult, 1i64 << (s - 1), -(s as i64))
        };
        let (ma, ra, sa) = consts(p.ma);
        let (mb, rb, sb) = consts(p.mb);
        let (mr, rr, sr) = consts(p.mr);
        // SAFETY: NEON is part of the aarch64 baseline. Every load and store covers pixels `i..i + 4` with
        // `i + 4 ≤ vn ≤ n`, which is at most the length of `a`, `b`, `out` and (with a residual) `r`.
        unsafe {
            let bias = vdupq_n_s64(p.bias_q);
            let term = |x: int32x4_t, m: i32, rnd: i64, s: i64| {
                let (m, rnd, s) = (vdupq_n_s32(m), vdupq_n_s64(rnd), vdupq_n_s64(s));
                let lo = vshlq_s64(
                    vaddq_s64(vmull_s32(vget_low_s32(x), vget_low_s32(m)), rnd),
                    s,
                );
                let hi = vshlq_s64(vaddq_s64(vmull_high_s32(x, m), rnd), s);
                (lo, hi)
            };
            let mut i = 0;
            while i < vn {
                let av = vld1q_s32(a.as_ptr().add(i));
                let x = vqmovn_high_s64(
                    vqmovn_s64(vaddw_s32(bias, vget_low_s32(av))),
                    vaddw_high_s32(bias, av),
                );
                let (mut lo, mut hi) = term(x, ma, ra, sa);
                if use_b {
                    let (l, h) = term(vld1q_s32(b.as_ptr().add(i)), mb, rb, sb);
                    lo = vaddq_s64(lo, l);
                    hi = vaddq_s64(hi, h);
                }
                if has_r {
                    let w = (r.as_ptr().add(i) as *const u32).read_unaligned();
                    let rv = vmovl_s16(vget_low_s16(vmovl_s8(vreinterpret_s8_u32(vdup_n_u32(w)))));
                    let (l, h) = term(rv, mr, rr, sr);
                    lo = vaddq_s64(lo, l);
                    hi = vaddq_s64(hi, h);
                }
                let y32 = vqmovn_high_s64(vqmovn_s64(lo), hi);
                let y16 = vqmovn_s32(y32);
                let y8 = vqmovn_s16(vcombine_s16(y16, y16));
                let word = vget_lane_u32::<0>(vreinterpret_u32_s8(y8));
                (out.as_mut_ptr().add(i) as *mut u32).write_unaligned(word);
                i += 4;
            }
        }
    }
    if vn < n {
        let (Some(a), Some(b), Some(o)) = (a.get(vn..n), b.get(vn..n), out.get_mut(vn..n)) else {
            return;
        };
        ch.store_i8(p0 + vn, a, b, o);
    }
}
