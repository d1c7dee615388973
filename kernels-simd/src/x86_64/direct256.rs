//! AVX2 f32 direct convolution with **output channels in the lanes**, on weights packed offline in the
//! [`fma16_pack`](crate::pack::fma16_pack) layout of family [`crate::pack::X86_AVX512_F32`] (per block of 16
//! output channels `[cin][tap][channel]`, two `ymm` per input channel and tap): the AVX2 form of
//! [`super::direct512`] for the layers Winograd does not take (strided, 1×1, small images, few input channels).
//!
//! The pixel-major kernel of [`super::avx2::conv2d`] keeps 16 pixels of one output row in its accumulators, half
//! of them wasted on an 8-wide row and with only 4 channels' chains in flight; here a register tile is 16 channels
//! (two vectors) × up to 6 output positions of a row, 12 independent accumulators, each (input channel, tap) one
//! pair of weight loads and one broadcast per position. Per output row, the `k` input rows of every channel are
//! copied into a zero-padded row buffer, so taps need no bounds; each block's 16 × `ow` results are transposed
//! in registers into the `[channel][position]` output with the bias ([`super::wino256::transpose_out8`]).
//! Same products as the canonical kernel in another summation order: held to the float convolution bound.

use core::arch::x86_64::*;
use core::mem::MaybeUninit;

use super::wino256::{dispatch6, store16, Tile16, NP_MAX};
use super::zeroed_prefix;
use crate::pack::{fma16_len, FMA16_CO};
use crate::{Conv2dGeom, Weights};

/// Floats of the padded row buffer: `cin · k · ((ow − 1) · stride + k)` must fit (64 KiB).
const ROWS: usize = 16 * 1024;
/// Widest output row (the stage of one row's 16 channels).
const OW_MAX: usize = 256;

/// Floats per (channel, tap-row) of the row buffer: the input columns one output row's taps read.
fn row_len(g: &Conv2dGeom) -> usize {
    (g.ow - 1) * g.stride + g.k
}

/// Whether this kernel takes the layer: weights in the [`fma16_pack`](crate::pack::fma16_pack) layout, whole
/// blocks of 16 channels, and one output row's input rows within the row buffer.
pub(super) fn fits(g: &Conv2dGeom) -> bool {
    g.cout > 0
        && g.cout.is_multiple_of(FMA16_CO)
        && g.cin > 0
        && (1..=2).contains(&g.stride)
        && (1..=7).contains(&g.k)
        && g.oh > 0
        && (1..=OW_MAX).contains(&g.ow)
        && g.cin * g.k * row_len(g) <= ROWS
}

/// f32 convolution on [`fma16_pack`](crate::pack::fma16_pack)ed weights; false (and `out` untouched) where the
/// layer or a length does not fit, in which case the caller runs another kernel.
///
/// # Safety
/// The CPU must have AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn conv2d_packed(
    g: &Conv2dGeom,
    input: &[f32],
    packed: &[u8],
    bias: Option<Weights<'_>>,
    out: &mut [f32],
) -> bool {
    if !fits(g)
        || packed.len() != fma16_len(g)
        || input.len() < g.cin * g.h * g.w
        || out.len() < g.cout * g.oh * g.ow
        || bias.is_some_and(|b| b.len() < g.cout)
    {
        return false;
    }
    // SAFETY: AVX2 + FMA (caller); every length checked above.
    conv(g, input, packed, bias, out);
    true
}

