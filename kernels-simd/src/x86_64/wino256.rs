//! AVX2 f32 3×3 stride-1 convolution by Winograd F(2×2, 3×3), the AVX2 form of [`super::wino512`] on the same
//! offline-transformed weights ([`crate::pack::wino16_pack`], family [`crate::pack::X86_AVX512_F32`]: a block of
//! 16 output channels is two `ymm`). Each 2×2 output tile of a channel is `Aᵀ [Σ_ci U ⊙ V] A` with `V = Bᵀ d B`,
//! so 16 multiplications per input channel give 4 outputs instead of 36; the 16 element-wise products summed over
//! input channels are 16 GEMMs `M[ξ] (tiles × cout) = V[ξ] (tiles × cin) · U[ξ] (cin × cout)`, run with output
//! channels in the lanes: a register tile is 2 vectors (16 channels) × up to 6 tiles, 12 accumulators, two
//! weight loads and one broadcast per tile for each input channel.
//!
//! Per band of tile rows (the plan of [`super::wino512::plan`]): every input channel's rows are copied into a
//! zero-padded row buffer and transformed 8 tiles at a time (the tiles' columns deinterleaved from overlapping
//! row loads by `vshufps` + `vpermpd`) into `V[ξ][ci][tile]`; then per block of 16 output channels the 16 GEMMs
//! park `M[ξ][tile][channel]`, the output transform turns each tile's 16 vectors into 4 output positions, and an
//! 8×8 register transpose writes the `[channel][position]` output with the bias. The transforms use only additions
//! and subtractions (the ½ of `G` is applied offline), so results differ from a direct convolution's by a few
//! rounding steps: the tier tests hold it to the `1e-5 · Σ|w·x|` bound of every float convolution.

use core::arch::x86_64::*;
use core::mem::MaybeUninit;

use super::wino512::{lengths_fit, plan, tile_rows, Plan};
use super::zeroed_prefix;
use crate::pack::{FMA16_CO, WINO_NT, WINO_V};
use crate::{Conv2dGeom, Weights};

/// Parked GEMM results of a band for one block of 16 channels: `16 · WINO_NT · 16` floats (32 KiB).
const PARK: usize = 16 * WINO_NT * FMA16_CO;
/// Output positions of a band (`4 · WINO_NT`) × 16 channels (8 KiB).
const STAGE: usize = 4 * WINO_NT * FMA16_CO;
/// Floats added to the ξ strides of V and the park (one cache line), off multiples of 4 KiB.
const SKEW: usize = 16;
/// Columns of the padded row buffer: `2 · tw + 2` columns of tiles rounded up to 8 tiles, and the last 8-tile
/// group's loads (18 columns from its first), for `tw <= WINO_NT`.
const ROWBUF: usize = 2 * WINO_NT + 24;
/// Most tiles of one register tile ([`dispatch6`]).
pub(super) const NP_MAX: usize = 6;

/// f32 Winograd convolution on weights packed by [`wino16_pack`](crate::pack::wino16_pack); false (and `out`
/// untouched) if [`crate::pack::winograd`] does not pick the layer or a length does not fit, in which case the
/// caller runs another kernel.
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
    let Some(p) = plan(g) else { return false };
    if !lengths_fit(g, input, packed, bias, out.len()) {
        return false;
    }
    // SAFETY: AVX2 + FMA (caller); `out` holds cout · oh · ow floats (checked), all of which the whole range of
    // tile rows writes.
    conv(g, p, input, packed, bias, out.as_mut_ptr(), (0, p.th));
    true
}

/// [`conv2d_packed`] for the output rows `out.rows()` only (a start on a tile row: even; an end that is even or
/// the last row), which this worker of a split by rows owns; false (nothing written) where the layer or a length
/// does not fit.
///
/// # Safety
/// The CPU must have AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn conv2d_packed_rows(
    g: &Conv2dGeom,
    input: &[f32],
    packed: &[u8],
    bias: Option<Weights<'_>>,
    out: &crate::parallel::RowsOut<'_>,
) -> bool {
    let Some(p) = plan(g) else { return false };
    let Some(ty) = tile_rows(g, out) else {
        return false;
    };
    if !lengths_fit(g, input, packed, bias, out.len()) {
        return false;
    }
    // SAFETY: AVX2 + FMA (caller). Tile rows `ty` write output rows `out.rows()` of channels < cout (`tile_rows`),
    // inside the output's cout · oh · ow floats (checked), which are this worker's rows (`RowsOut::as_mut_ptr`).
    conv(g, p, input, packed, bias, out.as_mut_ptr(), ty);
    true
}

