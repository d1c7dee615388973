//! AVX-512 f32 convolution as an implicit GEMM on the banded layout of [`super::bands`] (shared with the VNNI int8
//! kernel), with one `f32` per word. A band of output rows is laid out on the stack per input channel (zero-padded; split
//! into 4 phase planes for stride 2), so every output position reads its taps at fixed offsets from its flat index
//! `oy · Wph + ox`; the register tile is 32 consecutive positions (2 `zmm`) × 8 output channels (broadcast
//! weights): 16 independent FMA chains. Small images waste few lanes (a 16×16 layer computes 16 · 18 positions, not
//! 16 rows of 32). Sums are reordered and fused against generic, so results agree within the f32 tolerance of the
//! tier tests, not bitwise. Weights are read in the [`crate::pack::fma8_pack`] layout: packed offline when the blob
//! carries the AVX-512 family ([`conv2d_packed`]), otherwise packed here per 8-channel block (same values, so the
//! two paths give the same bits).

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

/// Whether [`conv2d`] takes this layer with these slice lengths.
pub(super) fn fits(g: &Conv2dGeom, input: usize, w: usize, out: usize) -> bool {
    layout(g).is_some()
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
    let Some(l) = layout(g) else { return };
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

/// `buf[c][f] = Σ_ci Σ_t wp[ci][t][c] · tile[ci · cs + off[t] + f]` for `f < fpad`.
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
    let taps = off.len();
    let mut f0 = 0;
    while f0 < fpad.min(FMAX) {
        let mut acc = [[_mm512_setzero_ps(); 2]; CO];
        for ci in 0..cin {
            let cb = tile.as_ptr().add(ci * cs + f0);
            let wc = wp.as_ptr().add(ci * taps * CO * 4) as *const f32;
            for t in 0..taps {
                // SAFETY (caller): off[t] + f0 + 31 < cs, inside channel ci's region; value t · CO + 7 of channel ci lies in `wp` (cin · taps · CO
                // values, read unaligned).
                let p = cb.add(*off.get_unchecked(t));
                let x0 = _mm512_loadu_ps(p);
                let x1 = _mm512_loadu_ps(p.add(16));
                let wt = wc.add(t * CO);
                for (c, a) in acc.iter_mut().enumerate() {
                    let wv = _mm512_set1_ps(wt.add(c).read_unaligned());
                    a[0] = _mm512_fmadd_ps(wv, x0, a[0]);
                    a[1] = _mm512_fmadd_ps(wv, x1, a[1]);
                }
            }
        }
        for (c, a) in acc.iter().enumerate() {
            // SAFETY: f0 + 31 < FMAX.
            let d = buf[c].as_mut_ptr().add(f0);
            _mm512_storeu_ps(d, a[0]);
            _mm512_storeu_ps(d.add(16), a[1]);
        }
        f0 += PX;
    }
}
