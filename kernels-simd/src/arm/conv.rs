//! The int8 convolution shared by the Cortex-M tiers (CMSIS-NN's structure): per pair of output pixels, the im2col
//! patch of a chunk of input channels is gathered into a small stack buffer and dotted with the contiguous weight rows
//! (`[cout][cin][k][k]`) of two output channels at a time; the tier supplies the patch layout and the 2 × 2 dot
//! product. Output channels go in blocks of [`CB`] whose epilogues ([`ChannelEpilogue`]) are resolved once per block,
//! so the fixed-point multipliers are not recomputed per pixel; the patch is gathered once per pixel pair and block.
//!
//! Integer sums are exact (wrapping `i32`, as the generic kernel), the epilogue is the generic one: the output is
//! bit-identical to [`quant::conv2d_i8`]. Anything the fast path does not cover (short slices, a kernel window larger
//! than the patch, zero sizes) goes to the generic kernel, so behaviour on malformed input is identical too.

use crate::quant::{self, ActQ, ChannelEpilogue, ConvEpilogue, QOut};
use crate::{Conv2dGeom, Weights};

/// Output channels whose epilogues are resolved at once (one [`ChannelEpilogue`] each on the stack).
pub(super) const CB: usize = 64;

/// Output pixels whose sums are kept for one epilogue call per channel (even: the kernels work on pixel pairs).
const PB: usize = 16;

/// What a tier supplies to [`conv2d_i8_patch`].
pub(super) trait PatchKernel {
    /// Patch elements per pixel (one chunk of whole input channels, `k·k` each, must fit).
    const CH: usize;
    /// The patch buffer: two pixels of [`Self::CH`] elements each, in the tier's layout.
    type Patch;
    /// A zeroed patch.
    fn new_patch() -> Self::Patch;
    /// The two pixels' plain int8 rows (`CH` elements each) that [`gather`] fills.
    fn rows(p: &mut Self::Patch) -> (&mut [i8], &mut [i8]);
    /// Turn the first `len` elements of the rows into the layout [`Self::dot`] reads.
    fn prepare(p: &mut Self::Patch, len: usize);
    /// `[w0·x0, w0·x1, w1·x0, w1·x1]` over the first `len` (`≤ CH`) elements of the weight rows `w0`, `w1` (both at
    /// least `len` long) and of the two pixels.
    fn dot(p: &Self::Patch, len: usize, w0: &[i8], w1: &[i8]) -> [i32; 4];
}

/// Copy the 3 × 3 taps of an interior window for `nc` channels: `dst` is `[nc][3][3]`, the window of channel `c`
/// starts at `base` of `src`'s `c`-th plane of `hw` elements, rows `w` apart. Each row moves as one unaligned word
/// (a load of 4 bytes, a store of 4 at `dst + 3·row`; the fourth byte is overwritten by the next row or channel)
/// where the fourth byte read still lies in `src` and the fourth written in `dst`; the rest byte by byte. (With
/// a bounds check per row, the checks were most of the instructions of the convolution's most frequent copy.)
#[inline(always)]
fn copy_window3(src: &[i8], hw: usize, base: usize, w: usize, nc: usize, dst: &mut [i8]) {
    // The last tap of the last channel's window; every channel's window lies inside its plane.
    let Some(last) = nc
        .checked_sub(1)
        .and_then(|c| c.checked_mul(hw))
        .and_then(|o| o.checked_add(base + 2 * w + 2))
    else {
        return;
    };
    if w < 3 || base + 2 * w + 2 >= hw || last >= src.len() || dst.len() < 9 * nc {
        return;
    }
    // Channels whose word copies stay inside both slices: channel `c` reads up to `c·hw + base + 2w + 3` (at most
    // `last + 1`; below `(c + 1)·hw ≤ last` for all but the last channel) and writes up to `9c + 9`.
    let mut words = if last + 1 < src.len() { nc } else { nc - 1 };
    words = words.min(dst.len().saturating_sub(1) / 9);
    if words > 0 {
        // SAFETY: `words ≥ 1` iterations; iteration `c < words` reads the words at `c·hw + base + {0, w, 2w}` of
        // `src` and writes those at `9c + {0, 3, 6}` of `dst`, all inside the slices (see above); unaligned `LDR` /
        // `STR` are architectural on ARMv7-M and ARMv8-M Mainline (only `LDRD`/`LDM` fault). Registers only; the
        // flags are clobbered (`SUBS`).
        unsafe {
            core::arch::asm!(
                "2:",
                "ldr {a}, [{s}]",
                "ldr {b}, [{s}, {w}]",
                "ldr {c}, [{s}, {w2}]",
                "add {s}, {s}, {hw}",
                "str {a}, [{d}]",
                "str {b}, [{d}, #3]",
                "str {c}, [{d}, #6]",
                "add {d}, {d}, #9",
                "subs {n}, {n}, #1",
                "bne 2b",
                s = inout(reg) src.as_ptr().add(base) => _,
                d = inout(reg) dst.as_mut_ptr() => _,
                n = inout(reg) words => _,
                w = in(reg) w,
                w2 = in(reg) 2 * w,
                hw = in(reg) hw,
                a = out(reg) _,
                b = out(reg) _,
                c = out(reg) _,
                options(nostack),
            );
        }
    }
    for c in words..nc {
        let o = c * hw + base;
        for ky in 0..3 {
            if let (Some(d), Some(s)) = (
                dst.get_mut(9 * c + 3 * ky..9 * c + 3 * ky + 3),
                src.get(o + ky * w..o + ky * w + 3),
            ) {
                d.copy_from_slice(s);
            }
        }
    }
}