/// The body of [`conv2d_packed`] for tile rows `ty.0 .. ty.1` (its own never-inlined frame: about 560 KiB of
/// stack scratch).
///
/// # Safety
/// AVX2 + FMA; `p` is the layer's [`plan`], every length was checked, and `out` (channel 0, row 0 of a
/// `[cout][oh][ow]` output) is writable at output rows `2 · ty.0 .. min(2 · ty.1, oh)` of every channel.
#[inline(never)]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn conv(
    g: &Conv2dGeom,
    p: Plan,
    input: &[f32],
    packed: &[u8],
    bias: Option<Weights<'_>>,
    out: *mut f32,
    ty: (usize, usize),
) {
    let plane = g.oh * g.ow;
    let nt_max = p.rows * p.tw;
    let mut v_m = MaybeUninit::<[f32; WINO_V + 16 * SKEW]>::uninit();
    let vbuf = zeroed_prefix(&mut v_m, 16 * (g.cin * nt_max + SKEW));
    let mut park_m = MaybeUninit::<[f32; PARK + 16 * SKEW]>::uninit();
    let park = zeroed_prefix(&mut park_m, 16 * (nt_max * FMA16_CO + SKEW));
    let mut stage_m = MaybeUninit::<[f32; STAGE]>::uninit();
    let stage = zeroed_prefix(&mut stage_m, 2 * p.rows * g.ow * FMA16_CO);
    let mut rowbuf = [[0f32; ROWBUF]; 4];
    if vbuf.len() < 16 * (g.cin * nt_max + SKEW)
        || park.len() < 16 * (nt_max * FMA16_CO + SKEW)
        || stage.len() < 2 * p.rows * g.ow * FMA16_CO
        || 2 * p.tw.next_multiple_of(8) + 2 > ROWBUF
        || p.tw > WINO_NT
    {
        return;
    }
    let ubase = packed.as_ptr() as *const f32;
    let (mut ty0, ty_end) = (ty.0, ty.1.min(p.th));
    while ty0 < ty_end {
        let rows = p.rows.min(ty_end - ty0);
        let nt = rows * p.tw;
        let (vs, ps) = (g.cin * nt + SKEW, nt * FMA16_CO + SKEW);
        // 1. Input transform of every channel into V[ξ][ci][t] (t = row · tw + tx): the 4 input rows of a tile row
        // copied into `rowbuf` with the padding as zeros (column c of the buffer is input column c − pad_l).
        for ci in 0..g.cin {
            let chan = &input[ci * g.h * g.w..(ci + 1) * g.h * g.w];
            for r in 0..rows {
                for (i, buf) in rowbuf.iter_mut().enumerate() {
                    buf.fill(0.0);
                    let iy = (2 * (ty0 + r) + i).wrapping_sub(g.pad_t);
                    if iy < g.h {
                        let src = &chan[iy * g.w..(iy + 1) * g.w];
                        // Input columns 0 .. w land at pad_l .. pad_l + w, clipped to the buffer (columns past
                        // 2 · tw + 2 − pad_l feed no tile).
                        let n = g.w.min(ROWBUF - g.pad_l);
                        buf[g.pad_l..g.pad_l + n].copy_from_slice(&src[..n]);
                    }
                }
                let mut tx0 = 0;
                while tx0 < p.tw {
                    let n = (p.tw - tx0).min(8);
                    // SAFETY: AVX2 (caller). `input_tile8` reads columns 2 · tx0 .. 2 · tx0 + 18 of each buffer
                    // row, <= 2 · tw.next_multiple_of(8) + 2 <= ROWBUF (checked); V holds 16 · vs floats and
                    // ξ · vs + ci · nt + r · tw + tx0 + n <= that.
                    input_tile8(
                        &rowbuf,
                        2 * tx0,
                        vbuf.as_mut_ptr().add(ci * nt + r * p.tw + tx0),
                        vs,
                        n,
                    );
                    tx0 += 8;
                }
            }
        }
        // 2. Per block of 16 output channels: 16 GEMMs, output transform, transposed store.
        let blocks = nt.div_ceil(NP_MAX);
        for b in 0..g.cout / FMA16_CO {
            for xi in 0..16 {
                let w = ubase.add((b * 16 + xi) * g.cin * FMA16_CO);
                let mut t0 = 0;
                for blk in 0..blocks {
                    // Near-equal register tiles (32 = 6 + 6 + 5 + 5 + 5 + 5, not ... + 2).
                    let np = (nt - t0) / (blocks - blk);
                    let t = Tile {
                        x: vbuf.as_ptr().add(xi * vs + t0),
                        xs: nt,
                        cin: g.cin,
                        w,
                        a: park.as_mut_ptr().add(xi * ps + t0 * FMA16_CO),
                    };
                    // SAFETY: AVX2 + FMA. V[ξ][ci][t0 + j] (ci < cin, j < np, t0 + np <= nt) lies in `vbuf`; block
                    // b < cout / 16 holds 16 · cin vectors of 16 floats, read at ξ · cin + ci (packed length
                    // checked); the park holds 16 · ps floats and ξ · ps + (t0 + np) · 16 <= that.
                    dispatch6(&t, np);
                    t0 += np;
                }
            }
            // Output transform: tile t's 16 vectors per half block into its (up to) 4 output positions.
            let oy0 = 2 * ty0;
            let orows = (2 * rows).min(g.oh - oy0);
            for t in 0..nt {
                let (r, tx) = (t / p.tw, t % p.tw);
                for h in 0..2 {
                    // SAFETY: AVX2. The park holds ξ · ps + t · 16 + 8 h + 8 floats for ξ < 16; the stage holds
                    // 2 · rows · ow · 16 floats, written at positions (2r + a) · ow + 2 tx + b inside `lim`.
                    output_tile(
                        park.as_ptr().add(t * FMA16_CO + 8 * h),
                        ps,
                        stage.as_mut_ptr().add(8 * h),
                        g.ow,
                        (2 * r, 2 * tx),
                        (orows, g.ow),
                    );
                }
            }
            let n = orows * g.ow;
            for h in 0..2 {
                let c0 = b * FMA16_CO + 8 * h;
                let bv: [f32; 8] = core::array::from_fn(|i| bias.map_or(0.0, |bw| bw.get(c0 + i)));
                // SAFETY: channels c0 .. c0 + 8 <= cout of `out` hold positions oy0 · ow .. + n, rows oy0 .. oy0 +
                // orows of this band, inside the writable rows (contract); the stage holds n · 16 floats, read at
                // column 8 h.
                transpose_out8(
                    stage.as_ptr().add(8 * h),
                    n,
                    &bv,
                    out.add(c0 * plane + oy0 * g.ow),
                    plane,
                );
            }
        }
        ty0 += rows;
    }
}

