//! AVX-512 f32 convolution as an implicit GEMM on the banded layout of [`super::bands`] (shared with the VNNI int8
//! kernel), with one `f32` per word. A band of output rows is laid out on the stack per input channel (zero-padded; split
//! into 4 phase planes for stride 2), so every output position reads its taps at fixed offsets from its flat index
//! `oy · Wph + ox`; the register tile is 32 consecutive positions (2 `zmm`) × 8 output channels (broadcast
//! weights): 16 independent FMA chains. Small images waste few lanes (a 16×16 layer computes 16 · 18 positions, not
//! 16 rows of 32). Sums are reordered and fused against generic, so results agree within the f32 tolerance of the
//! tier tests, not bitwise. Weights are read in the [`crate::pack::fma8_pack`] layout: packed offline when the blob
//! carries the AVX-512 family ([`conv2d_packed`]), otherwise packed here per 8-channel block (same values, so the
//! two paths give the same bits). Small outputs (4×4, 8×8: at most 64 positions, a multiple of 16) take an
//! explicit im2col instead, whose 16-position tiles waste no lanes.

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
/// Accumulator buffer of the small-output path, in floats (`cout · oh · ow`; 128 KiB).
const SACC: usize = 64 * 1024;

/// Input channels per im2col chunk of the small-output path, or `None` where the layer is not small: output
/// planes of 16, 32, 48 or 64 positions (4×4, 8×8 ...), and up to 256 (16×16) with at least 128 output channels.
/// There the band layout computes its padding columns (a 4×4 output with a 3×3 kernel fills 22 of 32 lanes with
/// 16 useful positions; 16×16 computes 18 columns per row), and an explicit im2col `col[ci][tap][position]` uses
/// every lane. The im2col copies each input value k² times, which pays for itself over many output channels
/// (measured: cifar's 256-channel 16×16 layers gain 5 %, the student's 64-channel ones lose 8 %).
fn small(g: &Conv2dGeom) -> Option<usize> {
    let (kk, p) = (g.k * g.k, g.oh * g.ow);
    let ok = p > 0
        && p.is_multiple_of(SP)
        && (p <= 64 || (p <= SMALL_MAX && g.cout >= 128))
        && (1..=super::bands::KMAX).contains(&g.k)
        && (1..=2).contains(&g.stride)
        && g.cin > 0
        && g.cout * p <= SACC
        && g.cin * kk * CO <= WP_W;
    ok.then(|| (TILE_W / (kk * p)).min(g.cin))
}

/// Whether [`conv2d`] takes this layer with these slice lengths.
pub(super) fn fits(g: &Conv2dGeom, input: usize, w: usize, out: usize) -> bool {
    (layout(g).is_some() || small(g).is_some() || pointwise(g))
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
    conv(g, input, w, None, bias, out)
}

/// [`conv2d`] on weights packed offline ([`crate::pack::fma8_pack`] of the whole layer); a length that does not
/// match falls back to packing `w`.
///
/// # Safety
/// The CPU must have AVX-512 F.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn conv2d_packed(
    g: &Conv2dGeom,
    input: &[f32],
    w: Weights<'_>,
    packed: &[u8],
    bias: Option<Weights<'_>>,
    out: &mut [f32],
) {
    let ok = packed.len() == crate::pack::fma8_len(g);
    conv(g, input, w, ok.then_some(packed), bias, out)
}

