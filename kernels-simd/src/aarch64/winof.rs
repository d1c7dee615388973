//! NEON `f32` 3×3 stride-1 convolution by Winograd F(2×2, 3×3), for the `neon` and `dotprod` tiers, on weights
//! transformed offline ([`pack::winon_pack`], family [`pack::AARCH64_NEON_F32`]: `U = G g Gᵀ`, computed in `f64` and
//! rounded once, as the x86 family's). Each 2×2 output tile is `Aᵀ [Σ_ci U ⊙ V] A` with `V = Bᵀ d B`: 16
//! multiplications per input channel and tile instead of 36. The transforms use only additions and subtractions,
//! so the result differs from a direct convolution's by a few rounding steps (the tier tests hold it to the
//! `1e-5 · Σ|w·x|` bound of every float convolution).
//!
//! Layout: the lanes hold 4 output tiles. Per band of tile rows, every input channel's rows are copied into a
//! zero-padded row and read as even and odd columns by `ld2`, which gives the 4 columns of 4 tiles as 2 loads; the
//! transform writes `V[ξ][ci][tile]`. Per pair of 4-channel blocks and 8 tiles, the 16 GEMMs run as `fmla` by lane
//! (8 channels × 8 tiles: 16 accumulators, two tile loads and two weight loads per input channel), and the output
//! transform interleaves each tile's two output columns with `zip1`/`zip2` into a stage of output rows, copied out
//! with the bias.

use core::arch::aarch64::*;
use core::mem::MaybeUninit;

use crate::pack::{self, WinoBand as Plan, WINO8_CO, WINO8_NT, WINO_V};
use crate::scratch::zeroed_prefix;
use crate::{Conv2dGeom, Weights};

/// Floats of one zero-padded input row: the columns of `WINO8_NT` tiles (`2 · WINO8_NT + 2`), plus the 8 floats
/// `ld2` reads past a group's first column, rounded up.
const ROWF: usize = 2 * WINO8_NT + 16;
/// Input rows of a band at most (2 per tile row, plus 2), for the narrowest tile rows taken (4 tiles).
const BAND_ROWS: usize = 2 * (WINO8_NT / 4) + 2;
/// Floats of the parked GEMM results for 8 channels and 8 tiles: `[ξ][channel][tile]`.
const PARK: usize = 16 * 8 * 8;
/// Floats of the output stage: `[channel][2 · rows][2 · tw]` for 8 channels, `rows · tw <= WINO8_NT`.
const STAGE: usize = 8 * 4 * WINO8_NT;

/// The band geometry of `g`, where [`pack::wino_neon`] picks the layer: 16 floats per input channel and tile, in
/// [`WINO_V`].
fn plan(g: &Conv2dGeom) -> Option<Plan> {
    pack::wino_band(g, 16 * g.cin, WINO_V).filter(|_| pack::wino_neon(g))
}

/// Float convolution on weights packed for family [`pack::AARCH64_NEON_F32`]: Winograd where [`pack::wino_neon`]
/// picks the layer and the packed length and every other length fit, else the NEON direct kernel on the canonical
/// weights `w`.
pub(crate) fn conv2d_packed(
    g: &Conv2dGeom,
    input: &[f32],
    w: Weights<'_>,
    packed: &[u8],
    bias: Option<Weights<'_>>,
    out: &mut [f32],
) {
    let fits = packed.len() == pack::winon_len(g)
        && input.len() >= g.cin * g.h * g.w
        && out.len() >= g.cout * g.oh * g.ow
        && bias.is_none_or(|b| b.len() >= g.cout);
    match plan(g).filter(|_| fits) {
        Some(p) => conv(g, p, input, packed, bias, out),
        None => super::neon::conv2d(g, input, w, bias, out),
    }
}

