//! AVX-512 int8 attention, bit-identical to [`quant::attention_i8`].
//!
//! The lanes of every vector are 16 *query rows*, so each row's softmax and weighted sum are ordinary lane-wise
//! chains in generic's order, and the outputs (`[channel][token]`) are stored 16 tokens at a time. A block of 32
//! query rows (two vectors) goes through:
//!
//! * **Scores** `S[j][i]`: `vpdpbusd` of the block's query quads (biased to unsigned, `q ^ 0x80`, packed as
//!   `[d / 4][i]` words) with the broadcast key quad of token `j`, minus `128 · Σ_d k[d][j]`, so the integer scores
//!   are exact; then `as f32 · qk`. The row maxima are lane-wise (order-free).
//! * **Softmax**: [`exp_det16`] (the same operations as [`quant::exp_det`], lane by lane) and the row sums, in key
//!   order, lane-wise.
//! * **Values**: `Σ_j e[j][i] · v[c][j]` in key order (multiply, then add) for 8 channels × 32 rows per register
//!   tile, then `· (sv / sum)` and [`quant::quantize`] (division, round half away from zero, clamp) on 16 lanes.

use core::arch::x86_64::*;
use core::mem::MaybeUninit;

use super::zeroed_prefix;

use crate::generic::AttentionGeom;
use crate::parallel::{QRowsOut, RawQ, RawQOut};
use crate::quant::{self, QOut};

/// Query rows per block (two vectors).
const NI: usize = 32;
/// Most tokens.
const NMAX: usize = 1024;
/// Packed key words (`ceil(d / 4) · n`): 128 KiB.
const KQ: usize = 32 * 1024;
/// Values as `f32` `[d][n]`: 256 KiB (ddpm-cifar10-32's 256 channels × 256 tokens).
const VT: usize = 64 * 1024;
/// Channels per register tile of the value pass.
const CB: usize = 8;

/// Whether the fast path takes this geometry.
fn fits(g: &AttentionGeom) -> bool {
    let (n, d) = (g.n, g.head_dim);
    n > 0 && d > 0 && n <= NMAX && d <= 1024 && d.div_ceil(4) * n <= KQ && n * d <= VT
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
    let raw = match RawQOut::for_kernel(g, q, k, v, scores.len(), out, fits(g)) {
        Ok(raw) => raw,
        Err(out) => return super::avx2::attention_i8(g, q, sq, k, sk, v, sv, scores, out),
    };
    // SAFETY: reachable only through the AVX-512 table (avx512f/bw/vnni detected); every slice holds `total`
    // elements (the output borrowed mutably, so all of it may be written) and the geometry passed `fits`.
    unsafe { attention_i8_512(g, q, sq, k, sk, v, sv, raw) }
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
    // SAFETY: as in `attention_i8`; `RawQOut::rows_for_kernel` checked the output is `[heads·head_dim][n]` of at least
    // `total` elements, and the kernel writes only its tokens, the ones `RowsOut::as_mut_ptr` lets this worker
    // write.
    unsafe { attention_i8_512(g, q, sq, k, sk, v, sv, raw) };
    true
}

/// [`quant::exp_det`] on 16 lanes: the same operations in the same order (no fusion), so the same bits.
#[inline]
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn exp_det16(x: __m512) -> __m512 {
    // `f32::clamp` keeps a NaN: `vmaxps` / `vminps` return their second operand when either is NaN, so x goes
    // second.
    let x = _mm512_min_ps(
        _mm512_set1_ps(88.0),
        _mm512_max_ps(_mm512_set1_ps(-87.0), x),
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

/// [`quant::quantize`] on 16 lanes: `y / scale` rounded half away from zero (exactly, as `roundf`), NaN to 0,
/// clamped to `[-128, 127]`; returned as `i32` lanes.
#[inline]
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn quantize16(y: __m512, scale: f32) -> __m512i {
    let x = _mm512_div_ps(y, _mm512_set1_ps(scale));
    _mm512_cvtps_epi32(clamp_i8_range(round_half_away16(x), x))
}

/// `roundf` on 16 lanes: truncate, then step away from zero when the dropped fraction is at least one half. Both
/// steps are exact in `f32`, so this is the correctly rounded result `roundf` returns.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn round_half_away16(x: __m512) -> __m512 {
    let t = _mm512_roundscale_ps::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(x);
    let frac = _mm512_abs_ps(_mm512_sub_ps(x, t));
    let up = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(frac, _mm512_set1_ps(0.5));
    let one = _mm512_castsi512_ps(_mm512_or_si512(
        _mm512_and_si512(_mm512_castps_si512(x), _mm512_set1_epi32(i32::MIN)),
        _mm512_castps_si512(_mm512_set1_ps(1.0)),
    ));
    _mm512_mask_add_ps(t, up, t, one)
}

/// NaN lanes of `x` to 0, then `r` clamped to `[-128, 127]`.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn clamp_i8_range(r: __m512, x: __m512) -> __m512 {
    let nan = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(x, x);
    let r = _mm512_mask_mov_ps(r, nan, _mm512_setzero_ps());
    _mm512_min_ps(
        _mm512_max_ps(r, _mm512_set1_ps(-128.0)),
        _mm512_set1_ps(127.0),
    )
}

