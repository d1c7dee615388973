//! NEON int8 3×3 stride-1 convolution by **exact integer** Winograd F(2×2, 3×3), for the `neon` tier (ARMv8.0
//! cores without `sdot`, e.g. the Cortex-A53), on weights transformed offline ([`pack::wino8n_pack`], family
//! [`pack::AARCH64_NEON_WINO8`]). The arithmetic is the AVX2 kernel's (`x86_64/wino8.rs`): `U = (2G) g (2G)ᵀ` and
//! `V = Bᵀ d B` are integers that fit `i16` (`|U| ≤ 9 · 128`, `|V| ≤ 4 · 128`), `smlal` multiplies them exactly
//! into `i32`, the sums and the output transform wrap modulo 2³² at worst while the true result, 4 × the
//! convolution's integer sum, fits `i32` ([`pack::WINO8_MAX_CIN`]), so an arithmetic shift by 2 gives the direct
//! sum exactly and the generic epilogue makes the output **bit-identical** to [`crate::quant::conv2d_i8`], with
//! 16 multiplications per input channel and 2×2 tile instead of 36.
//!
//! Layout: the vector lanes hold 8 output tiles (`i16`). Per band of tile rows, every input channel's rows are
//! copied into a zero-padded byte row and split into even and odd columns by `ld2`, which gives the 4 columns of 8
//! tiles as 4 loads; the transform writes `V[ξ][ci][tile]`. Per pair of 4-channel blocks and 8 tiles, the 16 GEMMs
//! `M[ξ] = Σ_ci V[ξ][ci] · U[ξ][ci]` run as `smlal`/`smlal2` by lane (8 channels × 8 tiles: 16 accumulators, one
//! tile load and two weight loads per input channel), separately for the two input branches of a concatenation;
//! the output transform interleaves each tile's two output columns with `zip1`/`zip2` into output rows, which the
//! NEON epilogue ([`super::rows::store_i8_row`]) requantizes.

use core::arch::aarch64::*;

use super::rows::store_i8_row;
use crate::pack::{self, WinoBand as Plan, WINO8_CO, WINO8_NT, WINO8_V};
use crate::quant::{ActQ, ConvEpilogue, QOut};
use crate::{Conv2dGeom, Weights};

/// `i16` values of the transformed input of one band (256 KiB, the AVX2 kernel's budget: [`pack::wino8`] keeps a
/// tile row within it).
const VBUF: usize = 2 * WINO8_V;
/// Bytes of one zero-padded input row: the columns of `WINO8_NT` tiles (`2 · WINO8_NT + 2`), rounded up, plus the
/// 16 bytes `ld2` reads past a group's first column.
const ROWB: usize = 2 * WINO8_NT + 32;
/// Input rows of a band at most (2 per tile row, plus 2), for the narrowest tile rows taken (4 tiles).
const BAND_ROWS: usize = 2 * (WINO8_NT / 4) + 2;
/// Words of one branch's parked GEMM results for 8 channels and 8 tiles: `[ξ][channel][tile]`.
const PARK: usize = 16 * 8 * 8;
/// Words of one branch's output stage: `[channel][2 · rows][2 · tw]` for 8 channels, `rows · tw <= WINO8_NT`.
const STAGE: usize = 8 * 4 * WINO8_NT;

/// The band geometry of `g` with input split `split`, where [`pack::wino8`] picks the layer: 16 `i16` per input
/// channel and tile, in [`VBUF`].
fn plan(g: &Conv2dGeom, split: usize) -> Option<Plan> {
    pack::wino_band(g, 16 * g.cin, VBUF).filter(|_| pack::wino8(g, split))
}

