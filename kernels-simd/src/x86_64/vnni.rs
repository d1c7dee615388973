//! AVX-512 VNNI int8 convolution as an implicit GEMM with `vpdpbusd` (unsigned × signed bytes, 4 products summed
//! into each 32-bit lane: 64 multiply-accumulates per `zmm` instruction).
//!
//! * **Tile.** The input (a band of output rows at a time) is re-laid out on the stack as 32-bit words of 4 input
//!   channels ("quads"), biased to unsigned (`x + 128`, i.e. `x ^ 0x80`), zero-padded (128 is the biased zero) and,
//!   for stride 2, split into 4 phase planes. Every output position then reads its taps at fixed offsets from its
//!   flat index `oy · Wph + ox`, so one register tile is 32 consecutive positions (2 `zmm` loads per tap) × 8 output
//!   channels (8 broadcast weight quads): 16 independent accumulators. Positions past a row's end are computed and
//!   discarded.
//! * **Exactness.** `Σ (x + 128) · w = Σ x · w + 128 · Σ w`; the second term is subtracted per output channel, so
//!   the integer sums equal the generic kernel's exactly, and the epilogue below replays
//!   [`crate::quant::ChannelEpilogue::store_i8`]'s integer arithmetic in 64-bit lanes. The output is bit-identical
//!   to [`crate::quant::conv2d_i8`].
//! * **Branches.** Concatenated inputs with two scales (`ActQ::split`) keep their quads apart; each branch has its
//!   own accumulators and correction.
//! * **Weights** are read in the [`crate::pack::VNNI8`] layout (8 channels × quads × taps per block, with the
//!   bias corrections): packed offline by `quantize-tool` when the blob carries that family
//!   ([`conv2d_i8_packed`]), otherwise packed here one block at a time with the same function.

use core::arch::x86_64::*;

use core::mem::MaybeUninit;

use super::bands::{Bands, PX};
use super::zeroed_prefix;
use crate::pack::{self, VNNI8_CO};
use crate::quant::{self, ActQ, ConvEpilogue, EpilogueParts, QOut, Requant};
use crate::Conv2dGeom;

/// Output channels per register tile (one block of the packed layout).
const CO: usize = VNNI8_CO;
/// Input tile budget in 32-bit words (192 KiB).
const TILE_W: usize = 48 * 1024;
/// Flat positions per band (rows · `Wph`, rounded up to `PX`).
const FMAX: usize = 2048;
/// Packed weight words of one channel block: `quads · taps · CO` at most.
const WP_W: usize = 16 * 1024;
/// Bytes of one packed block: the words and the 16 corrections.
const WP_B: usize = (WP_W + 2 * CO) * 4;

/// The band layout with input quads as its units.
#[derive(Clone, Copy, Debug)]
struct Layout {
    b: Bands,
    /// Quads of branch A (channels `< split`) and in all.
    qa: usize,
    quads: usize,
    split: usize,
}

impl Layout {
    /// Quad and byte of input channel `ci`.
    fn quad_of(&self, ci: usize) -> (usize, usize) {
        if ci < self.split {
            (ci / 4, ci % 4)
        } else {
            (self.qa + (ci - self.split) / 4, (ci - self.split) % 4)
        }
    }
}

/// The layout for `g`, or `None` when the layer is outside this kernel's range (the caller falls back).
fn layout(g: &Conv2dGeom, split: usize) -> Option<Layout> {
    let split = split.min(g.cin);
    let (qa, quads) = pack::vnni8_quads(g.cin, split);
    if quads * g.k * g.k * CO > WP_W {
        return None;
    }
    Some(Layout {
        b: Bands::fit(g, quads, TILE_W, FMAX)?,
        qa,
        quads,
        split,
    })
}

