//! AVX2 int8 3×3 stride-1 convolution by **exact integer** Winograd F(2×2, 3×3), for CPUs without VNNI, on weights
//! transformed offline ([`crate::pack::wino8_pack`], family [`crate::pack::X86_AVX2_WINO8`]).
//!
//! Each 2×2 output tile of a channel is `Aᵀ [Σ_ci U ⊙ V] A` with `V = Bᵀ d B` and `U = (2G) g (2G)ᵀ`, which is 4 ×
//! the float Winograd's `G g Gᵀ` and so has integer entries. Every step is integer arithmetic: `|V| ≤ 4 · 128`
//! and `|U| ≤ 9 · 128` fit `i16`, so `vpmaddwd` multiplies pairs of input channels exactly into `i32`; the sums
//! and the output transform wrap modulo 2³² at worst, and since the true result, 4 × the convolution's integer
//! sum, fits `i32` (`pack::WINO8_MAX_CIN`), the wrapped arithmetic gives it exactly; an arithmetic shift by 2 then
//! leaves the direct convolution's sum. The epilogue is the generic one, so the output is **bit-identical** to
//! [`crate::quant::conv2d_i8`], with 16 multiplications per input pair and tile instead of 36 per channel pair
//! (2.25× fewer than the direct AVX2 kernel).
//!
//! Layout: the vector lanes hold 8 output tiles. Per band of tile rows, every pair of input channels is
//! transformed into `V[ξ][pair][tile]` (two channels' `i16` values in one word, first channel low); the input rows
//! are first split into even and odd columns, so tile columns are plain unaligned loads. Per block of 4 output
//! channels and up to 16 tiles, the 16 GEMMs `M[ξ] = Σ_pair V[ξ][pair] · U[ξ][pair]` run with one weight word
//! broadcast per channel and pair (8 accumulators), separately for the two input branches of a concatenation
//! (each has its own scale in the epilogue); the output transform turns 8 tiles' 16 vectors into their 2×2
//! outputs, interleaved into output rows by `vpunpck{l,h}dq` and a lane swap, and the AVX2 epilogue
//! ([`super::avx2::store_i8_row`]) requantizes each output row.

use core::arch::x86_64::*;
use core::mem::MaybeUninit;

use super::avx2;
use super::zeroed_prefix;
use crate::pack::{self, WinoBand as Plan, WINO8_CO, WINO8_NT, WINO8_V};
use crate::quant::{ActQ, ConvEpilogue, QOut};
use crate::{Conv2dGeom, Weights};

/// `i32` columns of one even- or odd-column row buffer: `tw` rounded up to 8, plus the 8 columns a group of 8
/// tiles reads past its first (tile `tx` reads even/odd columns `tx` and `tx + 1`).
const ROWBUF: usize = WINO8_NT + 16;
/// Input rows of a band at most (2 per tile row, plus 2): tile rows `WINO8_NT / 4` for the narrowest rows taken.
const BAND_ROWS: usize = 2 * (WINO8_NT / 4) + 2;
/// Vectors of 8 tiles in one register tile at most (2: 8 accumulators; 3 spilled registers and was no faster).
const NV_MAX: usize = 2;
/// Words of one branch's parked GEMM results: `[ξ][channel][NV_MAX · 8]`.
const PARK: usize = 16 * WINO8_CO * NV_MAX * 8;
/// Words of one branch's output stage: `[channel][2 · rows][2 · tw]`, `rows · tw <= WINO8_NT`.
const STAGE: usize = WINO8_CO * 4 * WINO8_NT;

/// The band geometry of `g` with input split `split`, where [`pack::wino8`] picks the layer: 16 words per pair of
/// input channels and tile, in [`WINO8_V`] words.
fn plan(g: &Conv2dGeom, split: usize) -> Option<Plan> {
    let (_, pairs) = pack::wino8_pairs(g.cin, split);
    pack::wino_band(g, 16 * pairs, WINO8_V).filter(|_| pack::wino8(g, split))
}

