//! AVX2 int8 attention, bit-identical to [`crate::quant::attention_i8`]: the AVX2 form of [`super::attn512`].
//!
//! The lanes of every vector are 8 *query rows*, so each row's softmax and weighted sum are ordinary lane-wise
//! chains in generic's order, and the outputs (`[channel][token]`) are stored 8 tokens at a time. A block of 16
//! query rows (two vectors) goes through:
//!
//! * **Scores** `S[j][i]`: `vpmaddwd` of the block's query channel pairs (sign-extended `i16`, packed as
//!   `[d / 2][i]` words) with the broadcast key pair of token `j`: exact integer sums; then `as f32 · qk`. The row
//!   maxima are lane-wise (order-free).
//! * **Softmax**: [`super::avx2::exp_det8`] (the operations of [`crate::quant::exp_det`], lane by lane) and the row sums in
//!   key order, lane-wise.
//! * **Values**: `Σ_j e[j][i] · v[c][j]` in key order (multiply, then add) for 4 channels × 16 rows per register
//!   tile, then `· (sv / sum)` and [`crate::quant::quantize`] ([`super::gn256::quantize8`]) on 8 lanes.
//!
//! The kernel it replaces ([`super::avx2::attention_i8`], kept for geometries past this one's stack blocks) ran one
//! query at a time: its softmax sum and value sums were single dependent chains per query.

use core::arch::x86_64::*;
use core::mem::MaybeUninit;

use super::avx2::exp_det8;
use super::gn256::quantize8;
use super::zeroed_prefix;

use crate::generic::AttentionGeom;
use crate::parallel::{QRowsOut, RawQ, RawQOut};
use crate::quant::QOut;

/// Query rows per block (two vectors).
const NI: usize = 16;
/// Most tokens.
const NMAX: usize = 1024;
/// Packed key words (`ceil(d / 2) · n`): 128 KiB.
const KP: usize = 32 * 1024;
/// Values as `f32` `[d][n]`: 256 KiB (ddpm-cifar10-32's 256 channels × 256 tokens).
const VT: usize = 64 * 1024;
/// Most channels per head (the packed query block).
const DMAX: usize = 1024;
/// Channels per register tile of the value pass: 4 × 2 accumulators, two score vectors and a broadcast.
const CB: usize = 4;

/// Whether the fast path takes this geometry.
fn fits(g: &AttentionGeom) -> bool {
    let (n, d) = (g.n, g.head_dim);
    n > 0 && d > 0 && n <= NMAX && d <= DMAX && d.div_ceil(2) * n <= KP && n * d <= VT
}

/// int8 attention (arguments as [`crate::quant::attention_i8`]); other geometries go to the streaming AVX2 kernel.
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
    let raw = match RawQOut::for_kernel(g, q, k, v, scores.len(), out, fits(g)) {
        Ok(raw) => raw,
        Err(out) => return super::avx2::attention_i8(g, q, sq, k, sk, v, sv, scores, out),
    };
    // SAFETY: reachable only through the AVX2 tables (avx2 + fma detected); every slice holds `total` elements
    // (the output borrowed mutably, so all of it may be written) and the geometry passed `fits`.
    unsafe { attention_i8_256(g, q, sq, k, sk, v, sv, raw) }
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
    let Some(raw) = RawQOut::rows_for_kernel(g, q, k, v, out, fits(g)) else {
        return false;
    };
    // SAFETY: as in `attention_i8`; `RawQOut::rows_for_kernel` checked the output is `[heads·head_dim][n]` of at
    // least `total` elements, and the kernel writes only its tokens, the ones `RowsOut::as_mut_ptr` lets this
    // worker write.
    unsafe { attention_i8_256(g, q, sq, k, sk, v, sv, raw) };
    true
}