/// Transform 8 horizontally adjacent 4×4 input tiles (`n` of them kept) into `V = Bᵀ d B`,
/// `Bᵀ = [[1, 0, −1, 0], [0, 1, 1, 0], [0, −1, 1, 0], [0, 1, 0, −1]]`: tile `j`'s row `i` is `rows[i]` at columns
/// `c0 + 2j .. c0 + 2j + 4`; value `ξ` of tile `j` goes to `v + ξ · vs + j`.
///
/// # Safety
/// AVX2; `c0 + 18 <= ROWBUF`; `v + ξ · vs + j` writable for `ξ < 16`, `j < n`.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn input_tile8(rows: &[[f32; ROWBUF]; 4], c0: usize, v: *mut f32, vs: usize, n: usize) {
    // [a0 a2 b0 b2 | a4 a6 b4 b6] → [a0 a2 a4 a6 b0 b2 b4 b6] (64-bit lanes 0, 2, 1, 3).
    let even = |a: __m256, b: __m256| {
        _mm256_castpd_ps(_mm256_permute4x64_pd::<0xD8>(_mm256_castps_pd(
            _mm256_shuffle_ps::<0x88>(a, b),
        )))
    };
    let odd = |a: __m256, b: __m256| {
        _mm256_castpd_ps(_mm256_permute4x64_pd::<0xD8>(_mm256_castps_pd(
            _mm256_shuffle_ps::<0xDD>(a, b),
        )))
    };
    // d[i][c]: row i, column c of each of the 8 tiles (tile j's column c is buffer column c0 + 2j + c).
    let d: [[__m256; 4]; 4] = core::array::from_fn(|i| {
        // SAFETY: columns c0 .. c0 + 18 of the row, inside its ROWBUF floats (contract).
        let ld = |off: usize| _mm256_loadu_ps(rows[i].as_ptr().add(c0 + off));
        let (a, b, a2, b2) = (ld(0), ld(8), ld(2), ld(10));
        [even(a, b), odd(a, b), even(a2, b2), odd(a2, b2)]
    });
    // Bᵀ d (rows), then (Bᵀ d) B (columns).
    let t: [[__m256; 4]; 4] = [
        core::array::from_fn(|c| _mm256_sub_ps(d[0][c], d[2][c])),
        core::array::from_fn(|c| _mm256_add_ps(d[1][c], d[2][c])),
        core::array::from_fn(|c| _mm256_sub_ps(d[2][c], d[1][c])),
        core::array::from_fn(|c| _mm256_sub_ps(d[1][c], d[3][c])),
    ];
    // Lanes j < n stored (all 8 but in a row's last group of tiles).
    let lanes = _mm256_set_epi32(7, 6, 5, 4, 3, 2, 1, 0);
    let mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(n.min(8) as i32), lanes);
    for (r, tr) in t.iter().enumerate() {
        let vr = [
            _mm256_sub_ps(tr[0], tr[2]),
            _mm256_add_ps(tr[1], tr[2]),
            _mm256_sub_ps(tr[2], tr[1]),
            _mm256_sub_ps(tr[1], tr[3]),
        ];
        for (c, x) in vr.into_iter().enumerate() {
            let dst = v.add((4 * r + c) * vs);
            if n >= 8 {
                _mm256_storeu_ps(dst, x);
            } else {
                _mm256_maskstore_ps(dst, mask, x);
            }
        }
    }
}