/// The body of [`conv2d_packed`] (its own never-inlined frame: about 80 KiB of stack scratch).
///
/// # Safety
/// AVX2 + FMA; [`fits`] and every length of [`conv2d_packed`] hold.
#[inline(never)]
#[target_feature(enable = "avx2,fma")]
unsafe fn conv(
    g: &Conv2dGeom,
    input: &[f32],
    packed: &[u8],
    bias: Option<Weights<'_>>,
    out: &mut [f32],
) {
    let (rl, kk, plane) = (row_len(g), g.k * g.k, g.oh * g.ow);
    // Scratch sized for the largest layer; only the part this one uses is zeroed (all of it, 80 KiB, was a
    // visible share of the small layers' time).
    let mut buf_m = MaybeUninit::<[f32; ROWS]>::uninit();
    let buf = zeroed_prefix(&mut buf_m, g.cin * g.k * rl);
    let mut stage_m = MaybeUninit::<[f32; OW_MAX * FMA16_CO]>::uninit();
    let stage = zeroed_prefix(&mut stage_m, g.ow * FMA16_CO);
    if buf.len() < g.cin * g.k * rl || stage.len() < g.ow * FMA16_CO {
        return; // unreachable: `fits`
    }
    let ubase = packed.as_ptr() as *const f32;
    let blocks = g.ow.div_ceil(NP_MAX);
    for oy in 0..g.oh {
        // The k input rows of every channel this output row reads; buffer column c is input column c − pad_l.
        for ci in 0..g.cin {
            let chan = &input[ci * g.h * g.w..(ci + 1) * g.h * g.w];
            for ky in 0..g.k {
                let dst = &mut buf[(ci * g.k + ky) * rl..(ci * g.k + ky + 1) * rl];
                dst.fill(0.0);
                let iy = (oy * g.stride + ky).wrapping_sub(g.pad_t);
                if iy < g.h && g.pad_l < rl {
                    let n = g.w.min(rl - g.pad_l);
                    dst[g.pad_l..g.pad_l + n].copy_from_slice(&chan[iy * g.w..iy * g.w + n]);
                }
            }
        }
        for b in 0..g.cout / FMA16_CO {
            let mut x0 = 0;
            for blk in 0..blocks {
                // Near-equal register tiles (8 = 4 + 4, 32 = 5 + 5 + 5 + 5 + 6 + 6).
                let np = (g.ow - x0) / (blocks - blk);
                let t = Tile {
                    x: buf.as_ptr().add(x0 * g.stride),
                    s: g.stride,
                    k: g.k,
                    rl,
                    cin: g.cin,
                    w: ubase.add(b * g.cin * kk * FMA16_CO),
                    a: stage.as_mut_ptr().add(x0 * FMA16_CO),
                };
                // SAFETY: AVX2 + FMA. Positions x0 + j < ow read buffer columns (x0 + j) · s + kx < rl of rows
                // (ci · k + ky) < cin · k, inside `buf` (`fits`); block b < cout / 16 holds cin · k² vectors of 16
                // floats (packed length checked); the stage holds ow · 16 >= (x0 + np) · 16 floats.
                dispatch6(&t, np);
                x0 += np;
            }
            for h in 0..2 {
                let c0 = b * FMA16_CO + 8 * h;
                let bv: [f32; 8] = core::array::from_fn(|i| bias.map_or(0.0, |bw| bw.get(c0 + i)));
                // SAFETY: channels c0 .. c0 + 8 <= cout of `out` (cout · plane floats, checked) hold row oy's ow
                // positions at c · plane + oy · ow; the stage holds ow · 16 floats, read at column 8 h.
                super::wino256::transpose_out8(
                    stage.as_ptr().add(8 * h),
                    g.ow,
                    &bv,
                    out.as_mut_ptr().add(c0 * plane + oy * g.ow),
                    plane,
                );
            }
        }
    }
}

/// One register tile: 16 output channels × `NP` positions of a row,
/// `a[16 j + l] = Σ_ci Σ_ky Σ_kx x[(ci · k + ky) · rl + j · s + kx] · w[((ci · k + ky) · k + kx) · 16 + l]`.
struct Tile {
    x: *const f32,
    s: usize,
    k: usize,
    rl: usize,
    cin: usize,
    w: *const f32,
    a: *mut f32,
}

impl Tile16 for Tile {
    /// Safety: AVX2 + FMA; `x` readable at every index above for `ci < cin`, `ky, kx < k`, `j < NP`; `w` at
    /// `cin · k²` vectors of 16 floats; `a` at `16 · NP` writable floats.
    #[inline(always)]
    unsafe fn run<const NP: usize>(&self) {
        let mut acc = [[_mm256_setzero_ps(); 2]; NP];
        let mut w = self.w;
        for r in 0..self.cin * self.k {
            let row = self.x.add(r * self.rl);
            for kx in 0..self.k {
                let w0 = _mm256_loadu_ps(w);
                let w1 = _mm256_loadu_ps(w.add(8));
                w = w.add(FMA16_CO);
                for (j, a) in acc.iter_mut().enumerate() {
                    let xb = _mm256_broadcast_ss(&*row.add(j * self.s + kx));
                    a[0] = _mm256_fmadd_ps(xb, w0, a[0]);
                    a[1] = _mm256_fmadd_ps(xb, w1, a[1]);
                }
            }
        }
        store16(&acc, self.a);
    }
}
