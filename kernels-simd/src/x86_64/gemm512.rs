//! AVX-512 f32 convolution as an implicit GEMM on the banded layout of [`super::bands`] (shared with the VNNI int8
//! kernel), with one `f32` per word: the AVX-512 tier's float path on **canonical** weights (a blob without the
//! `x86_64-avx512-f32` packs), and its pointwise path on packed ones. A band of output rows is laid out on the stack
//! per input channel (zero-padded; split into 4 phase planes for stride 2), so every output position reads its taps
//! at fixed offsets from its flat index `oy · Wph + ox`; the register tile is 48 (or 32) consecutive positions × 8
//! output channels (broadcast weights). Sums are reordered and fused against generic, so results agree within the
//! f32 tolerance of the tier tests, not bitwise; every output's sum is the same FMA chain (input channel, then tap)
//! as in the channels-in-lanes kernel (`direct512.rs`), so a packed and an unpacked blob give the same bits.
//! Weights are packed here per 8-channel block ([`crate::pack::fma8_pack_block`]). Small outputs (4×4, 8×8: at most
//! 64 positions, a multiple of 16) and pointwise layers take an explicit, tile-major im2col instead
//! ([`conv_cols`]), whose 16-position tiles waste no lanes; that path also reads the offline
//! [`crate::pack::fma16_pack`] layout ([`conv2d_cols16`]).

use core::arch::x86_64::*;

use core::mem::MaybeUninit;

use super::bands::{Bands, PX};
use super::zeroed_prefix;
use crate::{Conv2dGeom, Weights};

/// Output channels per register tile.
const CO: usize = 8;
/// Input tile budget in floats (512 KiB of stack: host tiers only; 256 channels of a 16×16 layer in one band).
const TILE_W: usize = 128 * 1024;
/// Flat positions per band.
const FMAX: usize = 2048;
/// Packed weights of one channel block: `cin · taps · CO` floats at most (256 KiB: 512 input channels at 3×3).
const WP_W: usize = 64 * 1024;

/// The band layout with input channels as its units, or `None` outside this kernel's range.
fn layout(g: &Conv2dGeom) -> Option<Bands> {
    if g.cin * g.k * g.k * CO > WP_W {
        return None;
    }
    let l = Bands::fit(g, g.cin, TILE_W, FMAX)?;
    // Each band repacks every weight (a few ns each, against ~0.02 ns per MAC): several bands only pay off when a
    // band still has many output positions per weight.
    let bands = g.oh.div_ceil(l.rows);
    (bands == 1 || l.rows * g.ow >= 128).then_some(l)
}

/// Output positions per register tile of the small-output path (one `zmm`).
const SP: usize = 16;
/// Largest output plane (`oh · ow`) the small-output path takes (above 64 only for 128+ output channels).
const SMALL_MAX: usize = 256;
/// Whether the column path ([`conv_cols`]) takes this 3×3-style layer: output planes of 16, 32, 48 or 64
/// positions (4×4, 8×8 ...), and up to 256 (16×16) with at least 128 output channels. There the band layout
/// computes its padding columns (a 4×4 output with a 3×3 kernel fills 22 of 32 lanes with 16 useful positions;
/// 16×16 computes 18 columns per row), and an explicit im2col uses every lane. The im2col copies each input value
/// k² times, which pays for itself over many output channels (measured: cifar's 256-channel 16×16 layers gain 5 %,
/// the student's 64-channel ones lose 8 %).
fn small(g: &Conv2dGeom) -> bool {
    let (kk, p) = (g.k * g.k, g.oh * g.ow);
    p > 0
        && p.is_multiple_of(SP)
        && (p <= 64 || (p <= SMALL_MAX && g.cout >= 128))
        && (1..=super::bands::KMAX).contains(&g.k)
        && (1..=2).contains(&g.stride)
        && g.cin > 0
        && kk * p <= TILE_W
        && g.cin * kk * CO <= WP_W
}

