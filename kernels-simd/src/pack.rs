//! Weights packed offline into a kernel's tile layout.
//!
//! A SIMD convolution reads its weights in an order of its own (output-channel blocks, input channels grouped per
//! register lane, taps innermost). Re-laying the canonical `[cout][cin][k][k]` weights out on every call costs a
//! few nanoseconds per weight; on a layer with few output pixels that is more than its multiply-accumulates.
//! `quantize-tool convert --pack <family>` therefore writes the packed weights into the blob (section `PACKED`,
//! `docs/FORMAT.md`), once per *target family* (a layout, not a CPU model), and a tier that reads that family takes
//! them from there. The canonical weights stay in the blob: every other tier, and the generic fallback, use them,
//! and a blob with packs for a family the CPU lacks runs unchanged.
//!
//! This module is plain Rust on every architecture, so the host tool can pack for any target; the layout
//! functions here are also what the kernels use when they pack per call, so both paths read identical bytes.

use crate::Conv2dGeom;

/// Family: the x86_64 AVX-512 tier (F + BW + VNNI), int8 convolutions in the [`vnni8_pack`] layout (`vpdpbusd`,
/// `x86_64/vnni.rs`). (Blobs written before family [`X86_AVX512_F32`] existed also carry float convolutions under
/// this code, in the [`fma8_pack`] layout; the runtime no longer reads those and packs per call instead.)
pub const X86_AVX512: u32 = 1;

/// Family: the x86_64 float convolutions (AVX-512 tier, and the AVX2 / AVX-VNNI tiers with two `ymm` per 16
/// channels): the 3×3 stride-1 layers that [`winograd`] picks as Winograd F(2×2, 3×3) transformed weights
/// ([`wino16_pack`], `x86_64/wino512.rs`, `wino256.rs`), every other layer in the [`fma16_pack`] layout (output
/// channels in the lanes, `x86_64/direct512.rs`, `direct256.rs`). `quantize-tool`'s `x86_64-avx512`
/// writes both this and [`X86_AVX512`]. (Code 3, [`fma16_pack`] for every layer, was this family before the
/// Winograd kernel; the runtime no longer reads it and packs per call instead.)
pub const X86_AVX512_F32: u32 = 4;

/// The int8 layout's family (the AVX-512 tier's).
pub const VNNI8: u32 = X86_AVX512;

/// Output channels per block of the [`vnni8_pack`] and [`fma8_pack`] layouts.
pub const VNNI8_CO: usize = 8;

/// Family: the aarch64 NEON and dotprod tiers. int8 convolutions in the [`neon4_pack`] layout (`aarch64/rows.rs`:
/// 4-channel blocks of quad words, read by `smull`/`sadalp` and by `sdot`); float convolutions are not packed for
/// this family (the NEON `f32` kernel repacks once per call, a small cost against its MACs).
pub const AARCH64_NEON: u32 = 2;

/// Output channels per block of the [`neon4_pack`] layout.
pub const NEON4_CO: usize = 4;

/// Quads of each branch in the [`neon4_pack`] layout are padded to a multiple of this (the NEON kernel pairs
/// quads; the dotprod kernel, which needs no padding, reads the padded zero quads too).
pub const NEON4_QALIGN: usize = 2;

/// Family: the x86_64 AVX2 tier's int8 convolutions (CPUs without VNNI): the 3×3 stride-1 layers that [`wino8`]
/// picks as exact integer Winograd F(2×2, 3×3) weights ([`wino8_pack`], `x86_64/wino8.rs`); other layers get no
/// entry (the AVX2 direct kernel packs them per call).
pub const X86_AVX2_WINO8: u32 = 5;

/// Output channels per block of the [`wino8_pack`] layout.
pub const WINO8_CO: usize = 4;

/// Family: the aarch64 `neon` tier (CPUs without FEAT_DotProd, e.g. Cortex-A53): int8 3×3 stride-1 layers that
/// [`wino8`] picks as exact integer Winograd F(2×2, 3×3) weights ([`wino8n_pack`], `aarch64/wino8.rs`), every
/// other int8 layer in the [`neon4_pack`] layout of family [`AARCH64_NEON`] (4-channel blocks either way).
pub const AARCH64_NEON_WINO8: u32 = 6;

/// Output tiles (2×2) per band of the int8 Winograd kernel at most.
pub const WINO8_NT: usize = 64;

/// 32-bit words of the transformed input one band of the int8 Winograd kernel may hold (`16` per pair of input
/// channels and 2×2 output tile; 256 KiB of stack scratch, host tier only).
pub const WINO8_V: usize = 64 * 1024;

/// Most input channels [`wino8`] takes: the kernel's `i32` sums hold 4 × the convolution's, at most
/// `4 · 9 · 128² · cin` in magnitude (−128 · −128 is the largest product), which must stay below `2³¹`.
pub const WINO8_MAX_CIN: usize = 2048;

/// Fewest input channels for which [`wino8`] picks the int8 Winograd kernel.
pub const WINO8_MIN_CIN: usize = 8;

/// Family: the aarch64 `neon` / `dotprod` tiers' float convolutions: the 3×3 stride-1 layers that [`wino_neon`]
/// picks as Winograd F(2×2, 3×3) transformed weights ([`winon_pack`], `aarch64/winof.rs`); other float layers get
/// no entry (the NEON direct kernel packs them per call).
pub const AARCH64_NEON_F32: u32 = 7;

