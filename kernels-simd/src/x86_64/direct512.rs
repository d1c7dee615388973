//! AVX-512 f32 convolution with **output channels in the vector lanes** (the layout oneDNN and ONNX Runtime's
//! NCHWc kernels use), on weights packed offline in the [`crate::pack::fma16_pack`] layout.
//!
//! The input is laid out per band exactly as for the implicit GEMM ([`super::bands`]: zero-padded rows, phase
//! planes for stride 2), so output position `f = dy · wph + ox` reads tap `t` at the fixed offset `off[t]`. A
//! register tile is `NV` vectors of 16 output channels × `NP` consecutive output positions of one row
//! (4 × 6 = 24 accumulators for 64-channel groups): per (input channel, tap) it loads `NV` weight vectors and
//! broadcasts `NP` input values, 10 loads per 24 FMAs, and no lane is ever spent on a padding column, whatever
//! the image width (the position-in-lanes GEMM computes `wph − ow` extra columns per row and rounds bands up to 32
//! positions: 20 % waste at 8×8, 45 % at 4×4).
//!
//! Loop order, for the cache: per band, per group of output channels, per chunk of [`CC`] input channels (whose
//! weights, `CC · k² · 64` floats = 18 KiB, stay in L1), every row and position tile of the band; partial sums are
//! parked per position (`acc[position][channel]`) between chunks, and transposed into the `[channel][position]`
//! output with the bias at the end. Every output's sum is the same chain of FMAs in the same order (input channel,
//! then tap) as [`super::gemm512`]'s, so the two kernels give the same bits.

use core::arch::x86_64::*;

use core::mem::MaybeUninit;

use super::bands::{Bands, KMAX};
use super::zeroed_prefix;
use crate::pack::{fma16_len, FMA16_CO};
use crate::{Conv2dGeom, Weights};

/// Input channels per chunk at 3×3 (weights of a 64-channel group: `CC · 9 · 64 · 4` bytes = 18 KiB).
const CC: usize = 8;
/// Input tile budget in floats (as [`super::gemm512`]: 512 KiB of stack, host tiers only).
const TILE_W: usize = 128 * 1024;
/// Flat positions per band (as [`super::gemm512`]).
const FMAX: usize = 2048;
/// Output positions of a band whose partial sums are parked (`ACC_P · 64` floats = 256 KiB).
const ACC_P: usize = 1024;
/// Channels of the widest group.
const GROUP: usize = 4 * FMA16_CO;

/// Whether [`conv2d_packed`] takes this layer (with weights packed as [`fma16_pack`](crate::pack::fma16_pack)):
/// output channels a multiple of 16, stride 1–2, kernel side ≤ 7, a band of at least one row that fits.
pub(super) fn takes(g: &Conv2dGeom) -> bool {
    g.cout > 0 && g.cout.is_multiple_of(FMA16_CO) && g.ow <= ACC_P && layout(g).is_some()
}

/// The band layout (input channels as units), rows capped so a band's positions fit the parking buffer.
fn layout(g: &Conv2dGeom) -> Option<Bands> {
    if !(1..=2).contains(&g.stride) || !(1..=KMAX).contains(&g.k) || g.ow == 0 {
        return None;
    }
    let l = Bands::fit(g, g.cin, TILE_W, FMAX)?;
    let rows = l.rows.min(ACC_P / g.ow);
    (rows > 0).then_some(Bands { rows, ..l })
}

/// f32 convolution on offline-packed weights; false (and `out` untouched) if the layer or a length does not fit,
/// in which case the caller runs another kernel.
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
    let Some(l) = layout(g) else { return false };
    if !takes(g)
        || packed.len() != fma16_len(g)
        || input.len() < g.cin * g.h * g.w
        || out.len() < g.cout * g.oh * g.ow
        || bias.is_some_and(|b| b.len() < g.cout)
    {
        return false;
    }
    conv(g, &l, input, packed, bias, out);
    true
}