/// Copy the single tap of a 1 × 1 window for `nc` channels: `dst[c] = src[c·hw + base]` (a column of the `[nc][hw]`
/// input), four channels per step.
#[inline(always)]
fn copy_column(src: &[i8], hw: usize, base: usize, nc: usize, dst: &mut [i8]) {
    if nc == 0 || base >= hw || nc.checked_mul(hw).is_none_or(|n| src.len() < n) || dst.len() < nc {
        return;
    }
    let (sp, dp) = (src.as_ptr(), dst.as_mut_ptr());
    let mut c = 0;
    while c + 4 <= nc {
        // SAFETY: `base < hw` and `src.len() ≥ nc·hw`: the reads `(c + i)·hw + base` (`c + i < nc`) lie in `src`,
        // the writes `c + i < nc ≤ dst.len()` in `dst`.
        unsafe {
            let s = sp.add(c * hw + base);
            let (x0, x1, x2, x3) = (*s, *s.add(hw), *s.add(2 * hw), *s.add(3 * hw));
            let d = dp.add(c);
            *d = x0;
            *d.add(1) = x1;
            *d.add(2) = x2;
            *d.add(3) = x3;
        }
        c += 4;
    }
    while c < nc {
        // SAFETY: as above, for one channel `c < nc`.
        unsafe { *dp.add(c) = *sp.add(c * hw + base) };
        c += 1;
    }
}

