//! AVX-512 int8 attention, bit-identical to [`quant::attention_i8`].
//!
//! * Scores: `vpdpbusd` over 16 keys per vector, 4 channels per lane: the query quad is biased to unsigned
//!   (`q ^ 0x80`) and `128 · Σ_d k` is subtracted per key, so the integer scores are exact; then `as f32 · qk`.
//! * Softmax: the row maximum (order-free), [`exp_det16`] (the same operations as [`quant::exp_det`], lane by lane),
//!   and the sum in key order — for 8 query rows at once, so 8 independent add chains hide the latency while each
//!   row keeps generic's order.
//! * Values: `Σ_j e_j · v_j` in key order (multiply, then add) for 32 channels × 8 rows per register tile.

use core::arch::x86_64::*;

use crate::generic::AttentionGeom;
use crate::quant::{self, QOut};

/// Query rows per block.
const R: usize = 8;
/// Most tokens.
const NMAX: usize = 1024;
/// Packed key words (`ceil(d / 4) · n` rounded up to 16 keys): 128 KiB.
const KQ: usize = 32 * 1024;
/// Values as `f32` `[j][d rounded up to 32]`: 256 KiB (ddpm-cifar10-32's 256 channels × 256 tokens).
const VT: usize = 64 * 1024;

/// Whether the fast path takes this geometry.
fn fits(g: &AttentionGeom) -> bool {
    let (n, d) = (g.n, g.head_dim);
    n > 0
        && d > 0
        && n <= NMAX
        && d <= 1024
        && d.div_ceil(4) * n.next_multiple_of(16) <= KQ
        && n * d.next_multiple_of(32) <= VT
}

/// int8 attention (arguments as [`quant::attention_i8`]); other geometries go to the AVX2 kernel.
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
    let total = g.heads * g.head_dim * g.n;
    let out_len = match &out {
        QOut::I8 { data, .. } => data.len(),
        QOut::F32(d) => d.len(),
    };
    if !fits(g)
        || q.len() < total
        || k.len() < total
        || v.len() < total
        || out_len < total
        || scores.len() < g.n
    {
        return super::avx2::attention_i8(g, q, sq, k, sk, v, sv, scores, out);
    }
    // SAFETY: reachable only through the AVX-512 table (avx512f/bw/vnni detected); every slice holds `total`
    // elements and the geometry passed `fits`.
    unsafe { attention_i8_512(g, q, sq, k, sk, v, sv, out) }
}

/// [`quant::exp_det`] on 16 lanes: the same operations in the same order (no fusion), so the same bits.
#[inline]
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn exp_det16(x: __m512) -> __m512 {
    let x = _mm512_min_ps(
        _mm512_max_ps(x, _mm512_set1_ps(-87.0)),
        _mm512_set1_ps(88.0),
    );
    let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
        _mm512_mul_ps(x, _mm512_set1_ps(core::f32::consts::LOG2_E)),
    );
    let r = _mm512_sub_ps(x, _mm512_mul_ps(n, _mm512_set1_ps(quant::EXP_C1)));
    let r = _mm512_sub_ps(r, _mm512_mul_ps(n, _mm512_set1_ps(quant::EXP_C2)));
    let mut p = _mm512_set1_ps(quant::EXP_POLY[0]);
    for &c in &quant::EXP_POLY[1..] {
        p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(c));
    }
    let pow2 = _mm512_castsi512_ps(_mm512_slli_epi32::<23>(_mm512_add_epi32(
        _mm512_cvtps_epi32(n),
        _mm512_set1_epi32(127),
    )));
    _mm512_mul_ps(p, pow2)
}

