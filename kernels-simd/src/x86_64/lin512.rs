//! AVX-512 linear layer, bit-identical to [`generic::linear`]: 16 output rows in the 16 lanes of a `zmm`.
//!
//! The reference sums every output row in input order, `((0 + w₀·x₀) + w₁·x₁) + …`, one multiply and one add per
//! term (no fused multiply-add). A row's chain is sequential, so the vector runs 16 *rows* side by side: lane `r`
//! of the accumulator is row `o0 + r`'s running sum, and step `i` adds `w[o0 + r][i] · x[i]` to every lane with
//! `vmulps` + `vaddps`: each lane performs exactly the scalar operations in the scalar order. The weights are
//! stored row-major (`[out][in]`), so a 16 × 16 tile of them (16 rows × 16 inputs, converted to `f32` the way
//! generic converts them: `f16` exactly by `vcvtph2ps`, int8 as `q as f32 · scale` with the row's one scale) is
//! transposed in registers (4 butterfly stages of `vpermt2ps`) to give one vector per input.
//!
//! The time-embedding projections of every resnet are linear layers (24 in ddpm-cifar10-32, 1.9 ms of its 43 ms int8
//! forward with the scalar 8-row chains); this kernel takes them to about a tenth of that.

use core::arch::x86_64::*;

use crate::{generic, Weights};

/// Inputs activated (SiLU) at a time, on the stack (8 KiB). Each block of 16 rows then runs through all of them,
/// reading its rows front to back: 16 sequential streams, which the prefetchers follow. (Walking 64 inputs of
/// every row before the next 64, the order of the generic kernel, reads one cache line per row per step across
/// the whole matrix and ran at memory latency: 1.6 ms for cifar's 3 MB of int8 projections.)
const CHUNK: usize = 2048;

/// [`generic::linear`] on 16 rows at a time; layouts it does not cover (a weight scale shared across part of a
/// row, short slices) go to the generic kernel. Bit-identical either way.
pub(crate) fn linear(
    input: &[f32],
    w: Weights<'_>,
    bias: Option<Weights<'_>>,
    silu_in: bool,
    silu_out: bool,
    out: &mut [f32],
) {
    let n_in = input.len();
    let n_out = out.len();
    let ok = match w {
        Weights::F32(d) => d.len() >= n_in * n_out,
        Weights::F16(d) => d.len() >= n_in * n_out,
        // One scale per row (or per whole rows): every element of row `o` has scale `(o · n_in) / per`.
        Weights::I8 { data, scale, per } => {
            data.len() >= n_in * n_out
                && per > 0
                && n_in > 0
                && per % n_in == 0
                && (n_out == 0 || scale.len() > ((n_out - 1) * n_in) / per)
        }
    };
    if !ok || !super::has_avx512() {
        return generic::linear_with(
            input,
            w,
            bias,
            silu_in,
            silu_out,
            out,
            super::avx2::f16_to_f32,
        );
    }
    // SAFETY: the CPU has AVX-512 F + BW (checked above; the table is only installed then too), and the weight
    // slice holds `n_out · n_in` elements (and the int8 scales every row's index), checked above.
    unsafe { linear512(input, w, silu_in, out) };
    for (o, y) in out.iter_mut().enumerate() {
        let v = *y + bias.map_or(0.0, |b| b.get(o));
        *y = if silu_out { crate::silu(v) } else { v };
    }
}

/// Row `o`'s weights `i0 .. i0 + n` (`n <= 16`) as `f32` lanes `0 .. n` (the rest 0); `sc` is the row's int8
/// scale (unused for float weights; looked up once per row block, not per tile: a division per load cost more
/// than the arithmetic).
///
/// # Safety
/// AVX-512 F + BW; `(o · n_in + i0 + n)` elements of `w` exist.
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn load_row(w: Weights<'_>, n_in: usize, o: usize, i0: usize, n: usize, sc: f32) -> __m512 {
    let at = o * n_in + i0;
    let m16: __mmask16 = ((1u32 << n) - 1) as __mmask16;
    match w {
        // SAFETY (all arms): masked loads touch only lanes < n, which are in bounds (caller).
        Weights::F32(d) => _mm512_maskz_loadu_ps(m16, d.as_ptr().add(at)),
        Weights::F16(d) => {
            let h = _mm512_maskz_loadu_epi16(m16 as __mmask32, d.as_ptr().add(at) as *const i16);
            _mm512_cvtph_ps(_mm512_castsi512_si256(h))
        }
        Weights::I8 { data, .. } => {
            let q = _mm512_maskz_loadu_epi8(m16 as __mmask64, data.as_ptr().add(at));
            let f = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm512_castsi512_si128(q)));
            _mm512_mul_ps(f, _mm512_set1_ps(sc))
        }
    }
}

/// Prefetch (into L1 with `_MM_HINT_T0`, L2 with `_MM_HINT_T1`) the weights of rows `o_lo .. o_hi`, inputs `i0 .. i0 + n`.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn prefetch_rows<const HINT: i32>(
    w: Weights<'_>,
    n_in: usize,
    o_lo: usize,
    o_hi: usize,
    i0: usize,
    n: usize,
) {
    let (base, size): (*const i8, usize) = match w {
        Weights::F32(d) => (d.as_ptr() as *const i8, 4),
        Weights::F16(d) => (d.as_ptr() as *const i8, 2),
        Weights::I8 { data, .. } => (data.as_ptr(), 1),
    };
    for o in o_lo..o_hi {
        let (a, b) = ((o * n_in + i0) * size, (o * n_in + i0 + n) * size);
        let mut off = a & !63;
        while off < b {
            // SAFETY: a prefetch never faults; `off` lies inside row `o`'s range (rounded down to its line),
            // within the weight slice's allocation.
            _mm_prefetch::<HINT>(base.wrapping_add(off));
            off += 64;
        }
    }
}