/// The body of [`conv2d_packed`] (its own never-inlined frame: about 768 KiB of stack scratch).
///
/// # Safety
/// AVX-512 F; the layer passed [`takes`], `l` is its [`layout`], and every length was checked.
#[inline(never)]
#[target_feature(enable = "avx512f")]
unsafe fn conv(
    g: &Conv2dGeom,
    l: &Bands,
    input: &[f32],
    packed: &[u8],
    bias: Option<Weights<'_>>,
    out: &mut [f32],
) {
    let l = *l;
    let kk = g.k * g.k;
    let plane = g.oh * g.ow;
    let offs = l.offsets();
    let off = &offs[..kk];
    let cs = l.stride();
    let per = g.cin * kk;
    let mut tile_m = MaybeUninit::<[f32; TILE_W]>::uninit();
    let tile = zeroed_prefix(&mut tile_m, g.cin * cs);
    let mut acc_m = MaybeUninit::<[f32; ACC_P * GROUP]>::uninit();
    // Parked sums of a band (written before they are read: the first chunk starts from zero).
    let acc = zeroed_prefix(&mut acc_m, l.rows * g.ow * GROUP);
    if tile.len() < g.cin * cs || acc.len() < l.rows * g.ow * GROUP {
        return;
    }
    let wbase = packed.as_ptr() as *const f32;
    // Input channels per chunk: CC at 3×3, more for smaller kernels (a 1×1 chunk of 8 would reload its
    // accumulators every 8 FMAs per vector), keeping a chunk's weights near CC · 9 vectors per group.
    let ccs = (CC * 9 / kk).max(CC);
    let mut oy0 = 0;
    while oy0 < g.oh {
        let r = l.rows.min(g.oh - oy0);
        super::gemm512::fill_tile(g, &l, input, oy0, tile);
        let mut co0 = 0;
        while co0 < g.cout {
            // 64-channel groups while 64 remain, then 32, then 16.
            let nv = group_vectors(g.cout - co0);
            let width = nv * FMA16_CO;
            let np_max = if nv == 4 { 6 } else { 12 };
            for ci0 in (0..g.cin).step_by(ccs) {
                let cc = ccs.min(g.cin - ci0);
                let first = ci0 == 0;
                // Weight vectors of the group's blocks at input channel ci0.
                let mut w = [wbase; 4];
                for (v, wv) in w.iter_mut().enumerate().take(nv) {
                    *wv = wbase.add(((co0 / FMA16_CO + v) * per + ci0 * kk) * FMA16_CO);
                }
                // The next chunk's weight vectors (nv streams of `lines` 64-byte lines), fetched a few per tile
                // while this chunk computes: in a whole U-Net every layer's weights come from DRAM, and a chunk
                // would otherwise open with a few hundred misses in a row.
                let tiles = g.ow.div_ceil(np_max);
                let lines = ccs.min(g.cin.saturating_sub(ci0 + cc)) * kk;
                let per_call = (nv * lines).div_ceil(r * tiles);
                let (mut pf, mut pv, mut pl) = (0, 0, 0);
                for dy in 0..r {
                    // The row's positions in near-equal tiles of at most np_max.
                    let mut ox = 0;
                    for i in 0..tiles {
                        for _ in 0..per_call.min(nv * lines - pf) {
                            // Stream pv, line pl (counters, not a division per prefetch).
                            let at = w[pv].wrapping_add((cc * kk + pl) * FMA16_CO) as *const i8;
                            _mm_prefetch::<_MM_HINT_T0>(at);
                            pf += 1;
                            pl += 1;
                            if pl == lines {
                                (pv, pl) = (pv + 1, 0);
                            }
                        }
                        let np = (g.ow - ox) / (tiles - i);
                        let x = tile.as_ptr().add(ci0 * cs + dy * l.wph + ox);
                        let a = acc.as_mut_ptr().add((dy * g.ow + ox) * width);
                        // SAFETY: AVX-512 F (caller). Channels ci0 .. ci0 + cc lie in `tile` (cin · cs floats);
                        // position dy · wph + ox + j (j < np, ox + j < ow) plus any tap offset stays inside its
                        // channel's region ([`Bands`]); block co0 / 16 + v < cout / 16 holds per · 16 floats, read
                        // from (ci0 + cc) · kk · 16 on; `a` has np · width of the ACC_P · 64 floats (r · ow ≤ ACC_P).
                        let t = DirectTile {
                            x,
                            cs,
                            cc,
                            off,
                            w,
                            a,
                            first,
                        };
                        dispatch(&t, nv, np);
                        ox += np;
                    }
                }
            }
            // Transpose the parked sums into the [channel][position] output, adding the bias, 16 × 16 at a time.
            let n = r * g.ow;
            for v in 0..nv {
                let c0 = co0 + v * FMA16_CO;
                let mut bv = [0f32; FMA16_CO];
                for (i, b) in bv.iter_mut().enumerate() {
                    *b = bias.map_or(0.0, |bw| bw.get(c0 + i));
                }
                let base = c0 * plane + oy0 * g.ow;
                // SAFETY: channels c0 .. c0 + 16 <= cout of `out` (cout · plane floats, checked by the caller)
                // hold positions oy0 · ow .. + n <= plane; `acc` holds n · width floats, read at column v · 16.
                transpose_out(
                    acc.as_ptr().add(v * FMA16_CO),
                    width,
                    n,
                    &bv,
                    out.as_mut_ptr().add(base),
                    plane,
                );
            }
            co0 += width;
        }
        oy0 += r;
    }
}

/// `NP` rows of `NV` accumulator vectors (16 output channels each) of a register tile.
pub(super) type Acc<const NV: usize, const NP: usize> = [[__m512; NV]; NP];