/// int8 convolution on weights packed for family [`pack::AARCH64_NEON_WINO8`]: the integer Winograd kernel where
/// [`pack::wino8`] picks the layer and the packed length matches, else the NEON direct kernel (which reads the
/// family's other layers, packed in the [`pack::neon4_pack`] layout, or packs `w` per call). Bit-identical to
/// [`crate::quant::conv2d_i8`] either way.
#[allow(clippy::too_many_arguments)]
pub(crate) fn conv2d_i8_packed(
    g: &Conv2dGeom,
    input: &[i8],
    in_q: ActQ,
    w: &[i8],
    packed: &[u8],
    w_scale: &[f32],
    bias: Option<Weights<'_>>,
    chan_add: Option<&[f32]>,
    residual: Option<(&[i8], f32)>,
    div: f32,
    acc: &mut [i32],
    out: QOut<'_>,
) {
    let split = in_q.split.min(g.cin);
    let out_len = out.len();
    let plan = plan(g, split).filter(|_| {
        packed.len() == pack::wino8n_len(g)
            && input.len() >= g.cin * g.h * g.w
            && out_len >= g.cout * g.oh * g.ow
    });
    let Some(p) = plan else {
        return super::neon::conv2d_i8_packed(
            g, input, in_q, w, packed, w_scale, bias, chan_add, residual, div, acc, out,
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
    conv(g, p, split, input, packed, &e, out);
}

/// The body of [`conv2d_i8_packed`] (its own never-inlined frame: about 300 KiB of stack scratch). `p` is the
/// layer's [`plan`] for `split`; `packed` holds [`pack::wino8n_len`] bytes, `input` at least `cin · h · w` values
/// and `out` at least `cout · oh · ow` (checked by the caller).
#[inline(never)]
fn conv(
    g: &Conv2dGeom,
    p: Plan,
    split: usize,
    input: &[i8],
    packed: &[u8],
    e: &ConvEpilogue<'_>,
    out: QOut<'_>,
) {
    let plane_in = g.h * g.w;
    let plane = g.oh * g.ow;
    let mut vbuf = [0i16; VBUF];
    let mut rowb = [[0i8; ROWB]; BAND_ROWS];
    let mut park = [[0i32; PARK]; 2];
    let mut stage = [[0i32; STAGE]; 2];
    let sw = 2 * p.tw;
    // Bytes of a padded row the tiles read: 2 · tw rounded up to 16 tile columns, + 2 + the 16 of `ld2`.
    let rowlen = 2 * p.tw.next_multiple_of(8) + 18;
    if 2 * p.rows + 2 > BAND_ROWS || rowlen > ROWB || 2 * p.rows * sw * 8 > STAGE {
        return;
    }
    let (so, mut dst) = match out {
        QOut::I8 { data, scale } => (scale, Ok(data)),
        QOut::F32(data) => (0.0, Err(data)),
    };
    let nblocks = g.cout.div_ceil(WINO8_CO);
    let block_bytes = 16 * g.cin * WINO8_CO * 2;
    let mut ty0 = 0;
    while ty0 < p.th {
        let rows = p.rows.min(p.th - ty0);
        let nt = rows * p.tw;
        let ntp = nt.next_multiple_of(8);
        let vs = g.cin * ntp;
        // 1. Input transform of every channel into V[ξ][ci][t] (t = row · tw + tx).
        for ci in 0..g.cin {
            for (i, rb) in rowb.iter_mut().enumerate().take(2 * rows + 2) {
                rb[..rowlen].fill(0);
                let iy = (2 * ty0 + i).wrapping_sub(g.pad_t);
                if iy < g.h {
                    let at = ci * plane_in + iy * g.w;
                    let n = g.w.min(rowlen - g.pad_l);
                    rb[g.pad_l..g.pad_l + n].copy_from_slice(&input[at..at + n]);
                }
            }
            for r in 0..rows {
                let mut tx0 = 0;
                while tx0 < p.tw {
                    let at = ci * ntp + r * p.tw + tx0;
                    let v = transform8(&rowb[2 * r..2 * r + 4], 2 * tx0);
                    let n = (p.tw - tx0).min(8);
                    for (xi, vx) in v.iter().enumerate() {
                        let d = &mut vbuf[xi * vs + at..xi * vs + at + n];
                        // SAFETY: NEON is part of the aarch64 baseline; `d` holds `n` values (8 or 4: tw is a
                        // multiple of 4).
                        unsafe {
                            if n == 8 {
                                vst1q_s16(d.as_mut_ptr(), *vx);
                            } else {
                                vst1_s16(d.as_mut_ptr(), vget_low_s16(*vx));
                            }
                        }
                    }
                    tx0 += 8;
                }
            }
        }
        // 2. Per pair of 4-channel blocks: for every 8 tiles the 16 GEMMs per branch and their output transform;
        // then the epilogue of every output row of the band.
        let oy0 = 2 * ty0;
        let orows = (2 * rows).min(g.oh - oy0);
        for b0 in (0..nblocks).step_by(2) {
            let nb = (nblocks - b0).min(2);
            let u0 = &packed[b0 * block_bytes..(b0 + 1) * block_bytes];
            let u1 = &packed[(b0 + nb - 1) * block_bytes..(b0 + nb) * block_bytes];
            for t0 in (0..ntp).step_by(8) {
                for (br, (c0, c1)) in [(0, split), (split, g.cin)].into_iter().enumerate() {
                    if c0 == c1 {
                        continue;
                    }
                    for xi in 0..16 {
                        let vx = &vbuf[xi * vs + c0 * ntp + t0..xi * vs + c1 * ntp];
                        let at = (xi * g.cin + c0) * WINO8_CO * 2;
                        let end = (xi * g.cin + c1) * WINO8_CO * 2;
                        gemm(
                            vx,
                            ntp,
                            &u0[at..end],
                            &u1[at..end],
                            &mut park[br][xi * 64..xi * 64 + 64],
                        );
                    }
                    for c in 0..4 * nb {
                        output_tiles8(
                            &park[br],
                            c,
                            &mut stage[br][c * 2 * rows * sw..(c + 1) * 2 * rows * sw],
                            sw,
                            t0,
                            nt,
                            p.tw,
                        );
                    }
                }
            }
            for c in 0..(4 * nb).min(g.cout - b0 * WINO8_CO) {
                let co = b0 * WINO8_CO + c;
                let ch = e.channel(co, so);
                for a in 0..orows {
                    let at = (c * 2 * rows + a) * sw;
                    let (ra, rb) = (&stage[0][at..at + g.ow], &stage[1][at..at + g.ow]);
                    let base = co * plane + (oy0 + a) * g.ow;
                    let use_b = split < g.cin;
                    ch.store_row(
                        &mut dst,
                        base,
                        (oy0 + a) * g.ow,
                        (ra, rb),
                        |c, p0, a, b, o| store_i8_row(c, p0, a, b, use_b, o),
                    );
                }
            }
        }
        ty0 += rows;
    }
}

/// `V = Bᵀ d B` of 8 horizontally adjacent tiles whose first column is padded byte column `x0` of the 4 rows
/// `rows` (tile `j`'s column `c` is byte `x0 + 2j + c`): `ld2` at `x0` gives columns 0 and 1 of the 8 tiles, at
/// `x0 + 2` columns 2 and 3; `Bᵀ = [[1, 0, −1, 0], [0, 1, 1, 0], [0, −1, 1, 0], [0, 1, 0, −1]]`, `V[4r + c]`.
#[inline(always)]
fn transform8(rows: &[[i8; ROWB]], x0: usize) -> [int16x8_t; 16] {
    let mut dv: [[int16x8_t; 4]; 4] = [[zero16(); 4]; 4];
    for (i, di) in dv.iter_mut().enumerate() {
        let row = &rows[i][x0..x0 + 18];
        // SAFETY: NEON baseline; `row` holds 18 bytes, and `ld2` reads 16 from its start and 16 from byte 2.
        unsafe {
            let a = vld2_s8(row.as_ptr());
            let b = vld2_s8(row.as_ptr().add(2));
            *di = [vmovl_s8(a.0), vmovl_s8(a.1), vmovl_s8(b.0), vmovl_s8(b.1)];
        }
    }
    // SAFETY: NEON baseline (register arithmetic only).
    unsafe {
        let mut t = [[zero16(); 4]; 4];
        for c in 0..4 {
            t[0][c] = vsubq_s16(dv[0][c], dv[2][c]);
            t[1][c] = vaddq_s16(dv[1][c], dv[2][c]);
            t[2][c] = vsubq_s16(dv[2][c], dv[1][c]);
            t[3][c] = vsubq_s16(dv[1][c], dv[3][c]);
        }
        let mut v = [zero16(); 16];
        for (r, tr) in t.iter().enumerate() {
            v[4 * r] = vsubq_s16(tr[0], tr[2]);
            v[4 * r + 1] = vaddq_s16(tr[1], tr[2]);
            v[4 * r + 2] = vsubq_s16(tr[2], tr[1]);
            v[4 * r + 3] = vsubq_s16(tr[1], tr[3]);
        }
        v
    }
}

/// An all-zero `int16x8_t`.
#[inline(always)]
fn zero16() -> int16x8_t {
    // SAFETY: NEON baseline.
    unsafe { vdupq_n_s16(0) }
}

/// One register tile of the GEMM `M[ξ]` for up to 8 channels (two 4-channel blocks) × 8 tiles, over the input
/// channels of one branch: `park[8 c + l] = Σ_ci V[ci][l] · U[ci][c]`, with `V[ci]` the 8 `i16` at `v[ci · vs ..]`
/// and `U[ci][c]` the `i16` at bytes `(ci · 4 + c) · 2` of `u0` (channels 0–3) and `u1` (4–7; the same block
/// again where there is only one, its sums unused).
#[inline(always)]
fn gemm(v: &[i16], vs: usize, u0: &[u8], u1: &[u8], park: &mut [i32]) {
    let n = u0.len().min(u1.len()) / (WINO8_CO * 2);
    if park.len() < 64 || n == 0 || v.len() < (n - 1) * vs + 8 {
        return;
    }
    // SAFETY: NEON baseline. Input channel ci < n reads v[ci · vs .. + 8] (inside `v`: checked above) and 8 bytes
    // of u0 and of u1 at ci · 8 (n · 8 <= their lengths); the park holds 64 words.
    unsafe {
        let zero = vdupq_n_s32(0);
        let mut acc = [[zero; 2]; 8];
        let (mut pv, mut p0, mut p1) = (v.as_ptr(), u0.as_ptr(), u1.as_ptr());
        for _ in 0..n {
            let x = vld1q_s16(pv);
            let xl = vget_low_s16(x);
            let w0 = vreinterpret_s16_u8(vld1_u8(p0));
            let w1 = vreinterpret_s16_u8(vld1_u8(p1));
            acc[0][0] = vmlal_lane_s16::<0>(acc[0][0], xl, w0);
            acc[0][1] = vmlal_high_lane_s16::<0>(acc[0][1], x, w0);
            acc[1][0] = vmlal_lane_s16::<1>(acc[1][0], xl, w0);
            acc[1][1] = vmlal_high_lane_s16::<1>(acc[1][1], x, w0);
            acc[2][0] = vmlal_lane_s16::<2>(acc[2][0], xl, w0);
            acc[2][1] = vmlal_high_lane_s16::<2>(acc[2][1], x, w0);
            acc[3][0] = vmlal_lane_s16::<3>(acc[3][0], xl, w0);
            acc[3][1] = vmlal_high_lane_s16::<3>(acc[3][1], x, w0);
            acc[4][0] = vmlal_lane_s16::<0>(acc[4][0], xl, w1);
            acc[4][1] = vmlal_high_lane_s16::<0>(acc[4][1], x, w1);
            acc[5][0] = vmlal_lane_s16::<1>(acc[5][0], xl, w1);
            acc[5][1] = vmlal_high_lane_s16::<1>(acc[5][1], x, w1);
            acc[6][0] = vmlal_lane_s16::<2>(acc[6][0], xl, w1);
            acc[6][1] = vmlal_high_lane_s16::<2>(acc[6][1], x, w1);
            acc[7][0] = vmlal_lane_s16::<3>(acc[7][0], xl, w1);
            acc[7][1] = vmlal_high_lane_s16::<3>(acc[7][1], x, w1);
            pv = pv.add(vs);
            p0 = p0.add(8);
            p1 = p1.add(8);
        }
        for (c, a) in acc.iter().enumerate() {
            vst1q_s32(park.as_mut_ptr().add(8 * c), a[0]);
            vst1q_s32(park.as_mut_ptr().add(8 * c + 4), a[1]);
        }
    }
}

/// The output transform of 8 tiles `t0 .. t0 + 8` of channel `c`: `Y = Aᵀ M A / 4`, `Aᵀ = [[1, 1, 1, 0], [0, 1,
/// −1, −1]]`, with `M[ξ]` at `park[64 ξ + 8 c ..]`; tile `t < nt` (row `t / tw`, column `t % tw`) writes its 2×2
/// outputs to `stage` rows `2 (t / tw) + a`, columns `2 (t % tw) + b` (`sw` words per row), 4 tiles (8 columns)
/// per store pair (`tw` is a multiple of 4).
#[inline(always)]
fn output_tiles8(
    park: &[i32],
    c: usize,
    stage: &mut [i32],
    sw: usize,
    t0: usize,
    nt: usize,
    tw: usize,
) {
    if park.len() < 16 * 64 {
        return;
    }
    for h in 0..2 {
        let t = t0 + 4 * h;
        if t >= nt {
            continue;
        }
        let (r, tx) = (t / tw, t % tw);
        // SAFETY: NEON baseline; park words 64 ξ + 8 c + 4 h + 4 <= 16 · 64 (c < 8); the stage rows 2r + a < 2 ·
        // rows and columns 2 tx + 8 <= sw are checked by the slice indexing below.
        unsafe {
            let mut m = [vdupq_n_s32(0); 16];
            for (xi, mx) in m.iter_mut().enumerate() {
                *mx = vld1q_s32(park.as_ptr().add(64 * xi + 8 * c + 4 * h));
            }
            let mut s = [[vdupq_n_s32(0); 4]; 2];
            for j in 0..4 {
                s[0][j] = vaddq_s32(vaddq_s32(m[j], m[4 + j]), m[8 + j]);
                s[1][j] = vsubq_s32(vsubq_s32(m[4 + j], m[8 + j]), m[12 + j]);
            }
            for (a, sa) in s.iter().enumerate() {
                // 4 × the outputs (exact, modulo 2³²), then the exact division by 4.
                let y0 = vshrq_n_s32::<2>(vaddq_s32(vaddq_s32(sa[0], sa[1]), sa[2]));
                let y1 = vshrq_n_s32::<2>(vsubq_s32(vsubq_s32(sa[1], sa[2]), sa[3]));
                let at = (2 * r + a) * sw + 2 * tx;
                let d = &mut stage[at..at + 8];
                vst1q_s32(d.as_mut_ptr(), vzip1q_s32(y0, y1));
                vst1q_s32(d.as_mut_ptr().add(4), vzip2q_s32(y0, y1));
            }
        }
    }
}