#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn attention_i8_512(
    g: &AttentionGeom,
    q: &[i8],
    sq: f32,
    k: &[i8],
    sk: f32,
    v: &[i8],
    sv: f32,
    mut out: QOut<'_>,
) {
    let (n, d) = (g.n, g.head_dim);
    let qk = sq * sk * (1.0 / libm::sqrtf(d as f32));
    let dq = d.div_ceil(4);
    let n16 = n.next_multiple_of(16);
    let dpad = d.next_multiple_of(32);
    let mut kq = [0i32; KQ];
    let mut corr = [0i32; NMAX + 16];
    let mut vt = [0f32; VT];
    let mut e = [[0f32; NMAX + 16]; R];
    let mut qw = [0i32; 256];
    for h in 0..g.heads {
        let base = h * d * n;
        let (qh, kh, vh) = (
            &q[base..base + d * n],
            &k[base..base + d * n],
            &v[base..base + d * n],
        );
        // Keys packed as [d / 4][j] words of 4 signed bytes; the bias correction per key.
        for t in 0..dq {
            for j in 0..n16 {
                let mut word = [0u8; 4];
                for (b, byte) in word.iter_mut().enumerate() {
                    let dd = 4 * t + b;
                    if dd < d && j < n {
                        *byte = kh[dd * n + j] as u8;
                    }
                }
                kq[t * n16 + j] = i32::from_le_bytes(word);
            }
        }
        for (j, c) in corr.iter_mut().enumerate().take(n16) {
            *c = if j < n {
                (0..d).map(|dd| kh[dd * n + j] as i32).sum::<i32>() * 128
            } else {
                0
            };
        }
        for j in 0..n {
            for dd in 0..dpad {
                vt[j * dpad + dd] = if dd < d { vh[dd * n + j] as f32 } else { 0.0 };
            }
        }
        for i0 in (0..n).step_by(R) {
            let rn = R.min(n - i0);
            let mut sums = [0f32; R];
            for (r, er) in e.iter_mut().enumerate().take(rn) {
                let i = i0 + r;
                for (t, w) in qw.iter_mut().enumerate().take(dq) {
                    let mut word = [0x80u8; 4];
                    for (b, byte) in word.iter_mut().enumerate() {
                        let dd = 4 * t + b;
                        if dd < d {
                            *byte = (qh[dd * n + i] as u8) ^ 0x80;
                        }
                    }
                    *w = i32::from_le_bytes(word);
                }
                let mut mv = _mm512_set1_ps(f32::NEG_INFINITY);
                let mut jb = 0;
                while jb < n16 {
                    let mut acc = _mm512_setzero_si512();
                    for (t, &w) in qw.iter().enumerate().take(dq) {
                        // SAFETY: t · n16 + jb + 15 < dq · n16 <= KQ.
                        let kv =
                            _mm512_loadu_si512(kq.as_ptr().add(t * n16 + jb) as *const __m512i);
                        acc = _mm512_dpbusd_epi32(acc, _mm512_set1_epi32(w), kv);
                    }
                    // SAFETY: jb + 15 < n16 <= NMAX + 16, the length of `corr` and of `er`.
                    let c = _mm512_loadu_si512(corr.as_ptr().add(jb) as *const __m512i);
                    let s = _mm512_mul_ps(
                        _mm512_cvtepi32_ps(_mm512_sub_epi32(acc, c)),
                        _mm512_set1_ps(qk),
                    );
                    _mm512_storeu_ps(er.as_mut_ptr().add(jb), s);
                    // Keys past `n` do not count towards the maximum.
                    let valid = if jb + 16 <= n {
                        0xFFFF
                    } else {
                        ((1u32 << (n - jb)) - 1) as u16
                    };
                    mv = _mm512_mask_max_ps(mv, valid, mv, s);
                    jb += 16;
                }
                let m = _mm512_set1_ps(_mm512_reduce_max_ps(mv));
                let mut jb = 0;
                while jb < n16 {
                    // SAFETY: as above.
                    let p = er.as_mut_ptr().add(jb);
                    _mm512_storeu_ps(p, exp_det16(_mm512_sub_ps(_mm512_loadu_ps(p), m)));
                    jb += 16;
                }
            }
            // The softmax sums, key order per row (rows interleaved: independent chains).
            for j in 0..n {
                for (s, er) in sums.iter_mut().zip(e.iter()).take(rn) {
                    *s += er[j];
                }
            }
            // Σ_j e_j · v_j for 32 channels × the block's rows, key order.
            let mut tmp = [0f32; 32];
            for d0 in (0..dpad).step_by(32) {
                let mut acc = [[_mm512_setzero_ps(); 2]; R];
                for j in 0..n {
                    // SAFETY: j · dpad + d0 + 31 < n · dpad <= VT.
                    let vp = vt.as_ptr().add(j * dpad + d0);
                    let v0 = _mm512_loadu_ps(vp);
                    let v1 = _mm512_loadu_ps(vp.add(16));
                    for (a, er) in acc.iter_mut().zip(e.iter()).take(rn) {
                        let ev = _mm512_set1_ps(*er.get_unchecked(j));
                        a[0] = _mm512_add_ps(a[0], _mm512_mul_ps(ev, v0));
                        a[1] = _mm512_add_ps(a[1], _mm512_mul_ps(ev, v1));
                    }
                }
                for (r, a) in acc.iter().enumerate().take(rn) {
                    let f = _mm512_set1_ps(sv / sums[r]);
                    _mm512_storeu_ps(tmp.as_mut_ptr(), _mm512_mul_ps(a[0], f));
                    _mm512_storeu_ps(tmp.as_mut_ptr().add(16), _mm512_mul_ps(a[1], f));
                    let i = i0 + r;
                    for (c, &y) in tmp.iter().enumerate().take(d.saturating_sub(d0).min(32)) {
                        let idx = base + (d0 + c) * n + i;
                        match &mut out {
                            QOut::I8 { data, scale } => {
                                if let Some(o) = data.get_mut(idx) {
                                    *o = quant::quantize(y, *scale);
                                }
                            }
                            QOut::F32(data) => {
                                if let Some(o) = data.get_mut(idx) {
                                    *o = y;
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}