/// Whether [`conv2d`] takes this layer with these slice lengths.
pub(super) fn fits(g: &Conv2dGeom, input: usize, w: usize, out: usize) -> bool {
    (layout(g).is_some() || small(g) || pointwise(g))
        && input >= g.cin * g.h * g.w
        && w >= g.cout * g.cin * g.k * g.k
        && out >= g.cout * g.oh * g.ow
}

/// f32 convolution for layers that pass [`fits`] (others are left untouched).
///
/// # Safety
/// The CPU must have AVX-512 F.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn conv2d(
    g: &Conv2dGeom,
    input: &[f32],
    w: Weights<'_>,
    bias: Option<Weights<'_>>,
    out: &mut [f32],
) {
    conv(g, input, w, bias, out)
}

/// The column path ([`pointwise`] and [`small`] layers) on weights packed offline in the
/// [`crate::pack::fma16_pack`] layout; false (nothing written) for other layers or lengths.
///
/// # Safety
/// The CPU must have AVX-512 F.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn conv2d_cols16(
    g: &Conv2dGeom,
    input: &[f32],
    w: Weights<'_>,
    packed: &[u8],
    bias: Option<Weights<'_>>,
    out: &mut [f32],
) -> bool {
    let ok = (pointwise(g) || small(g))
        && g.cout.is_multiple_of(crate::pack::FMA16_CO)
        && packed.len() == crate::pack::fma16_len(g)
        && fits(g, input.len(), w.len(), out.len());
    if ok {
        conv_cols(g, input, w, Some(packed), bias, out);
    }
    ok
}

#[target_feature(enable = "avx512f")]
unsafe fn conv(
    g: &Conv2dGeom,
    input: &[f32],
    w: Weights<'_>,
    bias: Option<Weights<'_>>,
    out: &mut [f32],
) {
    if !fits(g, input.len(), w.len(), out.len()) {
        return;
    }
    if pointwise(g) || small(g) {
        return conv_cols(g, input, w, None, bias, out);
    }
    if let Some(l) = layout(g) {
        conv_bands(g, &l, input, w, bias, out);
    }
}

/// The band path of [`conv`]. Each path is its own never-inlined function so that only one path's stack scratch
/// (at most about 1 MiB) is live at a time, well inside a 2 MiB thread stack.
///
/// # Safety
/// AVX-512 F; the layer passed [`fits`] and `l` is its [`layout`].
#[inline(never)]
#[target_feature(enable = "avx512f")]
unsafe fn conv_bands(
    g: &Conv2dGeom,
    l: &Bands,
    input: &[f32],
    w: Weights<'_>,
    bias: Option<Weights<'_>>,
    out: &mut [f32],
) {
    let l = *l;
    let kk = g.k * g.k;
    let plane = g.oh * g.ow;
    let off = l.offsets();
    let off = &off[..kk];
    let cs = l.stride();
    let mut tile_m = MaybeUninit::<[f32; TILE_W]>::uninit();
    let tile = zeroed_prefix(&mut tile_m, g.cin * cs);
    let bl = crate::pack::fma8_block_len(g);
    let mut wp_m = MaybeUninit::<[u8; WP_W * 4]>::uninit();
    let wp = zeroed_prefix(&mut wp_m, bl);
    let mut buf = [[0f32; FMAX]; CO];
    let mut oy0 = 0;
    while oy0 < g.oh {
        let r = l.rows.min(g.oh - oy0);
        let fpad = l.fpad(r, g.ow);
        fill_tile(g, &l, input, oy0, tile);
        for co0 in (0..g.cout).step_by(CO) {
            // Weights packed per block, [ci][tap][CO]; channels past cout are zero.
            if !crate::pack::fma8_pack_block_with(g, w, co0, wp, super::avx2::f16_to_f32) {
                return;
            }
            let blk = &*wp;
            // SAFETY: AVX-512 F per this function's contract; `tile` holds cin · cs laid-out values, every tap
            // offset plus a position below `fpad` stays below `cs`; `fpad <= FMAX`; `blk` holds cin · kk · CO values.
            gemm(tile, cs, g.cin, off, blk, fpad, &mut buf);
            for (c, bc) in buf.iter().enumerate().take(CO.min(g.cout - co0)) {
                let co = co0 + c;
                let b = bias.map_or(0.0, |b| b.get(co));
                for dy in 0..r {
                    let f = dy * l.wph;
                    let base = co * plane + (oy0 + dy) * g.ow;
                    if let (Some(dst), Some(src)) =
                        (out.get_mut(base..base + g.ow), bc.get(f..f + g.ow))
                    {
                        for (o, &a) in dst.iter_mut().zip(src) {
                            *o = a + b;
                        }
                    }
                }
            }
        }
        oy0 += r;
    }
}