/// Words of the channel pairs `(x[2t][c], x[2t + 1][c])` of `x` (`[d][n]`, sign-extended to `i16`, low half the
/// even channel, a missing odd channel 0) for columns `i0..i0 + cols`: `dst[t · stride + c]` with
/// `stride = dst.len() / ceil(d / 2)`; columns past `cols` up to the stride are 0.
fn pack_pairs(x: &[i8], d: usize, n: usize, i0: usize, cols: usize, dst: &mut [i32]) {
    let dp = d.div_ceil(2);
    let stride = dst.len() / dp.max(1);
    let at = |ch: usize, c: usize| {
        if ch < d {
            x.get(ch * n + i0 + c)
                .map_or(0, |&v| v as i16 as u16 as u32)
        } else {
            0
        }
    };
    for t in 0..dp {
        let row = &mut dst[t * stride..(t + 1) * stride];
        for (c, w) in row.iter_mut().enumerate() {
            *w = if c < cols {
                (at(2 * t, c) | (at(2 * t + 1, c) << 16)) as i32
            } else {
                0
            };
        }
    }
}

/// The attention of the query tokens `out.rows` (`r0 ≤ r1 ≤ n`), written through `out`, which must be valid for
/// writes of `[heads·head_dim][n]` elements at those tokens of every channel.
///
/// # Safety
/// AVX2 + FMA; `q`, `k`, `v` hold `heads · head_dim · n` elements and the geometry passed [`fits`].
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma")]
unsafe fn attention_i8_256(
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
    let rows = out.rows;
    let qk = _mm256_set1_ps(sq * sk * (1.0 / libm::sqrtf(d as f32)));
    let dp = d.div_ceil(2);
    // Scratch sized for the largest geometry; only the part this one uses is initialized.
    let (mut kp_m, mut vf_m) = (
        MaybeUninit::<[i32; KP]>::uninit(),
        MaybeUninit::<[f32; VT]>::uninit(),
    );
    let (mut s_m, mut qw_m) = (
        MaybeUninit::<[f32; NMAX * NI]>::uninit(),
        MaybeUninit::<[i32; DMAX.div_ceil(2) * NI]>::uninit(),
    );
    let kp = zeroed_prefix(&mut kp_m, dp * n);
    let vf = zeroed_prefix(&mut vf_m, d * n);
    let s = zeroed_prefix(&mut s_m, n * NI);
    let qw = zeroed_prefix(&mut qw_m, dp * NI);
    if kp.len() < dp * n || vf.len() < d * n || s.len() < n * NI || qw.len() < dp * NI {
        return; // unreachable: `fits`
    }
    for h in 0..g.heads {
        let base = h * d * n;
        let (qh, kh, vh) = (
            &q[base..base + d * n],
            &k[base..base + d * n],
            &v[base..base + d * n],
        );
        pack_pairs(kh, d, n, 0, n, kp);
        for (dst, &x) in vf.iter_mut().zip(vh) {
            *dst = x as f32;
        }
        for i0 in (rows.0..rows.1).step_by(NI) {
            let ni = NI.min(rows.1 - i0);
            // Query pairs of rows i0..; rows past the block read as 0 (their lanes are never stored).
            pack_pairs(qh, d, n, i0, ni, qw);
            // Scores and row maxima.
            let mut mx = [_mm256_set1_ps(f32::NEG_INFINITY); 2];
            for j in 0..n {
                let mut acc = [_mm256_setzero_si256(); 2];
                for t in 0..dp {
                    // SAFETY: t < dp and j < n, so t · n + j < dp · n <= kp.len(); qw holds dp · NI words.
                    let w = _mm256_set1_epi32(*kp.get_unchecked(t * n + j));
                    let qp = qw.as_ptr().add(t * NI);
                    acc[0] = _mm256_add_epi32(
                        acc[0],
                        _mm256_madd_epi16(_mm256_loadu_si256(qp as *const __m256i), w),
                    );
                    acc[1] = _mm256_add_epi32(
                        acc[1],
                        _mm256_madd_epi16(_mm256_loadu_si256(qp.add(8) as *const __m256i), w),
                    );
                }
                for (l, a) in acc.iter().enumerate() {
                    let sc = _mm256_mul_ps(_mm256_cvtepi32_ps(*a), qk);
                    // SAFETY: j · NI + 8 l + 7 < n · NI <= s.len().
                    _mm256_storeu_ps(s.as_mut_ptr().add(j * NI + 8 * l), sc);
                    // The score as the first operand: a NaN score leaves the maximum as it is, like f32::max.
                    mx[l] = _mm256_max_ps(sc, mx[l]);
                }
            }
            // exp(s - max) in place; the sums in key order.
            let mut sum = [_mm256_setzero_ps(); 2];
            for j in 0..n {
                for l in 0..2 {
                    // SAFETY: as above.
                    let p = s.as_mut_ptr().add(j * NI + 8 * l);
                    let e = exp_det8(_mm256_sub_ps(_mm256_loadu_ps(p), mx[l]));
                    _mm256_storeu_ps(p, e);
                    sum[l] = _mm256_add_ps(sum[l], e);
                }
            }
            let f = [
                _mm256_div_ps(_mm256_set1_ps(sv), sum[0]),
                _mm256_div_ps(_mm256_set1_ps(sv), sum[1]),
            ];
            // Σ_j e_j · v_j, key order, CB channels at a time (a short last block repeats its last channel).
            for c0 in (0..d).step_by(CB) {
                let cb = CB.min(d - c0);
                let mut acc = [[_mm256_setzero_ps(); 2]; CB];
                for j in 0..n {
                    // SAFETY: as above; (c0 + min(c, cb - 1)) · n + j < d · n <= vf.len().
                    let e0 = _mm256_loadu_ps(s.as_ptr().add(j * NI));
                    let e1 = _mm256_loadu_ps(s.as_ptr().add(j * NI + 8));
                    for (c, a) in acc.iter_mut().enumerate() {
                        let x = _mm256_set1_ps(*vf.get_unchecked((c0 + c.min(cb - 1)) * n + j));
                        a[0] = _mm256_add_ps(a[0], _mm256_mul_ps(e0, x));
                        a[1] = _mm256_add_ps(a[1], _mm256_mul_ps(e1, x));
                    }
                }
                for (c, a) in acc.iter().enumerate().take(cb) {
                    let at = base + (c0 + c) * n + i0;
                    for l in 0..2 {
                        let lanes = ni.saturating_sub(8 * l).min(8);
                        if lanes == 0 {
                            continue;
                        }
                        let y = _mm256_mul_ps(a[l], f[l]);
                        // SAFETY: the lanes written are tokens i0 + 8 l + r < i0 + ni <= rows.1 <= n, inside
                        // `rows`, so the elements are base + (c0 + c) · n + i < heads · d · n, ones this call may
                        // write (the caller's contract).
                        match out.out {
                            RawQ::I8(p, scale) => {
                                let q = quantize8(y, scale);
                                let w = _mm_packs_epi32(
                                    _mm256_castsi256_si128(q),
                                    _mm256_extracti128_si256::<1>(q),
                                );
                                let mut b = [0i8; 16];
                                _mm_storeu_si128(
                                    b.as_mut_ptr() as *mut __m128i,
                                    _mm_packs_epi16(w, w),
                                );
                                let dst = p.add(at + 8 * l);
                                if lanes == 8 {
                                    (dst as *mut [i8; 8]).write_unaligned([
                                        b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7],
                                    ]);
                                } else {
                                    for (r, &x) in b.iter().enumerate().take(lanes) {
                                        *dst.add(r) = x;
                                    }
                                }
                            }
                            RawQ::F32(p) => {
                                let dst = p.add(at + 8 * l);
                                if lanes == 8 {
                                    _mm256_storeu_ps(dst, y);
                                } else {
                                    let mut t = [0f32; 8];
                                    _mm256_storeu_ps(t.as_mut_ptr(), y);
                                    for (r, &x) in t.iter().enumerate().take(lanes) {
                                        *dst.add(r) = x;
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}