/// Every family this build can write, with its command-line name.
pub const FAMILIES: &[(u32, &str)] = &[
    (X86_AVX512, "x86_64-avx512"),
    (AARCH64_NEON, "aarch64-neon"),
    (X86_AVX512_F32, "x86_64-avx512-f32"),
    (X86_AVX2_WINO8, "x86_64-avx2-int8"),
    (AARCH64_NEON_WINO8, "aarch64-neon-wino8"),
    (AARCH64_NEON_F32, "aarch64-neon-f32"),
];

/// Output channels per block of family `f`'s layout (a split of a layer's channels must fall on a block
/// boundary); 1 for an unknown family.
pub fn block_channels(f: u32) -> usize {
    match f {
        X86_AVX512 => VNNI8_CO,
        AARCH64_NEON => NEON4_CO,
        X86_AVX512_F32 => FMA16_CO,
        X86_AVX2_WINO8 => WINO8_CO,
        AARCH64_NEON_WINO8 | AARCH64_NEON_F32 => WINO8_CO,
        _ => 1,
    }
}

/// Quads of branch A and in all for the aarch64 layout with each branch padded to a multiple of `qalign`: branch A
/// holds channels `< split` (quad `q` = channels `4q .. 4q + 4`), branch B the rest from quad `qa` on.
pub fn neon4_quads(cin: usize, split: usize, qalign: usize) -> (usize, usize) {
    let split = split.min(cin);
    let qalign = qalign.max(1);
    let qa = split.div_ceil(4).next_multiple_of(qalign);
    (qa, qa + (cin - split).div_ceil(4).next_multiple_of(qalign))
}

/// Input channel of byte `i` of quad `q` in the aarch64 layout (`None`: a padding byte).
pub fn neon4_channel(q: usize, i: usize, qa: usize, split: usize, cin: usize) -> Option<usize> {
    if q < qa {
        let c = 4 * q + i;
        (c < split).then_some(c)
    } else {
        let c = split + 4 * (q - qa) + i;
        (c < cin).then_some(c)
    }
}

/// 32-bit words of one 4-channel block of the aarch64 layout: `quads · k² · 4`.
pub fn neon4_block_words(g: &Conv2dGeom, split: usize, qalign: usize) -> usize {
    neon4_quads(g.cin, split, qalign).1 * g.k * g.k * NEON4_CO
}

/// Bytes of a whole layer in the [`AARCH64_NEON`] layout (`ceil(cout / 4)` blocks, quads padded to
/// [`NEON4_QALIGN`]).
pub fn neon4_len(g: &Conv2dGeom, split: usize) -> usize {
    g.cout.div_ceil(NEON4_CO) * neon4_block_words(g, split, NEON4_QALIGN) * 4
}

/// Pack output channels `co0 .. co0 + 4` of `w` (`[cout][cin][k][k]`) into `out` ([`neon4_block_words`] words):
/// word `(quad · k² + tap) · 4 + c` holds channel `co0 + c`'s 4 weights of that quad's input channels, byte `j`
/// (little-endian) for [`neon4_channel`]`(quad, j)`; padding bytes and channels `>= cout` are 0. Returns false if
/// `w` or `out` is too short.
pub fn neon4_pack_block(
    g: &Conv2dGeom,
    split: usize,
    qalign: usize,
    w: &[i8],
    co0: usize,
    out: &mut [u32],
) -> bool {
    let Some(out) = out.get_mut(..neon4_block_words(g, split, qalign)) else {
        return false;
    };
    let mut it = out.iter_mut();
    neon4_block_with(g, split, qalign, w, co0, |v| {
        if let Some(d) = it.next() {
            *d = v;
        }
    })
}

/// Zeros standing in for an absent channel's taps (at least `k²` long for every kernel side the layout takes).
static ZEROS: [i8; 2048] = [0; 2048];

/// The words of the 4-channel block at `co0` (see [`neon4_pack_block`]) handed to `put` in layout order (quad,
/// then tap, then channel: sequential writes; each quad's 16 source rows are looked up once). False if `w` is
/// short or `k²` is beyond the layout's range.
#[inline]
fn neon4_block_with(
    g: &Conv2dGeom,
    split: usize,
    qalign: usize,
    w: &[i8],
    co0: usize,
    mut put: impl FnMut(u32),
) -> bool {
    let split = split.min(g.cin);
    let (qa, quads) = neon4_quads(g.cin, split, qalign);
    let kk = g.k * g.k;
    if w.len() < g.cout * g.cin * kk || kk > ZEROS.len() {
        return false;
    }
    for q in 0..quads {
        // src[c][j]: the taps of output channel co0 + c for input channel byte j of this quad.
        let src: [[&[i8]; 4]; NEON4_CO] = core::array::from_fn(|c| {
            let co = co0 + c;
            core::array::from_fn(|j| {
                neon4_channel(q, j, qa, split, g.cin)
                    .filter(|_| co < g.cout)
                    .and_then(|ci| w.get((co * g.cin + ci) * kk..(co * g.cin + ci + 1) * kk))
                    .unwrap_or(&ZEROS[..kk])
            })
        });
        for t in 0..kk {
            for s in &src {
                let b = |j: usize| s[j].get(t).map_or(0, |&v| v as u8);
                put(u32::from_le_bytes([b(0), b(1), b(2), b(3)]));
            }
        }
    }
    true
}