/// The column paths ([`small`] and [`pointwise`] layers): input channels in chunks as large as the column buffer
/// holds (rows `ci · k² + tap`, whole channels; all of them for 4×4 and 8×8 outputs, so each weight block is read
/// as one long sequential stream, which matters when a whole U-Net's weights come from DRAM), each laid out
/// **tile-major**, `col[tile][row][16]` for 16-position tiles
/// (zero where a tap falls in the padding; a 1×1 layer's input copied, not expanded), so a tile's column is one
/// contiguous run. (Row-major `[row][position]` put rows 256 or 1 024 floats apart, a stride that maps a column
/// onto 4 or 1 of L1's 64 sets: the column could never stay in L1.) Per pair of 8-channel blocks and tile, 16
/// accumulators run over the chunk's rows and are parked in `out` between chunks (a spill and reload: the same sums
/// as one pass, so the chunking does not change the bits); the bias is added at the end.
///
/// # Safety
/// AVX-512 F; the layer passed [`fits`] and is [`small`] or [`pointwise`].
#[inline(never)]
#[target_feature(enable = "avx512f")]
unsafe fn conv_cols(
    g: &Conv2dGeom,
    input: &[f32],
    w: Weights<'_>,
    pre: Option<&[u8]>,
    bias: Option<Weights<'_>>,
    out: &mut [f32],
) {
    let (kk, p) = (g.k * g.k, g.oh * g.ow);
    let plane_in = g.h * g.w;
    // Whole channels per chunk, and no more rows than the column buffer holds.
    let cc = (TILE_W / (kk * p)).clamp(1, g.cin);
    let pw = pointwise(g);
    let mut col_m = MaybeUninit::<[f32; TILE_W]>::uninit();
    // A pointwise layer's columns are written in full before they are read (below); others are zero-padded.
    let col: &mut [f32] = if pw {
        if cc * p > TILE_W || input.len() < g.cin * p {
            return;
        }
        // SAFETY: `col_m` holds TILE_W >= cc · p floats; the slice is only written by `pointwise_cols` (which
        // writes every float of each chunk's rows · p prefix) before `blocks` reads that prefix. f32 has no
        // invalid bit patterns, so the uninitialized tail is never turned into a value either.
        unsafe { core::slice::from_raw_parts_mut(col_m.as_mut_ptr() as *mut f32, cc * p) }
    } else {
        zeroed_prefix(&mut col_m, cc * kk * p)
    };
    let bl = crate::pack::fma8_block_len(g);
    let mut wp_m = MaybeUninit::<[u8; WP_W * 4]>::uninit();
    let wp = zeroed_prefix(&mut wp_m, if pre.is_some() { 0 } else { bl });
    let Some(acc) = out.get_mut(..g.cout * p) else {
        return;
    };
    if col.len() < cc * kk * p || kk * p > TILE_W {
        return;
    }
    for ci0 in (0..g.cin).step_by(cc) {
        let ci1 = (ci0 + cc).min(g.cin);
        let rows = (ci1 - ci0) * kk;
        let col = &mut col[..rows * p];
        if pw {
            // Pointwise: row r of tile qt is input[ci0 + r][16 qt ..], one `zmm` per (row, tile).
            let (src, dst) = (input.as_ptr().add(ci0 * p), col.as_mut_ptr());
            for r in 0..rows {
                for qt in 0..p / SP {
                    // SAFETY: (ci0 + r) · p + 16 qt + 16 <= cin · p <= input.len() (checked above); the column
                    // index (qt · rows + r) · 16 + 16 <= rows · p <= col.len().
                    let v = _mm512_loadu_ps(src.add(r * p + qt * SP));
                    _mm512_storeu_ps(dst.add((qt * rows + r) * SP), v);
                }
            }
        } else {
            col.fill(0.0);
            for ci in ci0..ci1 {
                let src = input.get(ci * plane_in..(ci + 1) * plane_in).unwrap_or(&[]);
                for t in 0..kk {
                    let (ky, kx) = (t / g.k, t % g.k);
                    let r = (ci - ci0) * kk + t;
                    for oy in 0..g.oh {
                        let iy = (oy * g.stride + ky).wrapping_sub(g.pad_t);
                        let Some(row) = src.get(iy * g.w..(iy + 1) * g.w).filter(|_| iy < g.h)
                        else {
                            continue;
                        };
                        for ox in 0..g.ow {
                            let ix = (ox * g.stride + kx).wrapping_sub(g.pad_l);
                            if let (Some(&v), true) = (row.get(ix), ix < g.w) {
                                let q = oy * g.ow + ox;
                                if let Some(d) = col.get_mut((q / SP * rows + r) * SP + q % SP) {
                                    *d = v;
                                }
                            }
                        }
                    }
                }
            }
        }
        // The last chunk's stores add the bias.
        let last = (ci1 == g.cin).then_some(bias);
        // SAFETY: AVX-512 F (caller); `col` holds p / 16 tiles of `rows` rows of 16 floats, `acc` cout · p floats.
        if !blocks(g, w, pre, wp, col, rows, p, ci0 * kk, acc, ci0 == 0, last) {
            return;
        }
    }
}