/// Whether [`conv2d_i8`] handles this layer (input channels `< split` in branch A) with these slice lengths.
pub(super) fn fits(g: &Conv2dGeom, split: usize, input: usize, w: usize, out: &QOut<'_>) -> bool {
    let out_len = out.len();
    layout(g, split).is_some()
        && input >= g.cin * g.h * g.w
        && w >= g.cout * g.cin * g.k * g.k
        && out_len >= g.cout * g.oh * g.ow
}

/// int8 convolution, bit-identical to [`quant::conv2d_i8`], for layers that pass [`fits`] (others are left
/// untouched); the weights are packed here, block by block.
///
/// # Safety
/// The CPU must have AVX-512 F, BW and VNNI.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub(super) unsafe fn conv2d_i8(
    g: &Conv2dGeom,
    input: &[i8],
    in_q: ActQ,
    w: &[i8],
    e: &ConvEpilogue<'_>,
    out: QOut<'_>,
) {
    conv(g, input, in_q, w, None, e, out)
}

/// [`conv2d_i8`] on weights packed offline in the [`pack::VNNI8`] layout (`packed` holds the whole layer, as
/// [`pack::vnni8_pack`] writes it for this split); a length that does not match falls back to packing `w`.
///
/// # Safety
/// The CPU must have AVX-512 F, BW and VNNI.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub(super) unsafe fn conv2d_i8_packed(
    g: &Conv2dGeom,
    input: &[i8],
    in_q: ActQ,
    w: &[i8],
    packed: &[u8],
    e: &ConvEpilogue<'_>,
    out: QOut<'_>,
) {
    let ok = packed.len() == pack::vnni8_len(g, in_q.split.min(g.cin));
    conv(g, input, in_q, w, ok.then_some(packed), e, out)
}

#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn conv(
    g: &Conv2dGeom,
    input: &[i8],
    in_q: ActQ,
    w: &[i8],
    pre: Option<&[u8]>,
    e: &ConvEpilogue<'_>,
    out: QOut<'_>,
) {
    conv_body(g, input, in_q, w, pre, e, out, gemm, store_i8_rows)
}

/// The GEMM of one channel block (see [`gemm`]).
type GemmFn = unsafe fn(&[i32], usize, usize, &[usize], &[u8], usize, [i32; CO], &mut Sums<'_>);

/// The integer sums of one channel block: channel `c`'s position `f` at `buf[c · stride + f]`, `f < stride`.
pub(super) struct Sums<'a> {
    buf: &'a mut [i32],
    stride: usize,
}

impl<'a> Sums<'a> {
    /// `buf` as `CO` rows of `stride`; `None` if it is shorter than that.
    fn new(buf: &'a mut [i32], stride: usize) -> Option<Self> {
        (buf.len() >= CO * stride).then_some(Sums { buf, stride })
    }

    /// Channel `c`'s row (`c < CO`).
    fn row(&self, c: usize) -> &[i32] {
        &self.buf[c * self.stride..(c + 1) * self.stride]
    }

    /// Where channel `c`'s position `f` is (`c < CO`, `f < stride` for a write the caller may make).
    fn at(&mut self, c: usize, f: usize) -> *mut i32 {
        self.buf.as_mut_ptr().wrapping_add(c * self.stride + f)
    }
}
/// The int8 epilogue of one channel's band (see [`store_i8_rows`]).
type StoreFn = unsafe fn(
    &EpilogueParts<'_>,
    &quant::ChannelEpilogue<'_>,
    usize,
    usize,
    usize,
    &[i32],
    Option<&[i32]>,
    &mut [i8],
);

/// [`conv2d_i8`] for CPUs with AVX2 and AVX-VNNI but no AVX-512 (Alder Lake and later client cores, Sierra
/// Forest): the same tile, packed weights and integer sums through 256-bit `vpdpbusd` ([`gemm_avx`]), and the
/// scalar epilogue. Bit-identical to [`quant::conv2d_i8`] for layers that pass [`fits`] (others are left
/// untouched).
///
/// # Safety
/// The CPU must have AVX2 and AVX-VNNI.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,avxvnni")]
pub(super) unsafe fn conv2d_i8_avxvnni(
    g: &Conv2dGeom,
    input: &[i8],
    in_q: ActQ,
    w: &[i8],
    packed: Option<&[u8]>,
    e: &ConvEpilogue<'_>,
    out: QOut<'_>,
) {
    let ok = packed.filter(|p| p.len() == pack::vnni8_len(g, in_q.split.min(g.cin)));
    conv_body(
        g,
        input,
        in_q,
        w,
        ok,
        e,
        out,
        gemm_avx,
        store_i8_rows_scalar,
    )
}