/// Pack a whole layer into `out` ([`neon4_len`] bytes, little-endian words). Returns false if a length is short.
pub fn neon4_pack(g: &Conv2dGeom, split: usize, w: &[i8], out: &mut [u8]) -> bool {
    let bw = neon4_block_words(g, split, NEON4_QALIGN);
    if out.len() < neon4_len(g, split) {
        return false;
    }
    out.chunks_exact_mut(bw * 4)
        .take(g.cout.div_ceil(NEON4_CO))
        .enumerate()
        .all(|(b, blk)| {
            let mut it = blk.chunks_exact_mut(4);
            neon4_block_with(g, split, NEON4_QALIGN, w, b * NEON4_CO, |v| {
                if let Some(d) = it.next() {
                    d.copy_from_slice(&v.to_le_bytes());
                }
            })
        })
}

/// The name of family `f` (`None` if unknown).
pub fn family_name(f: u32) -> Option<&'static str> {
    FAMILIES.iter().find(|(c, _)| *c == f).map(|(_, n)| *n)
}

/// The family called `name` (`None` if unknown).
pub fn family_code(name: &str) -> Option<u32> {
    FAMILIES.iter().find(|(_, n)| *n == name).map(|(c, _)| *c)
}

/// Quads (groups of 4 input channels, one 32-bit lane of `vpdpbusd`) of branch A (channels `< split`) and in
/// all, for `cin` input channels. Branch B's quads follow A's, so the two branches never share a quad.
pub fn vnni8_quads(cin: usize, split: usize) -> (usize, usize) {
    let split = split.min(cin);
    let qa = split.div_ceil(4);
    (qa, qa + (cin - split).div_ceil(4))
}

/// Quad and byte of input channel `ci`.
fn quad_of(ci: usize, split: usize, qa: usize) -> (usize, usize) {
    if ci < split {
        (ci / 4, ci % 4)
    } else {
        (qa + (ci - split) / 4, (ci - split) % 4)
    }
}

/// Bytes of one [`VNNI8_CO`]-channel block: `quads · k² · 8` weight words, then the 8 corrections of branch A and
/// the 8 of branch B (`i32`, little-endian).
pub fn vnni8_block_len(g: &Conv2dGeom, split: usize) -> usize {
    let (_, quads) = vnni8_quads(g.cin, split);
    (quads * g.k * g.k * VNNI8_CO + 2 * VNNI8_CO) * 4
}

/// Bytes of a whole layer in the [`VNNI8`] layout (`ceil(cout / 8)` blocks).
pub fn vnni8_len(g: &Conv2dGeom, split: usize) -> usize {
    g.cout.div_ceil(VNNI8_CO) * vnni8_block_len(g, split)
}

/// Pack output channels `co0 .. co0 + 8` of `w` (`[cout][cin][k][k]`) into `out` (at least
/// [`vnni8_block_len`] bytes): word `(quad · k² + tap) · 8 + c` holds the 4 signed weights of that quad's input
/// channels (byte `j` = channel `4 · quad + j` of its branch; absent channels and channels `>= cout` are 0), then
/// `128 · Σ w` per channel for branch A and for branch B — what the kernel subtracts after multiplying inputs biased
/// to unsigned (`x + 128`). Returns false (and leaves `out` alone) if `w` or `out` is too short.
pub fn vnni8_pack_block(
    g: &Conv2dGeom,
    split: usize,
    w: &[i8],
    co0: usize,
    out: &mut [u8],
) -> bool {
    let split = split.min(g.cin);
    let (qa, quads) = vnni8_quads(g.cin, split);
    let kk = g.k * g.k;
    let n = quads * kk * VNNI8_CO * 4;
    let len = vnni8_block_len(g, split);
    let Some(out) = out.get_mut(..len) else {
        return false;
    };
    if w.len() < g.cout * g.cin * kk {
        return false;
    }
    out.fill(0);
    let (words, corr) = out.split_at_mut(n);
    let mut ca = [0i32; VNNI8_CO];
    let mut cb = [0i32; VNNI8_CO];
    for c in 0..VNNI8_CO.min(g.cout.saturating_sub(co0)) {
        let co = co0 + c;
        let wrow = &w[co * g.cin * kk..(co + 1) * g.cin * kk];
        for (ci, taps) in wrow.chunks_exact(kk).enumerate() {
            let (q, j) = quad_of(ci, split, qa);
            let mut sum = 0i32;
            for (t, &v) in taps.iter().enumerate() {
                words[((q * kk + t) * VNNI8_CO + c) * 4 + j] = v as u8;
                sum += v as i32;
            }
            if q < qa {
                ca[c] += 128 * sum;
            } else {
                cb[c] += 128 * sum;
            }
        }
    }
    for (dst, v) in corr.chunks_exact_mut(4).zip(ca.iter().chain(cb.iter())) {
        dst.copy_from_slice(&v.to_le_bytes());
    }
    true
}

/// Pack a whole layer into `out` ([`vnni8_len`] bytes). Returns false if a length is short.
pub fn vnni8_pack(g: &Conv2dGeom, split: usize, w: &[i8], out: &mut [u8]) -> bool {
    let bl = vnni8_block_len(g, split);
    if out.len() < vnni8_len(g, split) {
        return false;
    }
    out.chunks_exact_mut(bl)
        .take(g.cout.div_ceil(VNNI8_CO))
        .enumerate()
        .all(|(b, blk)| vnni8_pack_block(g, split, w, b * VNNI8_CO, blk))
}

/// Bytes of one 8-channel block of the float layout: `cin · k² · 8` little-endian `f32`.
pub fn fma8_block_len(g: &Conv2dGeom) -> usize {
    g.cin * g.k * g.k * VNNI8_CO * 4
}

/// Bytes of a whole float layer in the [`fma8_pack`] layout.
pub fn fma8_len(g: &Conv2dGeom) -> usize {
    g.cout.div_ceil(VNNI8_CO) * fma8_block_len(g)
}

