//! AVX-512 f32 group norm (+ FiLM, + SiLU): the statistics summed in 4 independent `zmm` chains (a single chain
//! waits on the adder's latency every 16 elements), and SiLU as `y · 1/(1 + e^{−y})` with a polynomial `exp`
//! scaled by `vscalefps` and the reciprocal from `vrcp14ps` plus one Newton step (a `zmm` division costs about ten
//! times the FMAs around it). Two passes for the statistics, as PyTorch and [`generic::group_norm`]; the sums are
//! taken in a different order, so results agree within the tier tests' `1e-5`, not bit for bit.

use core::arch::x86_64::*;

use crate::generic;

/// Group norm with the layout and arguments of [`generic::group_norm`]; slices too short for `c · hw` go to it.
pub(crate) fn group_norm(a: &generic::GroupNormArgs<'_>, input: &[f32], out: &mut [f32]) {
    if !a.vector_ok(input, out) {
        return generic::group_norm(a, input, out);
    }
    // SAFETY: this table is only selected when the CPU has AVX-512 F (`super::has_avx512`); `input` and `out` hold
    // `c · hw` elements (`vector_ok`).
    unsafe { group_norm_512(a, input, out) }
}

/// Mask of the first `n` lanes (`n <= 16`).
#[inline(always)]
fn lanes(n: usize) -> __mmask16 {
    ((1u32 << n.min(16)) - 1) as __mmask16
}

/// `Σ f(x[j])` over `len` floats at `x`, 64 at a time in 4 chains, then a masked 16-lane tail.
///
/// # Safety
/// AVX-512 F; `x .. x + len` readable.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn sum_by(x: *const f32, len: usize, f: impl Fn(__m512) -> __m512) -> f32 {
    let mut s = [_mm512_setzero_ps(); 4];
    let mut j = 0;
    while j + 64 <= len {
        for (i, si) in s.iter_mut().enumerate() {
            *si = _mm512_add_ps(*si, f(_mm512_loadu_ps(x.add(j + 16 * i))));
        }
        j += 64;
    }
    while j < len {
        let m = lanes(len - j);
        let v = f(_mm512_maskz_loadu_ps(m, x.add(j)));
        s[0] = _mm512_add_ps(s[0], _mm512_maskz_mov_ps(m, v));
        j += 16;
    }
    _mm512_reduce_add_ps(_mm512_add_ps(
        _mm512_add_ps(s[0], s[1]),
        _mm512_add_ps(s[2], s[3]),
    ))
}

/// `y · sigmoid(y)` on 16 lanes: `e^{−y}` by range reduction `−y = n·ln2 + r`, a degree-6 polynomial on
/// `|r| <= ln2/2` and `vscalefps` by `2^n` (argument clamped to [−87, 80], where the result is already `y` or
/// below `1e-33`), then `1/(1 + e)` from `vrcp14ps` refined by one Newton step (relative error near 2⁻²³).
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn silu16(y: __m512) -> __m512 {
    let x = _mm512_min_ps(
        _mm512_max_ps(_mm512_sub_ps(_mm512_setzero_ps(), y), _mm512_set1_ps(-87.0)),
        _mm512_set1_ps(80.0),
    );
    let n = _mm512_roundscale_ps(
        _mm512_mul_ps(x, _mm512_set1_ps(core::f32::consts::LOG2_E)),
        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC,
    );
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693_145_75), x);
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.428_606_8e-6), r);
    let mut p = _mm512_set1_ps(1.0 / 720.0);
    for c in [1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
    }
    let d = _mm512_add_ps(_mm512_set1_ps(1.0), _mm512_scalef_ps(p, n));
    let q = _mm512_rcp14_ps(d);
    // q · (2 − d·q): one Newton step doubles the 14 correct bits.
    let q = _mm512_mul_ps(q, _mm512_fnmadd_ps(d, q, _mm512_set1_ps(2.0)));
    _mm512_mul_ps(y, q)
}

#[target_feature(enable = "avx512f")]
unsafe fn group_norm_512(a: &generic::GroupNormArgs<'_>, input: &[f32], out: &mut [f32]) {
    let cpg = a.c / a.groups;
    let glen = cpg * a.hw;
    for g in 0..a.groups {
        let x = input.as_ptr().add(g * glen);
        let mean = sum_by(x, glen, |v| v) / glen as f32;
        let mv = _mm512_set1_ps(mean);
        let var = sum_by(x, glen, |v| {
            let d = _mm512_sub_ps(v, mv);
            _mm512_mul_ps(d, d)
        }) / glen as f32;
        let rstd = 1.0 / libm::sqrtf(var + a.eps);
        for jc in 0..cpg {
            let (mul, add) = a.channel_affine(g * cpg + jc, mean, rstd);
            let xc = x.add(jc * a.hw);
            let yc = out.as_mut_ptr().add(g * glen + jc * a.hw);
            let (m16, a16) = (_mm512_set1_ps(mul), _mm512_set1_ps(add));
            let mut p = 0;
            while p < a.hw {
                let m = lanes(a.hw - p);
                let mut y = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, xc.add(p)), m16, a16);
                if a.silu {
                    y = silu16(y);
                }
                _mm512_mask_storeu_ps(yc.add(p), m, y);
                p += 16;
            }
        }
    }
}