/// Gather the elements `(ci, ky, kx)` for `ci` in `c0..c1` of output pixel `(oy, ox)` into `dst[e]`,
/// `e = ((ci − c0)·k + ky)·k + kx` (zero outside the input). The caller checked that `input` holds `cin` full planes
/// and `dst` `(c1 − c0)·k·k` elements. Not inlined: in its own function the copies keep their pointers in registers.
#[inline(never)]
fn gather(
    g: &Conv2dGeom,
    input: &[i8],
    oy: usize,
    ox: usize,
    c0: usize,
    c1: usize,
    dst: &mut [i8],
) {
    let (k, hw, nc) = (g.k, g.h * g.w, c1.saturating_sub(c0));
    let kk = k * k;
    let Some(src) = input.get(c0 * hw..c1 * hw) else {
        return;
    };
    if dst.len() < nc * kk {
        return;
    }
    let iy0 = (oy * g.stride).wrapping_sub(g.pad_t);
    let ix0 = (ox * g.stride).wrapping_sub(g.pad_l);
    if iy0 < g.h && g.h - iy0 >= k && ix0 < g.w && g.w - ix0 >= k {
        // The whole window lies inside the input: plain copies of `k` taps (the word copies may write one byte
        // past the taps, still inside `dst`, so they get the whole slice).
        let base = iy0 * g.w + ix0;
        match k {
            1 => copy_column(src, hw, base, nc, dst),
            3 => copy_window3(src, hw, base, g.w, nc, dst),
            _ => {
                for c in 0..nc {
                    for ky in 0..k {
                        let (o, e) = (c * hw + base + ky * g.w, (c * k + ky) * k);
                        if let (Some(d), Some(s)) = (dst.get_mut(e..e + k), src.get(o..o + k)) {
                            for (d, &s) in d.iter_mut().zip(s) {
                                *d = s;
                            }
                        }
                    }
                }
            }
        }
        return;
    }
    let Some(dst) = dst.get_mut(..nc * kk) else {
        return;
    };
    // A window crossing the border: zeros, then the rectangle of taps inside the input (rows `ylo..yhi`,
    // columns `xlo..xhi` of the window).
    dst.fill(0);
    // Taps `t` of a window starting at `start − pad` that land in `[0, n)`.
    let range = |start: usize, pad: usize, n: usize| {
        let (lo, hi) = if start >= pad {
            (0, n.saturating_sub(start - pad).min(k))
        } else {
            let neg = pad - start;
            (neg.min(k), neg.saturating_add(n).min(k))
        };
        (lo, hi.max(lo))
    };
    let (ylo, yhi) = range(oy * g.stride, g.pad_t, g.h);
    let (xlo, xhi) = range(ox * g.stride, g.pad_l, g.w);
    let nx = xhi - xlo;
    if nx == 0 || yhi == ylo {
        return;
    }
    // Every tap row read lies inside its plane when the first and last rows and columns of the rectangle do (the
    // rectangle is at most `k` wide, so no index wraps between them).
    let inside = iy0.wrapping_add(ylo) < g.h
        && iy0.wrapping_add(yhi - 1) < g.h
        && ix0.wrapping_add(xlo) < g.w
        && ix0.wrapping_add(xhi - 1) < g.w
        && xhi <= k
        && yhi <= k;
    if inside && src.len() >= nc * hw {
        let (sp, dp) = (src.as_ptr(), dst.as_mut_ptr());
        for c in 0..nc {
            for ky in ylo..yhi {
                let o = c * hw + iy0.wrapping_add(ky) * g.w + ix0.wrapping_add(xlo);
                let e = (c * k + ky) * k + xlo;
                // SAFETY: row `iy0 + ky` and columns `ix0 + xlo .. ix0 + xhi` lie in the `h × w` plane (`inside`),
                // so `o + nx ≤ (c + 1)·hw ≤ src.len()`; `e + nx ≤ (c·k + ky + 1)·k ≤ nc·k·k = dst.len()`. The
                // fixed-size copies keep LLVM from calling `memcpy` for two or three bytes.
                unsafe {
                    let (s, d) = (sp.add(o), dp.add(e));
                    match nx {
                        3 => (d as *mut [i8; 3]).write((s as *const [i8; 3]).read()),
                        2 => (d as *mut [i8; 2]).write((s as *const [i8; 2]).read()),
                        1 => *d = *s,
                        _ => core::ptr::copy_nonoverlapping(s, d, nx),
                    }
                }
            }
        }
        return;
    }
    for c in 0..nc {
        for ky in ylo..yhi {
            let o = c * hw + iy0.wrapping_add(ky) * g.w + ix0.wrapping_add(xlo);
            let e = (c * k + ky) * k + xlo;
            if let (Some(d), Some(s)) = (dst.get_mut(e..e + nx), src.get(o..o + nx)) {
                for (d, &s) in d.iter_mut().zip(s) {
                    *d = s;
                }
            }
        }
    }
}

/// Input channels per chunk for a branch of `n` channels with at most `cpc` per chunk: chunks of (nearly) equal
/// size, a multiple of 4 channels when that costs no extra chunk (so that `k·k`-element rows stay whole words).
fn chunk_channels(n: usize, cpc: usize) -> usize {
    let chunks = n.div_ceil(cpc.max(1)).max(1);
    let even = n.div_ceil(chunks);
    let r4 = even.div_ceil(4) * 4;
    if r4 <= cpc { r4 } else { even }.max(1)
}