/// Pack output channels `co0 .. co0 + 8` of a float convolution's weights (`[cout][cin][k][k]`, f32 or f16, read
/// as `f32`) into `out` ([`fma8_block_len`] bytes): value `(ci · k² + tap) · 8 + c` is channel `co0 + c`'s weight (0
/// past `cout`), `f32` little-endian. Returns false if a length is short or the weights are int8.
pub fn fma8_pack_block(g: &Conv2dGeom, w: crate::Weights<'_>, co0: usize, out: &mut [u8]) -> bool {
    fma8_pack_block_with(g, w, co0, out, crate::generic::f16_to_f32)
}

/// [`fma8_pack_block`] with the f16 → f32 row conversion supplied by the caller (e.g. F16C; any exact conversion
/// gives the same bytes).
pub fn fma8_pack_block_with(
    g: &Conv2dGeom,
    w: crate::Weights<'_>,
    co0: usize,
    out: &mut [u8],
    cvt: fn(&[half::f16], &mut [f32]),
) -> bool {
    let per = g.cin * g.k * g.k;
    let Some(blk) = out.get_mut(..fma8_block_len(g)) else {
        return false;
    };
    if w.len() < g.cout * per || matches!(w, crate::Weights::I8 { .. }) {
        return false;
    }
    blk.fill(0);
    let mut put = |c: usize, i: usize, v: f32| {
        let at = (i * VNNI8_CO + c) * 4;
        blk[at..at + 4].copy_from_slice(&v.to_le_bytes());
    };
    for c in 0..VNNI8_CO.min(g.cout.saturating_sub(co0)) {
        let co = co0 + c;
        match w {
            crate::Weights::F32(all) => {
                for (i, &v) in all[co * per..(co + 1) * per].iter().enumerate() {
                    put(c, i, v);
                }
            }
            crate::Weights::F16(all) => {
                // Convert 256 weights at a time, then scatter.
                let mut tmp = [0f32; 256];
                for (k, src) in all[co * per..(co + 1) * per].chunks(256).enumerate() {
                    cvt(src, &mut tmp[..src.len()]);
                    for (j, &v) in tmp[..src.len()].iter().enumerate() {
                        put(c, 256 * k + j, v);
                    }
                }
            }
            crate::Weights::I8 { .. } => return false,
        }
    }
    true
}

/// Pack a whole float layer into `out` ([`fma8_len`] bytes, blocks of [`fma8_pack_block`]).
pub fn fma8_pack(g: &Conv2dGeom, w: crate::Weights<'_>, out: &mut [u8]) -> bool {
    let bl = fma8_block_len(g);
    out.len() >= fma8_len(g)
        && out
            .chunks_exact_mut(bl)
            .take(g.cout.div_ceil(VNNI8_CO))
            .enumerate()
            .all(|(b, blk)| fma8_pack_block(g, w, b * VNNI8_CO, blk))
}

/// Output channels per block of the [`fma16_pack`] layout (one `zmm` of `f32`).
pub const FMA16_CO: usize = 16;

/// Whether family `fam` packs this int8 convolution (input split at `split`), and its packed length in bytes
/// (`None`: the family has no int8 layout, or its kernel does not take the layer).
pub fn int8_len(fam: u32, g: &Conv2dGeom, split: usize) -> Option<usize> {
    match fam {
        X86_AVX512 => Some(vnni8_len(g, split)),
        AARCH64_NEON => Some(neon4_len(g, split)),
        X86_AVX2_WINO8 if wino8(g, split) => Some(wino8_len(g, split)),
        AARCH64_NEON_WINO8 if wino8(g, split) => Some(wino8n_len(g)),
        AARCH64_NEON_WINO8 => Some(neon4_len(g, split)),
        _ => None,
    }
}

/// Pack an int8 convolution's weights (`[cout][cin][k][k]`, input split at `split`) for family `fam` into `out`
/// ([`int8_len`] bytes); false where the family does not pack the layer or a length is short.
pub fn int8_pack(fam: u32, g: &Conv2dGeom, split: usize, w: &[i8], out: &mut [u8]) -> bool {
    match fam {
        X86_AVX512 => vnni8_pack(g, split, w, out),
        AARCH64_NEON => neon4_pack(g, split, w, out),
        X86_AVX2_WINO8 => wino8(g, split) && wino8_pack(g, split, w, out),
        AARCH64_NEON_WINO8 if wino8(g, split) => wino8n_pack(g, w, out),
        AARCH64_NEON_WINO8 => neon4_pack(g, split, w, out),
        _ => false,
    }
}

/// Whether family `fam` packs this float convolution, and its packed length in bytes (`None`: the family has no
/// float layout, or its kernel does not take the layer, so packing it would only grow the blob).
pub fn float_len(fam: u32, g: &Conv2dGeom) -> Option<usize> {
    if fam == AARCH64_NEON_F32 {
        return wino_neon(g).then(|| winon_len(g));
    }
    if fam != X86_AVX512_F32 {
        return None;
    }
    if winograd(g) {
        return Some(wino16_len(g));
    }
    let ok = g.cout > 0
        && g.cout.is_multiple_of(FMA16_CO)
        && (1..=2).contains(&g.stride)
        && (1..=7).contains(&g.k);
    ok.then(|| fma16_len(g))
}