/// One register tile of a GEMM `M[ξ]`: 16 output channels (two vectors) × `NP` tiles summed over `cin` input
/// channels, `a[16 j + l] = Σ_ci x[ci · xs + j] · w[16 ci + l]`.
struct Tile {
    x: *const f32,
    xs: usize,
    cin: usize,
    w: *const f32,
    a: *mut f32,
}

impl Tile16 for Tile {
    /// Safety: AVX2 + FMA; `x + ci · xs + j` readable for `ci < cin`, `j < NP`; `w` points at `cin` vectors of 16
    /// floats; `a` at `16 · NP` writable floats.
    #[inline(always)]
    unsafe fn run<const NP: usize>(&self) {
        let mut acc = [[_mm256_setzero_ps(); 2]; NP];
        for ci in 0..self.cin {
            let w0 = _mm256_loadu_ps(self.w.add(ci * FMA16_CO));
            let w1 = _mm256_loadu_ps(self.w.add(ci * FMA16_CO + 8));
            let x = self.x.add(ci * self.xs);
            for (j, a) in acc.iter_mut().enumerate() {
                let xb = _mm256_broadcast_ss(&*x.add(j));
                a[0] = _mm256_fmadd_ps(xb, w0, a[0]);
                a[1] = _mm256_fmadd_ps(xb, w1, a[1]);
            }
        }
        store16(&acc, self.a);
    }
}

/// A register tile of the AVX2 channels-in-lanes kernels (this one and `direct256.rs`): 16 output channels (two
/// vectors) × `NP` positions, 2 · `NP` accumulators.
pub(super) trait Tile16 {
    /// Sum the tile and store it (16 floats per position). Safety: the CPU has AVX2 + FMA (the caller's
    /// `target_feature` frame it is inlined into) and the implementor's pointers hold `NP` positions.
    unsafe fn run<const NP: usize>(&self);
}

/// `t.run::<np>()` for `np` in 1 ..= 6 (more: 6; 6 positions × 2 accumulators, two weight vectors and a broadcast
/// fill 15 of the 16 `ymm`).
///
/// # Safety
/// As [`Tile16::run`] for `np.clamp(1, 6)` positions.
#[inline(always)]
pub(super) unsafe fn dispatch6<T: Tile16>(t: &T, np: usize) {
    match np {
        6.. => t.run::<6>(),
        5 => t.run::<5>(),
        4 => t.run::<4>(),
        3 => t.run::<3>(),
        2 => t.run::<2>(),
        _ => t.run::<1>(),
    }
}

/// Store `NP` positions' two accumulators at `a + 16 j`, `a + 16 j + 8`.
///
/// # Safety
/// AVX; `a` writable at `16 · NP` floats.
#[inline(always)]
pub(super) unsafe fn store16<const NP: usize>(acc: &[[__m256; 2]; NP], a: *mut f32) {
    for (j, v) in acc.iter().enumerate() {
        _mm256_storeu_ps(a.add(j * FMA16_CO), v[0]);
        _mm256_storeu_ps(a.add(j * FMA16_CO + 8), v[1]);
    }
}