/// The int8 convolution of [`quant::conv2d_i8`] (same signature and bits) on a tier's [`PatchKernel`].
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(super) fn conv2d_i8_patch<K: PatchKernel>(
    g: &Conv2dGeom,
    input: &[i8],
    in_q: ActQ,
    w: &[i8],
    w_scale: &[f32],
    bias: Option<Weights<'_>>,
    chan_add: Option<&[f32]>,
    residual: Option<(&[i8], f32)>,
    div: f32,
    acc: &mut [i32],
    out: QOut<'_>,
) {
    let kk = g.k * g.k;
    let plane = g.oh * g.ow;
    let row = g.cin * kk;
    let cpc = K::CH.checked_div(kk).unwrap_or(0); // input channels per chunk
    let out_len = out.len();
    let full = |n: Option<usize>, have: usize| n.is_some_and(|n| have >= n);
    let fast = plane > 0
        && g.h > 0
        && g.w > 0
        && g.stride > 0
        && g.cin > 0
        && cpc > 0
        && acc.len() >= quant::conv2d_i8_scratch_len(g)
        && full(g.cin.checked_mul(g.h * g.w), input.len())
        && full(g.cout.checked_mul(row), w.len())
        && full(g.cout.checked_mul(plane), out_len);
    if !fast {
        return quant::conv2d_i8(
            g, input, in_q, w, w_scale, bias, chan_add, residual, div, acc, out,
        );
    }
    let split = in_q.split.min(g.cin);
    let cpc_a = chunk_channels(split, cpc);
    let cpc_b = chunk_channels(g.cin - split, cpc);
    let e = ConvEpilogue {
        in_q,
        w_scale,
        bias,
        chan_add,
        residual,
        div,
        plane,
    };
    let (so, mut out) = match out {
        QOut::I8 { data, scale } => (scale, Ok(data)),
        QOut::F32(data) => (0.0, Err(data)),
    };
    let mut patch = K::new_patch();
    let mut chans: [ChannelEpilogue<'_>; CB] = [e.channel(0, so); CB];
    let mut fast: [Option<quant::FastI8>; CB] = [None; CB];
    // A part with no input channels keeps the sums of 0 it starts a block with (only parts with channels are
    // written); an empty second part is left out of the fast epilogue altogether.
    let empty_b = split == g.cin;
    for cb0 in (0..g.cout).step_by(CB) {
        let nb = CB.min(g.cout - cb0);
        for (j, (ch, f)) in chans.iter_mut().zip(fast.iter_mut()).enumerate().take(nb) {
            *ch = e.channel(cb0 + j, so);
            *f = ch.fast_i8();
        }
        let next = |(oy, ox): (usize, usize)| {
            if ox + 1 < g.ow {
                (oy, ox + 1)
            } else {
                (oy + 1, 0)
            }
        };
        // sums[j][part][pixel of the group]
        let mut sums = [[[0i32; PB]; 2]; CB];
        let mut p = 0;
        let mut pix0 = (0, 0); // (oy, ox) of pixel p + q
        while p < plane {
            let npb = PB.min(plane - p);
            let mut q = 0;
            while q < npb {
                let np = 2.min(npb - q);
                let pix1 = next(pix0);
                let mut c0 = 0;
                while c0 < g.cin {
                    let (lim, per) = if c0 < split {
                        (split, cpc_a)
                    } else {
                        (g.cin, cpc_b)
                    };
                    let c1 = (c0 + per).min(lim);
                    let br = usize::from(c0 >= split);
                    // The part's first chunk stores its sums, the others add to them.
                    let first = c0 == 0 || c0 == split;
                    let len = (c1 - c0) * kk;
                    {
                        let (r0, r1) = K::rows(&mut patch);
                        gather(g, input, pix0.0, pix0.1, c0, c1, r0);
                        if np == 2 {
                            gather(g, input, pix1.0, pix1.1, c0, c1, r1);
                        }
                    }
                    K::prepare(&mut patch, len);
                    let mut j = 0;
                    while j < nb {
                        let r0 = (cb0 + j) * row + c0 * kk;
                        let r1 = if j + 1 < nb { r0 + row } else { r0 };
                        let (Some(w0), Some(w1)) = (w.get(r0..r0 + len), w.get(r1..r1 + len))
                        else {
                            break; // unreachable: `w` holds `cout` full rows
                        };
                        let d = K::dot(&patch, len, w0, w1);
                        for (c, s) in sums.iter_mut().skip(j).take(2).enumerate() {
                            // (`q + 1 < PB`: `PB` is even; with one pixel left its sum is unused.)
                            if let Some(s) = s[br].get_mut(q..q + 2) {
                                if first {
                                    s[0] = d[2 * c];
                                    s[1] = d[2 * c + 1];
                                } else {
                                    s[0] = s[0].wrapping_add(d[2 * c]);
                                    s[1] = s[1].wrapping_add(d[2 * c + 1]);
                                }
                            }
                        }
                        j += 2;
                    }
                    c0 = c1;
                }
                q += np;
                pix0 = next(pix1);
            }
            // The group's epilogue, one channel at a time.
            for (j, ((ch, f), s)) in chans.iter().zip(&fast).zip(&sums).enumerate().take(nb) {
                let base = (cb0 + j) * plane + p;
                let (a, b) = (&s[0][..npb], &s[1][..npb]);
                match &mut out {
                    Ok(d) => {
                        if let Some(dst) = d.get_mut(base..base + npb) {
                            match f {
                                Some(f) => f.store(p, a, (!empty_b).then_some(b), dst),
                                None => ch.store_i8(p, a, b, dst),
                            }
                        }
                    }
                    Err(d) => {
                        if let Some(dst) = d.get_mut(base..base + npb) {
                            ch.store_f32(p, a, b, dst);
                        }
                    }
                }
            }
            p += npb;
        }
    }
}