/// The 16 bias values of channels `co0 ..` (0 past `cout` or without a bias).
fn bias16(bias: Option<Weights<'_>>, co0: usize, cout: usize) -> [f32; 16] {
    core::array::from_fn(|c| match bias {
        Some(b) if co0 + c < cout => b.get(co0 + c),
        _ => 0.0,
    })
}

/// Whether the column path beats the channels-in-lanes kernel (`direct512.rs`) on this layer with packed weights:
/// pointwise layers, whose input already is the column matrix (measured in the cifar U-Net: its 1×1 layers at
/// 16×16 take 8.8 ms this way, 10.7 ms in the channels-in-lanes kernel; at 4×4 and 8×8 3×3 layers the latter wins).
pub(super) fn cols_first(g: &Conv2dGeom) -> bool {
    pointwise(g)
}

/// Whether [`conv_cols`] takes this layer as a pointwise one.
fn pointwise(g: &Conv2dGeom) -> bool {
    g.k == 1
        && g.stride == 1
        && g.pad_t == 0
        && g.pad_l == 0
        && (g.oh, g.ow) == (g.h, g.w)
        && g.h * g.w > 0
        && (g.h * g.w).is_multiple_of(SP)
        && g.cin > 0
        && g.cin * CO <= WP_W
        && g.h * g.w <= TILE_W
}