/// A register tile's accumulators: zero when `first`, else the parked sums `a[j · 16 NV + 16 v]`.
///
/// # Safety
/// AVX-512 F; unless `first`, `a` points at `NP · 16 NV` readable floats.
#[inline(always)]
pub(super) unsafe fn park_load<const NV: usize, const NP: usize>(
    a: *const f32,
    first: bool,
) -> Acc<NV, NP> {
    let mut acc = [[_mm512_setzero_ps(); NV]; NP];
    if !first {
        for (j, aj) in acc.iter_mut().enumerate() {
            for (v, av) in aj.iter_mut().enumerate() {
                *av = _mm512_loadu_ps(a.add((j * NV + v) * FMA16_CO));
            }
        }
    }
    acc
}

/// Park a register tile's accumulators at `a[j · 16 NV + 16 v]`.
///
/// # Safety
/// AVX-512 F; `a` points at `NP · 16 NV` writable floats.
#[inline(always)]
pub(super) unsafe fn park_store<const NV: usize, const NP: usize>(acc: &Acc<NV, NP>, a: *mut f32) {
    for (j, aj) in acc.iter().enumerate() {
        for (v, av) in aj.iter().enumerate() {
            _mm512_storeu_ps(a.add((j * NV + v) * FMA16_CO), *av);
        }
    }
}

/// One step of a register tile: the weight vectors `w[v] + wo` (v < NV) times the broadcast inputs `x[j]`
/// (j < NP), added to the accumulators: 24 FMAs for 4 loads and 6 broadcasts at 4 × 6.
///
/// # Safety
/// AVX-512 F; `w[v] + wo .. + 16` readable for `v < NV`, `x + j` for `j < NP`.
#[inline(always)]
pub(super) unsafe fn fma_step<const NV: usize, const NP: usize>(
    acc: &mut Acc<NV, NP>,
    w: &[*const f32; 4],
    wo: usize,
    x: *const f32,
) {
    let mut wv = [_mm512_setzero_ps(); NV];
    for (v, wvv) in wv.iter_mut().enumerate() {
        *wvv = _mm512_loadu_ps(w[v].add(wo));
    }
    for (j, aj) in acc.iter_mut().enumerate() {
        let xv = _mm512_set1_ps(*x.add(j));
        for (av, wvv) in aj.iter_mut().zip(&wv) {
            *av = _mm512_fmadd_ps(xv, *wvv, *av);
        }
    }
}

/// Vectors of 16 channels in the group starting with `rest` channels left: 64-channel groups while 64 remain,
/// then 32, then 16.
pub(super) fn group_vectors(rest: usize) -> usize {
    match rest / FMA16_CO {
        0 | 1 => 1,
        2 | 3 => 2,
        _ => 4,
    }
}

/// The body of one register tile, run by [`dispatch`] with the tile's shape as constants.
pub(super) trait RegisterTile {
    /// Run the tile with `NV` vectors of 16 output channels × `NP` positions.
    ///
    /// # Safety
    /// AVX-512 F, and the implementor's own conditions for this shape.
    unsafe fn run<const NV: usize, const NP: usize>(&self);
}

/// Run `t` as an `nv × np` register tile: `nv` of 4 (or more), 2 (or 3) or 1 vectors of 16 channels, `np`
/// positions clamped to 1 ..= 6 at 4 vectors and 1 ..= 12 below (24 accumulators at most).
///
/// # Safety
/// As [`RegisterTile::run`] for the shape it picks.
#[inline(always)]
pub(super) unsafe fn dispatch<T: RegisterTile>(t: &T, nv: usize, np: usize) {
    match (nv, np) {
        (4.., 6..) => t.run::<4, 6>(),
        (4.., 5) => t.run::<4, 5>(),
        (4.., 4) => t.run::<4, 4>(),
        (4.., 3) => t.run::<4, 3>(),
        (4.., 2) => t.run::<4, 2>(),
        (4.., _) => t.run::<4, 1>(),
        (2 | 3, 12..) => t.run::<2, 12>(),
        (2 | 3, 11) => t.run::<2, 11>(),
        (2 | 3, 10) => t.run::<2, 10>(),
        (2 | 3, 9) => t.run::<2, 9>(),
        (2 | 3, 8) => t.run::<2, 8>(),
        (2 | 3, 7) => t.run::<2, 7>(),
        (2 | 3, 6) => t.run::<2, 6>(),
        (2 | 3, 5) => t.run::<2, 5>(),
        (2 | 3, 4) => t.run::<2, 4>(),
        (2 | 3, 3) => t.run::<2, 3>(),
        (2 | 3, 2) => t.run::<2, 2>(),
        (2 | 3, _) => t.run::<2, 1>(),
        (_, 12..) => t.run::<1, 12>(),
        (_, 11) => t.run::<1, 11>(),
        (_, 10) => t.run::<1, 10>(),
        (_, 9) => t.run::<1, 9>(),
        (_, 8) => t.run::<1, 8>(),
        (_, 7) => t.run::<1, 7>(),
        (_, 6) => t.run::<1, 6>(),
        (_, 5) => t.run::<1, 5>(),
        (_, 4) => t.run::<1, 4>(),
        (_, 3) => t.run::<1, 3>(),
        (_, 2) => t.run::<1, 2>(),
        (_, _) => t.run::<1, 1>(),
    }
}