#[target_feature(enable = "avx512f")]
unsafe fn conv(
    g: &Conv2dGeom,
    input: &[f32],
    w: Weights<'_>,
    pre: Option<&[u8]>,
    bias: Option<Weights<'_>>,
    out: &mut [f32],
) {
    if !fits(g, input.len(), w.len(), out.len()) {
        return;
    }
    if pointwise(g) {
        return conv_pointwise(g, input, w, pre, bias, out);
    }
    if let Some(cc) = small(g) {
        return conv_small(g, input, w, pre, bias, out, cc);
    }
    if let Some(l) = layout(g) {
        conv_bands(g, &l, input, w, pre, bias, out);
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
    pre: Option<&[u8]>,
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
    let wp = zeroed_prefix(&mut wp_m, if pre.is_some() { 0 } else { bl });
    let mut buf = [[0f32; FMAX]; CO];
    let mut oy0 = 0;
    while oy0 < g.oh {
        let r = l.rows.min(g.oh - oy0);
        let fpad = l.fpad(r, g.ow);
        fill_tile(g, &l, input, oy0, tile);
        for co0 in (0..g.cout).step_by(CO) {
            // Packed weights [ci][tap][CO]; channels past cout are zero.
            let blk = match pre {
                Some(p) => p.get(co0 / CO * bl..co0 / CO * bl + bl),
                None => crate::pack::fma8_pack_block_with(g, w, co0, wp, super::avx2::f16_to_f32)
                    .then_some(&*wp),
            };
            let Some(blk) = blk else { return };
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

/// The small-output path (see [`small`]): input channels in chunks of `cc`, each laid out as
/// `col[ci][tap][position]` (zero where a tap falls in the padding); per block of 8 output channels and 16
/// positions, 8 accumulators run over the chunk's `ci · k² + tap` rows and are kept in `acc` between chunks (a
/// spill and reload: the same sums as one pass, so the chunking does not change the bits).
///
/// # Safety
/// AVX-512 F; the layer passed [`fits`] and `cc` is [`small`]'s.
#[inline(never)]
#[target_feature(enable = "avx512f")]
unsafe fn conv_small(
    g: &Conv2dGeom,
    input: &[f32],
    w: Weights<'_>,
    pre: Option<&[u8]>,
    bias: Option<Weights<'_>>,
    out: &mut [f32],
    cc: usize,
) {
    let (kk, p) = (g.k * g.k, g.oh * g.ow);
    let plane_in = g.h * g.w;
    let mut col_m = MaybeUninit::<[f32; TILE_W]>::uninit();
    let col = zeroed_prefix(&mut col_m, cc * kk * p);
    let mut acc_m = MaybeUninit::<[f32; SACC]>::uninit();
    let acc = zeroed_prefix(&mut acc_m, g.cout * p);
    let bl = crate::pack::fma8_block_len(g);
    let mut wp_m = MaybeUninit::<[u8; WP_W * 4]>::uninit();
    let wp = zeroed_prefix(&mut wp_m, if pre.is_some() { 0 } else { bl });
    if col.len() < cc * kk * p || acc.len() < g.cout * p {
        return;
    }
    for ci0 in (0..g.cin).step_by(cc) {
        let ci1 = (ci0 + cc).min(g.cin);
        // im2col of channels ci0..ci1.
        for ci in ci0..ci1 {
            let src = input.get(ci * plane_in..(ci + 1) * plane_in).unwrap_or(&[]);
            for t in 0..kk {
                let (ky, kx) = (t / g.k, t % g.k);
                let row0 = ((ci - ci0) * kk + t) * p;
                for oy in 0..g.oh {
                    let iy = (oy * g.stride + ky).wrapping_sub(g.pad_t);
                    for ox in 0..g.ow {
                        let ix = (ox * g.stride + kx).wrapping_sub(g.pad_l);
                        let v = if iy < g.h && ix < g.w {
                            src.get(iy * g.w + ix).copied().unwrap_or(0.0)
                        } else {
                            0.0
                        };
                        if let Some(d) = col.get_mut(row0 + oy * g.ow + ox) {
                            *d = v;
                        }
                    }
                }
            }
        }
        let rows = (ci1 - ci0) * kk;
        let wr = ci0 * kk * CO * 4..ci1 * kk * CO * 4;
        // SAFETY: AVX-512 F (caller); `col` holds `rows` rows of p positions, `acc` cout · p floats.
        if !blocks(g, w, pre, wp, col, rows, p, wr, acc, ci0 == 0) {
            return;
        }
    }
    for co in 0..g.cout {
        let b = bias.map_or(0.0, |b| b.get(co));
        if let (Some(dst), Some(src)) = (
            out.get_mut(co * p..(co + 1) * p),
            acc.get(co * p..(co + 1) * p),
        ) {
            for (o, &a) in dst.iter_mut().zip(src) {
                *o = a + b;
            }
        }
    }
}

/// Pointwise layers (1×1, stride 1, no padding, `h · w` a multiple of 16): the input already is the im2col
/// matrix `[ci][position]`, so the 16-position tiles read it in place and accumulate straight into `out`.
///
/// # Safety
/// AVX-512 F; the layer passed [`fits`] and [`pointwise`].
#[inline(never)]
#[target_feature(enable = "avx512f")]
unsafe fn conv_pointwise(
    g: &Conv2dGeom,
    input: &[f32],
    w: Weights<'_>,
    pre: Option<&[u8]>,
    bias: Option<Weights<'_>>,
    out: &mut [f32],
) {
    let p = g.h * g.w;
    let (Some(col), Some(acc)) = (input.get(..g.cin * p), out.get_mut(..g.cout * p)) else {
        return;
    };
    let bl = crate::pack::fma8_block_len(g);
    let mut wp_m = MaybeUninit::<[u8; WP_W * 4]>::uninit();
    let wp = zeroed_prefix(&mut wp_m, if pre.is_some() { 0 } else { bl });
    // SAFETY: AVX-512 F (caller); `col` holds cin rows of p positions, `acc` cout · p floats.
    if !blocks(g, w, pre, wp, col, g.cin, p, 0..bl, acc, true) {
        return;
    }
    if let Some(b) = bias {
        for (co, oc) in acc.chunks_exact_mut(p).enumerate() {
            let bv = b.get(co);
            oc.iter_mut().for_each(|o| *o += bv);
        }
    }
}

/// Whether [`conv_pointwise`] takes this layer.
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
}

/// `acc[co][q] (+)= Σ_r w[co][r] · col[r][q]` for every output channel and position, `r` over the `rows` rows of
/// `col` (`[r][p]`) and the bytes `wr` of each packed 8-channel block (offline in `pre`, else packed per block into
/// `wp`). Two blocks per pass when packed offline ([`gemm16x2`]), else one ([`gemm16`]). `first` starts from zero,
/// otherwise from `acc`. False if a block cannot be packed or read.
///
/// # Safety
/// AVX-512 F; `col` holds `rows · p` floats, `p` is a multiple of 16, `wr` spans `rows · CO` floats of a block,
/// `acc` holds `cout · p` floats.
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
    wr: core::ops::Range<usize>,
    acc: &mut [f32],
    first: bool,
) -> bool {
    let bl = crate::pack::fma8_block_len(g);
    if col.len() < rows * p || acc.len() < g.cout * p || wr.len() < rows * CO * 4 {
        return false;
    }
    let mut co0 = 0;
    while co0 < g.cout {
        let blk = match pre {
            Some(pk) => pk.get(co0 / CO * bl..co0 / CO * bl + bl),
            None => crate::pack::fma8_pack_block_with(g, w, co0, wp, super::avx2::f16_to_f32)
                .then_some(&*wp),
        };
        let Some(wsub) = blk.and_then(|b| b.get(wr.clone())) else {
            return false;
        };
        // Two blocks of 8 channels per pass when the weights are packed offline (each position row then feeds
        // 16 FMAs); per-call packing has one block's buffer.
        let second = pre
            .filter(|_| co0 + 2 * CO <= g.cout)
            .and_then(|pk| pk.get((co0 / CO + 1) * bl..(co0 / CO + 2) * bl))
            .and_then(|b| b.get(wr.clone()));
        if let Some(wsub2) = second {
            for q0 in (0..p).step_by(SP) {
                // SAFETY: q0 + 16 <= p; both blocks hold `rows · CO` floats; co0 + 16 <= cout.
                gemm16x2(col, rows, p, q0, [wsub, wsub2], acc, co0, first);
            }
            co0 += 2 * CO;
        } else {
            let nco = CO.min(g.cout - co0);
            for q0 in (0..p).step_by(SP) {
                // SAFETY: q0 + 16 <= p; the block holds `rows · CO` floats; co0 + nco <= cout.
                gemm16(col, rows, p, q0, wsub, acc, co0, nco, first);
            }
            co0 += CO;
        }
    }
    true
}

/// `acc[co0 + c][q0 .. q0 + 16] (+)= Σ_r wp[r][c] · col[r][q0 .. q0 + 16]` over `rows` rows, `c < nco` (8 FMA
/// chains; `first` starts them at zero, otherwise from `acc`).
///
/// # Safety
/// AVX-512 F; `col` holds `rows · p` floats, `q0 + 16 <= p`, `wp` holds `rows · CO` floats (bytes, read
/// unaligned), `acc` holds `(co0 + nco) · p` floats, `nco <= CO`.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f")]
unsafe fn gemm16(
    col: &[f32],
    rows: usize,
    p: usize,
    q0: usize,
    wp: &[u8],
    acc: &mut [f32],
    co0: usize,
    nco: usize,
    first: bool,
) {
    let mut a = [_mm512_setzero_ps(); CO];
    let ap = acc.as_mut_ptr();
    if !first {
        for (c, v) in a.iter_mut().enumerate().take(nco) {
            *v = _mm512_loadu_ps(ap.add((co0 + c) * p + q0));
        }
    }
    let (cp, wpp) = (col.as_ptr().add(q0), wp.as_ptr() as *const f32);
    for r in 0..rows {
        let x = _mm512_loadu_ps(cp.add(r * p));
        let wr = wpp.add(r * CO);
        for (c, v) in a.iter_mut().enumerate() {
            *v = _mm512_fmadd_ps(_mm512_set1_ps(wr.add(c).read_unaligned()), x, *v);
        }
    }
    for (c, v) in a.iter().enumerate().take(nco) {
        _mm512_storeu_ps(ap.add((co0 + c) * p + q0), *v);
    }
}

/// [`gemm16`] for two whole blocks of 8 channels (`co0 .. co0 + 16`), weights `wp[0]`, `wp[1]`: 16 chains, one
/// position load per 16 FMAs.
///
/// # Safety
/// As [`gemm16`] with `nco = 16`, each `wp[i]` holding `rows · CO` floats.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f")]
unsafe fn gemm16x2(
    col: &[f32],
    rows: usize,
    p: usize,
    q0: usize,
    wp: [&[u8]; 2],
    acc: &mut [f32],
    co0: usize,
    first: bool,
) {
    let mut a = [_mm512_setzero_ps(); 2 * CO];
    let ap = acc.as_mut_ptr();
    if !first {
        for (c, v) in a.iter_mut().enumerate() {
            *v = _mm512_loadu_ps(ap.add((co0 + c) * p + q0));
        }
    }
    let cp = col.as_ptr().add(q0);
    let (w0, w1) = (wp[0].as_ptr() as *const f32, wp[1].as_ptr() as *const f32);
    for r in 0..rows {
        let x = _mm512_loadu_ps(cp.add(r * p));
        let (wa, wb) = (w0.add(r * CO), w1.add(r * CO));
        for c in 0..CO {
            a[c] = _mm512_fmadd_ps(_mm512_set1_ps(wa.add(c).read_unaligned()), x, a[c]);
            a[CO + c] = _mm512_fmadd_ps(_mm512_set1_ps(wb.add(c).read_unaligned()), x, a[CO + c]);
        }
    }
    for (c, v) in a.iter().enumerate() {
        _mm512_storeu_ps(ap.add((co0 + c) * p + q0), *v);
    }
}

/// Lay out output rows `oy0..` of the input: `tile[ci · cs + phase plane + row · wph + col]`, zero padding.
fn fill_tile(g: &Conv2dGeom, l: &Bands, input: &[f32], oy0: usize, tile: &mut [f32]) {
    let cs = l.stride();
    let plane_in = g.h * g.w;
    tile.fill(0.0);
    for ci in 0..g.cin {
        let src = input.get(ci * plane_in..(ci + 1) * plane_in).unwrap_or(&[]);
        l.visit_rows(g, oy0, |base, iy, b, cols| {
            let row = src.get(iy * g.w..(iy + 1) * g.w).unwrap_or(&[]);
            let base = ci * cs + base;
            if l.s == 1 {
                // ix = col - pad_l runs over one contiguous stretch: one copy.
                let n = cols.len();
                if let (Some(d), Some(s)) = (
                    tile.get_mut(base + cols.start..base + cols.end),
                    row.get(..n),
                ) {
                    d.copy_from_slice(s);
                }
            } else {
                for col in cols {
                    let ix = col * l.s + b - g.pad_l;
                    if let (Some(&v), Some(d)) = (row.get(ix), tile.get_mut(base + col)) {
                        *d = v;
                    }
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