/// int8 convolution on weights packed by [`pack::wino8_pack`] where [`pack::wino8`] picks the layer and the packed
/// length matches; otherwise the AVX2 direct kernel on the canonical weights `w`. Bit-identical to
/// [`crate::quant::conv2d_i8`] either way.
#[allow(clippy::too_many_arguments)]
pub(crate) fn conv2d_i8_packed(
    g: &Conv2dGeom,
    input: &[i8],
    in_q: ActQ,
    w: &[i8],
    packed: &[u8],
    w_scale: &[f32],
    bias: Option<Weights<'_>>,
    chan_add: Option<&[f32]>,
    residual: Option<(&[i8], f32)>,
    div: f32,
    acc: &mut [i32],
    out: QOut<'_>,
) {
    let split = in_q.split.min(g.cin);
    let out_len = out.len();
    let plan = plan(g, split).filter(|_| {
        packed.len() == pack::wino8_len(g, split)
            && input.len() >= (g.cin * g.h * g.w).max(16)
            && out_len >= g.cout * g.oh * g.ow
    });
    let Some(p) = plan else {
        return avx2::conv2d_i8(
            g, input, in_q, w, w_scale, bias, chan_add, residual, div, acc, out,
        );
    };
    let e = ConvEpilogue {
        in_q,
        w_scale,
        bias,
        chan_add,
        residual,
        div,
        plane: g.oh * g.ow,
    };
    // SAFETY: this function is installed only in the AVX2 kernel tables (`super::tier` checked AVX2 + FMA); the
    // plan, the packed length and the input and output lengths were checked above.
    unsafe { conv(g, p, split, input, packed, &e, out) }
}