/// The body of [`conv`] and [`conv2d_i8_avxvnni`], inlined into each so that it is compiled for that caller's
/// target features; `gemm` and `store` are the ISA's kernels.
///
/// # Safety
/// The CPU runs `gemm` and `store`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn conv_body(
    g: &Conv2dGeom,
    input: &[i8],
    in_q: ActQ,
    w: &[i8],
    pre: Option<&[u8]>,
    e: &ConvEpilogue<'_>,
    out: QOut<'_>,
    gemm: GemmFn,
    store_i8_rows: StoreFn,
) {
    if !fits(g, in_q.split, input.len(), w.len(), &out) {
        return;
    }
    let Some(l) = layout(g, in_q.split) else {
        return;
    };
    let kk = g.k * g.k;
    let plane = g.oh * g.ow;
    let off = l.b.offsets();
    let off = &off[..kk];
    let mut tile_m = MaybeUninit::<[i32; TILE_W]>::uninit();
    let tile = zeroed_prefix(&mut tile_m, l.quads * l.b.stride());
    let bl = pack::vnni8_block_len(g, l.split);
    let mut wp_m = MaybeUninit::<[u8; WP_B]>::uninit();
    let wp = zeroed_prefix(&mut wp_m, if pre.is_some() { 0 } else { bl });
    let nwa = l.qa * kk * CO * 4;
    let nw = l.quads * kk * CO * 4;
    // The sums of the two branches, each CO rows as long as a full band's padded positions (zeroing all FMAX of
    // them on every call cost 128 KiB of stores per convolution).
    let fs = l.b.fpad(l.b.rows, g.ow);
    let mut sums_m = MaybeUninit::<[i32; 2 * CO * FMAX]>::uninit();
    let sums = zeroed_prefix(&mut sums_m, 2 * CO * fs);
    let (sa, sb) = sums.split_at_mut(sums.len() / 2);
    let (Some(mut buf_a), Some(mut buf_b)) = (Sums::new(sa, fs), Sums::new(sb, fs)) else {
        return; // unreachable: `layout` keeps a band's positions within FMAX
    };
    let (so, mut out) = match out {
        QOut::I8 { data, scale } => (scale, Ok(data)),
        QOut::F32(data) => (0.0, Err(data)),
    };
    let mut oy0 = 0;
    while oy0 < g.oh {
        let r = l.b.rows.min(g.oh - oy0);
        // Offsets were computed for full bands; a short last band keeps the full band's plane size so they hold.
        let qs = l.b.stride();
        let fpad = l.b.fpad(r, g.ow);
        fill_tile(g, &l, input, oy0, tile);
        for co0 in (0..g.cout).step_by(CO) {
            let blk = match pre {
                Some(p) => p.get(co0 / CO * bl..co0 / CO * bl + bl),
                None => pack::vnni8_pack_block(g, l.split, w, co0, wp).then_some(&*wp),
            };
            let Some(blk) = blk else { return };
            let (words, corr) = blk.split_at(nw);
            let c32 = |i: usize| {
                let b = corr.get(4 * i..4 * i + 4).unwrap_or(&[0; 4]);
                i32::from_le_bytes([b[0], b[1], b[2], b[3]])
            };
            let corr_a: [i32; CO] = core::array::from_fn(c32);
            let corr_b: [i32; CO] = core::array::from_fn(|c| c32(CO + c));
            let (wp_a, wp_b) = words.split_at(nwa);
            // SAFETY: AVX-512 F/BW/VNNI per this function's contract; `tile` holds `quads · qs` laid-out words, every
            // tap offset plus a position below `fpad` stays below `qs` (see `Bands::stride`), and `fpad <= FMAX`.
            gemm(tile, qs, 0, off, wp_a, fpad, corr_a, &mut buf_a);
            let two = l.qa < l.quads;
            if two {
                // SAFETY: as above, for the quads of branch B.
                gemm(tile, qs, l.qa, off, wp_b, fpad, corr_b, &mut buf_b);
            }
            for c in 0..CO.min(g.cout - co0) {
                let co = co0 + c;
                let ch = e.channel(co, so);
                let rb_all = two.then_some(buf_b.row(c));
                match &mut out {
                    Ok(d) => {
                        let base = co * plane + oy0 * g.ow;
                        if let Some(dst) = d.get_mut(base..base + r * g.ow) {
                            // SAFETY: AVX-512 F/BW per this function's contract.
                            store_i8_rows(
                                &ch.parts(),
                                &ch,
                                oy0 * g.ow,
                                g.ow,
                                l.b.wph,
                                buf_a.row(c),
                                rb_all,
                                dst,
                            );
                        }
                    }
                    Err(d) => {
                        for dy in 0..r {
                            let oy = oy0 + dy;
                            let (f, p0) = (dy * l.b.wph, oy * g.ow);
                            let ra = &buf_a.row(c)[f..f + g.ow];
                            let rb = two.then(|| &buf_b.row(c)[f..f + g.ow]);
                            let base = co * plane + p0;
                            if let Some(dst) = d.get_mut(base..base + g.ow) {
                                let zeros = [0i32; PX];
                                match rb {
                                    Some(rb) => ch.store_f32(p0, ra, rb, dst),
                                    None => {
                                        for (j, dst) in dst.chunks_mut(PX).enumerate() {
                                            let a = &ra[j * PX..j * PX + dst.len()];
                                            ch.store_f32(p0 + j * PX, a, &zeros, dst);
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        oy0 += r;
    }
}

/// Lay out output rows `oy0..` of the input as biased quads (see the module docs): `tile[q · qs + phase plane +
/// row · wph + col]`, padding and absent channels at 0x80 (the biased zero).
fn fill_tile(g: &Conv2dGeom, l: &Layout, input: &[i8], oy0: usize, tile: &mut [i32]) {
    let qs = l.b.stride();
    let plane_in = g.h * g.w;
    let bytes = as_bytes_mut(tile);
    bytes.fill(0x80);
    // Stride 1, four channels of one branch in a quad: 16 columns of all four at once.
    let mut done = [false; 4 * 1024];
    if l.b.s == 1 {
        for q in 0..l.quads {
            let c0 = if q < l.qa {
                4 * q
            } else {
                l.split + 4 * (q - l.qa)
            };
            let end = if q < l.qa { l.split } else { g.cin };
            if c0 + 4 > end || c0 + 4 > done.len() {
                continue;
            }
            let Some(src) = input.get(c0 * plane_in..(c0 + 4) * plane_in) else {
                continue;
            };
            l.b.visit_rows(g, oy0, |base, iy, _, cols| {
                let base = q * qs + base;
                let mut col = cols.start;
                while col + 16 <= cols.end {
                    let ix = col - g.pad_l;
                    let at = (base + col) * 4;
                    if let (Some(dst), Some(_)) = (
                        bytes.get_mut(at..at + 64),
                        src.get(3 * plane_in + iy * g.w + ix + 15),
                    ) {
                        // SAFETY: SSE2 is part of x86_64; the four source rows hold 16 bytes from `ix` (the last
                        // one checked just above, the others lie before it), and `dst` has 64 bytes.
                        unsafe {
                            interleave16(src.as_ptr().add(iy * g.w + ix), plane_in, -128, dst)
                        };
                    }
                    col += 16;
                }
                for col in col..cols.end {
                    let ix = col - g.pad_l;
                    for j in 0..4 {
                        if let (Some(&v), Some(d)) = (
                            src.get(j * plane_in + iy * g.w + ix),
                            bytes.get_mut((base + col) * 4 + j),
                        ) {
                            *d = (v as u8) ^ 0x80;
                        }
                    }
                }
            });
            for d in done.iter_mut().skip(c0).take(4) {
                *d = true;
            }
        }
    }
    for ci in 0..g.cin {
        if done.get(ci).copied().unwrap_or(false) {
            continue;
        }
        let (q, j) = l.quad_of(ci);
        let src = input.get(ci * plane_in..(ci + 1) * plane_in).unwrap_or(&[]);
        l.b.visit_rows(g, oy0, |base, iy, b, cols| {
            let row = src.get(iy * g.w..(iy + 1) * g.w).unwrap_or(&[]);
            let base = q * qs + base;
            for col in cols {
                let ix = col * l.b.s + b - g.pad_l;
                if let (Some(&v), Some(d)) = (row.get(ix), bytes.get_mut((base + col) * 4 + j)) {
                    *d = (v as u8) ^ 0x80;
                }
            }
        });
    }
}

/// Bytes `x[c · plane + 0..16] ^ xor` of rows `c = 0..4` interleaved into 16 words of 4 bytes (`dst[4·i + c]`).
///
/// # Safety
/// `x + 3 · plane + 15` must be readable (and so the other three rows); `dst` must hold 64 bytes.
pub(super) unsafe fn interleave16(x: *const i8, plane: usize, xor: i8, dst: &mut [u8]) {
    let bias = _mm_set1_epi8(xor);
    let r = |c: usize| _mm_xor_si128(_mm_loadu_si128(x.add(c * plane) as *const __m128i), bias);
    let (r0, r1, r2, r3) = (r(0), r(1), r(2), r(3));
    let a = _mm_unpacklo_epi8(r0, r1);
    let b = _mm_unpacklo_epi8(r2, r3);
    let c = _mm_unpackhi_epi8(r0, r1);
    let d = _mm_unpackhi_epi8(r2, r3);
    let o = dst.as_mut_ptr() as *mut __m128i;
    _mm_storeu_si128(o, _mm_unpacklo_epi16(a, b));
    _mm_storeu_si128(o.add(1), _mm_unpackhi_epi16(a, b));
    _mm_storeu_si128(o.add(2), _mm_unpacklo_epi16(c, d));
    _mm_storeu_si128(o.add(3), _mm_unpackhi_epi16(c, d));
}

/// The bytes of an `i32` slice (little-endian: byte `j` of a word is its bits `8j .. 8j + 8`).
pub(super) fn as_bytes_mut(t: &mut [i32]) -> &mut [u8] {
    // SAFETY: `u8` has alignment 1 and every bit pattern is a valid `u8` and `i32`; the byte slice covers exactly
    // the memory of `t` and borrows it mutably for its lifetime, so nothing else aliases it.
    unsafe { core::slice::from_raw_parts_mut(t.as_mut_ptr() as *mut u8, core::mem::size_of_val(t)) }
}

/// `buf[c][f] = Σ_q Σ_t (tile word of quad q0 + q at off[t] + f) · (weight word of quad q, tap t, channel c)
/// − corr[c]` for `f < fpad`: register tiles of 8 channels × 48 positions (24 accumulators; 3 loads and 8
/// broadcasts per 24 `vpdpbusd`) while 48 positions remain, then 8 × 32 and 8 × 16, never past `fpad` (the sums'
/// rows are `fpad` long). Integer sums: the width changes no bit.
///
/// # Safety
/// AVX-512 F/BW/VNNI; every tap offset plus a position below `fpad` stays below `qs` in each quad's region, `fpad`
/// is a multiple of 16 and at most `buf`'s stride, and `wp` holds the quads' words.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn gemm(
    tile: &[i32],
    qs: usize,
    q0: usize,
    off: &[usize],
    wp: &[u8],
    fpad: usize,
    corr: [i32; CO],
    buf: &mut Sums<'_>,
) {
    let end = fpad.min(buf.stride);
    let mut f0 = 0;
    while f0 + 3 * 16 <= end {
        // SAFETY (caller): every position below `fpad` is in range; f0 + 47 < end.
        gemm_tile::<3>(tile, qs, q0, off, wp, f0, corr, buf);
        f0 += 3 * 16;
    }
    // The rest: 32 positions, then 16 (f0 and `end` are multiples of 16, so a tile never passes `end`).
    while f0 + 2 * 16 <= end {
        // SAFETY: as above; f0 + 31 < end.
        gemm_tile::<2>(tile, qs, q0, off, wp, f0, corr, buf);
        f0 += 2 * 16;
    }
    if f0 < end {
        // SAFETY: as above; f0 + 15 < end.
        gemm_tile::<1>(tile, qs, q0, off, wp, f0, corr, buf);
    }
}

/// One register tile of [`gemm`]: positions `f0 .. f0 + 16 · N` of 8 channels.
///
/// # Safety
/// As [`gemm`], for positions below `f0 + 16 · N`.
#[allow(clippy::too_many_arguments)]
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn gemm_tile<const N: usize>(
    tile: &[i32],
    qs: usize,
    q0: usize,
    off: &[usize],
    wp: &[u8],
    f0: usize,
    corr: [i32; CO],
    buf: &mut Sums<'_>,
) {
    let taps = off.len();
    let nq = wp.len() / (taps * CO * 4).max(1);
    let mut acc = [[_mm512_setzero_si512(); N]; CO];
    for q in 0..nq {
        let qb = tile.as_ptr().add((q0 + q) * qs + f0);
        let wq = wp.as_ptr().add(q * taps * CO * 4) as *const i32;
        for t in 0..taps {
            // SAFETY (caller): off[t] + f0 + 16N - 1 < qs, so the loads stay inside quad q0 + q of `tile`; word
            // `t · CO + c` of quad q starts at byte (q · taps + t) · CO · 4 + 4c < nq · taps · CO · 4 <= wp.len()
            // (q < nq), and is read unaligned.
            let p = qb.add(*off.get_unchecked(t));
            let mut x = [_mm512_setzero_si512(); N];
            for (j, xj) in x.iter_mut().enumerate() {
                *xj = _mm512_loadu_si512(p.add(16 * j) as *const __m512i);
            }
            let wt = wq.add(t * CO);
            for (c, a) in acc.iter_mut().enumerate() {
                let wv = _mm512_set1_epi32(wt.add(c).read_unaligned());
                for (aj, xj) in a.iter_mut().zip(&x) {
                    *aj = _mm512_dpbusd_epi32(*aj, *xj, wv);
                }
            }
        }
    }
    for (c, a) in acc.iter().enumerate() {
        let cv = _mm512_set1_epi32(corr[c]);
        for (j, aj) in a.iter().enumerate() {
            // SAFETY: f0 + 16N <= fpad <= the stride: inside channel c's row.
            let d = buf.at(c, f0 + 16 * j);
            _mm512_storeu_si512(d as *mut __m512i, _mm512_sub_epi32(*aj, cv));
        }
    }
}

/// [`gemm`] with 256-bit AVX-VNNI `vpdpbusd` (no AVX-512): register tiles of 4 channels × 16 positions (8
/// accumulators, 2 loads and 4 broadcasts per 8 `vpdpbusd`; AVX2 has 16 vector registers), each 8-channel block
/// in two halves. Integer sums: the same bits as every other tier.
///
/// # Safety
/// AVX2 and AVX-VNNI, and [`gemm`]'s contract.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,avxvnni")]
unsafe fn gemm_avx(
    tile: &[i32],
    qs: usize,
    q0: usize,
    off: &[usize],
    wp: &[u8],
    fpad: usize,
    corr: [i32; CO],
    buf: &mut Sums<'_>,
) {
    let taps = off.len();
    let nq = wp.len() / (taps * CO * 4).max(1);
    let end = fpad.min(buf.stride);
    for half in [0usize, 4] {
        let mut f0 = 0;
        while f0 + 16 <= end {
            let mut acc = [[_mm256_setzero_si256(); 2]; 4];
            for q in 0..nq {
                let qb = tile.as_ptr().add((q0 + q) * qs + f0);
                let wq = wp.as_ptr().add(q * taps * CO * 4) as *const i32;
                for t in 0..taps {
                    // SAFETY (caller): off[t] + f0 + 15 < qs, inside quad q0 + q of `tile`; word t · CO + half + c
                    // (c < 4) of quad q lies in `wp` (q < nq), read unaligned.
                    let p = qb.add(*off.get_unchecked(t));
                    let x0 = _mm256_loadu_si256(p as *const __m256i);
                    let x1 = _mm256_loadu_si256(p.add(8) as *const __m256i);
                    let wt = wq.add(t * CO + half);
                    for (c, a) in acc.iter_mut().enumerate() {
                        let wv = _mm256_set1_epi32(wt.add(c).read_unaligned());
                        a[0] = _mm256_dpbusd_avx_epi32(a[0], x0, wv);
                        a[1] = _mm256_dpbusd_avx_epi32(a[1], x1, wv);
                    }
                }
            }
            for (c, a) in acc.iter().enumerate() {
                let cv = _mm256_set1_epi32(corr[half + c]);
                // SAFETY: f0 + 15 < end <= the stride: inside channel half + c's row.
                let d = buf.at(half + c, f0);
                _mm256_storeu_si256(d as *mut __m256i, _mm256_sub_epi32(a[0], cv));
                _mm256_storeu_si256(d.add(8) as *mut __m256i, _mm256_sub_epi32(a[1], cv));
            }
            f0 += 16;
        }
    }
}

/// [`store_i8_rows`] with the 32-bit epilogue in AVX2 where the channel has it, else the scalar one
/// ([`quant::ChannelEpilogue::store_i8`]; see `avx2::store_i8_row`): for tiers without AVX-512, and for the AVX-512
/// one when a shift is below 2.
#[allow(clippy::too_many_arguments)]
unsafe fn store_i8_rows_scalar(
    _p: &EpilogueParts<'_>,
    ch: &quant::ChannelEpilogue<'_>,
    p0: usize,
    ow: usize,
    wph: usize,
    a: &[i32],
    b: Option<&[i32]>,
    out: &mut [i8],
) {
    let zeros = [0i32; PX];
    for (dy, dst) in out.chunks_exact_mut(ow.max(1)).enumerate() {
        let f = dy * wph;
        let Some(ra) = a.get(f..f + ow) else { return };
        let rb = b.and_then(|b| b.get(f..f + ow));
        if b.is_some() && rb.is_none() {
            return;
        }
        let mut k = 0;
        while k < ow {
            let e = (k + PX).min(ow);
            let bb = rb.map_or(&zeros[..e - k], |b| &b[k..e]);
            // SAFETY: the tiers that reach this (AVX-VNNI, AVX-512) have AVX2.
            super::avx2::store_i8_row(
                ch,
                p0 + dy * ow + k,
                &ra[k..e],
                bb,
                b.is_some(),
                &mut dst[k..e],
            );
            k = e;
        }
    }
}

/// `Requant::apply` on 8 `i64` lanes (valid for shifts ≥ 1; the caller checks).
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn requant8(x: __m512i, m: Requant) -> __m512i {
    let x = _mm512_max_epi64(x, _mm512_set1_epi64(i32::MIN as i64));
    let x = _mm512_min_epi64(x, _mm512_set1_epi64(i32::MAX as i64));
    // The clamped value fits in the low 32 bits of each lane, which is what vpmuldq multiplies (signed).
    let p = _mm512_mul_epi32(x, _mm512_set1_epi64(m.mult as i64));
    let s = m.shift.min(62) as i64;
    let p = _mm512_add_epi64(p, _mm512_set1_epi64(1i64 << (s - 1)));
    _mm512_sra_epi64(p, _mm_cvtsi64_si128(s))
}

/// [`quant::ChannelEpilogue::store_i8`] for a band of output rows of one channel, 8 pixels at a time,
/// bit-identical: the same `i64` arithmetic lane by lane. Row `dy` reads `a[dy · wph ..][.. ow]` (and `b` alike)
/// and writes `out[dy · ow ..][.. ow]`; its pixels start at `p0 + dy · ow` in the channel. A row's last `< 8`
/// pixels go through masked loads and stores (no scalar tail), and the constants are set once per band, not per
/// row (per-row set-up was most of the epilogue's time on 16-, 8- and 4-wide layers). With every shift ≥ 2 each
/// term is below 2^60 in magnitude, so the scalar code's saturating adds never saturate and plain adds agree;
/// otherwise the scalar code runs.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn store_i8_rows(
    p: &EpilogueParts<'_>,
    ch: &quant::ChannelEpilogue<'_>,
    p0: usize,
    ow: usize,
    wph: usize,
    a: &[i32],
    b: Option<&[i32]>,
    out: &mut [i8],
) {
    let rows = out.len().checked_div(ow).unwrap_or(0);
    let has_r = !p.rplane.is_empty();
    let vector_ok = p.ma.shift >= 2
        && (b.is_none() || p.mb.shift >= 2)
        && (!has_r || (p.mr.shift >= 2 && p.rplane.len() >= p0 + rows * ow));
    if !vector_ok {
        return store_i8_rows_scalar(p, ch, p0, ow, wph, a, b, out);
    }
    for dy in 0..rows {
        let f = dy * wph;
        let (Some(ra), Some(dst)) = (a.get(f..f + ow), out.get_mut(dy * ow..(dy + 1) * ow)) else {
            return;
        };
        let rb = match b {
            Some(b) => match b.get(f..f + ow) {
                Some(rb) => Some(rb),
                None => return,
            },
            None => None,
        };
        let q0 = p0 + dy * ow;
        let bias = _mm512_set1_epi64(p.bias_q);
        let mut j = 0;
        while j < ow {
            let n = (ow - j).min(8);
            let k8: __mmask8 = (((1u32 << n) - 1) & 0xff) as u8;
            // SAFETY: lanes `>= n` are masked off (masked loads do not touch them); j + n <= ow, which is the
            // length of `ra`, `rb`, `dst`, and `p.rplane[q0..q0 + ow]` is in bounds (checked in `vector_ok`).
            let av = _mm512_cvtepi32_epi64(_mm512_castsi512_si256(_mm512_maskz_loadu_epi32(
                k8 as __mmask16,
                ra.as_ptr().add(j),
            )));
            let mut y = requant8(_mm512_add_epi64(av, bias), p.ma);
            if let Some(rb) = rb {
                let bv = _mm512_cvtepi32_epi64(_mm512_castsi512_si256(_mm512_maskz_loadu_epi32(
                    k8 as __mmask16,
                    rb.as_ptr().add(j),
                )));
                y = _mm512_add_epi64(y, requant8(bv, p.mb));
            }
            if has_r {
                let rv = _mm512_cvtepi8_epi64(_mm512_castsi512_si128(_mm512_maskz_loadu_epi8(
                    k8 as __mmask64,
                    p.rplane.as_ptr().add(q0 + j),
                )));
                y = _mm512_add_epi64(y, requant8(rv, p.mr));
            }
            // Saturating narrow to i8 = clamp(-128, 127), `n` bytes stored.
            _mm512_mask_cvtsepi64_storeu_epi8(dst.as_mut_ptr().add(j), k8, y);
            j += n;
        }
    }
}
