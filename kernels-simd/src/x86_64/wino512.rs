//! AVX-512 f32 3×3 stride-1 convolution by Winograd F(2×2, 3×3) (Lavin & Gray, 2016), on weights transformed
//! offline ([`crate::pack::wino16_pack`]): each 2×2 output tile of each output channel is `Aᵀ [Σ_ci U ⊙ V] A`
//! with `V = Bᵀ d B` the 4×4 input tile `d` transformed, so 16 multiplications per input channel give 4 outputs
//! instead of 36. The 16 element-wise products summed over input channels are 16 independent GEMMs
//! `M[ξ] (tiles × cout) = V[ξ] (tiles × cin) · U[ξ] (cin × cout)`, run with **output channels in the lanes** as in
//! [`super::direct512`]: a register tile is `NV` vectors of 16 channels × `NP` tiles (4 × 6 = 24 accumulators), one
//! weight vector load per channel block and one broadcast per tile for each input channel.
//!
//! Per band of tile rows: every input channel's rows are transformed 16 tiles at a time (the 4×4 tiles' columns
//! gathered by `vpermt2ps` from overlapping row loads, the padding masked off them) into `V[ξ][ci][tile]`;
//! then per group of output channels the 16 GEMMs park `M[ξ][tile][channel]`, the output transform turns each tile's
//! 16 vectors into 4 output positions, and [`super::direct512::transpose_out`] writes the `[channel][position]`
//! output with the bias. The transforms use only additions and subtractions (the ½ of `G` is applied offline, in
//! `f64`), so the result differs from a direct convolution's by a few rounding steps: the tier tests hold it to the
//! same `1e-5 · Σ|w·x|` bound as every float convolution.

use core::arch::x86_64::*;
use core::mem::MaybeUninit;

use super::direct512::{dispatch, fma_step, group_vectors, park_load, park_store, RegisterTile};
use super::zeroed_prefix;
use crate::pack::{wino16_len, winograd, FMA16_CO, WINO_NT, WINO_V};
use crate::{Conv2dGeom, Weights};

/// Channels of the widest group (4 vectors).
const GROUP: usize = 4 * FMA16_CO;
/// Parked GEMM results of a band: `16 · WINO_NT · GROUP` floats (128 KiB).
const PARK: usize = 16 * WINO_NT * GROUP;
/// Output positions of a band (`4 · WINO_NT`) × GROUP channels (32 KiB).
const STAGE: usize = 4 * WINO_NT * GROUP;
/// Channels ahead whose input rows the input transform prefetches (one channel's transform is shorter than a
/// miss to L3).
const PF_AHEAD: usize = 4;
/// Floats added to the ξ strides of V and the park (one cache line).
const SKEW: usize = 16;
/// Input channels per pass over a band's tiles: a group's weights of one ξ for them (`WCC · 64` floats, 16 KiB)
/// stay in L1 while every tile of the band reads them; the partial sums are parked between passes.
const WCC: usize = 64;

/// The band geometry: tiles per row, tile rows per band.
#[derive(Clone, Copy)]
pub(super) struct Plan {
    pub tw: usize,
    pub th: usize,
    pub rows: usize,
}

/// The band geometry of a layer [`winograd`] picks (also the AVX2 kernel's, `wino256.rs`); `None` otherwise.
pub(super) fn plan(g: &Conv2dGeom) -> Option<Plan> {
    if !winograd(g) {
        return None;
    }
    let (tw, th) = (g.ow.div_ceil(2), g.oh.div_ceil(2));
    let rows = (WINO_NT / tw).min(WINO_V / (16 * g.cin * tw)).min(th);
    (rows > 0).then_some(Plan { tw, th, rows })
}

/// f32 Winograd convolution on weights packed by [`wino16_pack`](crate::pack::wino16_pack); false (and `out`
/// untouched) if [`winograd`] does not pick the layer or a length does not fit, in which case the caller runs
/// another kernel.
///
/// # Safety
/// The CPU must have AVX-512 F.
#[target_feature(enable = "avx512f")]
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
    // SAFETY: AVX-512 F (caller); `out` holds cout · oh · ow floats (checked), all of which the whole range of
    // tile rows writes.
    conv(g, p, input, packed, bias, out.as_mut_ptr(), (0, p.th));
    true
}

