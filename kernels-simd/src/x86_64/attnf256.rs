//! AVX2 f32 attention with 16 query rows per `ymm` pair, the AVX2 form of [`super::attnf512`]: the transposed
//! score block `Sᵀ[j][i]` (keys by queries) is built with FMAs (6 keys × 16 queries per register tile, the
//! queries loaded once per channel and reused by every key of the tile), so the softmax over keys is a plain
//! vector reduction along `j` and `Sᵀ` is directly the right operand of the value product
//! `out[d][i] = Σ_j v[d][j] · Sᵀ[j][i]` (6 channels × 16 queries per tile), written contiguously into the
//! channel-major output. The streaming kernel it replaces ([`super::avx2::attention`], kept for geometries past
//! this one's stack blocks) ran one dependent FMA chain per query and a horizontal sum per output.
//! Within the tier tests' f32 bound of generic (sums reordered, FMA, [`super::avx2::exp8`]).

use core::arch::x86_64::*;
use core::mem::MaybeUninit;

use super::avx2::exp8;
use super::zeroed_prefix;
use crate::generic::AttentionGeom;

/// Query rows per block (two `ymm`).
const QB: usize = 16;
/// Keys (score tile) and channels (value tile) per register tile: 6 × 2 accumulators, two operand registers and
/// one broadcast fill 15 of the 16 `ymm`.
const T: usize = 6;
/// Most tokens.
const NMAX: usize = 1024;
/// Most channels per head.
const DMAX: usize = 256;

/// Whether the geometry fits this kernel's stack blocks and the slices hold it.
fn fits(g: &AttentionGeom, q: &[f32], k: &[f32], v: &[f32], out_len: usize) -> bool {
    let total = g.heads * g.head_dim * g.n;
    g.n != 0
        && g.head_dim != 0
        && g.n <= NMAX
        && g.head_dim <= DMAX
        && q.len() >= total
        && k.len() >= total
        && v.len() >= total
        && out_len >= total
}

/// f32 attention (arguments as [`crate::generic::attention`]); other geometries go to the streaming AVX2 kernel.
pub(crate) fn attention(
    g: &AttentionGeom,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    scores: &mut [f32],
    out: &mut [f32],
) {
    if !fits(g, q, k, v, out.len()) {
        return super::avx2::attention(g, q, k, v, scores, out);
    }
    // SAFETY: reachable only through the AVX2 tables (avx2 + fma detected); slices hold `heads·d·n` elements and
    // n <= NMAX, d <= DMAX (the stack blocks' sizes); `out` is borrowed mutably, so all of it may be written.
    unsafe { attention_256(g, q, k, v, out.as_mut_ptr(), (0, g.n)) }
}

/// [`attention`] for the query tokens `out.rows()` only (false, nothing written, where the geometry does not fit
/// this kernel or `out` is not `[heads·head_dim][n][1]`).
pub(crate) fn attention_rows(
    g: &AttentionGeom,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    out: &crate::parallel::RowsOut<'_>,
) -> bool {
    let (r0, r1) = out.rows();
    if !fits(g, q, k, v, out.len()) || out.shape() != (g.n, 1) || r0 > r1 || r1 > g.n {
        return false;
    }
    // SAFETY: as in `attention`; the output is `[heads·head_dim][n]` (shape checked) of at least `heads·d·n`
    // elements, and the kernel writes only the tokens [r0, r1) of each channel, the ones `RowsOut::as_mut_ptr`
    // lets this worker write.
    unsafe { attention_256(g, q, k, v, out.as_mut_ptr(), (r0, r1)) }
    true
}

/// `acc[t] += x[t] · [lo, hi]` for the `T` broadcast operands `x` (one register tile step).
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn tile_step(acc: &mut [[__m256; 2]; T], x: [f32; T], lo: __m256, hi: __m256) {
    for (a, &xv) in acc.iter_mut().zip(x.iter()) {
        let b = _mm256_set1_ps(xv);
        a[0] = _mm256_fmadd_ps(b, lo, a[0]);
        a[1] = _mm256_fmadd_ps(b, hi, a[1]);
    }
}