/// The body of [`conv2d_packed`] (its own never-inlined frame: up to 512 KiB of stack scratch, of which a layer
/// zeroes what it uses). `p` is the layer's [`plan`]; every length was checked by the caller.
#[inline(never)]
fn conv(
    g: &Conv2dGeom,
    p: Plan,
    input: &[f32],
    packed: &[u8],
    bias: Option<Weights<'_>>,
    out: &mut [f32],
) {
    let plane_in = g.h * g.w;
    let plane = g.oh * g.ow;
    let ntp_max = (p.rows * p.tw).next_multiple_of(8);
    let mut v_m = MaybeUninit::<[f32; WINO_V]>::uninit();
    let vbuf = zeroed_prefix(&mut v_m, 16 * g.cin * ntp_max);
    let mut rowf = [[0f32; ROWF]; BAND_ROWS];
    let mut park = [0f32; PARK];
    let mut stage = [0f32; STAGE];
    let sw = 2 * p.tw;
    // Floats of a padded row the tiles read: 2 · tw rounded up to 8 tile columns, + 2 + the 8 of `ld2`.
    let rowlen = 2 * p.tw.next_multiple_of(4) + 10;
    if vbuf.len() < 16 * g.cin * ntp_max
        || 2 * p.rows + 2 > BAND_ROWS
        || rowlen > ROWF
        || 2 * p.rows * sw * 8 > STAGE
    {
        return;
    }
    let nblocks = g.cout.div_ceil(WINO8_CO);
    let block_bytes = 16 * g.cin * WINO8_CO * 4;
    let mut ty0 = 0;
    while ty0 < p.th {
        let rows = p.rows.min(p.th - ty0);
        let nt = rows * p.tw;
        let ntp = nt.next_multiple_of(8);
        let vs = g.cin * ntp;
        // 1. Input transform of every channel into V[ξ][ci][t] (t = row · tw + tx), 4 tiles at a time.
        for ci in 0..g.cin {
            for (i, rf) in rowf.iter_mut().enumerate().take(2 * rows + 2) {
                rf[..rowlen].fill(0.0);
                let iy = (2 * ty0 + i).wrapping_sub(g.pad_t);
                if iy < g.h {
                    let at = ci * plane_in + iy * g.w;
                    let n = g.w.min(rowlen - g.pad_l);
                    rf[g.pad_l..g.pad_l + n].copy_from_slice(&input[at..at + n]);
                }
            }
            for r in 0..rows {
                for tx0 in (0..p.tw).step_by(4) {
                    let at = ci * ntp + r * p.tw + tx0;
                    let v = transform4(&rowf[2 * r..2 * r + 4], 2 * tx0);
                    for (xi, vx) in v.iter().enumerate() {
                        let d = &mut vbuf[xi * vs + at..xi * vs + at + 4];
                        // SAFETY: NEON is part of the aarch64 baseline; `d` holds 4 floats.
                        unsafe { vst1q_f32(d.as_mut_ptr(), *vx) };
                    }
                }
            }
        }
        // 2. Per pair of 4-channel blocks: for every 8 tiles the 16 GEMMs and their output transform into the
        // stage; then the band's output rows of those channels, with the bias.
        let oy0 = 2 * ty0;
        let orows = (2 * rows).min(g.oh - oy0);
        for b0 in (0..nblocks).step_by(2) {
            let nb = (nblocks - b0).min(2);
            let u0 = &packed[b0 * block_bytes..(b0 + 1) * block_bytes];
            let u1 = &packed[(b0 + nb - 1) * block_bytes..(b0 + nb) * block_bytes];
            for t0 in (0..ntp).step_by(8) {
                for xi in 0..16 {
                    let vx = &vbuf[xi * vs + t0..(xi + 1) * vs];
                    let at = xi * g.cin * WINO8_CO * 4;
                    let end = (xi + 1) * g.cin * WINO8_CO * 4;
                    gemm(
                        vx,
                        ntp,
                        &u0[at..end],
                        &u1[at..end],
                        &mut park[xi * 64..xi * 64 + 64],
                    );
                }
                for c in 0..4 * nb {
                    output_tiles8(
                        &park,
                        c,
                        &mut stage[c * 2 * rows * sw..(c + 1) * 2 * rows * sw],
                        sw,
                        t0,
                        nt,
                        p.tw,
                    );
                }
            }
            for c in 0..(4 * nb).min(g.cout - b0 * WINO8_CO) {
                let co = b0 * WINO8_CO + c;
                let bv = bias.map_or(0.0, |b| b.get(co));
                for a in 0..orows {
                    let src = &stage[(c * 2 * rows + a) * sw..(c * 2 * rows + a) * sw + g.ow];
                    let base = co * plane + (oy0 + a) * g.ow;
                    for (o, &s) in out[base..base + g.ow].iter_mut().zip(src) {
                        *o = s + bv;
                    }
                }
            }
        }
        ty0 += rows;
    }
}

