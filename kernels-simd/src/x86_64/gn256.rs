//! AVX2 int8 group norm (+ SiLU), bit-identical to [`quant::group_norm_i8`]: the AVX2 form of [`super::gn512`].
//! The statistics are generic's integer sums (here with `vpmaddwd`), and the element function
//! `quantize(silu(x · mul + add))` runs on 8 lanes with the very operations of the scalar code, `libm::expf`
//! replayed lane by lane for `|x|` in `(2^-14, 87.33)`; lanes outside that range (huge, tiny or NaN arguments)
//! take the scalar code, so every input gives generic's bits. A channel with fewer distinct values than elements
//! goes through a table of its range, as the scalar code does; the others are evaluated element by element.

use core::arch::x86_64::*;

use crate::quant::{self, GnChannel, GroupNormI8Args};

/// int8 group norm (see [`quant::group_norm_i8`]).
pub(crate) fn group_norm_i8(a: &GroupNormI8Args<'_>, input: &[i8], out: &mut [i8]) {
    quant::group_norm_i8_by(
        a,
        input,
        out,
        // SAFETY (both closures): reachable only through the AVX2 tables (avx2 + fma detected).
        |x| unsafe { sums(x) },
        |ch, x, y| unsafe { channel(ch, x, y) },
    );
}

/// [`quant::channel_sums`] with `vpmaddwd`: 16 values widened to `i16` per step, `x·1` and `x·x` added in pairs
/// into `i32` lanes, widened to `i64` every 2^14 values (a lane then holds 2^11 products of at most 2^14, under
/// 2^26); integer sums, so exactly the scalar result.
#[target_feature(enable = "avx2")]
unsafe fn sums(x: &[i8]) -> (i64, i64) {
    let (mut s1, mut s2) = (0i64, 0i64);
    let mut blocks = x.chunks_exact(1 << 14);
    for blk in blocks.by_ref() {
        let (a, b) = sums_vec(blk);
        s1 += a;
        s2 += b;
    }
    let rest = blocks.remainder();
    let whole = rest.len() / 16 * 16;
    let (a, b) = sums_vec(&rest[..whole]);
    let (c, d) = quant::channel_sums(&rest[whole..]);
    (s1 + a + c, s2 + b + d)
}

/// The vector part of [`sums`]: `x.len()` a multiple of 16, at most 2^14.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn sums_vec(x: &[i8]) -> (i64, i64) {
    let ones = _mm256_set1_epi16(1);
    let (mut a1, mut a2) = (_mm256_setzero_si256(), _mm256_setzero_si256());
    for c in x.chunks_exact(16) {
        // SAFETY: a chunk of exactly 16 bytes.
        let w = _mm256_cvtepi8_epi16(_mm_loadu_si128(c.as_ptr() as *const __m128i));
        a1 = _mm256_add_epi32(a1, _mm256_madd_epi16(w, ones));
        a2 = _mm256_add_epi32(a2, _mm256_madd_epi16(w, w));
    }
    (hsum_epi32(a1), hsum_epi32(a2))
}

/// The sum of 8 `i32` lanes (each at most 2^26 in magnitude here: no overflow).
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn hsum_epi32(v: __m256i) -> i64 {
    let mut l = [0i32; 8];
    _mm256_storeu_si256(l.as_mut_ptr() as *mut __m256i, v);
    l.iter().map(|&v| v as i64).sum()
}

/// `y[i] = ch.apply(x[i])` (stops at the shorter slice), through the table of the channel's range where that is
/// shorter than the channel, as the scalar code ([`GnChannel::apply_slice_with`]); the table entries or the
/// elements are evaluated 8 at a time ([`eval8`]), and looked up one by one (AVX2 has no 256-entry byte permute).
#[target_feature(enable = "avx2,fma")]
unsafe fn channel(ch: &GnChannel, x: &[i8], y: &mut [i8]) {
    // SAFETY (the closure): AVX2 + FMA, this function's own features.
    ch.apply_slice_with(
        x,
        y,
        quant::range_i8,
        quant::lookup_i8,
        |x, y| unsafe { eval8(ch, x, y) },
        8,
    );
}

/// `y[i] = ch.apply(x[i])` over the shorter slice, 8 elements per vector, the tail one by one.
#[target_feature(enable = "avx2,fma")]
unsafe fn eval8(ch: &GnChannel, x: &[i8], y: &mut [i8]) {
    let n = x.len().min(y.len());
    let mut i = 0;
    while i + 8 <= n {
        // SAFETY: i + 8 <= n <= x.len(): an 8-byte load.
        let xs = _mm256_cvtepi8_epi32(_mm_loadl_epi64(x.as_ptr().add(i) as *const __m128i));
        store8(ch, _mm256_cvtepi32_ps(xs), &mut y[i..i + 8]);
        i += 8;
    }
    ch.apply_each(&x[i..n], &mut y[i..n]);
}

