//! AVX-512 int8 group norm (+ SiLU), bit-identical to [`quant::group_norm_i8`]: the statistics are generic's, and
//! the element function `quantize(silu(x · mul + add))` runs on 16 lanes with the very operations of the scalar
//! code — including `libm::expf` (FreeBSD's algorithm: reduction by `k · ln 2` split in two parts, a degree-2
//! rational approximation, scaling by `2^k`), replayed lane by lane for `|x|` in `(2^-14, 87.33)`. Lanes outside
//! that range (huge, tiny or NaN arguments) take the scalar code, so every input gives generic's bits.

use core::arch::x86_64::*;

use crate::quant::{self, GnChannel, GroupNormI8Args};

/// int8 group norm (see [`quant::group_norm_i8`]).
pub(crate) fn group_norm_i8(a: &GroupNormI8Args<'_>, input: &[i8], out: &mut [i8]) {
    quant::group_norm_i8_by(
        a,
        input,
        out,
        // SAFETY (both closures): reachable only through the AVX-512 table (avx512f/bw detected).
        |x| unsafe { sums(x) },
        |ch, x, y| unsafe { channel(ch, x, y) },
    );
}

/// [`quant::channel_sums`] with `vpmaddwd`: 32 values widened to `i16` per step, `x·1` and `x·x` added in pairs
/// into `i32` lanes, widened to `i64` every 2^15 values (a lane then holds 2^11 products of at most 2^14, and the
/// 16 lanes together at most 2^29);
/// integer sums, so exactly the scalar result.
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn sums(x: &[i8]) -> (i64, i64) {
    let (mut s1, mut s2) = (0i64, 0i64);
    let mut blocks = x.chunks_exact(1 << 15);
    for blk in blocks.by_ref() {
        let (a, b) = sums_vec(blk);
        s1 += a;
        s2 += b;
    }
    let rest = blocks.remainder();
    let whole = rest.len() / 32 * 32;
    let (a, b) = sums_vec(&rest[..whole]);
    let (c, d) = quant::channel_sums(&rest[whole..]);
    (s1 + a + c, s2 + b + d)
}

/// The vector part of [`sums`]: `x.len()` a multiple of 32, at most 2^15.
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn sums_vec(x: &[i8]) -> (i64, i64) {
    let ones = _mm512_set1_epi16(1);
    let (mut a1, mut a2) = (_mm512_setzero_si512(), _mm512_setzero_si512());
    for c in x.chunks_exact(32) {
        // SAFETY: a chunk of exactly 32 bytes.
        let w = _mm512_cvtepi8_epi16(_mm256_loadu_si256(c.as_ptr() as *const __m256i));
        a1 = _mm512_add_epi32(a1, _mm512_madd_epi16(w, ones));
        a2 = _mm512_add_epi32(a2, _mm512_madd_epi16(w, w));
    }
    (
        _mm512_reduce_add_epi32(a1) as i64,
        _mm512_reduce_add_epi32(a2) as i64,
    )
}

/// `y[i] = ch.apply(x[i])` (stops at the shorter slice), through the table of the channel's range where that is
/// shorter than the channel, as the scalar code ([`GnChannel::apply_slice_with`]); the table entries or the
/// elements are evaluated 16 at a time ([`eval16`]), and looked up 64 at a time with VBMI.
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn channel(ch: &GnChannel, x: &[i8], y: &mut [i8]) {
    // SAFETY (the closures): AVX-512 F/BW, this function's own features; VBMI where detected.
    let eval = |x: &[i8], y: &mut [i8]| unsafe { eval16(ch, x, y) };
    if has_vbmi() {
        ch.apply_slice_with(
            x,
            y,
            quant::range_i8,
            |lut, lo, x, y| unsafe { lookup_vbmi(lut, lo, x, y) },
            eval,
            16,
        );
    } else {
        ch.apply_slice_with(x, y, quant::range_i8, quant::lookup_i8, eval, 16);
    }
}

/// `y[i] = ch.apply(x[i])` over the shorter slice, 16 elements per vector, the tail one by one.
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn eval16(ch: &GnChannel, x: &[i8], y: &mut [i8]) {
    let n = x.len().min(y.len());
    let mut i = 0;
    while i + 16 <= n {
        // SAFETY: i + 16 <= n <= x.len().
        let xs = _mm512_cvtepi8_epi32(_mm_loadu_si128(x.as_ptr().add(i) as *const __m128i));
        store16(ch, _mm512_cvtepi32_ps(xs), &mut y[i..i + 16]);
        i += 16;
    }
    ch.apply_each(&x[i..n], &mut y[i..n]);
}