/// Pack a float convolution's weights for family `fam` into `out` ([`float_len`] bytes); false where
/// [`float_len`] is `None` or a length is short.
pub fn float_pack(fam: u32, g: &Conv2dGeom, w: crate::Weights<'_>, out: &mut [u8]) -> bool {
    if fam == AARCH64_NEON_F32 {
        return wino_neon(g) && winon_pack(g, w, out);
    }
    float_len(fam, g).is_some()
        && if winograd(g) {
            wino16_pack(g, w, out)
        } else {
            fma16_pack(g, w, out)
        }
}

/// Floats of the transformed input one band of the Winograd kernel may hold (`16 · cin` per 2×2 output tile;
/// 512 KiB of stack scratch, host tiers only).
pub const WINO_V: usize = 128 * 1024;

/// Output tiles (2×2) per band of the Winograd kernel.
pub const WINO_NT: usize = 32;

/// Fewest input channels for which [`winograd`] picks the Winograd kernel.
pub const WINO_MIN_CIN: usize = 16;

/// Whether family [`X86_AVX512_F32`] runs this layer as Winograd F(2×2, 3×3) (and packs it with [`wino16_pack`]):
/// 3×3, stride 1, output channels a multiple of 16, at least [`WINO_MIN_CIN`] input channels, padding ≤ 2, an
/// output of at least 4×4, one row of 2×2 tiles within the kernel's band ([`WINO_NT`], [`WINO_V`]), and not a small
/// layer (under 256 output positions, Winograd only from 192 input channels on). The multiplications per output
/// drop from 9 · cin to 4 · cin; the transforms cost a few additions per input and output value, which is why
/// small layers stay direct: measured on the Intel host (`conv-time`), the direct kernel wins 64→64 at 8×8 (0.034
/// vs 0.039 ms) and 128→64 at 8×8 (0.064 vs 0.079 ms), Winograd wins 32→64 at 32×32 (0.21 vs 0.27 ms), 192→128 at
/// 8×8 (0.16 vs 0.18 ms) and 256→256 at 8×8 (0.37 vs 0.50 ms). The choice must not depend on `cout` beyond its
/// multiple of 16: a layer split over threads by 16-channel blocks (`parallel::conv2d`) hands each part the
/// packed bytes of its channels, which must be in the same layout.
pub fn winograd(g: &Conv2dGeom) -> bool {
    let tw = g.ow.div_ceil(2);
    g.k == 3
        && g.stride == 1
        && g.cout > 0
        && g.cout.is_multiple_of(FMA16_CO)
        && g.cin >= WINO_MIN_CIN
        && (g.oh * g.ow >= 256 || g.cin >= 192)
        && g.pad_t <= 2
        && g.pad_l <= 2
        && g.oh >= 4
        && g.ow >= 4
        && tw <= WINO_NT
        && 16 * g.cin * tw <= WINO_V
}

/// Bytes of a whole layer in the [`wino16_pack`] layout: `16 · cin · 16` floats per block of 16 output channels.
pub fn wino16_len(g: &Conv2dGeom) -> usize {
    g.cout.div_ceil(FMA16_CO) * 16 * g.cin * FMA16_CO * 4
}

/// One 3×3 filter `f` (row-major) in the Winograd F(2×2, 3×3) domain: `U = G f Gᵀ` with
/// `G = [[1, 0, 0], [½, ½, ½], [½, −½, ½], [0, 0, 1]]`, computed in `f64` and rounded once; `U[4r + c]`.
pub fn wino_filter(f: &[f32; 9]) -> [f32; 16] {
    const G: [[f64; 3]; 4] = [
        [1.0, 0.0, 0.0],
        [0.5, 0.5, 0.5],
        [0.5, -0.5, 0.5],
        [0.0, 0.0, 1.0],
    ];
    core::array::from_fn(|xi| {
        let (r, c) = (xi / 4, xi % 4);
        let mut s = 0f64;
        for (i, gr) in G[r].iter().enumerate() {
            for (j, gc) in G[c].iter().enumerate() {
                s += gr * f[3 * i + j] as f64 * gc;
            }
        }
        s as f32
    })
}

/// Pack a 3×3 float convolution's weights (`[cout][cin][3][3]`, f32 or f16) for the Winograd kernel
/// (`x86_64/wino512.rs`): per block of 16 output channels, `16 · cin · 16` little-endian `f32`
/// `[ξ][cin][channel]` of [`wino_filter`]'s 16 values `ξ` (0 past `cout`), so one (ξ, input channel) of a block is
/// one 64-byte vector. False if the layer is not 3×3, a length is short or the weights are int8.
pub fn wino16_pack(g: &Conv2dGeom, w: crate::Weights<'_>, out: &mut [u8]) -> bool {
    let Some(out) = out.get_mut(..wino16_len(g)) else {
        return false;
    };
    if g.k != 3 || w.len() < g.cout * g.cin * 9 || matches!(w, crate::Weights::I8 { .. }) {
        return false;
    }
    // One block and input channel at a time: the 16 channels' transformed filters, then 16 whole 64-byte runs.
    let mut f = [0f32; 9];
    let mut v = [[0f32; 16]; FMA16_CO];
    for b in 0..g.cout.div_ceil(FMA16_CO) {
        for ci in 0..g.cin {
            for (c, vc) in v.iter_mut().enumerate() {
                let co = b * FMA16_CO + c;
                *vc = if co < g.cout {
                    let at = (co * g.cin + ci) * 9;
                    match w {
                        crate::Weights::F32(all) => f.copy_from_slice(&all[at..at + 9]),
                        crate::Weights::F16(all) => {
                            crate::generic::f16_to_f32(&all[at..at + 9], &mut f)
                        }
                        crate::Weights::I8 { .. } => return false,
                    }
                    wino_filter(&f)
                } else {
                    [0f32; 16]
                };
            }
            for xi in 0..16 {
                let o = ((b * 16 + xi) * g.cin + ci) * FMA16_CO * 4;
                for (d, vc) in out[o..o + FMA16_CO * 4].chunks_exact_mut(4).zip(&v) {
                    d.copy_from_slice(&vc[xi].to_le_bytes());
                }
            }
        }
    }
    true
}