/// The attention of the query tokens `out.rows` (`r0 ≤ r1 ≤ n`), written through `out`, which must be valid for
/// writes of `[heads·head_dim][n]` elements at those tokens of every channel.
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
    out: RawQOut,
) {
    let (n, d) = (g.n, g.head_dim);
    let rows = out.rows;
    let qk = _mm512_set1_ps(sq * sk * (1.0 / libm::sqrtf(d as f32)));
    let dq = d.div_ceil(4);
    // Scratch sized for the largest geometry; only the part this one uses is initialized.
    let (mut kq_m, mut vf_m) = (
        MaybeUninit::<[i32; KQ]>::uninit(),
        MaybeUninit::<[f32; VT]>::uninit(),
    );
    let (mut s_m, mut qw_m) = (
        MaybeUninit::<[f32; NMAX * NI]>::uninit(),
        MaybeUninit::<[i32; 256 * NI]>::uninit(),
    );
    let kq = zeroed_prefix(&mut kq_m, dq * n);
    let vf = zeroed_prefix(&mut vf_m, d * n);
    let s = zeroed_prefix(&mut s_m, n * NI);
    let qw = zeroed_prefix(&mut qw_m, dq * NI);
    let mut corr = [0i32; NMAX];
    for h in 0..g.heads {
        let base = h * d * n;
        let (qh, kh, vh) = (
            &q[base..base + d * n],
            &k[base..base + d * n],
            &v[base..base + d * n],
        );
        pack_quads(kh, d, n, 0, n, 0, kq);
        let corr = &mut corr[..n];
        corr.fill(0);
        for krow in kh.chunks_exact(n) {
            for (c, &x) in corr.iter_mut().zip(krow) {
                *c += x as i32;
            }
        }
        for c in corr.iter_mut() {
            *c *= 128;
        }
        for (dst, &x) in vf.iter_mut().zip(vh) {
            *dst = x as f32;
        }
        for i0 in (rows.0..rows.1).step_by(NI) {
            let ni = NI.min(rows.1 - i0);
            // Query quads of rows i0.., biased; rows past n read as the biased zero (their lanes are never stored).
            pack_quads(qh, d, n, i0, ni, -128, qw);
            // Scores and row maxima.
            let mut mx = [_mm512_set1_ps(f32::NEG_INFINITY); 2];
            for (j, &cj) in corr.iter().enumerate() {
                let mut acc = [_mm512_setzero_si512(); 2];
                for t in 0..dq {
                    // SAFETY: t < dq and j < n, so t · n + j < dq · n <= KQ; qw holds dq · NI words.
                    let w = _mm512_set1_epi32(*kq.get_unchecked(t * n + j));
                    let qp = qw.as_ptr().add(t * NI);
                    acc[0] =
                        _mm512_dpbusd_epi32(acc[0], _mm512_loadu_si512(qp as *const __m512i), w);
                    acc[1] = _mm512_dpbusd_epi32(
                        acc[1],
                        _mm512_loadu_si512(qp.add(16) as *const __m512i),
                        w,
                    );
                }
                let c = _mm512_set1_epi32(cj);
                for (l, a) in acc.iter().enumerate() {
                    let sc = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(*a, c)), qk);
                    // SAFETY: j · NI + 16 · l + 15 < n · NI <= NMAX · NI, the length of `s`.
                    _mm512_storeu_ps(s.as_mut_ptr().add(j * NI + 16 * l), sc);
                    mx[l] = _mm512_max_ps(mx[l], sc);
                }
            }
            // exp(s - max) in place; the sums in key order.
            let mut sum = [_mm512_setzero_ps(); 2];
            for j in 0..n {
                for l in 0..2 {
                    // SAFETY: as above.
                    let p = s.as_mut_ptr().add(j * NI + 16 * l);
                    let e = exp_det16(_mm512_sub_ps(_mm512_loadu_ps(p), mx[l]));
                    _mm512_storeu_ps(p, e);
                    sum[l] = _mm512_add_ps(sum[l], e);
                }
            }
            let f = [
                _mm512_div_ps(_mm512_set1_ps(sv), sum[0]),
                _mm512_div_ps(_mm512_set1_ps(sv), sum[1]),
            ];
            let m0 = if ni >= 16 {
                0xFFFF
            } else {
                ((1u32 << ni) - 1) as u16
            };
            let m1 = if ni >= 32 {
                0xFFFF
            } else if ni > 16 {
                ((1u32 << (ni - 16)) - 1) as u16
            } else {
                0
            };
            // Σ_j e_j · v_j, key order, CB channels at a time (a short last block repeats its last channel).
            for c0 in (0..d).step_by(CB) {
                let cb = CB.min(d - c0);
                let mut acc = [[_mm512_setzero_ps(); 2]; CB];
                for j in 0..n {
                    // SAFETY: as above; (c0 + min(c, cb - 1)) · n + j < d · n <= VT.
                    let e0 = _mm512_loadu_ps(s.as_ptr().add(j * NI));
                    let e1 = _mm512_loadu_ps(s.as_ptr().add(j * NI + 16));
                    for (c, a) in acc.iter_mut().enumerate() {
                        let x = _mm512_set1_ps(*vf.get_unchecked((c0 + c.min(cb - 1)) * n + j));
                        a[0] = _mm512_add_ps(a[0], _mm512_mul_ps(e0, x));
                        a[1] = _mm512_add_ps(a[1], _mm512_mul_ps(e1, x));
                    }
                }
                for (c, a) in acc.iter().enumerate().take(cb) {
                    let at = base + (c0 + c) * n + i0;
                    for l in 0..2 {
                        let y = _mm512_mul_ps(a[l], f[l]);
                        let m = if l == 0 { m0 } else { m1 };
                        // SAFETY: the lanes set in m are tokens i0 + 16 l + r < rows.1 <= n, inside `rows`, so
                        // the elements written are base + (c0 + c) · n + i < heads · d · n, ones this call may
                        // write (the caller's contract).
                        match out.out {
                            RawQ::I8(p, scale) => _mm512_mask_cvtsepi32_storeu_epi8(
                                p.add(at + 16 * l),
                                m,
                                quantize16(y, scale),
                            ),
                            RawQ::F32(p) => _mm512_mask_storeu_ps(p.add(at + 16 * l), m, y),
                        }
                    }
                }
            }
        }
    }
}