/// `out[l] = ch.apply(x[l])` for 8 lanes of exact small integers `x` (stops at `out`'s length).
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn store8(ch: &GnChannel, x: __m256, out: &mut [i8]) {
    let y = _mm256_add_ps(
        _mm256_mul_ps(x, _mm256_set1_ps(ch.mul)),
        _mm256_set1_ps(ch.add),
    );
    let v = if ch.silu {
        let Some(e) = expf8(_mm256_sub_ps(_mm256_setzero_ps(), y)) else {
            // Some lane outside the vector domain: the scalar code for all 8.
            let mut xs = [0f32; 8];
            _mm256_storeu_ps(xs.as_mut_ptr(), x);
            for (o, &v) in out.iter_mut().zip(&xs) {
                *o = ch.apply(v as i8);
            }
            return;
        };
        _mm256_div_ps(y, _mm256_add_ps(_mm256_set1_ps(1.0), e))
    } else {
        y
    };
    let q = quantize8(v, ch.out_scale);
    // Lanes are in [-128, 127]: the saturating packs only narrow them.
    let w = _mm_packs_epi32(_mm256_castsi256_si128(q), _mm256_extracti128_si256::<1>(q));
    let mut b = [0i8; 16];
    _mm_storeu_si128(b.as_mut_ptr() as *mut __m128i, _mm_packs_epi16(w, w));
    for (o, &v) in out.iter_mut().zip(&b[..8]) {
        *o = v;
    }
}

/// [`quant::quantize`] on 8 lanes: `round(v / scale)` (ties away from zero), clamped to [-128, 127], NaN → 0.
#[inline]
#[target_feature(enable = "avx2")]
pub(super) unsafe fn quantize8(v: __m256, scale: f32) -> __m256i {
    let d = _mm256_div_ps(v, _mm256_set1_ps(scale));
    let t = _mm256_round_ps::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(d);
    let sign = _mm256_set1_ps(-0.0);
    // |d - trunc(d)| is exact; at least one half rounds away from zero.
    let frac = _mm256_andnot_ps(sign, _mm256_sub_ps(d, t));
    let away = _mm256_cmp_ps::<_CMP_GE_OQ>(frac, _mm256_set1_ps(0.5));
    // ±1.0 with the sign of d where rounding goes away from zero, else 0.
    let one = _mm256_or_ps(_mm256_set1_ps(1.0), _mm256_and_ps(d, sign));
    let r = _mm256_add_ps(t, _mm256_and_ps(away, one));
    let r = _mm256_min_ps(
        _mm256_max_ps(r, _mm256_set1_ps(-128.0)),
        _mm256_set1_ps(127.0),
    );
    // NaN lanes (unordered d) → 0: `vmaxps` / `vminps` return their second operand on NaN, so `r` is a clamp
    // bound there; masked off.
    let ord = _mm256_castps_si256(_mm256_cmp_ps::<_CMP_ORD_Q>(d, d));
    _mm256_and_si256(ord, _mm256_cvttps_epi32(r))
}

