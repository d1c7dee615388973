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
pub(super) const CB: usize = 32;

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

/// Copy the `K × K` taps of an interior window for `nc` channels: `dst` is `[nc][K][K]`, the window of channel `c`
/// starts at `base` of `src`'s `c`-th plane of `hw` elements, rows `w` apart. (Index arithmetic and `get`, no
/// `chunks_exact`: nothing here can panic, which the firmware's panic-check build verifies at link time.)
#[inline(always)]
fn copy_window<const K: usize>(
    src: &[i8],
    hw: usize,
    base: usize,
    w: usize,
    nc: usize,
    dst: &mut [i8],
) {
    for c in 0..nc {
        let (Some(sc), Some(dc)) = (
            src.get(c * hw..(c + 1) * hw),
            dst.get_mut(c * K * K..(c + 1) * K * K),
        ) else {
            return;
        };
        let mut o = base;
        for ky in 0..K {
            if let (Some(d), Some(s)) = (
                dc.get_mut(ky * K..ky * K + K)
                    .and_then(|d| <&mut [i8; K]>::try_from(d).ok()),
                sc.get(o..o + K).and_then(|s| <&[i8; K]>::try_from(s).ok()),
            ) {
                *d = *s;
            }
            o += w;
        }
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
    let (Some(dst), Some(src)) = (dst.get_mut(..nc * kk), input.get(c0 * hw..c1 * hw)) else {
        return;
    };
    let iy0 = (oy * g.stride).wrapping_sub(g.pad_t);
    let ix0 = (ox * g.stride).wrapping_sub(g.pad_l);
    if iy0 < g.h && g.h - iy0 >= k && ix0 < g.w && g.w - ix0 >= k {
        // The whole window lies inside the input: plain copies of `k` taps.
        let base = iy0 * g.w + ix0;
        match k {
            1 => copy_window::<1>(src, hw, base, g.w, nc, dst),
            3 => copy_window::<3>(src, hw, base, g.w, nc, dst),
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
    let out_len = match &out {
        QOut::I8 { data, .. } => data.len(),
        QOut::F32(d) => d.len(),
    };
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
        let mut p = 0;
        let mut pix0 = (0, 0); // (oy, ox) of pixel p
        while p < plane {
            let np = 2.min(plane - p);
            let pix1 = next(pix0);
            // sums[j][branch][pixel]
            let mut sums = [[[0i32; 2]; 2]; CB];
            let mut c0 = 0;
            while c0 < g.cin {
                let (lim, per) = if c0 < split {
                    (split, cpc_a)
                } else {
                    (g.cin, cpc_b)
                };
                let c1 = (c0 + per).min(lim);
                let br = usize::from(c0 >= split);
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
                    let (Some(w0), Some(w1)) = (w.get(r0..r0 + len), w.get(r1..r1 + len)) else {
                        break; // unreachable: `w` holds `cout` full rows
                    };
                    let d = K::dot(&patch, len, w0, w1);
                    for (c, s) in sums.iter_mut().skip(j).take(2).enumerate() {
                        s[br][0] = s[br][0].wrapping_add(d[2 * c]);
                        s[br][1] = s[br][1].wrapping_add(d[2 * c + 1]);
                    }
                    j += 2;
                }
                c0 = c1;
            }
            for (j, ((ch, f), s)) in chans.iter().zip(&fast).zip(&sums).enumerate().take(nb) {
                let base = (cb0 + j) * plane + p;
                let (a, b) = (&s[0][..np], &s[1][..np]);
                match &mut out {
                    Ok(d) => {
                        if let Some(dst) = d.get_mut(base..base + np) {
                            match f {
                                Some(f) => f.store(p, a, b, dst),
                                None => ch.store_i8(p, a, b, dst),
                            }
                        }
                    }
                    Err(d) => {
                        if let Some(dst) = d.get_mut(base..base + np) {
                            ch.store_f32(p, a, b, dst);
                        }
                    }
                }
            }
            p += np;
            pix0 = next(pix1);
        }
    }
}