/// The body of [`conv2d_i8_packed`] (its own never-inlined frame: about 300 KiB of stack scratch).
///
/// # Safety
/// AVX2; `p` is the layer's [`plan`] for `split`, `packed` holds [`pack::wino8_len`] bytes, `input` at least
/// `cin · h · w` and 16 values and `out` at least `cout · oh · ow`.
#[inline(never)]
#[target_feature(enable = "avx2,fma")]
unsafe fn conv(
    g: &Conv2dGeom,
    p: Plan,
    split: usize,
    input: &[i8],
    packed: &[u8],
    e: &ConvEpilogue<'_>,
    out: QOut<'_>,
) {
    let (pa, pairs) = pack::wino8_pairs(g.cin, split);
    let plane_in = g.h * g.w;
    let plane = g.oh * g.ow;
    let ntp_max = (p.rows * p.tw).next_multiple_of(8);
    let mut v_m = MaybeUninit::<[i32; WINO8_V]>::uninit();
    let vbuf = zeroed_prefix(&mut v_m, 16 * pairs * ntp_max);
    // Even and odd columns of the band's input rows, for both channels of a pair: `[ch][row][phase][col]`.
    let mut rows_m = MaybeUninit::<[[[[i32; ROWBUF]; 2]; BAND_ROWS]; 2]>::uninit();
    let band_rows = zeroed_prefix(&mut rows_m, 2);
    let mut park = [[0i32; PARK]; 2];
    let mut stage = [[0i32; STAGE]; 2];
    let sw = 2 * p.tw;
    let nk = p.tw.next_multiple_of(8) + 8;
    if vbuf.len() < 16 * pairs * ntp_max
        || band_rows.len() < 2
        || 2 * p.rows + 2 > BAND_ROWS
        || nk > ROWBUF
        || 2 * p.rows * sw * WINO8_CO > STAGE
    {
        return;
    }
    let (so, mut dst) = match out {
        QOut::I8 { data, scale } => (scale, Ok(data)),
        QOut::F32(data) => (0.0, Err(data)),
    };
    let ubase = packed.as_ptr() as *const i32;
    let block_words = 16 * pairs * WINO8_CO;
    let (mut ty0, mut chans) = (0, [e.channel(0, so); WINO8_CO]);
    while ty0 < p.th {
        let rows = p.rows.min(p.th - ty0);
        let nt = rows * p.tw;
        let ntp = nt.next_multiple_of(8);
        // 1. Input transform of every pair into V[ξ][pair][t] (t = row · tw + tx).
        for pr in 0..pairs {
            let (c0, c1) = pack::wino8_pair(pr, pa, split, g.cin);
            for (k, ch) in [Some(c0), c1].into_iter().enumerate() {
                for (i, dst) in band_rows[k].iter_mut().enumerate().take(2 * rows + 2) {
                    let iy = (2 * ty0 + i).wrapping_sub(g.pad_t);
                    let row = ch.filter(|_| iy < g.h).map(|c| c * plane_in + iy * g.w);
                    // SAFETY: AVX2; nk <= ROWBUF (checked) and a multiple of 8; input.len() >= cin · h · w and
                    // >= 16 (checked by the caller), so every row c · plane_in + iy · w .. + w is inside it.
                    split_row(input, row, g.w, g.pad_l, nk, dst);
                }
            }
            for r in 0..rows {
                let mut tx0 = 0;
                while tx0 < p.tw {
                    let n = (p.tw - tx0).min(8);
                    // SAFETY: AVX2. Rows 2r .. 2r + 4 < 2 · rows + 2 of both channels hold `nk` columns, and the
                    // tiles read columns tx0 .. tx0 + 9 <= tw.next_multiple_of(8) + 1 <= nk; V holds 16 · pairs ·
                    // ntp words, written at (ξ · pairs + pr) · ntp + r · tw + tx0 + j, j < n, r · tw + tx0 + n <= nt.
                    input_tiles8(
                        &band_rows[0][2 * r..2 * r + 4],
                        &band_rows[1][2 * r..2 * r + 4],
                        tx0,
                        vbuf.as_mut_ptr().add(pr * ntp + r * p.tw + tx0),
                        pairs * ntp,
                        n,
                    );
                    tx0 += 8;
                }
            }
        }
        // 2. Per block of 4 output channels: the GEMMs of each register tile, its output transform, then the
        // epilogue of every output row of the band.
        let oy0 = 2 * ty0;
        let orows = (2 * rows).min(g.oh - oy0);
        for b in 0..g.cout.div_ceil(WINO8_CO) {
            let u = ubase.add(b * block_words);
            let mut t0 = 0;
            while t0 < ntp {
                let nv = ((ntp - t0) / 8).min(NV_MAX);
                for xi in 0..16 {
                    let vx = vbuf.as_ptr().add(xi * pairs * ntp + t0);
                    let ux = u.add(xi * pairs * WINO8_CO);
                    for (br, (q0, q1)) in [(0, pa), (pa, pairs)].into_iter().enumerate() {
                        if q0 == q1 {
                            continue;
                        }
                        let pk = park[br].as_mut_ptr().add(xi * WINO8_CO * NV_MAX * 8);
                        // SAFETY: AVX2. V[ξ][q][t0 .. t0 + 8 nv] lies in `vbuf` (t0 + 8 nv <= ntp); the block's
                        // words (ξ · pairs + q) · 4 + c lie in the packed bytes (length checked, read unaligned);
                        // the park row holds 4 · NV_MAX · 8 words.
                        match nv {
                            2 => gemm::<2>(vx, ntp, ux, (q0, q1), pk),
                            _ => gemm::<1>(vx, ntp, ux, (q0, q1), pk),
                        }
                    }
                }
                for (br, (q0, q1)) in [(0, pa), (pa, pairs)].into_iter().enumerate() {
                    if q0 == q1 {
                        continue;
                    }
                    for c in 0..WINO8_CO {
                        for j in 0..nv {
                            // SAFETY: AVX2. The park holds ξ · 4 · NV_MAX · 8 + c · NV_MAX · 8 + 8 j + 8 words;
                            // the stage's channel c holds 2 · rows rows of sw words, written at rows 2r + a and
                            // columns 2 tx .. 2 tx + 8 <= sw of tiles t < nt (groups of 4 in one tile row, tw % 4
                            // == 0).
                            output_tiles8(
                                park[br].as_ptr().add((c * NV_MAX + j) * 8),
                                WINO8_CO * NV_MAX * 8,
                                stage[br].as_mut_ptr().add(c * 2 * rows * sw),
                                sw,
                                t0 + 8 * j,
                                nt,
                                p.tw,
                            );
                        }
                    }
                }
                t0 += 8 * nv;
            }
            for (c, ch) in chans.iter_mut().enumerate() {
                *ch = e.channel(b * WINO8_CO + c, so);
            }
            for (c, ch) in chans.iter().enumerate().take(g.cout - b * WINO8_CO) {
                let co = b * WINO8_CO + c;
                for a in 0..orows {
                    let at = (c * 2 * rows + a) * sw;
                    let (ra, rb) = (&stage[0][at..at + g.ow], &stage[1][at..at + g.ow]);
                    let base = co * plane + (oy0 + a) * g.ow;
                    let use_b = pa < pairs;
                    ch.store_row(
                        &mut dst,
                        base,
                        (oy0 + a) * g.ow,
                        (ra, rb),
                        |c, p0, a, b, o| {
                            // SAFETY: AVX2 (this function's caller checked it; see `conv2d_i8_packed`).
                            unsafe { avx2::store_i8_row(c, p0, a, b, use_b, o) }
                        },
                    );
                }
            }
        }
        ty0 += rows;
    }
}