/// Whether the CPU has AVX-512 VBMI (`vpermt2b`): Ice Lake, Sapphire Rapids, Zen 4 and later.
fn has_vbmi() -> bool {
    #[cfg(feature = "std")]
    {
        std::is_x86_feature_detected!("avx512vbmi")
    }
    #[cfg(not(feature = "std"))]
    {
        cfg!(target_feature = "avx512vbmi")
    }
}

/// `y[i] = lut[(x[i] − lo) as u8]` 64 bytes at a time: the offsets as wrapping byte differences, then two
/// `vpermt2b` look up the low and high halves of the table (7 index bits each) and the offset's top bit picks between
/// them; the tail goes through a masked load and store.
/// (The scalar loop was a third of the int8 group norm's time on 32×32 layers: 1 024 lookups per channel.)
///
/// # Safety
/// AVX-512 F/BW and VBMI; `x` and `y` have the same length.
#[target_feature(enable = "avx512f,avx512bw,avx512vbmi")]
unsafe fn lookup_vbmi(lut: &[i8; 256], lo: i8, x: &[i8], y: &mut [i8]) {
    let lp = lut.as_ptr() as *const __m512i;
    // SAFETY: `lut` is 256 bytes: four unaligned 64-byte loads.
    let t = [
        _mm512_loadu_si512(lp),
        _mm512_loadu_si512(lp.add(1)),
        _mm512_loadu_si512(lp.add(2)),
        _mm512_loadu_si512(lp.add(3)),
    ];
    let n = x.len().min(y.len());
    let mut i = 0;
    while i < n {
        let m: __mmask64 = if n - i >= 64 {
            !0
        } else {
            (1u64 << (n - i)) - 1
        };
        // SAFETY: lanes past `n - i` are masked off in the load and the store.
        let idx = _mm512_sub_epi8(
            _mm512_maskz_loadu_epi8(m, x.as_ptr().add(i)),
            _mm512_set1_epi8(lo),
        );
        let lo = _mm512_permutex2var_epi8(t[0], idx, t[1]);
        let hi = _mm512_permutex2var_epi8(t[2], idx, t[3]);
        let v = _mm512_mask_blend_epi8(_mm512_movepi8_mask(idx), lo, hi);
        _mm512_mask_storeu_epi8(y.as_mut_ptr().add(i), m, v);
        i += 64;
    }
}

/// `out[l] = ch.apply(x[l])` for 16 lanes of exact small integers `x`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn store16(ch: &GnChannel, x: __m512, out: &mut [i8]) {
    let y = _mm512_add_ps(
        _mm512_mul_ps(x, _mm512_set1_ps(ch.mul)),
        _mm512_set1_ps(ch.add),
    );
    let v = if ch.silu {
        let Some(e) = expf16(_mm512_sub_ps(_mm512_setzero_ps(), y)) else {
            // Some lane outside the vector domain: the scalar code for all 16.
            let mut xs = [0f32; 16];
            _mm512_storeu_ps(xs.as_mut_ptr(), x);
            for (o, &v) in out.iter_mut().zip(&xs) {
                *o = ch.apply(v as i8);
            }
            return;
        };
        _mm512_div_ps(y, _mm512_add_ps(_mm512_set1_ps(1.0), e))
    } else {
        y
    };
    let q = quantize16(v, ch.out_scale);
    let mut b = [0i8; 16];
    _mm_storeu_si128(b.as_mut_ptr() as *mut __m128i, _mm512_cvtsepi32_epi8(q));
    for (o, &v) in out.iter_mut().zip(&b) {
        *o = v;
    }
}

/// [`quant::quantize`] on 16 lanes: `round(v / scale)` (ties away from zero), clamped to [-128, 127], NaN → 0.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn quantize16(v: __m512, scale: f32) -> __m512i {
    let d = _mm512_div_ps(v, _mm512_set1_ps(scale));
    let t = _mm512_roundscale_ps::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(d);
    // |d - trunc(d)| is exact; at least one half rounds away from zero.
    let frac = _mm512_abs_ps(_mm512_sub_ps(d, t));
    let away = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(frac, _mm512_set1_ps(0.5));
    // ±1.0 with the sign of d, by integer logic (the `_ps` forms need AVX-512 DQ, which this tier does not ask
    // for: without it they compile to calls, not instructions).
    let one = _mm512_castsi512_ps(_mm512_or_si512(
        _mm512_set1_epi32(0x3f80_0000),
        _mm512_and_si512(_mm512_castps_si512(d), _mm512_set1_epi32(i32::MIN)),
    ));
    let r = _mm512_mask_add_ps(t, away, t, one);
    let r = _mm512_min_ps(
        _mm512_max_ps(r, _mm512_set1_ps(-128.0)),
        _mm512_set1_ps(127.0),
    );
    let nan = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(d, d);
    _mm512_maskz_cvttps_epi32(!nan, r)
}