/// `acc[co][q] (+)= Σ_r w[co][r0 + r] · col[r][q]` for every output channel and position, `r` over the `rows`
/// rows of the tile-major `col` (`[q / 16][r][q % 16]`), weight rows `r0 ..` (`ci · k² + tap`) read from the
/// offline [`crate::pack::fma16_pack`] layout `pre` (each 16-channel block as two 8-channel halves) or packed per
/// 8-channel block into `wp`, in register tiles of 8 channels × 48 positions ([`gemm8xn`]); `first` starts from
/// zero, otherwise from `acc`; `last` (the final chunk) carries the bias. False if a block cannot be packed or a
/// length is short.
///
/// # Safety
/// AVX-512 F; `col` holds `rows · p` floats, `p` is a multiple of 16, `acc` holds `cout · p` floats; `pre`, if
/// any, is a whole layer in the fma16 layout (and then `cout` is a multiple of 16).
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f")]
unsafe fn blocks(
    g: &Conv2dGeom,
    w: Weights<'_>,
    pre: Option<&[u8]>,
    wp: &mut [u8],
    col: &[f32],
    rows: usize,
    p: usize,
    r0: usize,
    acc: &mut [f32],
    first: bool,
    last: Option<Option<Weights<'_>>>,
) -> bool {
    let per = g.cin * g.k * g.k;
    if col.len() < rows * p || acc.len() < g.cout * p || r0 + rows > per {
        return false;
    }
    match pre {
        Some(pk) => {
            if pk.len() != crate::pack::fma16_len(g) || !g.cout.is_multiple_of(2 * CO) {
                return false;
            }
            for co0 in (0..g.cout).step_by(2 * CO) {
                // Block co0 / 16: row r is 16 consecutive floats.
                let w0 = (pk.as_ptr() as *const f32).add((co0 / (2 * CO) * per + r0) * 2 * CO);
                // The next block's rows (one 64-byte line each), fetched a share per tile: in a whole U-Net the
                // weights come from DRAM, and the block's first tile would otherwise wait on every line.
                let share = rows.div_ceil(p / SP);
                let next = w0.wrapping_add(per * 2 * CO) as *const i8;
                let b = last.map(|b| bias16(b, co0, g.cout));
                let tiles = p / SP;
                let mut t0 = 0;
                while t0 < tiles {
                    let nt = (tiles - t0).min(3);
                    if co0 + 2 * CO < g.cout {
                        for l in t0 * share..((t0 + nt) * share).min(rows) {
                            _mm_prefetch::<_MM_HINT_T0>(next.wrapping_add(l * 64));
                        }
                    }
                    for h in 0..2 {
                        let bh = b.as_ref().map(|b| &b[h * CO..h * CO + CO]);
                        let (wh, ch) = (w0.add(h * CO), co0 + h * CO);
                        // SAFETY: tiles t0 .. t0 + nt <= p / 16 hold `rows` rows; block co0 / 16 (per · 16 floats)
                        // holds rows r0 .. r0 + rows <= per, read at channels h · 8 .. + 8; ch + 8 <= cout.
                        match nt {
                            3 => gemm8xn::<3>(col, rows, p, t0, wh, 2 * CO, acc, ch, CO, first, bh),
                            2 => gemm8xn::<2>(col, rows, p, t0, wh, 2 * CO, acc, ch, CO, first, bh),
                            _ => gemm8xn::<1>(col, rows, p, t0, wh, 2 * CO, acc, ch, CO, first, bh),
                        }
                    }
                    t0 += nt;
                }
            }
        }
        None => {
            for co0 in (0..g.cout).step_by(CO) {
                if !crate::pack::fma8_pack_block_with(g, w, co0, wp, super::avx2::f16_to_f32) {
                    return false;
                }
                let Some(blk) = wp.get(r0 * CO * 4..(r0 + rows) * CO * 4) else {
                    return false;
                };
                let nco = CO.min(g.cout - co0);
                let b = last.map(|b| bias16(b, co0, g.cout));
                let bh = b.as_ref().map(|b| &b[..CO]);
                let wb = blk.as_ptr() as *const f32;
                let tiles = p / SP;
                let mut t0 = 0;
                while t0 < tiles {
                    let nt = (tiles - t0).min(3);
                    // SAFETY: tiles t0 .. t0 + nt <= p / 16 hold `rows` rows; the block slice holds `rows · CO`
                    // floats (read unaligned); co0 + nco <= cout.
                    match nt {
                        3 => gemm8xn::<3>(col, rows, p, t0, wb, CO, acc, co0, nco, first, bh),
                        2 => gemm8xn::<2>(col, rows, p, t0, wb, CO, acc, co0, nco, first, bh),
                        _ => gemm8xn::<1>(col, rows, p, t0, wb, CO, acc, co0, nco, first, bh),
                    }
                    t0 += nt;
                }
            }
        }
    }
    true
}