/// `libm::expf` on 8 lanes, bit for bit, when every lane has `2^-14 < |x| < 87.33` (else `None`).
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn expf8(x: __m256) -> Option<__m256> {
    // libm's constants, by their bits.
    const LN2_HI: f32 = f32::from_bits(0x3f31_7200);
    const LN2_LO: f32 = f32::from_bits(0x35bf_be8e);
    const INV_LN2: f32 = f32::from_bits(0x3fb8_aa3b);
    const P1: f32 = f32::from_bits(0x3e2a_aa8f);
    const P2: f32 = f32::from_bits(0xbb35_5215);
    let bits = _mm256_castps_si256(x);
    let hx = _mm256_and_si256(bits, _mm256_set1_epi32(0x7fff_ffff));
    // Vector domain: 0x39000000 < hx < 0x42aeac50 (this also excludes NaN and infinities).
    let ok = _mm256_and_si256(
        _mm256_cmpgt_epi32(hx, _mm256_set1_epi32(0x3900_0000)),
        _mm256_cmpgt_epi32(_mm256_set1_epi32(0x42ae_ac50), hx),
    );
    if _mm256_movemask_ps(_mm256_castsi256_ps(ok)) != 0xFF {
        return None;
    }
    let neg = _mm256_cmpgt_epi32(_mm256_setzero_si256(), bits);
    let negf = _mm256_castsi256_ps(neg);
    // k: |x| > 1.5 ln2: (INV_LN2 · x ± 0.5) truncated; 0.5 ln2 < |x| <= 1.5 ln2: ±1; else 0.
    let half = _mm256_blendv_ps(_mm256_set1_ps(0.5), _mm256_set1_ps(-0.5), negf);
    let kbig = _mm256_cvttps_epi32(_mm256_add_ps(
        _mm256_mul_ps(_mm256_set1_ps(INV_LN2), x),
        half,
    ));
    // ±1: 1 | (neg as -2) = 1 or -1.
    let kone = _mm256_or_si256(_mm256_set1_epi32(1), neg);
    let big = _mm256_cmpgt_epi32(hx, _mm256_set1_epi32(0x3f85_1592));
    let mid = _mm256_cmpgt_epi32(hx, _mm256_set1_epi32(0x3eb1_7218));
    let k = _mm256_blendv_epi8(_mm256_and_si256(mid, kone), kbig, big);
    let kf = _mm256_cvtepi32_ps(k);
    // k = 0 lanes: hi = x - 0 = x, lo = 0, x - 0 = x: the scalar code's unreduced branch, same bits.
    let hi = _mm256_sub_ps(x, _mm256_mul_ps(kf, _mm256_set1_ps(LN2_HI)));
    let lo = _mm256_mul_ps(kf, _mm256_set1_ps(LN2_LO));
    let r = _mm256_sub_ps(hi, lo);
    let xx = _mm256_mul_ps(r, r);
    let c = _mm256_sub_ps(
        r,
        _mm256_mul_ps(
            xx,
            _mm256_add_ps(_mm256_set1_ps(P1), _mm256_mul_ps(xx, _mm256_set1_ps(P2))),
        ),
    );
    let q = _mm256_div_ps(_mm256_mul_ps(r, c), _mm256_sub_ps(_mm256_set1_ps(2.0), c));
    let y = _mm256_add_ps(_mm256_set1_ps(1.0), _mm256_add_ps(_mm256_sub_ps(q, lo), hi));
    // scalbnf(y, k) with -126 <= k <= 126 here: one multiply by the normal 2^k (k = 0: y · 1 = y).
    let scale = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(
        k,
        _mm256_set1_epi32(127),
    )));
    Some(_mm256_mul_ps(y, scale))
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;

    /// Every float in a dense sweep of the vector domain (and around its edges) against `libm::expf`.
    #[test]
    fn expf8_is_libm_expf() {
        if !super::super::has_avx2() {
            std::println!("SKIPPED: no AVX2 on this CPU");
            return;
        }
        let mut xs = std::vec::Vec::new();
        let mut b = 0x3900_0001u32;
        while b < 0x42ae_ac50 {
            xs.push(f32::from_bits(b));
            xs.push(-f32::from_bits(b));
            b += 97;
        }
        let mut checked = 0;
        for c in xs.chunks_exact(8) {
            // SAFETY: AVX2 detected above.
            let got = unsafe {
                let v = expf8(_mm256_loadu_ps(c.as_ptr())).expect("inside the vector domain");
                let mut o = [0f32; 8];
                _mm256_storeu_ps(o.as_mut_ptr(), v);
                o
            };
            for (x, g) in c.iter().zip(got) {
                assert_eq!(libm::expf(*x).to_bits(), g.to_bits(), "expf({x:e})");
                checked += 1;
            }
        }
        assert!(checked > 3_000_000);
        // Outside the domain: the caller falls back.
        // SAFETY: as above.
        unsafe {
            for x in [0.0f32, 1e-5, 88.0, -90.0, f32::NAN, f32::INFINITY] {
                assert!(expf8(_mm256_set1_ps(x)).is_none(), "{x}");
            }
        }
    }

    /// `quantize8` against [`quant::quantize`] on halves, ties, clamps, NaN and infinities.
    #[test]
    fn quantize8_is_quantize() {
        if !super::super::has_avx2() {
            std::println!("SKIPPED: no AVX2 on this CPU");
            return;
        }
        let mut vs = std::vec![
            0.0f32,
            -0.0,
            0.5,
            -0.5,
            1.5,
            -1.5,
            2.5,
            -2.5,
            127.49,
            127.5,
            -128.5,
            -129.0,
            1e30,
            -1e30,
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            0.49999997,
        ];
        let mut s = 12345u32;
        for _ in 0..100_000 {
            s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            vs.push(((s >> 8) as f32 / (1u32 << 24) as f32 - 0.5) * 600.0);
        }
        while vs.len() % 8 != 0 {
            vs.push(0.25);
        }
        for scale in [1.0f32, 0.02, 0.5, 3.0] {
            for c in vs.chunks_exact(8) {
                // SAFETY: AVX2 detected above.
                let got = unsafe {
                    let q = quantize8(_mm256_loadu_ps(c.as_ptr()), scale);
                    let mut o = [0i32; 8];
                    _mm256_storeu_si256(o.as_mut_ptr() as *mut __m256i, q);
                    o
                };
                for (v, g) in c.iter().zip(got) {
                    assert_eq!(
                        quant::quantize(*v, scale) as i32,
                        g,
                        "quantize({v:e}, {scale})"
                    );
                }
            }
        }
    }
}