/// Lane indices of one butterfly stage (see [`transpose16`]): `[lo, hi]` for bit `b`.
const fn stage_idx(b: usize) -> [[i32; 16]; 2] {
    let mut r = [[0i32; 16]; 2];
    let mut l = 0;
    while l < 16 {
        if l & b == 0 {
            r[0][l] = l as i32;
            r[1][l] = (l + b) as i32;
        } else {
            r[0][l] = (l - b + 16) as i32;
            r[1][l] = (l + 16) as i32;
        }
        l += 1;
    }
    r
}

static STAGES: [[[i32; 16]; 2]; 4] = [stage_idx(1), stage_idx(2), stage_idx(4), stage_idx(8)];

/// One butterfly stage on bit `B` (`S` its index in [`STAGES`]).
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn stage<const B: usize, const S: usize>(v: &mut [__m512; 16]) {
    // SAFETY: 16 `i32` read from a 16-element array (twice).
    let lo = _mm512_loadu_si512(STAGES[S][0].as_ptr() as *const __m512i);
    let hi = _mm512_loadu_si512(STAGES[S][1].as_ptr() as *const __m512i);
    let mut i = 0;
    while i < 16 {
        if i & B == 0 {
            let (a, c) = (v[i], v[i | B]);
            v[i] = _mm512_permutex2var_ps(a, lo, c);
            v[i | B] = _mm512_permutex2var_ps(a, hi, c);
        }
        i += 1;
    }
}

/// Transpose the 16 × 16 matrix whose rows are `v` (lane = column): stage `b ∈ {1, 2, 4, 8}` swaps element
/// `(i, l | b)` with `(i | b, l)` for every `i`, `l` with bit `b` clear, which exchanges that bit between row and
/// column; after all four stages `(i, l)` is at `(l, i)`. 64 `vpermt2ps`, all indices compile-time constants.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn transpose16(v: &mut [__m512; 16]) {
    stage::<1, 0>(v);
    stage::<2, 1>(v);
    stage::<4, 2>(v);
    stage::<8, 3>(v);
}

/// `out[o] = Σ_i w[o, i] · act(x[i])` in input order (no bias, no output activation).
///
/// # Safety
/// AVX-512 F + BW; `w` holds `out.len() · input.len()` elements (and int8 scales for every row).
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn linear512(input: &[f32], w: Weights<'_>, silu_in: bool, out: &mut [f32]) {
    let n_in = input.len();
    let n_out = out.len();
    out.fill(0.0);
    // The whole matrix requested up front (into L2) when it is small enough to sit there.
    let bytes = n_in
        * n_out
        * match w {
            Weights::F32(_) => 4,
            Weights::F16(_) => 2,
            Weights::I8 { .. } => 1,
        };
    if bytes <= 512 * 1024 {
        prefetch_rows::<_MM_HINT_T1>(w, n_in, 0, n_out, 0, n_in);
    }
    let mut act = [0.0f32; CHUNK];
    for (c, xs) in input.chunks(CHUNK).enumerate() {
        let i0 = c * CHUNK;
        for (a, &x) in act.iter_mut().zip(xs) {
            *a = if silu_in { crate::silu(x) } else { x };
        }
        for o0 in (0..n_out).step_by(16) {
            let nr = (n_out - o0).min(16);
            let mr: __mmask16 = ((1u32 << nr) - 1) as __mmask16;
            // SAFETY: lanes < nr are out[o0 .. o0 + nr], in bounds.
            let mut acc = _mm512_maskz_loadu_ps(mr, out.as_ptr().add(o0));
            // The next block's rows, requested now: the weights are cold (a forward streams megabytes of conv
            // weights between two linear layers) and a row of a few hundred bytes is too short a stream for the
            // hardware prefetcher, so without this every block waited on memory latency.
            prefetch_rows::<_MM_HINT_T0>(
                w,
                n_in,
                (o0 + 16).min(n_out),
                (o0 + 32).min(n_out),
                i0,
                xs.len(),
            );
            let sc: [f32; 16] = core::array::from_fn(|r| match w {
                Weights::I8 { scale, per, .. } if r < nr => scale
                    .get(((o0 + r) * n_in) / per.max(1))
                    .copied()
                    .unwrap_or(0.0),
                _ => 0.0,
            });
            for t0 in (0..xs.len()).step_by(16) {
                let nt = (xs.len() - t0).min(16);
                let mut v = [_mm512_setzero_ps(); 16];
                for (r, vr) in v.iter_mut().enumerate().take(nr) {
                    // SAFETY: row o0 + r < n_out, inputs i0 + t0 + nt <= n_in (caller's lengths).
                    *vr = load_row(w, n_in, o0 + r, i0 + t0, nt, sc[r]);
                }
                transpose16(&mut v);
                for (j, vj) in v.iter().enumerate().take(nt) {
                    acc = _mm512_add_ps(acc, _mm512_mul_ps(*vj, _mm512_set1_ps(act[t0 + j])));
                }
            }
            // SAFETY: as the load.
            _mm512_mask_storeu_ps(out.as_mut_ptr().add(o0), mr, acc);
        }
    }
}