/// Bytes of a whole float layer in the [`fma16_pack`] layout.
pub fn fma16_len(g: &Conv2dGeom) -> usize {
    g.cout.div_ceil(FMA16_CO) * g.cin * g.k * g.k * FMA16_CO * 4
}

/// Pack a float convolution's weights (`[cout][cin][k][k]`, f32 or f16) for the channels-in-lanes AVX-512 kernel
/// (`x86_64/direct512.rs`): per block of 16 output channels, `cin · k² · 16` little-endian `f32`
/// `[cin][tap][channel]` (0 past `cout`), so one (input channel, tap) of a block is one 64-byte vector. False if a
/// length is short or the weights are int8.
pub fn fma16_pack(g: &Conv2dGeom, w: crate::Weights<'_>, out: &mut [u8]) -> bool {
    let per = g.cin * g.k * g.k;
    let Some(out) = out.get_mut(..fma16_len(g)) else {
        return false;
    };
    if w.len() < g.cout * per || matches!(w, crate::Weights::I8 { .. }) {
        return false;
    }
    out.fill(0);
    let mut row = [0f32; 256];
    for co in 0..g.cout {
        let (b, c) = (co / FMA16_CO, co % FMA16_CO);
        for i0 in (0..per).step_by(256) {
            let n = (per - i0).min(256);
            match w {
                crate::Weights::F32(all) => {
                    row[..n].copy_from_slice(&all[co * per + i0..co * per + i0 + n])
                }
                crate::Weights::F16(all) => crate::generic::f16_to_f32(
                    &all[co * per + i0..co * per + i0 + n],
                    &mut row[..n],
                ),
                crate::Weights::I8 { .. } => return false,
            }
            for (j, &v) in row[..n].iter().enumerate() {
                let at = ((b * per + i0 + j) * FMA16_CO + c) * 4;
                out[at..at + 4].copy_from_slice(&v.to_le_bytes());
            }
        }
    }
    true
}

/// Pairs of input channels (one `i32` word of two `i16`, the operand of `vpmaddwd`) of branch A (channels
/// `< split`) and in all, for the [`wino8_pack`] layout and its kernel: branch B's pairs follow A's, so the two
/// branches never share a pair.
pub fn wino8_pairs(cin: usize, split: usize) -> (usize, usize) {
    let split = split.min(cin);
    let pa = split.div_ceil(2);
    (pa, pa + (cin - split).div_ceil(2))
}

/// The input channels of pair `p` (the second `None` where a branch has an odd count), `pa` from [`wino8_pairs`].
pub fn wino8_pair(p: usize, pa: usize, split: usize, cin: usize) -> (usize, Option<usize>) {
    let split = split.min(cin);
    let (c0, end) = if p < pa {
        (2 * p, split)
    } else {
        (split + 2 * (p - pa), cin)
    };
    (c0, (c0 + 1 < end).then_some(c0 + 1))
}

/// Whether family [`X86_AVX2_WINO8`] runs this int8 layer as integer Winograd F(2×2, 3×3) (and packs it with
/// [`wino8_pack`]): 3×3, stride 1, padding ≤ 2, [`WINO8_MIN_CIN`] ..= [`WINO8_MAX_CIN`] input channels, output
/// columns in whole groups of 4 tiles (`⌈ow / 2⌉` a multiple of 4, at most [`WINO8_NT`]) and one row of tiles
/// within the band ([`WINO8_V`]). The choice does not depend on `cout`, so a split by 4-channel blocks keeps one
/// layout.
pub fn wino8(g: &Conv2dGeom, split: usize) -> bool {
    let tw = g.ow.div_ceil(2);
    let (_, pairs) = wino8_pairs(g.cin, split);
    g.k == 3
        && g.stride == 1
        && g.cout > 0
        && (WINO8_MIN_CIN..=WINO8_MAX_CIN).contains(&g.cin)
        && g.pad_t <= 2
        && g.pad_l <= 2
        && g.oh >= 2
        && tw.is_multiple_of(4)
        && tw <= WINO8_NT
        && 16 * pairs * tw.next_multiple_of(8) <= WINO8_V
}

/// Bytes of a whole layer in the [`wino8_pack`] layout: per block of 4 output channels, `16 · pairs · 4` words.
pub fn wino8_len(g: &Conv2dGeom, split: usize) -> usize {
    g.cout.div_ceil(WINO8_CO) * 16 * wino8_pairs(g.cin, split).1 * WINO8_CO * 4
}

/// One int8 3×3 filter `f` (row-major) in the Winograd domain, scaled to integers: `U = (2G) f (2G)ᵀ` with
/// `2G = [[2, 0, 0], [1, 1, 1], [1, −1, 1], [0, 0, 2]]` (4 × [`wino_filter`]'s `U`, exact); `U[4r + c]`,
/// `|U| ≤ 9 · 128`, so an `i16`.
pub fn wino8_filter(f: &[i8; 9]) -> [i16; 16] {
    const G2: [[i32; 3]; 4] = [[2, 0, 0], [1, 1, 1], [1, -1, 1], [0, 0, 2]];
    core::array::from_fn(|xi| {
        let (r, c) = (xi / 4, xi % 4);
        let mut s = 0i32;
        for (i, gr) in G2[r].iter().enumerate() {
            for (j, gc) in G2[c].iter().enumerate() {
                s += gr * f[3 * i + j] as i32 * gc;
            }
        }
        s as i16
    })
}