/// `acc[co0 + c][16 (t0 + j) ..][..16] (+)= Σ_r w[ws · r + c] · col[tile t0 + j][r]` for channels `c < nco <= 8`
/// and `N` tiles `j` of 16 positions: `8 N` FMA chains, `N` position loads and 8 weight broadcasts per `8 N` FMAs
/// (half the loads per FMA of a 16 × 16 tile: 14 % to 17 % faster on pointwise layers); weight rows are `ws` floats
/// apart (16 in the offline fma16 layout, 8 in a per-call fma8 block). `first`
/// starts from zero, otherwise from `acc`; `bias`, on the last pass, is added as the sums are stored.
///
/// # Safety
/// AVX-512 F; `col` holds `rows · p` floats tile-major with tiles `t0 .. t0 + N` among its `p / 16`; `w + ws · r + c`
/// readable for `r < rows`, `c < 8`; `acc` holds `(co0 + nco) · p` floats.
#[allow(clippy::too_many_arguments)]
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn gemm8xn<const N: usize>(
    col: &[f32],
    rows: usize,
    p: usize,
    t0: usize,
    w: *const f32,
    ws: usize,
    acc: &mut [f32],
    co0: usize,
    nco: usize,
    first: bool,
    bias: Option<&[f32]>,
) {
    let mut a = [[_mm512_setzero_ps(); N]; CO];
    let ap = acc.as_mut_ptr();
    if !first {
        for (c, ac) in a.iter_mut().enumerate().take(nco) {
            for (j, v) in ac.iter_mut().enumerate() {
                *v = _mm512_loadu_ps(ap.add((co0 + c) * p + (t0 + j) * SP));
            }
        }
    }
    let cp = col.as_ptr().add(t0 * rows * SP);
    for r in 0..rows {
        let mut x = [_mm512_setzero_ps(); N];
        for (j, xj) in x.iter_mut().enumerate() {
            *xj = _mm512_loadu_ps(cp.add((j * rows + r) * SP));
        }
        let wr = w.add(r * ws);
        for (c, ac) in a.iter_mut().enumerate() {
            let wv = _mm512_set1_ps(wr.add(c).read_unaligned());
            for (v, xj) in ac.iter_mut().zip(&x) {
                *v = _mm512_fmadd_ps(wv, *xj, *v);
            }
        }
    }
    for (c, ac) in a.iter().enumerate().take(nco) {
        let bv = bias.and_then(|b| b.get(c)).map(|&b| _mm512_set1_ps(b));
        for (j, v) in ac.iter().enumerate() {
            let v = bv.map_or(*v, |b| _mm512_add_ps(*v, b));
            _mm512_storeu_ps(ap.add((co0 + c) * p + (t0 + j) * SP), v);
        }
    }
}

/// Lay out output rows `oy0..` of the input: `tile[ci · cs + phase plane + row · wph + col]`, zero padding.
pub(super) fn fill_tile(g: &Conv2dGeom, l: &Bands, input: &[f32], oy0: usize, tile: &mut [f32]) {
    let cs = l.stride();
    let plane_in = g.h * g.w;
    if l.s == 1 {
        // One phase plane: row r of a channel's region is input row oy0 + r − pad_t at columns lo .. hi (as
        // `visit_rows` has them), zeros elsewhere; each float is written once, the padding only with zeros.
        let lo = g.pad_l.min(l.wph);
        let hi = (g.pad_l + g.w).min(l.wph).max(lo);
        for (ci, region) in tile.chunks_exact_mut(cs).take(g.cin).enumerate() {
            let src = input.get(ci * plane_in..(ci + 1) * plane_in).unwrap_or(&[]);
            let (rows, slack) = region.split_at_mut((l.rph() * l.wph).min(cs));
            for (r, d) in rows.chunks_exact_mut(l.wph).enumerate() {
                let iy = (oy0 + r).wrapping_sub(g.pad_t);
                match src.get(iy * g.w..iy * g.w + (hi - lo)).filter(|_| iy < g.h) {
                    Some(s) => {
                        d[..lo].fill(0.0);
                        d[lo..hi].copy_from_slice(s);
                        d[hi..].fill(0.0);
                    }
                    None => d.fill(0.0),
                }
            }
            slack.fill(0.0);
        }
        return;
    }
    tile.fill(0.0);
    for ci in 0..g.cin {
        let src = input.get(ci * plane_in..(ci + 1) * plane_in).unwrap_or(&[]);
        l.visit_rows(g, oy0, |base, iy, b, cols| {
            let row = src.get(iy * g.w..(iy + 1) * g.w).unwrap_or(&[]);
            let base = ci * cs + base;
            for col in cols {
                let ix = col * l.s + b - g.pad_l;
                if let (Some(&v), Some(d)) = (row.get(ix), tile.get_mut(base + col)) {
                    *d = v;
                }
            }
        });
    }
}