/// One input row into its even and odd padded columns: `out[0][k] = x[2k − pad_l]`, `out[1][k] = x[2k + 1 −
/// pad_l]` for `k < nk`, 0 outside the row (`row` `None`: a row of padding; `Some(at)`: the row is `input[at ..
/// at + w]`). 16 padded columns per step, straight from `input` ([`avx2::padded16`]), sign-extended
/// (`vpmovsxbw`) and split into even bytes (a shift pair) and odd ones (one shift).
///
/// # Safety
/// AVX2; `nk` is a multiple of 8 and at most [`ROWBUF`]; `input.len() >= 16`; `at + w <= input.len()`.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn split_row(
    input: &[i8],
    row: Option<usize>,
    w: usize,
    pad_l: usize,
    nk: usize,
    out: &mut [[i32; ROWBUF]; 2],
) {
    let Some(at) = row else {
        out[0][..nk].fill(0);
        out[1][..nk].fill(0);
        return;
    };
    let mut k = 0;
    while k + 8 <= nk {
        // Padded columns 2k .. 2k + 16 are row columns 2k − pad_l ..; input.len() >= 16 and the row lies inside.
        let win = avx2::padded16(input, at, w, (2 * k) as isize - pad_l as isize);
        let v = _mm256_cvtepi8_epi16(win);
        let even = _mm256_srai_epi32::<16>(_mm256_slli_epi32::<16>(v));
        let odd = _mm256_srai_epi32::<16>(v);
        // SAFETY: columns k .. k + 8 <= nk <= ROWBUF of both phases.
        _mm256_storeu_si256(out[0].as_mut_ptr().add(k) as *mut __m256i, even);
        _mm256_storeu_si256(out[1].as_mut_ptr().add(k) as *mut __m256i, odd);
        k += 8;
    }
}