/// Words of 4 consecutive rows of `x` (`[d][n]`, row `4t + b` in byte `b`, missing rows 0), each byte XORed with
/// `xor`, for columns `i0..i0 + cols`: `dst[t · stride + c]` with `stride = dst.len() / ceil(d / 4)` (`n` for keys,
/// `NI` for a query block). Columns past `cols` up to the stride are filled as if their bytes were 0.
fn pack_quads(x: &[i8], d: usize, n: usize, i0: usize, cols: usize, xor: i8, dst: &mut [i32]) {
    let dq = d.div_ceil(4);
    let stride = dst.len() / dq.max(1);
    let fill = i32::from_le_bytes([xor as u8; 4]);
    for t in 0..dq {
        let row = &mut dst[t * stride..(t + 1) * stride];
        row.fill(fill);
        let mut c = 0;
        if 4 * t + 4 <= d {
            while c + 16 <= cols {
                let at = (4 * t) * n + i0 + c;
                let chunk = &mut row[c..c + 16];
                if at + 3 * n + 16 <= x.len() {
                    // SAFETY: SSE2 is part of x86_64; the four rows hold 16 bytes from `at` (the last one checked
                    // just above), and `chunk` is 16 words = 64 bytes.
                    unsafe {
                        super::vnni::interleave16(
                            x.as_ptr().add(at),
                            n,
                            xor,
                            super::vnni::as_bytes_mut(chunk),
                        )
                    };
                }
                c += 16;
            }
        }
        for (cc, w) in row.iter_mut().enumerate().take(cols).skip(c) {
            let mut b = [xor as u8; 4];
            for (r, byte) in b.iter_mut().enumerate() {
                if let Some(&v) = x.get((4 * t + r) * n + i0 + cc).filter(|_| 4 * t + r < d) {
                    *byte = (v as u8) ^ (xor as u8);
                }
            }
            *w = i32::from_le_bytes(b);
        }
    }
}

#[cfg(all(test, feature = "std"))]
mod tests {
    use super::*;
    extern crate std;
    use std::{eprintln, vec::Vec};

    /// The 16-lane quantization equals `quant::quantize` on ties, near-ties, huge values, infinities and NaN.
    #[test]
    fn quantize16_matches_scalar() {
        if !super::super::has_avx512() {
            eprintln!("SKIPPED: no AVX-512 on this CPU");
            return;
        }
        let mut xs: Vec<f32> = Vec::new();
        for k in -300..300 {
            let h = k as f32 + 0.5;
            xs.extend([
                h,
                f32::from_bits(h.to_bits() + 1),
                f32::from_bits(h.to_bits() - 1),
                k as f32,
            ]);
        }
        xs.extend([
            0.0,
            -0.0,
            0.49999997,
            -0.49999997,
            1e9,
            -1e9,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
        ]);
        let mut st = 1u32;
        for _ in 0..20000 {
            st = st.wrapping_mul(1664525).wrapping_add(1013904223);
            xs.push(f32::from_bits(st) % 1000.0);
        }
        for scale in [1.0f32, 0.04, 3.0] {
            for ch in xs.chunks(16) {
                let mut lanes = [0f32; 16];
                lanes[..ch.len()].copy_from_slice(ch);
                let mut got = [0i32; 16];
                // SAFETY: AVX-512 F detected above; `lanes` and `got` hold 16 elements.
                unsafe {
                    let v = quantize16(_mm512_loadu_ps(lanes.as_ptr()), scale);
                    _mm512_storeu_si512(got.as_mut_ptr() as *mut __m512i, v);
                }
                for (x, g) in lanes.iter().zip(got) {
                    assert_eq!(g, quant::quantize(*x, scale) as i32, "{x} / {scale}");
                }
            }
        }
    }
}