/// [`conv2d_packed`] for the output rows `out.rows()` only (a start on a tile row: even; an end that is even or
/// the last row), which this worker of a split by rows owns; false (nothing written) where the layer or a length
/// does not fit.
///
/// # Safety
/// The CPU must have AVX-512 F.
#[target_feature(enable = "avx512f")]
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
    // SAFETY: AVX-512 F (caller). Tile rows `ty` write output rows `out.rows()` of channels < cout (`tile_rows`),
    // inside the output's cout · oh · ow floats (checked), which are this worker's rows (`RowsOut::as_mut_ptr`).
    conv(g, p, input, packed, bias, out.as_mut_ptr(), ty);
    true
}

/// Whether the packed weights (the [`wino16_len`] layout), input, bias and an output of `out_len` floats hold the
/// layer: the length checks of both Winograd kernels (this one and `wino256.rs`).
pub(super) fn lengths_fit(
    g: &Conv2dGeom,
    input: &[f32],
    packed: &[u8],
    bias: Option<Weights<'_>>,
    out_len: usize,
) -> bool {
    packed.len() == wino16_len(g)
        && input.len() >= g.cin * g.h * g.w
        && out_len >= g.cout * g.oh * g.ow
        && bias.is_none_or(|b| b.len() >= g.cout)
}

/// The tile rows `r0 / 2 .. ceil(r1 / 2)` that write exactly a worker's output rows `r0 .. r1` of an `oh × ow`
/// output: `None` unless `r0` starts a tile row (even), `r1` ends one (even, or the last row) and the rows lie in
/// the output.
pub(super) fn tile_rows(
    g: &Conv2dGeom,
    out: &crate::parallel::RowsOut<'_>,
) -> Option<(usize, usize)> {
    let (r0, r1) = out.rows();
    let ok = out.shape() == (g.oh, g.ow)
        && r0 % 2 == 0
        && r0 < r1
        && r1 <= g.oh
        && (r1 % 2 == 0 || r1 == g.oh);
    ok.then(|| (r0 / 2, r1.div_ceil(2)))
}