/// The attention of the query tokens `rows` (`r0 ≤ r1 ≤ n`), written through `out`, which must be valid for
/// writes of `[heads·head_dim][n]` floats at the tokens `rows` of every channel.
#[target_feature(enable = "avx2,fma")]
unsafe fn attention_256(
    g: &AttentionGeom,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    out: *mut f32,
    rows: (usize, usize),
) {
    let (n, d) = (g.n, g.head_dim);
    let scale = _mm256_set1_ps(1.0 / libm::sqrtf(d as f32));
    let nt = n.next_multiple_of(T);
    // Sᵀ block [key][16 queries] (rows to the next whole tile of keys), the queries of the block [channel][16]
    // (zero past the block's last row). Sized for the largest geometry; only the rows this one uses are zeroed.
    let (mut st_m, mut qb_m) = (
        MaybeUninit::<[[f32; QB]; NMAX + T]>::uninit(),
        MaybeUninit::<[[f32; QB]; DMAX]>::uninit(),
    );
    let st = zeroed_prefix(&mut st_m, nt);
    let qb = zeroed_prefix(&mut qb_m, d);
    let mut ob = [[0f32; QB]; T];
    for h in 0..g.heads {
        let base = h * d * n;
        let (qh, kh, vh) = (
            &q[base..base + d * n],
            &k[base..base + d * n],
            &v[base..base + d * n],
        );
        for i0 in (rows.0..rows.1).step_by(QB) {
            let rn = QB.min(rows.1 - i0);
            for (dd, row) in qb.iter_mut().enumerate() {
                row[..rn].copy_from_slice(&qh[dd * n + i0..dd * n + i0 + rn]);
                row[rn..].fill(0.0);
            }
            // Sᵀ[j][i] = scale · Σ_d k[d][j] · q[d][i], T keys × 16 queries per tile.
            for j0 in (0..nt).step_by(T) {
                let mut acc = [[_mm256_setzero_ps(); 2]; T];
                for (dd, qrow) in qb.iter().enumerate() {
                    let lo = _mm256_loadu_ps(qrow.as_ptr());
                    let hi = _mm256_loadu_ps(qrow.as_ptr().add(8));
                    let krow = &kh[dd * n..dd * n + n];
                    // Keys past n read as 0 (their rows of Sᵀ are never used).
                    let x = match krow.get(j0..j0 + T) {
                        Some(s) => [s[0], s[1], s[2], s[3], s[4], s[5]],
                        None => core::array::from_fn(|t| krow.get(j0 + t).copied().unwrap_or(0.0)),
                    };
                    tile_step(&mut acc, x, lo, hi);
                }
                for (row, a) in st[j0..j0 + T].iter_mut().zip(acc.iter()) {
                    _mm256_storeu_ps(row.as_mut_ptr(), _mm256_mul_ps(a[0], scale));
                    _mm256_storeu_ps(row.as_mut_ptr().add(8), _mm256_mul_ps(a[1], scale));
                }
            }
            // Softmax along keys, 16 queries per vector pair.
            let mut m = [_mm256_set1_ps(f32::NEG_INFINITY); 2];
            for row in st.iter().take(n) {
                m[0] = _mm256_max_ps(m[0], _mm256_loadu_ps(row.as_ptr()));
                m[1] = _mm256_max_ps(m[1], _mm256_loadu_ps(row.as_ptr().add(8)));
            }
            let mut sum = [_mm256_setzero_ps(); 2];
            for row in st.iter_mut().take(n) {
                for (half, (mh, sh)) in m.iter().zip(sum.iter_mut()).enumerate() {
                    let p = row.as_mut_ptr().add(8 * half);
                    let e = exp8(_mm256_sub_ps(_mm256_loadu_ps(p), *mh));
                    _mm256_storeu_ps(p, e);
                    *sh = _mm256_add_ps(*sh, e);
                }
            }
            let inv = [
                _mm256_div_ps(_mm256_set1_ps(1.0), sum[0]),
                _mm256_div_ps(_mm256_set1_ps(1.0), sum[1]),
            ];
            // out[d][i] = inv[i] · Σ_j v[d][j] · Sᵀ[j][i], T channels × 16 queries per tile.
            for d0 in (0..d).step_by(T) {
                let dn = T.min(d - d0);
                let mut acc = [[_mm256_setzero_ps(); 2]; T];
                if dn == T {
                    let vt: [&[f32]; T] =
                        core::array::from_fn(|c| &vh[(d0 + c) * n..(d0 + c + 1) * n]);
                    for (j, row) in st.iter().enumerate().take(n) {
                        let lo = _mm256_loadu_ps(row.as_ptr());
                        let hi = _mm256_loadu_ps(row.as_ptr().add(8));
                        tile_step(&mut acc, core::array::from_fn(|c| vt[c][j]), lo, hi);
                    }
                } else {
                    for (j, row) in st.iter().enumerate().take(n) {
                        let lo = _mm256_loadu_ps(row.as_ptr());
                        let hi = _mm256_loadu_ps(row.as_ptr().add(8));
                        // Channels past d read as 0 (their rows of the tile are not written).
                        let x =
                            core::array::from_fn(
                                |c| {
                                    if c < dn {
                                        vh[(d0 + c) * n + j]
                                    } else {
                                        0.0
                                    }
                                },
                            );
                        tile_step(&mut acc, x, lo, hi);
                    }
                }
                for (o, a) in ob.iter_mut().zip(acc.iter()) {
                    _mm256_storeu_ps(o.as_mut_ptr(), _mm256_mul_ps(a[0], inv[0]));
                    _mm256_storeu_ps(o.as_mut_ptr().add(8), _mm256_mul_ps(a[1], inv[1]));
                }
                for (c, o) in ob.iter().enumerate().take(dn) {
                    let at = base + (d0 + c) * n + i0;
                    // SAFETY: tokens i0..i0 + rn lie in `rows` and channel h·d + d0 + c < heads·d, so these rn
                    // floats are inside the output, among those this call may write (the caller's contract).
                    core::ptr::copy_nonoverlapping(o.as_ptr(), out.add(at), rn);
                }
            }
        }
    }
}
