//! AVX-512 f32 attention with 32 query rows per `zmm` pair: the transposed score block `Sᵀ[j][i]` (keys by
//! queries) is built with FMAs (8 keys × 32 queries per register tile, the queries loaded once per channel), so
//! the softmax over keys is a plain vector reduction along `j` and `Sᵀ` is directly the right operand of the value
//! product `out[d][i] = Σ_j v[d][j] · Sᵀ[j][i]` (8 channels × 32 queries per tile), written contiguously into the
//! channel-major output. Within the tier tests' f32 bound of generic (sums reordered, FMA, [`exp_det16`]).

use core::arch::x86_64::*;
use core::mem::MaybeUninit;

use super::zeroed_prefix;

use super::attn512::exp_det16;
use crate::generic::AttentionGeom;

/// Query rows per block (two `zmm`).
const QB: usize = 32;
/// Most tokens.
const NMAX: usize = 1024;
/// Most channels per head.
const DMAX: usize = 256;

/// f32 attention (arguments as [`crate::generic::attention`]); other geometries go to the AVX2 kernel.
pub(crate) fn attention(
    g: &AttentionGeom,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    scores: &mut [f32],
    out: &mut [f32],
) {
    let total = g.heads * g.head_dim * g.n;
    if g.n == 0
        || g.head_dim == 0
        || g.n > NMAX
        || g.head_dim > DMAX
        || q.len() < total
        || k.len() < total
        || v.len() < total
        || out.len() < total
    {
        return super::avx2::attention(g, q, k, v, scores, out);
    }
    // SAFETY: reachable only through the AVX-512 table (avx512f detected); slices hold `total` elements and
    // n <= NMAX, d <= DMAX (the stack blocks' sizes); `out` is borrowed mutably, so all of it may be written.
    unsafe { attention_512(g, q, k, v, out.as_mut_ptr(), (0, g.n)) }
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
    let total = g.heads * g.head_dim * g.n;
    let (r0, r1) = out.rows();
    if g.n == 0
        || g.head_dim == 0
        || g.n > NMAX
        || g.head_dim > DMAX
        || q.len() < total
        || k.len() < total
        || v.len() < total
        || out.len() < total
        || out.shape() != (g.n, 1)
        || r0 > r1
        || r1 > g.n
    {
        return false;
    }
    // SAFETY: as in `attention`; the output is `[heads·head_dim][n]` (shape checked) of at least `total` elements,
    // and the kernel writes only the tokens [r0, r1) of each channel, the ones `RowsOut::as_mut_ptr` lets this
    // worker write.
    unsafe { attention_512(g, q, k, v, out.as_mut_ptr(), (r0, r1)) }
    true
}