/// `buf[c][f] = Σ_ci Σ_t wp[ci][t][c] · tile[ci · cs + off[t] + f]` for `f < fpad`: register tiles of 8 channels
/// × 48 positions (24 accumulators; 3 loads and 8 broadcasts per 24 FMAs) while 48 positions remain, then 8 × 32.
/// Every position's sum is the same chain of FMAs in the same order whatever the tile width, so the width changes
/// no bit. (With 8 × 32 only, 10 loads per 16 FMAs held a CPU with two FMA ports to about 60 % of its peak.)
#[target_feature(enable = "avx512f")]
unsafe fn gemm(
    tile: &[f32],
    cs: usize,
    cin: usize,
    off: &[usize],
    wp: &[u8],
    fpad: usize,
    buf: &mut [[f32; FMAX]; CO],
) {
    let end = fpad.min(FMAX);
    let mut f0 = 0;
    while f0 + 3 * 16 <= end {
        // SAFETY (caller): off[t] + f < cs for every f < fpad, and f0 + 47 < end <= FMAX.
        gemm_tile::<3>(tile, cs, cin, off, wp, f0, buf);
        f0 += 3 * 16;
    }
    while f0 < end {
        // SAFETY: as above; `fpad` is a multiple of 32 = PX and so is every f0 here, so f0 + 31 < end.
        gemm_tile::<2>(tile, cs, cin, off, wp, f0, buf);
        f0 += PX;
    }
}

/// One register tile of [`gemm`]: positions `f0 .. f0 + 16 · N` of 8 channels.
///
/// # Safety
/// AVX-512 F; `off[t] + f0 + 16 · N - 1 < cs` for every tap, `f0 + 16 · N <= FMAX`, `wp` holds `cin · taps · 8`
/// values.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn gemm_tile<const N: usize>(
    tile: &[f32],
    cs: usize,
    cin: usize,
    off: &[usize],
    wp: &[u8],
    f0: usize,
    buf: &mut [[f32; FMAX]; CO],
) {
    let taps = off.len();
    let mut acc = [[_mm512_setzero_ps(); N]; CO];
    for ci in 0..cin {
        let cb = tile.as_ptr().add(ci * cs + f0);
        let wc = wp.as_ptr().add(ci * taps * CO * 4) as *const f32;
        for t in 0..taps {
            // SAFETY (caller): off[t] + f0 + 16N - 1 < cs, inside channel ci's region; value t · CO + 7 of channel
            // ci lies in `wp` (cin · taps · CO values, read unaligned).
            let p = cb.add(*off.get_unchecked(t));
            let mut x = [_mm512_setzero_ps(); N];
            for (j, xj) in x.iter_mut().enumerate() {
                *xj = _mm512_loadu_ps(p.add(16 * j));
            }
            let wt = wc.add(t * CO);
            for (c, a) in acc.iter_mut().enumerate() {
                let wv = _mm512_set1_ps(wt.add(c).read_unaligned());
                for (aj, xj) in a.iter_mut().zip(&x) {
                    *aj = _mm512_fmadd_ps(wv, *xj, *aj);
                }
            }
        }
    }
    for (c, a) in acc.iter().enumerate() {
        for (j, aj) in a.iter().enumerate() {
            // SAFETY: f0 + 16N <= FMAX.
            _mm512_storeu_ps(buf[c].as_mut_ptr().add(f0 + 16 * j), *aj);
        }
    }
}