/// The body of [`conv2d_packed`] for tile rows `ty.0 .. ty.1` (its own never-inlined frame: about 690 KiB of
/// stack scratch).
///
/// # Safety
/// AVX-512 F; `p` is the layer's [`plan`], every length was checked, `ty.1 <= p.th`, and `out` (channel 0, row 0
/// of a `[cout][oh][ow]` output) is writable at output rows `2 · ty.0 .. min(2 · ty.1, oh)` of every channel.
#[inline(never)]
#[target_feature(enable = "avx512f")]
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
    let park = zeroed_prefix(&mut park_m, 16 * (nt_max * GROUP + SKEW));
    let mut stage_m = MaybeUninit::<[f32; STAGE]>::uninit();
    let stage = zeroed_prefix(&mut stage_m, 2 * p.rows * g.ow * GROUP);
    if vbuf.len() < 16 * (g.cin * nt_max + SKEW)
        || park.len() < 16 * (nt_max * GROUP + SKEW)
        || stage.len() < 2 * p.rows * g.ow * GROUP
    {
        return;
    }
    let ubase = packed.as_ptr() as *const f32;
    let (mut ty0, ty_end) = (ty.0, ty.1.min(p.th));
    while ty0 < ty_end {
        let rows = p.rows.min(ty_end - ty0);
        let nt = rows * p.tw;
        // Strides of ξ in V and in the park, skewed off multiples of 4 KiB: the input transform stores and the
        // output transform loads 16 vectors one ξ apart, which would otherwise share an L1 set (and alias).
        let (vs, ps) = (g.cin * nt + SKEW, nt * GROUP + SKEW);
        // 1. Input transform of every channel into V[ξ][ci][t] (t = row · tw + tx), straight from the input: rows
        // outside the image read as zeros, columns outside it are masked off the loads.
        for ci in 0..g.cin {
            let chan = input.as_ptr().add(ci * g.h * g.w);
            // The rows of the band of the channel PF_AHEAD on, fetched while this one is transformed (each channel's
            // rows lie a plane apart, a stride no hardware prefetcher follows, and come from L2 or L3 once per band).
            if ci + PF_AHEAD < g.cin {
                let next = chan.add(PF_AHEAD * g.h * g.w);
                for sr in 0..2 * rows + 2 {
                    let iy = (2 * ty0 + sr).wrapping_sub(g.pad_t);
                    if iy < g.h {
                        let row = next.add(iy * g.w);
                        for c in (0..g.w).step_by(16) {
                            _mm_prefetch::<_MM_HINT_T0>(row.add(c) as *const i8);
                        }
                        _mm_prefetch::<_MM_HINT_T0>(row.add(g.w - 1) as *const i8);
                    }
                }
            }
            for r in 0..rows {
                let rp: [*const f32; 4] = core::array::from_fn(|i| {
                    let iy = (2 * (ty0 + r) + i).wrapping_sub(g.pad_t);
                    if iy < g.h {
                        chan.add(iy * g.w)
                    } else {
                        core::ptr::null()
                    }
                });
                let mut tx0 = 0;
                while tx0 < p.tw {
                    let n = (p.tw - tx0).min(16);
                    // SAFETY: AVX-512 F (caller). Each non-null `rp[i]` is the start of a row of `w` floats of
                    // channel ci (iy < h, ci < cin; `input` holds cin · h · w floats); `input_tile16` reads only
                    // columns 0 .. w of it. V holds 16 · vs floats and ξ · vs + ci · nt + r · tw + tx0 + n <= that.
                    input_tile16(
                        &rp,
                        (2 * tx0) as isize - g.pad_l as isize,
                        g.w,
                        vbuf.as_mut_ptr().add(ci * nt + r * p.tw + tx0),
                        vs,
                        n,
                    );
                    tx0 += 16;
                }
            }
        }
        // 2. Per group of output channels: 16 GEMMs, output transform, transposed store.
        let mut co0 = 0;
        while co0 < g.cout {
            let nv = group_vectors(g.cout - co0);
            let width = nv * FMA16_CO;
            // Weight streams of a pass (group at c0, value ξ, input channels from ci0).
            let streams = |c0: usize, xi: usize, ci0: usize| -> [*const f32; 4] {
                core::array::from_fn(|v| {
                    ubase.wrapping_add((((c0 / FMA16_CO + v) * 16 + xi) * g.cin + ci0) * FMA16_CO)
                })
            };
            // Near-equal register tiles of at most 6 tiles (32 = 6 + 6 + 5 + 5 + 5 + 5, not ... + 2).
            let blocks = nt.div_ceil(6);
            for xi in 0..16 {
                for ci0 in (0..g.cin).step_by(WCC) {
                    let (cc, first) = (WCC.min(g.cin - ci0), ci0 == 0);
                    let w = streams(co0, xi, ci0);
                    // The next pass's weights, fetched into L1 while this pass computes: register tile b fetches
                    // stream b, one line per input channel (one prefetch per 24 FMAs, spread so the line fill
                    // buffers keep up; with fewer tiles than streams the last streams are not fetched). The layer's
                    // weights (16 · cin · cout floats) come from L3 or DRAM once per band, and a pass would
                    // otherwise open with a few hundred misses in a row.
                    let pf = if ci0 + WCC < g.cin {
                        streams(co0, xi, ci0 + WCC)
                    } else if xi < 15 {
                        streams(co0, xi + 1, 0)
                    } else {
                        streams(co0 + width, 0, 0)
                    };
                    let mut t0 = 0;
                    for b in 0..blocks {
                        let np = (nt - t0) / (blocks - b);
                        let x = vbuf.as_ptr().add(xi * vs + ci0 * nt + t0);
                        let pf = if b < 4 { pf[b] } else { w[0] };
                        let a = park.as_mut_ptr().add(xi * ps + t0 * width);
                        // SAFETY: AVX-512 F. V[ξ][ci][t0 + j] (ci < cin, j < np, t0 + np <= nt) lies in `vbuf`; block
                        // co0 / 16 + v < cout / 16 holds 16 · cin vectors, read at ξ · cin + ci; the park holds
                        // 16 · nt · width floats and (ξ · nt + t0 + j) · width + 16 v + 16 <= that.
                        let t = WinoTile {
                            x,
                            xs: nt,
                            cin: cc,
                            w,
                            a,
                            first,
                            pf,
                        };
                        dispatch(&t, nv, np);
                        t0 += np;
                    }
                }
            }
            // Output transform: tile t's 16 vectors per channel block into its (up to) 4 output positions.
            let oy0 = 2 * ty0;
            let orows = (2 * rows).min(g.oh - oy0);
            for t in 0..nt {
                let (r, tx) = (t / p.tw, t % p.tw);
                for v in 0..nv {
                    // SAFETY: AVX-512 F. The park holds (ξ · nt + t) · width + 16 v + 16 floats for ξ < 16; the
                    // stage holds 2 · rows · ow · width floats, written at positions (2r + a) · ow + 2 tx + b that
                    // are inside the output (checked in `output_tile`).
                    output_tile(
                        park.as_ptr().add(t * width + v * FMA16_CO),
                        ps,
                        stage.as_mut_ptr().add(v * FMA16_CO),
                        width,
                        g.ow,
                        (2 * r, 2 * tx),
                        (orows, g.ow),
                    );
                }
            }
            let n = orows * g.ow;
            for v in 0..nv {
                let c0 = co0 + v * FMA16_CO;
                let mut bv = [0f32; FMA16_CO];
                for (i, b) in bv.iter_mut().enumerate() {
                    *b = bias.map_or(0.0, |bw| bw.get(c0 + i));
                }
                // SAFETY: channels c0 .. c0 + 16 <= cout of `out` hold positions oy0 · ow .. + n, rows oy0 .. oy0 +
                // orows of this band, inside the writable rows (contract); the stage holds n · width floats, read at
                // column 16 v.
                super::direct512::transpose_out(
                    stage.as_ptr().add(v * FMA16_CO),
                    width,
                    n,
                    &bv,
                    out.add(c0 * plane + oy0 * g.ow),
                    plane,
                );
            }
            co0 += width;
        }
        ty0 += rows;
    }
}