/// One register tile of this kernel: `NV` vectors of 16 output channels × `NP` positions `x[0 .. NP]`, over `cc`
/// input channels (`cs` floats apart) and every tap, starting from zero (`first`) or from the parked sums
/// `a[j · 16 NV + 16 v]`, which it leaves there.
///
/// Safety of [`RegisterTile::run`]: for every channel `ci < cc`, tap `t` and `j < NP`, `x + ci · cs + off[t] + j`
/// is readable; `w[v]` (v < NV) points at `cc · taps` vectors of 16 floats; `a` at `NP · 16 NV` floats.
struct DirectTile<'a> {
    x: *const f32,
    cs: usize,
    cc: usize,
    off: &'a [usize],
    w: [*const f32; 4],
    a: *mut f32,
    first: bool,
}

impl RegisterTile for DirectTile<'_> {
    #[inline(always)]
    unsafe fn run<const NV: usize, const NP: usize>(&self) {
        let taps = self.off.len();
        let mut acc = park_load::<NV, NP>(self.a, self.first);
        for ci in 0..self.cc {
            let xc = self.x.add(ci * self.cs);
            for (t, &o) in self.off.iter().enumerate() {
                fma_step(&mut acc, &self.w, (ci * taps + t) * FMA16_CO, xc.add(o));
            }
        }
        park_store(&acc, self.a);
    }
}

/// `out[i · plane + j] = src[j · width + i] + bias[i]` for channels `i < 16` and positions `j < n`: 16 positions
/// at a time, their 16-channel rows transposed in registers by 4 stages of `vpermt2ps` (rows `i` and `i + b`
/// exchange blocks of `b` lanes, `b` = 8, 4, 2, 1), then one add and one (masked) store per channel. The same single
/// `s + bias` per output as a scalar loop, so the same bits.
///
/// # Safety
/// AVX-512 F; `src + j · width + i` readable and `out + i · plane + j` writable for `i < 16`, `j < n`.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn transpose_out(
    src: *const f32,
    width: usize,
    n: usize,
    bias: &[f32; FMA16_CO],
    out: *mut f32,
    plane: usize,
) {
    // Lane indices of each stage: `lo` takes lane l from row i (< 16) or row i + b (16 +), `hi` for row i + b.
    let mut idx = [[[0i32; 16]; 2]; 4];
    for (ix, b) in idx.iter_mut().zip([8usize, 4, 2, 1]) {
        let [ilo, ihi] = ix;
        for (l, (lo, hi)) in ilo.iter_mut().zip(ihi.iter_mut()).enumerate() {
            let (base, m) = (l - l % (2 * b), l % (2 * b));
            (*lo, *hi) = if m < b {
                ((base + m) as i32, (base + b + m) as i32)
            } else {
                ((16 + base + m - b) as i32, (16 + base + m) as i32)
            };
        }
    }
    let iv: [[__m512i; 2]; 4] = core::array::from_fn(|st| {
        core::array::from_fn(|h| _mm512_loadu_si512(idx[st][h].as_ptr() as *const __m512i))
    });
    let bv = _mm512_loadu_ps(bias.as_ptr());
    let mut j0 = 0;
    while j0 < n {
        let m = (n - j0).min(16);
        let mut rows = [_mm512_setzero_ps(); 16];
        for (j, row) in rows.iter_mut().enumerate().take(m) {
            *row = _mm512_loadu_ps(src.add((j0 + j) * width));
        }
        for (st, b) in [8usize, 4, 2, 1].into_iter().enumerate() {
            for i in 0..16 {
                if (i / b) % 2 == 0 {
                    let (a, c) = (rows[i], rows[i + b]);
                    rows[i] = _mm512_permutex2var_ps(a, iv[st][0], c);
                    rows[i + b] = _mm512_permutex2var_ps(a, iv[st][1], c);
                }
            }
        }
        // Row i is channel i now; its bias is lane i of `bv`.
        let mask = ((1u32 << m) - 1) as __mmask16;
        for (i, row) in rows.iter().enumerate() {
            let bi = _mm512_permutexvar_ps(_mm512_set1_epi32(i as i32), bv);
            _mm512_mask_storeu_ps(out.add(i * plane + j0), mask, _mm512_add_ps(*row, bi));
        }
        j0 += 16;
    }
}