/// The attention of the query tokens `rows` (`r0 ≤ r1 ≤ n`), written through `out`, which must be valid for
/// writes of `[heads·head_dim][n]` floats at the tokens `rows` of every channel.
#[target_feature(enable = "avx512f")]
unsafe fn attention_512(
    g: &AttentionGeom,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    out: *mut f32,
    rows: (usize, usize),
) {
    let (n, d) = (g.n, g.head_dim);
    let scale = _mm512_set1_ps(1.0 / libm::sqrtf(d as f32));
    let n8 = n.next_multiple_of(8);
    let d8 = d.next_multiple_of(8);
    // Sᵀ block [key][32 queries], the queries of the block [channel][32] (zero past n), one output tile.
    // Scratch sized for the largest geometry; only the rows this one uses are initialized.
    let (mut st_m, mut qb_m) = (
        MaybeUninit::<[[f32; QB]; NMAX + 8]>::uninit(),
        MaybeUninit::<[[f32; QB]; DMAX]>::uninit(),
    );
    let st = zeroed_prefix(&mut st_m, n8);
    let qb = zeroed_prefix(&mut qb_m, d);
    let mut ob = [[0f32; QB]; 8];
    for h in 0..g.heads {
        let base = h * d * n;
        let (qh, kh, vh) = (
            &q[base..base + d * n],
            &k[base..base + d * n],
            &v[base..base + d * n],
        );
        for i0 in (rows.0..rows.1).step_by(QB) {
            let rn = QB.min(rows.1 - i0);
            for (dd, row) in qb.iter_mut().enumerate().take(d) {
                row[..rn].copy_from_slice(&qh[dd * n + i0..dd * n + i0 + rn]);
                row[rn..].fill(0.0);
            }
            // Sᵀ[j][i] = scale · Σ_d k[d][j] · q[d][i], 8 keys × 32 queries per tile.
            for j0 in (0..n8).step_by(8) {
                let mut acc = [[_mm512_setzero_ps(); 2]; 8];
                if j0 + 8 <= n {
                    // A whole tile of keys: broadcasts straight from memory (FMAs with embedded broadcasts).
                    for (dd, qrow) in qb.iter().enumerate().take(d) {
                        let q0 = _mm512_loadu_ps(qrow.as_ptr());
                        let q1 = _mm512_loadu_ps(qrow.as_ptr().add(16));
                        // SAFETY: dd < d and j0 + 8 <= n, so dd·n + j0 + 7 < d·n = kh.len().
                        let kp = kh.as_ptr().add(dd * n + j0);
                        for (jj, a) in acc.iter_mut().enumerate() {
                            let kv = _mm512_set1_ps(*kp.add(jj));
                            a[0] = _mm512_fmadd_ps(kv, q0, a[0]);
                            a[1] = _mm512_fmadd_ps(kv, q1, a[1]);
                        }
                    }
                } else {
                    for (dd, qrow) in qb.iter().enumerate().take(d) {
                        let q0 = _mm512_loadu_ps(qrow.as_ptr());
                        let q1 = _mm512_loadu_ps(qrow.as_ptr().add(16));
                        let krow = &kh[dd * n..dd * n + n];
                        for (jj, a) in acc.iter_mut().enumerate() {
                            // Keys past n read as 0 (their rows of Sᵀ are never used).
                            let kv = _mm512_set1_ps(krow.get(j0 + jj).copied().unwrap_or(0.0));
                            a[0] = _mm512_fmadd_ps(kv, q0, a[0]);
                            a[1] = _mm512_fmadd_ps(kv, q1, a[1]);
                        }
                    }
                }
                for (jj, a) in acc.iter().enumerate() {
                    let row = st[j0 + jj].as_mut_ptr();
                    _mm512_storeu_ps(row, _mm512_mul_ps(a[0], scale));
                    _mm512_storeu_ps(row.add(16), _mm512_mul_ps(a[1], scale));
                }
            }
            // Softmax along keys, 32 queries per vector pair.
            let mut m = [_mm512_set1_ps(f32::NEG_INFINITY); 2];
            for row in st.iter().take(n) {
                m[0] = _mm512_max_ps(m[0], _mm512_loadu_ps(row.as_ptr()));
                m[1] = _mm512_max_ps(m[1], _mm512_loadu_ps(row.as_ptr().add(16)));
            }
            let mut sum = [_mm512_setzero_ps(); 2];
            for row in st.iter_mut().take(n) {
                for (half, (mh, sh)) in m.iter().zip(sum.iter_mut()).enumerate() {
                    let p = row.as_mut_ptr().add(16 * half);
                    let e = exp_det16(_mm512_sub_ps(_mm512_loadu_ps(p), *mh));
                    _mm512_storeu_ps(p, e);
                    *sh = _mm512_add_ps(*sh, e);
                }
            }
            let inv = [
                _mm512_div_ps(_mm512_set1_ps(1.0), sum[0]),
                _mm512_div_ps(_mm512_set1_ps(1.0), sum[1]),
            ];
            // out[d][i] = inv[i] · Σ_j v[d][j] · Sᵀ[j][i], 8 channels × 32 queries per tile.
            for d0 in (0..d8).step_by(8) {
                let mut acc = [[_mm512_setzero_ps(); 2]; 8];
                if d0 + 8 <= d {
                    // A whole tile of channels: broadcasts straight from memory, 8 rows of v.
                    let vp = vh.as_ptr().add(d0 * n);
                    for (j, row) in st.iter().enumerate().take(n) {
                        let p0 = _mm512_loadu_ps(row.as_ptr());
                        let p1 = _mm512_loadu_ps(row.as_ptr().add(16));
                        for (c, a) in acc.iter_mut().enumerate() {
                            // SAFETY: d0 + c < d and j < n, so (d0 + c)·n + j < d·n = vh.len().
                            let vv = _mm512_set1_ps(*vp.add(c * n + j));
                            a[0] = _mm512_fmadd_ps(vv, p0, a[0]);
                            a[1] = _mm512_fmadd_ps(vv, p1, a[1]);
                        }
                    }
                } else {
                    for (j, row) in st.iter().enumerate().take(n) {
                        let p0 = _mm512_loadu_ps(row.as_ptr());
                        let p1 = _mm512_loadu_ps(row.as_ptr().add(16));
                        for (c, a) in acc.iter_mut().enumerate() {
                            let vv =
                                _mm512_set1_ps(vh.get((d0 + c) * n + j).copied().unwrap_or(0.0));
                            a[0] = _mm512_fmadd_ps(vv, p0, a[0]);
                            a[1] = _mm512_fmadd_ps(vv, p1, a[1]);
                        }
                    }
                }
                for (c, a) in acc.iter().enumerate() {
                    _mm512_storeu_ps(ob[c].as_mut_ptr(), _mm512_mul_ps(a[0], inv[0]));
                    _mm512_storeu_ps(ob[c].as_mut_ptr().add(16), _mm512_mul_ps(a[1], inv[1]));
                }
                for (c, o) in ob.iter().enumerate().take(d.saturating_sub(d0).min(8)) {
                    let at = base + (d0 + c) * n + i0;
                    // SAFETY: tokens i0..i0 + rn lie in `rows` and channel h·d + d0 + c < heads·d, so these rn
                    // floats are inside the output, among those this call may write (the caller's contract).
                    core::ptr::copy_nonoverlapping(o.as_ptr(), out.add(at), rn);
                }
            }
        }
    }
}