/// `V = Bᵀ d B` of one channel's 8 horizontally adjacent tiles starting at tile column `tx0`, from its 4 input
/// rows split by [`split_row`]; `Bᵀ = [[1, 0, −1, 0], [0, 1, 1, 0], [0, −1, 1, 0], [0, 1, 0, −1]]`, `V[4r + c]`.
///
/// # Safety
/// AVX2; columns `tx0 .. tx0 + 9` of each row are inside it.
#[inline(always)]
unsafe fn transform8(rows: &[[[i32; ROWBUF]; 2]], tx0: usize) -> [__m256i; 16] {
    // d[i][c]: row i, column c of each of the 8 tiles (tile j's column c is padded column 2 (tx0 + j) + c).
    // (Plain loops, not `array::from_fn`: its closures do not inherit the caller's target features, so their
    // intrinsics would not inline.)
    let mut d = [[_mm256_setzero_si256(); 4]; 4];
    for (i, di) in d.iter_mut().enumerate() {
        for (c, dc) in di.iter_mut().enumerate() {
            *dc = _mm256_loadu_si256(rows[i][c % 2].as_ptr().add(tx0 + c / 2) as *const __m256i);
        }
    }
    let mut t = [[_mm256_setzero_si256(); 4]; 4];
    for c in 0..4 {
        t[0][c] = _mm256_sub_epi32(d[0][c], d[2][c]);
        t[1][c] = _mm256_add_epi32(d[1][c], d[2][c]);
        t[2][c] = _mm256_sub_epi32(d[2][c], d[1][c]);
        t[3][c] = _mm256_sub_epi32(d[1][c], d[3][c]);
    }
    let mut v = [_mm256_setzero_si256(); 16];
    for (r, tr) in t.iter().enumerate() {
        v[4 * r] = _mm256_sub_epi32(tr[0], tr[2]);
        v[4 * r + 1] = _mm256_add_epi32(tr[1], tr[2]);
        v[4 * r + 2] = _mm256_sub_epi32(tr[2], tr[1]);
        v[4 * r + 3] = _mm256_sub_epi32(tr[1], tr[3]);
    }
    v
}

/// The transformed tiles of a pair of channels (`rows0`, `rows1`: their 4 input rows each), 8 tiles from tile column
/// `tx0`, as words `V₀ | V₁ << 16`; value `ξ` of tile `j` goes to `v + ξ · vs + j` for `j < n`.
///
/// # Safety
/// AVX2; as [`transform8`] for both row sets; `v + ξ · vs + j` writable for `ξ < 16`, `j < n`.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn input_tiles8(
    rows0: &[[[i32; ROWBUF]; 2]],
    rows1: &[[[i32; ROWBUF]; 2]],
    tx0: usize,
    v: *mut i32,
    vs: usize,
    n: usize,
) {
    let a = transform8(rows0, tx0);
    let b = transform8(rows1, tx0);
    let lanes = _mm256_set_epi32(7, 6, 5, 4, 3, 2, 1, 0);
    let mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(n.min(8) as i32), lanes);
    for xi in 0..16 {
        // |V| <= 512: the low half of each word is V₀ as i16, the high half V₁.
        let word = _mm256_blend_epi16::<0xAA>(a[xi], _mm256_slli_epi32::<16>(b[xi]));
        let dst = v.add(xi * vs);
        if n >= 8 {
            _mm256_storeu_si256(dst as *mut __m256i, word);
        } else {
            _mm256_maskstore_epi32(dst, mask, word);
        }
    }
}