/// `V = Bᵀ d B` of 4 horizontally adjacent tiles whose first column is padded column `x0` of the 4 rows `rows`
/// (tile `j`'s column `c` is `x0 + 2j + c`): `ld2` at `x0` gives columns 0 and 1 of the 4 tiles, at `x0 + 2`
/// columns 2 and 3; `Bᵀ = [[1, 0, −1, 0], [0, 1, 1, 0], [0, −1, 1, 0], [0, 1, 0, −1]]`, `V[4r + c]`.
#[inline(always)]
fn transform4(rows: &[[f32; ROWF]], x0: usize) -> [float32x4_t; 16] {
    // SAFETY: NEON baseline; each row slice holds 10 floats from x0, and `ld2` reads 8 from its start and 8 from
    // float 2.
    unsafe {
        let zero = vdupq_n_f32(0.0);
        let mut d = [[zero; 4]; 4];
        for (i, di) in d.iter_mut().enumerate() {
            let row = &rows[i][x0..x0 + 10];
            let a = vld2q_f32(row.as_ptr());
            let b = vld2q_f32(row.as_ptr().add(2));
            *di = [a.0, a.1, b.0, b.1];
        }
        let mut t = [[zero; 4]; 4];
        for c in 0..4 {
            t[0][c] = vsubq_f32(d[0][c], d[2][c]);
            t[1][c] = vaddq_f32(d[1][c], d[2][c]);
            t[2][c] = vsubq_f32(d[2][c], d[1][c]);
            t[3][c] = vsubq_f32(d[1][c], d[3][c]);
        }
        let mut v = [zero; 16];
        for (r, tr) in t.iter().enumerate() {
            v[4 * r] = vsubq_f32(tr[0], tr[2]);
            v[4 * r + 1] = vaddq_f32(tr[1], tr[2]);
            v[4 * r + 2] = vsubq_f32(tr[2], tr[1]);
            v[4 * r + 3] = vsubq_f32(tr[1], tr[3]);
        }
        v
    }
}

/// One register tile of the GEMM `M[ξ]` for up to 8 channels (two 4-channel blocks) × 8 tiles:
/// `park[8 c + l] = Σ_ci V[ci][l] · U[ci][c]`, with `V[ci]` the 8 floats at `v[ci · vs ..]` and `U[ci][c]` the float
/// at bytes `(ci · 4 + c) · 4` of `u0` (channels 0–3) and `u1` (4–7; the same block again where there is only one,
/// its sums unused).
#[inline(always)]
fn gemm(v: &[f32], vs: usize, u0: &[u8], u1: &[u8], park: &mut [f32]) {
    let n = u0.len().min(u1.len()) / (WINO8_CO * 4);
    if park.len() < 64 || n == 0 || v.len() < (n - 1) * vs + 8 {
        return;
    }
    // SAFETY: NEON baseline. Input channel ci < n reads v[ci · vs .. + 8] (inside `v`: checked above) and 16 bytes
    // of u0 and of u1 at ci · 16 (n · 16 <= their lengths; byte loads, so any alignment); the park holds 64 floats.
    unsafe {
        let zero = vdupq_n_f32(0.0);
        let mut acc = [[zero; 2]; 8];
        let (mut pv, mut p0, mut p1) = (v.as_ptr(), u0.as_ptr(), u1.as_ptr());
        for _ in 0..n {
            let x0 = vld1q_f32(pv);
            let x1 = vld1q_f32(pv.add(4));
            let w0 = vreinterpretq_f32_u8(vld1q_u8(p0));
            let w1 = vreinterpretq_f32_u8(vld1q_u8(p1));
            acc[0][0] = vfmaq_laneq_f32::<0>(acc[0][0], x0, w0);
            acc[0][1] = vfmaq_laneq_f32::<0>(acc[0][1], x1, w0);
            acc[1][0] = vfmaq_laneq_f32::<1>(acc[1][0], x0, w0);
            acc[1][1] = vfmaq_laneq_f32::<1>(acc[1][1], x1, w0);
            acc[2][0] = vfmaq_laneq_f32::<2>(acc[2][0], x0, w0);
            acc[2][1] = vfmaq_laneq_f32::<2>(acc[2][1], x1, w0);
            acc[3][0] = vfmaq_laneq_f32::<3>(acc[3][0], x0, w0);
            acc[3][1] = vfmaq_laneq_f32::<3>(acc[3][1], x1, w0);
            acc[4][0] = vfmaq_laneq_f32::<0>(acc[4][0], x0, w1);
            acc[4][1] = vfmaq_laneq_f32::<0>(acc[4][1], x1, w1);
            acc[5][0] = vfmaq_laneq_f32::<1>(acc[5][0], x0, w1);
            acc[5][1] = vfmaq_laneq_f32::<1>(acc[5][1], x1, w1);
            acc[6][0] = vfmaq_laneq_f32::<2>(acc[6][0], x0, w1);
            acc[6][1] = vfmaq_laneq_f32::<2>(acc[6][1], x1, w1);
            acc[7][0] = vfmaq_laneq_f32::<3>(acc[7][0], x0, w1);
            acc[7][1] = vfmaq_laneq_f32::<3>(acc[7][1], x1, w1);
            pv = pv.add(vs);
            p0 = p0.add(16);
            p1 = p1.add(16);
        }
        for (c, a) in acc.iter().enumerate() {
            vst1q_f32(park.as_mut_ptr().add(8 * c), a[0]);
            vst1q_f32(park.as_mut_ptr().add(8 * c + 4), a[1]);
        }
    }
}