/// The output transform of one tile for 8 channels: `Y = Aᵀ M A`, `Aᵀ = [[1, 1, 1, 0], [0, 1, −1, −1]]`, with
/// `M[ξ]` at `m + ξ · ms`; output `(y0 + a, x0 + b)` goes to `stage + ((y0 + a) · ow + x0 + b) · 16` when it lies
/// inside `lim = (rows, ow)`.
///
/// # Safety
/// AVX2; `m + ξ · ms` readable (8 floats) for `ξ < 16`; the stage writable (8 floats) at every position inside
/// `lim`.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn output_tile(
    m: *const f32,
    ms: usize,
    stage: *mut f32,
    ow: usize,
    (y0, x0): (usize, usize),
    lim: (usize, usize),
) {
    let mv: [__m256; 16] = core::array::from_fn(|xi| _mm256_loadu_ps(m.add(xi * ms)));
    let s0: [__m256; 4] =
        core::array::from_fn(|c| _mm256_add_ps(_mm256_add_ps(mv[c], mv[4 + c]), mv[8 + c]));
    let s1: [__m256; 4] =
        core::array::from_fn(|c| _mm256_sub_ps(_mm256_sub_ps(mv[4 + c], mv[8 + c]), mv[12 + c]));
    for (a, s) in [s0, s1].iter().enumerate() {
        let y = [
            _mm256_add_ps(_mm256_add_ps(s[0], s[1]), s[2]),
            _mm256_sub_ps(_mm256_sub_ps(s[1], s[2]), s[3]),
        ];
        for (b, yv) in y.into_iter().enumerate() {
            if y0 + a < lim.0 && x0 + b < lim.1 {
                _mm256_storeu_ps(stage.add(((y0 + a) * ow + x0 + b) * FMA16_CO), yv);
            }
        }
    }
}

/// `out[i · plane + j] = src[j · 16 + i] + bias[i]` for channels `i < 8` and positions `j < n`: 8 positions at a
/// time transposed in registers (`vunpck*ps`, `vshufps`, `vperm2f128`), the rest one by one; the same single
/// `s + bias` per output either way.
///
/// # Safety
/// AVX2; `src + j · 16 + i` readable and `out + i · plane + j` writable for `i < 8`, `j < n`.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn transpose_out8(
    src: *const f32,
    n: usize,
    bias: &[f32; 8],
    out: *mut f32,
    plane: usize,
) {
    let mut j0 = 0;
    while j0 + 8 <= n {
        let r: [__m256; 8] =
            core::array::from_fn(|j| _mm256_loadu_ps(src.add((j0 + j) * FMA16_CO)));
        let t: [__m256; 8] = [
            _mm256_unpacklo_ps(r[0], r[1]),
            _mm256_unpackhi_ps(r[0], r[1]),
            _mm256_unpacklo_ps(r[2], r[3]),
            _mm256_unpackhi_ps(r[2], r[3]),
            _mm256_unpacklo_ps(r[4], r[5]),
            _mm256_unpackhi_ps(r[4], r[5]),
            _mm256_unpacklo_ps(r[6], r[7]),
            _mm256_unpackhi_ps(r[6], r[7]),
        ];
        let s: [__m256; 8] = [
            _mm256_shuffle_ps::<0x44>(t[0], t[2]),
            _mm256_shuffle_ps::<0xEE>(t[0], t[2]),
            _mm256_shuffle_ps::<0x44>(t[1], t[3]),
            _mm256_shuffle_ps::<0xEE>(t[1], t[3]),
            _mm256_shuffle_ps::<0x44>(t[4], t[6]),
            _mm256_shuffle_ps::<0xEE>(t[4], t[6]),
            _mm256_shuffle_ps::<0x44>(t[5], t[7]),
            _mm256_shuffle_ps::<0xEE>(t[5], t[7]),
        ];
        // Channel i's 8 positions: the low halves (channels 0–3) then the high halves (4–7).
        let o: [__m256; 8] = [
            _mm256_permute2f128_ps::<0x20>(s[0], s[4]),
            _mm256_permute2f128_ps::<0x20>(s[1], s[5]),
            _mm256_permute2f128_ps::<0x20>(s[2], s[6]),
            _mm256_permute2f128_ps::<0x20>(s[3], s[7]),
            _mm256_permute2f128_ps::<0x31>(s[0], s[4]),
            _mm256_permute2f128_ps::<0x31>(s[1], s[5]),
            _mm256_permute2f128_ps::<0x31>(s[2], s[6]),
            _mm256_permute2f128_ps::<0x31>(s[3], s[7]),
        ];
        for (i, v) in o.into_iter().enumerate() {
            _mm256_storeu_ps(
                out.add(i * plane + j0),
                _mm256_add_ps(v, _mm256_set1_ps(bias[i])),
            );
        }
        j0 += 8;
    }
    for j in j0..n {
        for (i, b) in bias.iter().enumerate() {
            *out.add(i * plane + j) = *src.add(j * FMA16_CO + i) + b;
        }
    }
}