/// Pack an int8 3×3 convolution's weights (`[cout][cin][3][3]`) for the AVX2 integer Winograd kernel
/// (`x86_64/wino8.rs`), input split at `split` (the concatenation's two branches, [`wino8_pairs`]): per block of 4
/// output channels, `16 · pairs · 4` little-endian words `[ξ][pair][channel]`, each the two channels' [`wino8_filter`]
/// values `ξ` as `i16` (first channel low; 0 for an absent channel or a channel `>= cout`). False if the layer is
/// not 3×3 or a length is short.
pub fn wino8_pack(g: &Conv2dGeom, split: usize, w: &[i8], out: &mut [u8]) -> bool {
    let (pa, pairs) = wino8_pairs(g.cin, split);
    let Some(out) = out.get_mut(..wino8_len(g, split)) else {
        return false;
    };
    if g.k != 3 || w.len() < g.cout * g.cin * 9 {
        return false;
    }
    let filter = |co: usize, ci: Option<usize>| -> [i16; 16] {
        match ci.filter(|_| co < g.cout) {
            Some(ci) => {
                let at = (co * g.cin + ci) * 9;
                let mut f = [0i8; 9];
                f.copy_from_slice(&w[at..at + 9]);
                wino8_filter(&f)
            }
            None => [0; 16],
        }
    };
    for b in 0..g.cout.div_ceil(WINO8_CO) {
        for p in 0..pairs {
            let (c0, c1) = wino8_pair(p, pa, split, g.cin);
            for c in 0..WINO8_CO {
                let co = b * WINO8_CO + c;
                let (lo, hi) = (filter(co, Some(c0)), filter(co, c1));
                for xi in 0..16 {
                    let word = (lo[xi] as u16 as u32) | ((hi[xi] as u16 as u32) << 16);
                    let at = (((b * 16 + xi) * pairs + p) * WINO8_CO + c) * 4;
                    out[at..at + 4].copy_from_slice(&word.to_le_bytes());
                }
            }
        }
    }
    true
}

/// Bytes of a whole layer in the [`wino8n_pack`] layout: per block of 4 output channels, `16 · cin · 4` `i16`.
pub fn wino8n_len(g: &Conv2dGeom) -> usize {
    g.cout.div_ceil(WINO8_CO) * 16 * g.cin * WINO8_CO * 2
}

/// Pack an int8 3×3 convolution's weights (`[cout][cin][3][3]`) for the NEON integer Winograd kernel
/// (`aarch64/wino8.rs`): per block of 4 output channels, `16 · cin · 4` little-endian `i16` `[ξ][cin][channel]` of
/// [`wino8_filter`]'s values (0 for channels `>= cout`), so one (ξ, input channel) of a block is one 8-byte `d`
/// register for `smlal` by lane. (No input split: the kernel sums each branch's channels separately.) False if the
/// layer is not 3×3 or a length is short.
pub fn wino8n_pack(g: &Conv2dGeom, w: &[i8], out: &mut [u8]) -> bool {
    let Some(out) = out.get_mut(..wino8n_len(g)) else {
        return false;
    };
    if g.k != 3 || w.len() < g.cout * g.cin * 9 {
        return false;
    }
    out.fill(0);
    let mut f = [0i8; 9];
    for co in 0..g.cout {
        let (b, c) = (co / WINO8_CO, co % WINO8_CO);
        for ci in 0..g.cin {
            let at = (co * g.cin + ci) * 9;
            f.copy_from_slice(&w[at..at + 9]);
            for (xi, u) in wino8_filter(&f).into_iter().enumerate() {
                let o = (((b * 16 + xi) * g.cin + ci) * WINO8_CO + c) * 2;
                out[o..o + 2].copy_from_slice(&u.to_le_bytes());
            }
        }
    }
    true
}

/// Whether family `fam`'s float kernel runs `g` as Winograd F(2×2, 3×3) on its packed weights (it then sums in
/// another order than a direct convolution: within the float bound, not bit-identical).
pub fn float_winograd(fam: u32, g: &Conv2dGeom) -> bool {
    match fam {
        X86_AVX512_F32 => winograd(g),
        AARCH64_NEON_F32 => wino_neon(g),
        _ => false,
    }
}

/// Whether family [`AARCH64_NEON_F32`] runs this float layer as Winograd F(2×2, 3×3) (and packs it with
/// [`winon_pack`]): 3×3, stride 1, padding ≤ 2, at least [`WINO8_MIN_CIN`] input channels, output columns in whole
/// groups of 4 tiles (`⌈ow / 2⌉` a multiple of 4, at most [`WINO8_NT`]) and one row of tiles within the band
/// ([`WINO_V`] floats). The choice does not depend on `cout`.
pub fn wino_neon(g: &Conv2dGeom) -> bool {
    let tw = g.ow.div_ceil(2);
    g.k == 3
        && g.stride == 1
        && g.cout > 0
        && g.cin >= WINO8_MIN_CIN
        && g.pad_t <= 2
        && g.pad_l <= 2
        && g.oh >= 2
        && tw.is_multiple_of(4)
        && tw <= WINO8_NT
        && 16 * g.cin * tw.next_multiple_of(8) <= WINO_V
}

/// Bytes of a whole layer in the [`winon_pack`] layout: per block of 4 output channels, `16 · cin · 4` floats.
pub fn winon_len(g: &Conv2dGeom) -> usize {
    g.cout.div_ceil(WINO8_CO) * 16 * g.cin * WINO8_CO * 4
}