/// Transform 16 horizontally adjacent 4×4 input tiles (`n` of them kept) into `V = Bᵀ d B`,
/// `Bᵀ = [[1, 0, −1, 0], [0, 1, 1, 0], [0, −1, 1, 0], [0, 1, 0, −1]]`: tile `j`'s row `i` is row `rows[i]` (zeros
/// when null) at columns `c0 + 2j .. c0 + 2j + 4`, zero outside `0 .. w`; value `ξ` of tile `j` goes to
/// `v + ξ · vs + j`.
///
/// # Safety
/// AVX-512 F; each non-null `rows[i] + c` readable for `0 <= c < w`; `v + ξ · vs + j` writable for `ξ < 16`,
/// `j < n`.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn input_tile16(
    rows: &[*const f32; 4],
    c0: isize,
    w: usize,
    v: *mut f32,
    vs: usize,
    n: usize,
) {
    let even = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
    let odd = _mm512_set_epi32(31, 29, 27, 25, 23, 21, 19, 17, 15, 13, 11, 9, 7, 5, 3, 1);
    // Lanes of a 16-float load at column c that lie inside 0 .. w.
    let mask = |c: isize| -> __mmask16 {
        let lo = (-c).clamp(0, 16) as u32;
        let hi = (w as isize - c).clamp(0, 16) as u32;
        let upto = |k: u32| ((1u32 << k) - 1) as u16;
        upto(hi) & !upto(lo)
    };
    let m: [__mmask16; 4] = [mask(c0), mask(c0 + 16), mask(c0 + 2), mask(c0 + 18)];
    // d[i][c]: row i, column c of each of the 16 tiles (tile j's column c is column c0 + 2j + c).
    let d: [[__m512; 4]; 4] = core::array::from_fn(|i| {
        let row = rows[i];
        if row.is_null() {
            return [_mm512_setzero_ps(); 4];
        }
        // SAFETY (the loads): masked-off lanes are never read (AVX-512 masked loads suppress their faults), and
        // every unmasked lane is a column in 0 .. w of this row; the pointers are formed with wrapping arithmetic.
        let ld = |k: usize, off: isize| _mm512_maskz_loadu_ps(m[k], row.wrapping_offset(c0 + off));
        let (a, b, a2, b2) = (ld(0, 0), ld(1, 16), ld(2, 2), ld(3, 18));
        [
            _mm512_permutex2var_ps(a, even, b),
            _mm512_permutex2var_ps(a, odd, b),
            _mm512_permutex2var_ps(a2, even, b2),
            _mm512_permutex2var_ps(a2, odd, b2),
        ]
    });
    // Bᵀ d (rows), then (Bᵀ d) B (columns).
    let t: [[__m512; 4]; 4] = [
        core::array::from_fn(|c| _mm512_sub_ps(d[0][c], d[2][c])),
        core::array::from_fn(|c| _mm512_add_ps(d[1][c], d[2][c])),
        core::array::from_fn(|c| _mm512_sub_ps(d[2][c], d[1][c])),
        core::array::from_fn(|c| _mm512_sub_ps(d[1][c], d[3][c])),
    ];
    let m = ((1u32 << n.min(16)) - 1) as __mmask16;
    for (r, tr) in t.iter().enumerate() {
        let vr = [
            _mm512_sub_ps(tr[0], tr[2]),
            _mm512_add_ps(tr[1], tr[2]),
            _mm512_sub_ps(tr[2], tr[1]),
            _mm512_sub_ps(tr[1], tr[3]),
        ];
        for (c, x) in vr.into_iter().enumerate() {
            _mm512_mask_storeu_ps(v.add((4 * r + c) * vs), m, x);
        }
    }
}

