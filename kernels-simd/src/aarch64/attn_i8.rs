//! NEON int8 attention, bit-identical to [`quant::attention_i8`].
//!
//! The lanes of every vector are 4 *query rows*, so each row's softmax and weighted sum are ordinary lane-wise
//! chains in generic's order (as in the AVX-512 kernel, `x86_64/attn512.rs`). A block of 16 query rows (4 vectors)
//! goes through:
//!
//! * **Scores** `S[j][i]`: the block's queries widened to `i16` once (`[d][16]`), then per channel `dd` and 4 keys
//!   `j..j+4` (4 bytes of row `dd` of `k`, widened) 16 lane-indexed `smlal` into `i32`: 64 MACs per 16
//!   multiply-accumulates. Integer sums are exact, so their order does not matter; then `as f32 · qk` (`qk =
//!   sq · sk · (1 / sqrtf(d))`, formed in generic's order).
//! * **Softmax**: row maxima lane-wise, [`exp_det4`] (the operations of [`quant::exp_det`], in its order, never
//!   fused), the row sums in key order.
//! * **Values**: `Σ_j e[j][i] · v[c][j]` in key order (`fmul`, then `fadd`) for 4 channels × 16 rows per register
//!   tile, then `· (sv / sum)` and [`quantize4`] (division, `frinta` = `roundf`, NaN to 0, clamp).
//!
//! Scratch is on the stack (about 88 KiB for the largest geometry: 1024 tokens, 256 channels per head); other
//! geometries go to the generic kernel.

use core::arch::aarch64::*;

use crate::generic::AttentionGeom;
use crate::parallel::{QRowsOut, RawQ, RawQOut};
use crate::quant::{self, QOut};

/// Query rows per block (4 vectors).
const QB: usize = 16;
/// Most tokens.
const NMAX: usize = 1024;
/// Most channels per head.
const DMAX: usize = 256;
/// Channels per register tile of the value pass.
const CB: usize = 4;
/// Keys per register tile of the score pass.
const KB: usize = 4;

/// Whether this kernel takes the geometry with these slices (each must hold `heads·head_dim·n` elements).
fn fits(g: &AttentionGeom, q: &[i8], k: &[i8], v: &[i8]) -> bool {
    let (n, d) = (g.n, g.head_dim);
    let total = g.heads.saturating_mul(d).saturating_mul(n);
    n > 0
        && d > 0
        && n <= NMAX
        && d <= DMAX
        && q.len() >= total
        && k.len() >= total
        && v.len() >= total
}

/// int8 attention (arguments as [`quant::attention_i8`]); other geometries go to the generic kernel.
#[allow(clippy::too_many_arguments)]
pub(crate) fn attention_i8(
    g: &AttentionGeom,
    q: &[i8],
    sq: f32,
    k: &[i8],
    sk: f32,
    v: &[i8],
    sv: f32,
    scores: &mut [f32],
    out: QOut<'_>,
) {
    let raw = match RawQOut::for_kernel(g, q, k, v, scores.len(), out, fits(g, q, k, v)) {
        Ok(raw) => raw,
        // Includes a short output or score row, where generic writes the heads that fit, or nothing.
        Err(out) => return quant::attention_i8(g, q, sq, k, sk, v, sv, scores, out),
    };
    // SAFETY: reachable only through the NEON table (NEON detected); q, k, v hold `heads·d·n` elements (`fits`),
    // the output as many (`RawQOut::for_kernel`, borrowed mutably, so all of it may be written); n <= NMAX, d <= DMAX.
    unsafe { attention_i8_neon(g, q, sq, k, sk, v, sv, raw) }
}

/// [`attention_i8`] for the query tokens of `out` only (false, nothing written, where the geometry does not fit
/// this kernel or the output is not `[heads·head_dim][n][1]`).
#[allow(clippy::too_many_arguments)]
pub(crate) fn attention_i8_rows(
    g: &AttentionGeom,
    q: &[i8],
    sq: f32,
    k: &[i8],
    sk: f32,
    v: &[i8],
    sv: f32,
    out: QRowsOut<'_, '_>,
) -> bool {
    let Some(raw) = RawQOut::rows_for_kernel(g, q, k, v, out, fits(g, q, k, v)) else {
        return false;
    };
    // SAFETY: as in `attention_i8`; `RawQOut::rows_for_kernel` checked the output is `[heads·head_dim][n]` of at least
    // `heads·d·n` elements, and the kernel writes only its tokens, the ones `RowsOut::as_mut_ptr` lets this worker
    // write.
    unsafe { attention_i8_neon(g, q, sq, k, sk, v, sv, raw) };
    true
}

