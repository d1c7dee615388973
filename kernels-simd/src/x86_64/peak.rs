//! Peak-throughput probes: tight loops of independent multiply-accumulate instructions with no memory traffic, so
//! benches can state kernel speed as a fraction of what this core actually sustains (clock and boost included),
//! not of a datasheet figure.

use core::arch::x86_64::*;

/// Independent accumulator chains (more than any latency × throughput product of these instructions).
const CHAINS: usize = 16;

/// `iters` rounds of 16 independent `vfmadd231ps zmm` (16 lanes each); returns the multiply-accumulates done, or
/// `None` when the CPU lacks AVX-512 F. The result depends on the data, so the loop cannot be optimized away.
pub fn fma512(iters: usize) -> Option<u64> {
    if !super::has_avx512() {
        return None;
    }
    // SAFETY: AVX-512 F checked above.
    let s = unsafe { fma512_loop(iters) };
    core::hint::black_box(s);
    Some((iters * CHAINS * 16) as u64)
}

/// `iters` rounds of 16 independent `vpdpbusd zmm` (64 byte products each); returns the multiply-accumulates done,
/// or `None` without AVX-512 VNNI.
pub fn vnni512(iters: usize) -> Option<u64> {
    if !super::has_avx512() {
        return None;
    }
    // SAFETY: AVX-512 F/BW/VNNI checked above.
    let s = unsafe { vnni512_loop(iters) };
    core::hint::black_box(s);
    Some((iters * CHAINS * 64) as u64)
}

#[target_feature(enable = "avx512f")]
unsafe fn fma512_loop(iters: usize) -> f32 {
    let mut acc = [_mm512_set1_ps(0.5); CHAINS];
    let a = _mm512_set1_ps(core::hint::black_box(0.999_9));
    let b = _mm512_set1_ps(core::hint::black_box(1e-4));
    for _ in 0..iters {
        for v in acc.iter_mut() {
            *v = _mm512_fmadd_ps(*v, a, b);
        }
    }
    let mut s = _mm512_setzero_ps();
    for v in acc {
        s = _mm512_add_ps(s, v);
    }
    _mm512_reduce_add_ps(s)
}

#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn vnni512_loop(iters: usize) -> i32 {
    let mut acc = [_mm512_setzero_si512(); CHAINS];
    let a = _mm512_set1_epi8(core::hint::black_box(3));
    let b = _mm512_set1_epi8(core::hint::black_box(-2));
    for _ in 0..iters {
        for v in acc.iter_mut() {
            *v = _mm512_dpbusd_epi32(*v, a, b);
        }
    }
    let mut s = _mm512_setzero_si512();
    for v in acc {
        s = _mm512_add_epi32(s, v);
    }
    _mm512_reduce_add_epi32(s)
}