/// The output transform of 8 tiles `t0 .. t0 + 8` of channel `c`: `Y = Aᵀ M A`, `Aᵀ = [[1, 1, 1, 0], [0, 1, −1,
/// −1]]`, with `M[ξ]` at `park[64 ξ + 8 c ..]`; tile `t < nt` (row `t / tw`, column `t % tw`) writes its 2×2 outputs
/// to `stage` rows `2 (t / tw) + a`, columns `2 (t % tw) + b` (`sw` floats per row), 4 tiles (8 columns) per store
/// pair (`tw` is a multiple of 4).
#[inline(always)]
fn output_tiles8(
    park: &[f32],
    c: usize,
    stage: &mut [f32],
    sw: usize,
    t0: usize,
    nt: usize,
    tw: usize,
) {
    if park.len() < 16 * 64 || c >= 8 {
        return;
    }
    for h in 0..2 {
        let t = t0 + 4 * h;
        if t >= nt {
            continue;
        }
        let (r, tx) = (t / tw, t % tw);
        // SAFETY: NEON baseline; park floats 64 ξ + 8 c + 4 h + 4 <= 16 · 64 (c < 8: checked); the stage stores go
        // through the bounds-checked slice below.
        unsafe {
            let mut m = [vdupq_n_f32(0.0); 16];
            for (xi, mx) in m.iter_mut().enumerate() {
                *mx = vld1q_f32(park.as_ptr().add(64 * xi + 8 * c + 4 * h));
            }
            let mut s = [[vdupq_n_f32(0.0); 4]; 2];
            for j in 0..4 {
                s[0][j] = vaddq_f32(vaddq_f32(m[j], m[4 + j]), m[8 + j]);
                s[1][j] = vsubq_f32(vsubq_f32(m[4 + j], m[8 + j]), m[12 + j]);
            }
            for (a, sa) in s.iter().enumerate() {
                let y0 = vaddq_f32(vaddq_f32(sa[0], sa[1]), sa[2]);
                let y1 = vsubq_f32(vsubq_f32(sa[1], sa[2]), sa[3]);
                let at = (2 * r + a) * sw + 2 * tx;
                let d = &mut stage[at..at + 8];
                vst1q_f32(d.as_mut_ptr(), vzip1q_f32(y0, y1));
                vst1q_f32(d.as_mut_ptr().add(4), vzip2q_f32(y0, y1));
            }
        }
    }
}