/// [`quant::exp_det`] on 4 lanes: the same operations in the same order (no fusion), so the same bits.
#[inline(always)]
unsafe fn exp_det4(x: float32x4_t) -> float32x4_t {
    let x = vminq_f32(vmaxq_f32(x, vdupq_n_f32(-87.0)), vdupq_n_f32(88.0));
    // rintf: round to nearest, ties to even.
    let n = vrndnq_f32(vmulq_f32(x, vdupq_n_f32(core::f32::consts::LOG2_E)));
    let r = vsubq_f32(x, vmulq_f32(n, vdupq_n_f32(quant::EXP_C1)));
    let r = vsubq_f32(r, vmulq_f32(n, vdupq_n_f32(quant::EXP_C2)));
    let mut p = vdupq_n_f32(quant::EXP_POLY[0]);
    for &c in &quant::EXP_POLY[1..] {
        p = vaddq_f32(vmulq_f32(p, r), vdupq_n_f32(c));
    }
    // n is an integer in [-126, 127]: the truncating conversion is exact.
    let pow2 = vreinterpretq_f32_s32(vshlq_n_s32::<23>(vaddq_s32(
        vcvtq_s32_f32(n),
        vdupq_n_s32(127),
    )));
    vmulq_f32(p, pow2)
}

/// [`quant::quantize`] on 4 lanes: `y / scale` rounded half away from zero (`frinta`, exactly `roundf`), NaN to
/// 0, clamped to `[-128, 127]`; returned as `i32` lanes.
#[inline(always)]
unsafe fn quantize4(y: float32x4_t, scale: f32) -> int32x4_t {
    let r = vrndaq_f32(vdivq_f32(y, vdupq_n_f32(scale)));
    let not_nan = vceqq_f32(r, r);
    let r = vbslq_f32(not_nan, r, vdupq_n_f32(0.0));
    let r = vminq_f32(vmaxq_f32(r, vdupq_n_f32(-128.0)), vdupq_n_f32(127.0));
    vcvtq_s32_f32(r)
}

/// 16 scores of one key (4 vectors of 4 query rows) from its `i32` sums: `as f32 · qk`, stored at `dst`, and the
/// running row maxima updated.
#[inline(always)]
unsafe fn store_scores(acc: &[int32x4_t; 4], qk: f32, dst: *mut f32, mx: &mut [float32x4_t; 4]) {
    for (l, (a, m)) in acc.iter().zip(mx.iter_mut()).enumerate() {
        let s = vmulq_n_f32(vcvtq_f32_s32(*a), qk);
        vst1q_f32(dst.add(4 * l), s);
        *m = vmaxq_f32(*m, s);
    }
}