/// Pack a 3×3 float convolution's weights (`[cout][cin][3][3]`, f32 or f16) for the NEON Winograd kernel
/// (`aarch64/winof.rs`): per block of 4 output channels, `16 · cin · 4` little-endian `f32` `[ξ][cin][channel]` of
/// [`wino_filter`]'s values (0 past `cout`), so one (ξ, input channel) of a block is one `q` register for `fmla` by
/// lane. False if the layer is not 3×3, a length is short or the weights are int8.
pub fn winon_pack(g: &Conv2dGeom, w: crate::Weights<'_>, out: &mut [u8]) -> bool {
    let Some(out) = out.get_mut(..winon_len(g)) else {
        return false;
    };
    if g.k != 3 || w.len() < g.cout * g.cin * 9 || matches!(w, crate::Weights::I8 { .. }) {
        return false;
    }
    out.fill(0);
    let mut f = [0f32; 9];
    for co in 0..g.cout {
        let (b, c) = (co / WINO8_CO, co % WINO8_CO);
        for ci in 0..g.cin {
            let at = (co * g.cin + ci) * 9;
            match w {
                crate::Weights::F32(all) => f.copy_from_slice(&all[at..at + 9]),
                crate::Weights::F16(all) => crate::generic::f16_to_f32(&all[at..at + 9], &mut f),
                crate::Weights::I8 { .. } => return false,
            }
            for (xi, u) in wino_filter(&f).into_iter().enumerate() {
                let o = (((b * 16 + xi) * g.cin + ci) * WINO8_CO + c) * 4;
                out[o..o + 4].copy_from_slice(&u.to_le_bytes());
            }
        }
    }
    true
}

/// The band geometry of the integer and NEON Winograd kernels (`x86_64/wino8.rs`, `aarch64/wino8.rs`,
/// `aarch64/winof.rs`): 2×2 tiles per row, tile rows, and tile rows per band.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WinoBand {
    /// Tiles per tile row (`⌈ow / 2⌉`).
    pub tw: usize,
    /// Tile rows (`⌈oh / 2⌉`).
    pub th: usize,
    /// Tile rows per band: at most [`WINO8_NT`] tiles, and `per_tile ·` (the band's tiles rounded up to 8) within
    /// the kernel's scratch.
    pub rows: usize,
}

/// The band of a layer whose transformed input takes `per_tile` scratch elements per tile, in a scratch of `budget`
/// elements; `None` if not even one tile row fits (the caller checked its layer selection first).
pub fn wino_band(g: &Conv2dGeom, per_tile: usize, budget: usize) -> Option<WinoBand> {
    let (tw, th) = (g.ow.div_ceil(2), g.oh.div_ceil(2));
    let need = |rows: usize| per_tile.saturating_mul((rows * tw).next_multiple_of(8));
    let mut rows = (WINO8_NT / tw.max(1)).min(th).max(1);
    while rows > 1 && need(rows) > budget {
        rows -= 1;
    }
    (tw > 0 && need(rows) <= budget).then_some(WinoBand { tw, th, rows })
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec::Vec;

    /// The integer filter transform is exactly 4 × the float one (whose `½` entries make every value a multiple
    /// of ¼ of an integer sum, exact in `f64`), and stays within `i16` at the int8 extremes.
    #[test]
    fn wino8_filter_is_four_times_the_float_transform() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut cases: Vec<[i8; 9]> = std::vec![[-128; 9], [127; 9], [0; 9]];
        cases.push(core::array::from_fn(
            |i| if i % 2 == 0 { -128 } else { 127 },
        ));
        for _ in 0..2000 {
            cases.push(core::array::from_fn(|_| next() as i8));
        }
        for f in cases {
            let u = wino8_filter(&f);
            let ff: [f32; 9] = core::array::from_fn(|i| f[i] as f32);
            let uf = wino_filter(&ff);
            for xi in 0..16 {
                assert_eq!(u[xi] as f32, 4.0 * uf[xi], "{f:?} ξ {xi}");
                assert!(u[xi].unsigned_abs() <= 9 * 128, "{f:?} ξ {xi}: {}", u[xi]);
            }
        }
    }

    /// The band never exceeds its budget or the tile cap, and covers the layer's tile rows.
    #[test]
    fn wino_band_fits_its_budget() {
        for (cin, hw) in [(8, 8), (64, 32), (128, 16), (512, 8), (96, 32), (33, 7)] {
            let g = Conv2dGeom {
                cin,
                h: hw,
                w: hw,
                cout: 4,
                k: 3,
                stride: 1,
                pad_t: 1,
                pad_l: 1,
                oh: hw,
                ow: hw,
            };
            let b = wino_band(&g, 16 * cin, WINO8_V).expect("one tile row fits");
            assert_eq!((b.tw, b.th), (hw.div_ceil(2), hw.div_ceil(2)));
            assert!(b.rows >= 1 && b.rows <= b.th && b.rows * b.tw <= WINO8_NT.max(b.tw));
            assert!(16 * cin * (b.rows * b.tw).next_multiple_of(8) <= WINO8_V);
        }
        let wide = Conv2dGeom {
            cin: 4096,
            h: 32,
            w: 32,
            cout: 4,
            k: 3,
            stride: 1,
            pad_t: 1,
            pad_l: 1,
            oh: 32,
            ow: 32,
        };
        assert_eq!(wino_band(&wide, 16 * 4096, WINO8_V), None);
    }
}