/// One register tile of a GEMM `M[ξ]`: `NV` vectors of 16 output channels × `NP` tiles, summed over `cin` input
/// channels: `a[j · 16 NV + 16 v] (+)= Σ_ci x[ci · xs + j] · w[v][16 ci ..]`, from zero when `first`, else onto
/// the parked sums; prefetches `pf + 16 ci` (any address: a prefetch never faults).
///
/// Safety of [`RegisterTile::run`]: `x + ci · xs + j` readable for `ci < cin`, `j < NP`; `w[v]` (v < NV) points at
/// `cin` vectors of 16 floats; `a` at `NP · 16 NV` writable floats.
struct WinoTile {
    x: *const f32,
    xs: usize,
    cin: usize,
    w: [*const f32; 4],
    a: *mut f32,
    first: bool,
    pf: *const f32,
}

impl RegisterTile for WinoTile {
    #[inline(always)]
    unsafe fn run<const NV: usize, const NP: usize>(&self) {
        let mut acc = park_load::<NV, NP>(self.a, self.first);
        for ci in 0..self.cin {
            _mm_prefetch::<_MM_HINT_T0>(self.pf.wrapping_add(ci * FMA16_CO) as *const i8);
            fma_step(&mut acc, &self.w, ci * FMA16_CO, self.x.add(ci * self.xs));
        }
        park_store(&acc, self.a);
    }
}

/// The output transform of one tile for 16 channels: `Y = Aᵀ M A`, `Aᵀ = [[1, 1, 1, 0], [0, 1, −1, −1]]`, with
/// `M[ξ]` at `m + ξ · ms`; output `(y0 + a, x0 + b)` goes to `stage + ((y0 + a) · ow + x0 + b) · width` when it lies
/// inside `lim = (rows, ow)`.
///
/// # Safety
/// AVX-512 F; `m + ξ · ms` readable (16 floats) for `ξ < 16`; the stage writable at every position inside `lim`.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn output_tile(
    m: *const f32,
    ms: usize,
    stage: *mut f32,
    width: usize,
    ow: usize,
    (y0, x0): (usize, usize),
    lim: (usize, usize),
) {
    let mv: [__m512; 16] = core::array::from_fn(|xi| _mm512_loadu_ps(m.add(xi * ms)));
    // Aᵀ M: two rows of 4 columns.
    let s0: [__m512; 4] =
        core::array::from_fn(|c| _mm512_add_ps(_mm512_add_ps(mv[c], mv[4 + c]), mv[8 + c]));
    let s1: [__m512; 4] =
        core::array::from_fn(|c| _mm512_sub_ps(_mm512_sub_ps(mv[4 + c], mv[8 + c]), mv[12 + c]));
    for (a, s) in [s0, s1].iter().enumerate() {
        let y = [
            _mm512_add_ps(_mm512_add_ps(s[0], s[1]), s[2]),
            _mm512_sub_ps(_mm512_sub_ps(s[1], s[2]), s[3]),
        ];
        for (b, yv) in y.into_iter().enumerate() {
            if y0 + a < lim.0 && x0 + b < lim.1 {
                _mm512_storeu_ps(stage.add(((y0 + a) * ow + x0 + b) * width), yv);
            }
        }
    }
}