/// `libm::expf` on 16 lanes, bit for bit, when every lane has `2^-14 < |x| < 87.33` (else `None`).
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn expf16(x: __m512) -> Option<__m512> {
    // libm's constants, by their bits.
    const LN2_HI: f32 = f32::from_bits(0x3f31_7200);
    const LN2_LO: f32 = f32::from_bits(0x35bf_be8e);
    const INV_LN2: f32 = f32::from_bits(0x3fb8_aa3b);
    const P1: f32 = f32::from_bits(0x3e2a_aa8f);
    const P2: f32 = f32::from_bits(0xbb35_5215);
    let bits = _mm512_castps_si512(x);
    let hx = _mm512_and_si512(bits, _mm512_set1_epi32(0x7fff_ffff));
    // Vector domain: 0x39000000 < hx < 0x42aeac50 (this also excludes NaN and infinities).
    let lo_ok = _mm512_cmpgt_epi32_mask(hx, _mm512_set1_epi32(0x3900_0000));
    let hi_ok = _mm512_cmplt_epi32_mask(hx, _mm512_set1_epi32(0x42ae_ac50));
    if lo_ok & hi_ok != 0xFFFF {
        return None;
    }
    let neg = _mm512_cmplt_epi32_mask(bits, _mm512_setzero_si512());
    // k: |x| > 1.5 ln2: (INV_LN2 · x ± 0.5) truncated; 0.5 ln2 < |x| <= 1.5 ln2: ±1; else 0.
    let half = _mm512_mask_blend_ps(neg, _mm512_set1_ps(0.5), _mm512_set1_ps(-0.5));
    let kbig = _mm512_cvttps_epi32(_mm512_add_ps(
        _mm512_mul_ps(_mm512_set1_ps(INV_LN2), x),
        half,
    ));
    let kone = _mm512_mask_blend_epi32(neg, _mm512_set1_epi32(1), _mm512_set1_epi32(-1));
    let big = _mm512_cmpgt_epi32_mask(hx, _mm512_set1_epi32(0x3f85_1592));
    let mid = _mm512_cmpgt_epi32_mask(hx, _mm512_set1_epi32(0x3eb1_7218));
    let k = _mm512_mask_blend_epi32(big, _mm512_maskz_mov_epi32(mid, kone), kbig);
    let kf = _mm512_cvtepi32_ps(k);
    // k = 0 lanes: hi = x - 0 = x, lo = 0, x - 0 = x: the scalar code's unreduced branch, same bits.
    let hi = _mm512_sub_ps(x, _mm512_mul_ps(kf, _mm512_set1_ps(LN2_HI)));
    let lo = _mm512_mul_ps(kf, _mm512_set1_ps(LN2_LO));
    let r = _mm512_sub_ps(hi, lo);
    let xx = _mm512_mul_ps(r, r);
    let c = _mm512_sub_ps(
        r,
        _mm512_mul_ps(
            xx,
            _mm512_add_ps(_mm512_set1_ps(P1), _mm512_mul_ps(xx, _mm512_set1_ps(P2))),
        ),
    );
    let q = _mm512_div_ps(_mm512_mul_ps(r, c), _mm512_sub_ps(_mm512_set1_ps(2.0), c));
    let y = _mm512_add_ps(_mm512_set1_ps(1.0), _mm512_add_ps(_mm512_sub_ps(q, lo), hi));
    // scalbnf(y, k) with -126 <= k <= 126 here: one multiply by the normal 2^k (k = 0: y · 1 = y).
    let scale = _mm512_castsi512_ps(_mm512_slli_epi32::<23>(_mm512_add_epi32(
        k,
        _mm512_set1_epi32(127),
    )));
    Some(_mm512_mul_ps(y, scale))
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;

    /// Every float in a dense sweep of the vector domain (and around its edges) against `libm::expf`.
    #[test]
    fn expf16_is_libm_expf() {
        if !super::super::has_avx512() {
            std::println!("SKIPPED: no AVX-512 on this CPU");
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
        for c in xs.chunks_exact(16) {
            // SAFETY: AVX-512 F detected above.
            let got = unsafe {
                let v = expf16(_mm512_loadu_ps(c.as_ptr())).expect("inside the vector domain");
                let mut o = [0f32; 16];
                _mm512_storeu_ps(o.as_mut_ptr(), v);
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
                assert!(expf16(_mm512_set1_ps(x)).is_none(), "{x}");
            }
        }
    }
}