/// One register tile of the GEMM `M[ξ]`: 4 output channels × `NV` vectors of 8 tiles, summed over pairs
/// `q.0 .. q.1`: `park[c · NV_MAX · 8 + 8 j + l] = Σ_q vpmaddwd(V[q][8 j + l], U[q][c])` with `V[q]` at `v + q ·
/// vs` and `U[q][c]` the word at `u + 4 q + c`.
///
/// # Safety
/// AVX2; `v + q · vs + 8 NV` readable for `q < q.1`; `u` readable (unaligned) at words `4 q + c`; `park`
/// writable at `4 · NV_MAX · 8` words.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn gemm<const NV: usize>(
    v: *const i32,
    vs: usize,
    u: *const i32,
    q: (usize, usize),
    park: *mut i32,
) {
    let mut acc = [[_mm256_setzero_si256(); NV]; WINO8_CO];
    for pr in q.0..q.1 {
        let mut x = [_mm256_setzero_si256(); NV];
        for (j, xj) in x.iter_mut().enumerate() {
            *xj = _mm256_loadu_si256(v.add(pr * vs + 8 * j) as *const __m256i);
        }
        for (c, ac) in acc.iter_mut().enumerate() {
            let w = _mm256_set1_epi32(core::ptr::read_unaligned(u.add(WINO8_CO * pr + c)));
            for (a, xv) in ac.iter_mut().zip(&x) {
                *a = _mm256_add_epi32(*a, _mm256_madd_epi16(*xv, w));
            }
        }
    }
    for (c, ac) in acc.iter().enumerate() {
        for (j, a) in ac.iter().enumerate() {
            _mm256_storeu_si256(park.add((c * NV_MAX + j) * 8) as *mut __m256i, *a);
        }
    }
}

/// The output transform of 8 tiles `t0 .. t0 + 8` of one channel: `Y = Aᵀ M A / 4`, `Aᵀ = [[1, 1, 1, 0], [0, 1,
/// −1, −1]]`, with `M[ξ]` at `m + ξ · ms`; tile `t < nt` (row `t / tw`, column `t % tw`) writes its 2×2 outputs to
/// `stage` rows `2 (t / tw) + a`, columns `2 (t % tw) + b` (`sw` words per row), 4 tiles (8 columns) per store.
///
/// # Safety
/// AVX2; `m + ξ · ms` readable (8 words) for `ξ < 16`; `tw` a multiple of 4; the stage writable at those rows and
/// columns.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn output_tiles8(
    m: *const i32,
    ms: usize,
    stage: *mut i32,
    sw: usize,
    t0: usize,
    nt: usize,
    tw: usize,
) {
    let mut mv = [_mm256_setzero_si256(); 16];
    for (xi, m_xi) in mv.iter_mut().enumerate() {
        *m_xi = _mm256_loadu_si256(m.add(xi * ms) as *const __m256i);
    }
    let (mut s0, mut s1) = ([_mm256_setzero_si256(); 4], [_mm256_setzero_si256(); 4]);
    for c in 0..4 {
        s0[c] = _mm256_add_epi32(_mm256_add_epi32(mv[c], mv[4 + c]), mv[8 + c]);
        s1[c] = _mm256_sub_epi32(_mm256_sub_epi32(mv[4 + c], mv[8 + c]), mv[12 + c]);
    }
    for (a, s) in [s0, s1].iter().enumerate() {
        // 4 × the outputs (exact, modulo 2³²), then the exact division by 4.
        let y0 = _mm256_srai_epi32::<2>(_mm256_add_epi32(_mm256_add_epi32(s[0], s[1]), s[2]));
        let y1 = _mm256_srai_epi32::<2>(_mm256_sub_epi32(_mm256_sub_epi32(s[1], s[2]), s[3]));
        // [t0b0 t0b1 t1b0 t1b1 | t4.. t5..] and [t2 t3 | t6 t7]: tiles 0–3, then 4–7, as 8 output columns each.
        let (lo, hi) = (_mm256_unpacklo_epi32(y0, y1), _mm256_unpackhi_epi32(y0, y1));
        let q = [
            _mm256_permute2x128_si256::<0x20>(lo, hi),
            _mm256_permute2x128_si256::<0x31>(lo, hi),
        ];
        for (h, qv) in q.into_iter().enumerate() {
            let t = t0 + 4 * h;
            if t < nt {
                let (r, tx) = (t / tw, t % tw);
                _mm256_storeu_si256(stage.add((2 * r + a) * sw + 2 * tx) as *mut __m256i, qv);
            }
        }
    }
}