/// The attention of the query tokens `out.rows` (`r0 ≤ r1 ≤ n`), written through `out`, which must be valid for
/// writes of `[heads·head_dim][n]` elements at those tokens of every channel. `q`, `k`, `v` hold `heads·d·n`
/// elements; `n <= NMAX`, `d <= DMAX`.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "neon")]
unsafe fn attention_i8_neon(
    g: &AttentionGeom,
    q: &[i8],
    sq: f32,
    k: &[i8],
    sk: f32,
    v: &[i8],
    sv: f32,
    out: RawQOut,
) {
    let (n, d) = (g.n, g.head_dim);
    let qk = sq * sk * (1.0 / libm::sqrtf(d as f32));
    let (r0, r1) = out.rows;
    // The block's queries widened, its scores / probabilities `[key][16 rows]`, CB rows of v as f32.
    let mut qw = [[0i16; QB]; DMAX];
    let mut s = [[0f32; QB]; NMAX];
    let mut vf = [[0f32; NMAX]; CB];
    for h in 0..g.heads {
        let base = h * d * n;
        let (qh, kh, vh) = (
            &q[base..base + d * n],
            &k[base..base + d * n],
            &v[base..base + d * n],
        );
        for i0 in (r0..r1).step_by(QB) {
            let ni = QB.min(r1 - i0);
            for (dd, row) in qw.iter_mut().enumerate().take(d) {
                for (c, w) in row.iter_mut().enumerate() {
                    *w = if c < ni {
                        qh.get(dd * n + i0 + c).map_or(0, |&x| x as i16)
                    } else {
                        0
                    };
                }
            }
            // Scores and row maxima, KB keys × 16 rows per register tile.
            let mut mx = [vdupq_n_f32(f32::NEG_INFINITY); 4];
            for j0 in (0..n).step_by(KB) {
                let nj = KB.min(n - j0);
                let mut acc = [[vdupq_n_s32(0); 4]; KB];
                for (dd, qrow) in qw.iter().enumerate().take(d) {
                    let qa = vld1q_s16(qrow.as_ptr());
                    let qb = vld1q_s16(qrow.as_ptr().add(8));
                    let mut kq = [0i16; 4];
                    for (jj, x) in kq.iter_mut().enumerate().take(nj) {
                        // SAFETY: dd < d and j0 + jj < n, so dd · n + j0 + jj < d · n = kh.len().
                        *x = *kh.get_unchecked(dd * n + j0 + jj) as i16;
                    }
                    let kv = vld1_s16(kq.as_ptr());
                    macro_rules! key {
                        ($j:literal) => {
                            let a = &mut acc[$j];
                            a[0] = vmlal_lane_s16::<$j>(a[0], vget_low_s16(qa), kv);
                            a[1] = vmlal_high_lane_s16::<$j>(a[1], qa, kv);
                            a[2] = vmlal_lane_s16::<$j>(a[2], vget_low_s16(qb), kv);
                            a[3] = vmlal_high_lane_s16::<$j>(a[3], qb, kv);
                        };
                    }
                    key!(0);
                    key!(1);
                    key!(2);
                    key!(3);
                }
                for (jj, a) in acc.iter().enumerate().take(nj) {
                    store_scores(a, qk, s[j0 + jj].as_mut_ptr(), &mut mx);
                }
            }
            // exp(s - max) in place; the sums in key order.
            let mut sum = [vdupq_n_f32(0.0); 4];
            for row in s.iter_mut().take(n) {
                for (l, (sl, m)) in sum.iter_mut().zip(&mx).enumerate() {
                    let p = row.as_mut_ptr().add(4 * l);
                    let e = exp_det4(vsubq_f32(vld1q_f32(p), *m));
                    vst1q_f32(p, e);
                    *sl = vaddq_f32(*sl, e);
                }
            }
            let f = sum.map(|x| vdivq_f32(vdupq_n_f32(sv), x));
            // Σ_j e_j · v_j, key order, CB channels at a time (a short last block repeats its last channel).
            for c0 in (0..d).step_by(CB) {
                let cb = CB.min(d - c0);
                for (c, row) in vf.iter_mut().enumerate() {
                    let src = &vh[(c0 + c.min(cb - 1)) * n..][..n];
                    for (dst, &x) in row.iter_mut().zip(src) {
                        *dst = x as f32;
                    }
                }
                let mut acc = [[vdupq_n_f32(0.0); 4]; CB];
                for (j, e) in s.iter().enumerate().take(n) {
                    let e = [
                        vld1q_f32(e.as_ptr()),
                        vld1q_f32(e.as_ptr().add(4)),
                        vld1q_f32(e.as_ptr().add(8)),
                        vld1q_f32(e.as_ptr().add(12)),
                    ];
                    for (a, vrow) in acc.iter_mut().zip(&vf) {
                        // SAFETY: j < n <= NMAX, the length of a row of vf.
                        let x = *vrow.get_unchecked(j);
                        for (al, el) in a.iter_mut().zip(&e) {
                            *al = vaddq_f32(*al, vmulq_n_f32(*el, x));
                        }
                    }
                }
                for (c, a) in acc.iter().enumerate().take(cb) {
                    let at = base + (c0 + c) * n + i0;
                    // SAFETY (both arms): tokens i0..i0 + ni lie in [r0, r1) and channel h·d + c0 + c < heads·d,
                    // so these ni elements are inside the output, among those this call may write.
                    match out.out {
                        RawQ::I8(p, scale) => {
                            // 8 bytes stored per 4 lanes (the upper 4 are zeros the next store overwrites).
                            let mut t = [0i8; QB + 4];
                            for (l, al) in a.iter().enumerate() {
                                let y = quantize4(vmulq_f32(*al, f[l]), scale);
                                // Clamped to [-128, 127] already: the narrowing is exact.
                                let b = vqmovn_s16(vcombine_s16(vqmovn_s32(y), vdup_n_s16(0)));
                                vst1_s8(t.as_mut_ptr().add(4 * l), b);
                            }
                            core::ptr::copy_nonoverlapping(t.as_ptr(), p.add(at), ni);
                        }
                        RawQ::F32(p) => {
                            let mut t = [0f32; QB];
                            for (l, al) in a.iter().enumerate() {
                                vst1q_f32(t.as_mut_ptr().add(4 * l), vmulq_f32(*al, f[l]));
                            }
                            core::ptr::copy_nonoverlapping(t.as_ptr(), p.add(at), ni);
                        }
                    }
                }
            }
        }
    }
}
