//! Scalar reference kernels.
//!
//! Simple on purpose: they are the fallback on every target and the reference every optimized tier is tested
//! against. Loops are ordered so the innermost one walks contiguous memory (LLVM vectorizes the stride-1 cases).
//!
//! Every kernel takes its geometry and slices; callers (the ember-core executor, after the blob was validated)
//! guarantee the slice lengths the docs state. The kernels never index out of bounds: they stop at the shorter of
//! the stated and actual lengths instead of panicking.

use crate::{silu, Conv2dGeom, Weights};

/// 2-D convolution, `out = conv(input, w) + bias`.
///
/// * `input`: `[cin, h, w]`; `w`: `[cout, cin, k, k]`; `bias`: `[cout]`; `out`: `[cout, oh, ow]`.
pub fn conv2d(
    g: &Conv2dGeom,
    input: &[f32],
    w: Weights<'_>,
    bias: Option<Weights<'_>>,
    out: &mut [f32],
) {
    conv2d_body(g, input, w, bias, out)
}

/// The body of [`conv2d`], inlined so a SIMD tier can compile it under its own `target_feature` (its fallback for
/// shapes its fast path does not take).
#[inline(always)]
pub(crate) fn conv2d_body(
    g: &Conv2dGeom,
    input: &[f32],
    w: Weights<'_>,
    bias: Option<Weights<'_>>,
    out: &mut [f32],
) {
    let plane_in = g.h * g.w;
    let plane_out = g.oh * g.ow;
    let kk = g.k * g.k;
    if plane_out == 0 || g.stride == 0 {
        return;
    }
    for (co, oplane) in out.chunks_exact_mut(plane_out).take(g.cout).enumerate() {
        let b = bias.map_or(0.0, |b| b.get(co));
        oplane.fill(b);
        for (ci, iplane) in input.chunks_exact(plane_in).take(g.cin).enumerate() {
            let wbase = (co * g.cin + ci) * kk;
            for ky in 0..g.k {
                for kx in 0..g.k {
                    let wv = w.get(wbase + ky * g.k + kx);
                    // Output columns whose input column ox*stride + kx - pad_l lies in [0, w).
                    let ox_lo = if kx >= g.pad_l {
                        0
                    } else {
                        (g.pad_l - kx).div_ceil(g.stride)
                    };
                    let hi_num = (g.w + g.pad_l).saturating_sub(kx + 1); // largest ox*stride allowed
                    if g.w + g.pad_l < kx + 1 {
                        continue;
                    }
                    let ox_hi = (hi_num / g.stride + 1).min(g.ow); // exclusive
                    if ox_lo >= ox_hi {
                        continue;
                    }
                    for (oy, orow) in oplane.chunks_exact_mut(g.ow).enumerate() {
                        let iy = oy * g.stride + ky;
                        if iy < g.pad_t || iy - g.pad_t >= g.h {
                            continue;
                        }
                        let irow = &iplane[(iy - g.pad_t) * g.w..(iy - g.pad_t + 1) * g.w];
                        let ix0 = ox_lo * g.stride + kx - g.pad_l;
                        let n = ox_hi - ox_lo;
                        let orow = &mut orow[ox_lo..ox_hi];
                        if g.stride == 1 {
                            for (o, i) in orow.iter_mut().zip(&irow[ix0..ix0 + n]) {
                                *o += wv * *i;
                            }
                        } else {
                            for (o, i) in orow.iter_mut().zip(irow[ix0..].iter().step_by(g.stride))
                            {
                                *o += wv * *i;
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Fully connected layer: `out[o] = bias[o] + Σ_i w[o, i] · act(x[i])`, then optionally SiLU on the result.
///
/// * `input`: `[in]`, `w`: `[out, in]`, `bias`: `[out]`, `out`: `[out]`.
/// * `silu_in` applies SiLU to every input element first; `silu_out` applies it to every output.
/// * Every output is `((0 + w₀·x₀) + w₁·x₁) + …` in input order, then `+ bias` (the reference order every tier keeps).
pub fn linear(
    input: &[f32],
    w: Weights<'_>,
    bias: Option<Weights<'_>>,
    silu_in: bool,
    silu_out: bool,
    out: &mut [f32],
) {
    linear_with(input, w, bias, silu_in, silu_out, out, f16_to_f32)
}

/// `dst[i] = src[i] as f32` (exact; the software conversion of the `half` crate).
pub fn f16_to_f32(src: &[half::f16], dst: &mut [f32]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d = s.to_f32();
    }
}

/// Output rows accumulated together: independent add chains, each still in input order.
const LIN_ROWS: usize = 8;
/// Inputs per chunk (activated once, weights converted once per chunk and row); the row buffers are
/// `LIN_ROWS · LIN_CHUNK` floats of stack (2 KiB), small enough for a microcontroller.
const LIN_CHUNK: usize = 64;

/// [`linear`] with the f16 → f32 row conversion supplied by the tier (any exact conversion gives the same bits).
/// Rows go 8 at a time: their running sums are independent chains (the sequential add of one output
/// row is latency-bound), and each keeps the input order, so the result equals one pass per output.
pub fn linear_with(
    input: &[f32],
    w: Weights<'_>,
    bias: Option<Weights<'_>>,
    silu_in: bool,
    silu_out: bool,
    out: &mut [f32],
    cvt: fn(&[half::f16], &mut [f32]),
) {
    // Written without a panicking index or copy (the firmware's panic-site list): zips, `get` and fixed-size arrays.
    let n_in = input.len();
    let mut act = [0.0f32; LIN_CHUNK];
    let mut rows = [[0.0f32; LIN_CHUNK]; LIN_ROWS];
    out.fill(0.0);
    for (c, xs) in input.chunks(LIN_CHUNK).enumerate() {
        let i0 = c * LIN_CHUNK;
        let n = xs.len().min(LIN_CHUNK);
        for (a, &x) in act.iter_mut().zip(xs) {
            *a = if silu_in { crate::silu(x) } else { x };
        }
        for (blk, acc) in out.chunks_mut(LIN_ROWS).enumerate() {
            let o0 = blk * LIN_ROWS;
            // The chunk of each row as f32.
            for (r, row) in rows.iter_mut().enumerate().take(acc.len()) {
                let base = (o0 + r) * n_in + i0;
                let dst = row.get_mut(..n).unwrap_or(&mut []);
                let whole = match w {
                    Weights::F32(wf) => wf.get(base..base + n).map(|src| {
                        dst.iter_mut().zip(src).for_each(|(d, s)| *d = *s);
                    }),
                    Weights::F16(wh) => wh.get(base..base + n).map(|src| cvt(src, dst)),
                    Weights::I8 { data, scale, per } => {
                        // One scale for the whole chunk (per-output-channel scales): `q as f32 * s`, as `get`.
                        let sc = base
                            .checked_div(per)
                            .filter(|&s0| (base + n).saturating_sub(1).checked_div(per) == Some(s0))
                            .and_then(|s0| scale.get(s0));
                        match (sc, data.get(base..base + n)) {
                            (Some(&sc), Some(src)) => {
                                dst.iter_mut()
                                    .zip(src)
                                    .for_each(|(d, &q)| *d = q as f32 * sc);
                                Some(())
                            }
                            _ => None,
                        }
                    }
                };
                if whole.is_none() {
                    dst.iter_mut()
                        .enumerate()
                        .for_each(|(i, d)| *d = w.get(base + i));
                }
            }
            if acc.len() == LIN_ROWS {
                let mut a = [0.0f32; LIN_ROWS];
                a.iter_mut().zip(acc.iter()).for_each(|(d, s)| *d = *s);
                for i in 0..n {
                    let x = act[i];
                    for (ar, row) in a.iter_mut().zip(rows.iter()) {
                        *ar += row[i] * x;
                    }
                }
                acc.iter_mut().zip(a.iter()).for_each(|(d, s)| *d = *s);
            } else {
                for (ar, row) in acc.iter_mut().zip(rows.iter()) {
                    for (&wv, &x) in row.iter().zip(&act).take(n) {
                        *ar += wv * x;
                    }
                }
            }
        }
    }
    for (o, y) in out.iter_mut().enumerate() {
        let v = *y + bias.map_or(0.0, |b| b.get(o));
        *y = if silu_out { crate::silu(v) } else { v };
    }
}

/// Arguments of [`group_norm`].
#[derive(Clone, Copy, Debug)]
pub struct GroupNormArgs<'a> {
    /// Channels.
    pub c: usize,
    /// Pixels per channel (`H·W`).
    pub hw: usize,
    /// Groups; `c` is a multiple of it.
    pub groups: usize,
    /// Added to the variance.
    pub eps: f32,
    /// Per-channel scale `[c]`.
    pub gamma: Weights<'a>,
    /// Per-channel shift `[c]`.
    pub beta: Weights<'a>,
    /// Optional FiLM modulation `[2c]`: `y = y · (1 + scale) + shift` with `scale = ss[..c]`, `shift = ss[c..]`
    /// (diffusers' `resnet_time_scale_shift = "scale_shift"`).
    pub scale_shift: Option<&'a [f32]>,
    /// Apply SiLU to the result.
    pub silu: bool,
}

impl GroupNormArgs<'_> {
    /// Whether a vector tier may take these arguments: a non-empty `[c, hw]` in whole groups, and both slices
    /// holding `c · hw` elements. Every tier falls back to [`group_norm`] otherwise.
    #[cfg_attr(
        not(any(target_arch = "x86_64", target_arch = "aarch64")),
        allow(dead_code)
    )]
    pub(crate) fn vector_ok(&self, input: &[f32], out: &[f32]) -> bool {
        let n = self.c * self.hw;
        self.groups != 0
            && self.hw != 0
            && self.c != 0
            && self.c.is_multiple_of(self.groups)
            && input.len() >= n
            && out.len() >= n
    }

    /// Channel `c`'s affine map `y = x · mul + add` from its group's `mean` and `rstd`, with gamma, beta and
    /// FiLM folded in (every tier computes it this way, so they differ only in how the statistics are summed).
    #[inline]
    pub(crate) fn channel_affine(&self, c: usize, mean: f32, rstd: f32) -> (f32, f32) {
        let mul = self.gamma.get(c) * rstd;
        film(
            self.scale_shift,
            self.c,
            c,
            mul,
            self.beta.get(c) - mean * mul,
        )
    }
}

/// FiLM modulation of channel `c`'s affine map: `(mul · s, add · s + t)` with `s = 1 + ss[c]`, `t = ss[channels + c]`
/// (a short `ss` reads as zeros); unchanged without `ss`.
#[inline]
pub(crate) fn film(
    ss: Option<&[f32]>,
    channels: usize,
    c: usize,
    mul: f32,
    add: f32,
) -> (f32, f32) {
    match ss {
        Some(ss) => {
            let s = 1.0 + ss.get(c).copied().unwrap_or(0.0);
            let t = ss.get(channels + c).copied().unwrap_or(0.0);
            (mul * s, add * s + t)
        }
        None => (mul, add),
    }
}

/// Group normalization over `[c, hw]` (biased variance, two passes in `f32`, as PyTorch computes it), with optional
/// FiLM modulation and fused SiLU.
pub fn group_norm(a: &GroupNormArgs<'_>, input: &[f32], out: &mut [f32]) {
    if a.groups == 0 || a.hw == 0 {
        return;
    }
    let cpg = a.c / a.groups;
    let glen = cpg * a.hw;
    if glen == 0 {
        return;
    }
    for (g, (xin, yout)) in input
        .chunks_exact(glen)
        .zip(out.chunks_exact_mut(glen))
        .take(a.groups)
        .enumerate()
    {
        let n = glen as f32;
        let mean = xin.iter().sum::<f32>() / n;
        let var = xin.iter().map(|&x| (x - mean) * (x - mean)).sum::<f32>() / n;
        let rstd = 1.0 / libm::sqrtf(var + a.eps);
        for (j, (xc, yc)) in xin
            .chunks_exact(a.hw)
            .zip(yout.chunks_exact_mut(a.hw))
            .enumerate()
        {
            let (mul, add) = a.channel_affine(g * cpg + j, mean, rstd);
            if a.silu {
                for (y, &x) in yc.iter_mut().zip(xc) {
                    *y = silu(x * mul + add);
                }
            } else {
                for (y, &x) in yc.iter_mut().zip(xc) {
                    *y = x * mul + add;
                }
            }
        }
    }
}

/// Geometry of [`attention`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttentionGeom {
    /// Heads.
    pub heads: usize,
    /// Channels per head.
    pub head_dim: usize,
    /// Tokens (pixels, `H·W`).
    pub n: usize,
}

/// Multi-head scaled dot-product self-attention, `softmax(q kᵀ / √d) v` per head.
///
/// `q`, `k`, `v` and `out` are channel-major `[heads·head_dim, n]` (channel `h·head_dim + d` belongs to head `h`).
/// `scores` is scratch of `n` floats: the kernel materializes one row of the score matrix at a time, so memory is
/// flat in the token count (no `n × n` matrix, ever). Softmax subtracts the row maximum (stable).
pub fn attention(
    g: &AttentionGeom,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    scores: &mut [f32],
    out: &mut [f32],
) {
    let n = g.n;
    let d = g.head_dim;
    if n == 0 || d == 0 || scores.len() < n {
        return;
    }
    let scale = 1.0 / libm::sqrtf(d as f32);
    let scores = &mut scores[..n];
    let hl = d * n;
    for (((qh, kh), vh), oh) in q
        .chunks_exact(hl)
        .zip(k.chunks_exact(hl))
        .zip(v.chunks_exact(hl))
        .zip(out.chunks_exact_mut(hl))
        .take(g.heads)
    {
        for i in 0..n {
            scores.fill(0.0);
            for (qrow, krow) in qh.chunks_exact(n).zip(kh.chunks_exact(n)) {
                let qv = qrow[i];
                for (s, &kv) in scores.iter_mut().zip(krow) {
                    *s += qv * kv;
                }
            }
            let mut m = f32::NEG_INFINITY;
            for s in scores.iter_mut() {
                *s *= scale;
                m = m.max(*s);
            }
            let mut sum = 0.0f32;
            for s in scores.iter_mut() {
                *s = libm::expf(*s - m);
                sum += *s;
            }
            let inv = 1.0 / sum;
            for (vrow, orow) in vh.chunks_exact(n).zip(oh.chunks_exact_mut(n)) {
                let acc: f32 = vrow.iter().zip(scores.iter()).map(|(a, b)| a * b).sum();
                orow[i] = acc * inv;
            }
        }
    }
}

/// 2×2 average pooling with stride 2 (floor for odd sizes, as `nn.AvgPool2d(2, 2)`): `[c, h, w] → [c, h/2, w/2]`.
pub fn avg_pool2(input: &[f32], c: usize, h: usize, w: usize, out: &mut [f32]) {
    let (oh, ow) = (h / 2, w / 2);
    if oh == 0 || ow == 0 {
        return;
    }
    for (ip, op) in input
        .chunks_exact(h * w)
        .zip(out.chunks_exact_mut(oh * ow))
        .take(c)
    {
        for (oy, orow) in op.chunks_exact_mut(ow).enumerate() {
            let r0 = &ip[2 * oy * w..2 * oy * w + w];
            let r1 = &ip[(2 * oy + 1) * w..(2 * oy + 1) * w + w];
            for (ox, o) in orow.iter_mut().enumerate() {
                *o = (r0[2 * ox] + r0[2 * ox + 1] + r1[2 * ox] + r1[2 * ox + 1]) * 0.25;
            }
        }
    }
}

/// Nearest-neighbour ×2 upsampling: `[c, h, w] → [c, 2h, 2w]`.
pub fn upsample_nearest2(input: &[f32], c: usize, h: usize, w: usize, out: &mut [f32]) {
    if h == 0 || w == 0 {
        return;
    }
    for (ip, op) in input
        .chunks_exact(h * w)
        .zip(out.chunks_exact_mut(4 * h * w))
        .take(c)
    {
        for (irow, orows) in ip.chunks_exact(w).zip(op.chunks_exact_mut(4 * w)) {
            let (a, b) = orows.split_at_mut(2 * w);
            for (x, &v) in irow.iter().enumerate() {
                a[2 * x] = v;
                a[2 * x + 1] = v;
            }
            b.copy_from_slice(a);
        }
    }
}

/// Sinusoidal timestep embedding exactly as diffusers' `get_timestep_embedding` (max period 10 000, scale 1):
/// `freq_i = exp(-ln(10000) · i / (half - shift))`, `[sin(t·freq), cos(t·freq)]`, halves swapped when
/// `flip_sin_to_cos`, a trailing zero when `out.len()` is odd.
pub fn timestep_embedding(t: f32, flip_sin_to_cos: bool, freq_shift: f32, out: &mut [f32]) {
    let dim = out.len();
    let half = dim / 2;
    let ln_max = -libm::logf(10000.0);
    for i in 0..half {
        let exponent = (ln_max * i as f32) / (half as f32 - freq_shift);
        let arg = t * libm::expf(exponent);
        let (s, c) = (libm::sinf(arg), libm::cosf(arg));
        if flip_sin_to_cos {
            out[i] = c;
            out[half + i] = s;
        } else {
            out[i] = s;
            out[half + i] = c;
        }
    }
    if dim % 2 == 1 {
        out[dim - 1] = 0.0;
    }
}

/// `x = x · mul + add`, elementwise in place.
pub fn affine_inplace(x: &mut [f32], mul: f32, add: f32) {
    for v in x {
        *v = *v * mul + add;
    }
}

/// `x[c, :] += v[c]` for `x` of `[c, hw]`.
pub fn add_channel_bias(x: &mut [f32], hw: usize, v: &[f32]) {
    if hw == 0 {
        return;
    }
    for (plane, &b) in x.chunks_exact_mut(hw).zip(v) {
        for e in plane {
            *e += b;
        }
    }
}

/// `x = (residual + x) / div`, elementwise (diffusers' `(input + h) / output_scale_factor`).
pub fn residual_div(x: &mut [f32], residual: &[f32], div: f32) {
    if div == 1.0 {
        for (a, &r) in x.iter_mut().zip(residual) {
            *a += r;
        }
    } else {
        for (a, &r) in x.iter_mut().zip(residual) {
            *a = (r + *a) / div;
        }
    }
}

#[cfg(test)]
mod tests {
    //! The generic kernels against textbook definitions written as plainly as possible (f64 accumulation), on
    //! random shapes including stride 2, asymmetric padding and odd sizes.
    use super::*;
    use half::f16;

    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> f32 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        }
        fn vec(&mut self, n: usize) -> std::vec::Vec<f32> {
            (0..n).map(|_| self.next()).collect()
        }
        fn below(&mut self, n: usize) -> usize {
            ((self.next() + 1.0) * 0.5 * n as f32) as usize % n
        }
    }

    extern crate std;
    use std::vec;

    fn naive_conv(g: &Conv2dGeom, x: &[f32], w: &[f32], b: &[f32]) -> std::vec::Vec<f32> {
        let mut out = vec![0f32; g.cout * g.oh * g.ow];
        for co in 0..g.cout {
            for oy in 0..g.oh {
                for ox in 0..g.ow {
                    let mut acc = b[co] as f64;
                    for ci in 0..g.cin {
                        for ky in 0..g.k {
                            for kx in 0..g.k {
                                let iy = (oy * g.stride + ky) as isize - g.pad_t as isize;
                                let ix = (ox * g.stride + kx) as isize - g.pad_l as isize;
                                if iy < 0 || ix < 0 || iy >= g.h as isize || ix >= g.w as isize {
                                    continue;
                                }
                                let xv = x[ci * g.h * g.w + iy as usize * g.w + ix as usize] as f64;
                                acc += xv * w[((co * g.cin + ci) * g.k + ky) * g.k + kx] as f64;
                            }
                        }
                    }
                    out[(co * g.oh + oy) * g.ow + ox] = acc as f32;
                }
            }
        }
        out
    }

    fn close(a: &[f32], b: &[f32], tol: f32) {
        assert_eq!(a.len(), b.len());
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!(
                (x - y).abs() <= tol * (1.0 + y.abs()),
                "element {i}: {x} vs {y}"
            );
        }
    }

    #[test]
    fn conv2d_matches_definition_on_random_shapes() {
        let mut r = Rng(0x1234_5678_9abc_def1);
        for case in 0..200 {
            let k = [1, 3, 3, 5][case % 4];
            let stride = 1 + case % 2;
            let h = 1 + r.below(11);
            let w = 1 + r.below(11);
            let pad_t = r.below(k);
            let pad_l = r.below(k);
            let pad_b = r.below(k);
            let pad_r = r.below(k);
            if h + pad_t + pad_b < k || w + pad_l + pad_r < k {
                continue;
            }
            let oh = (h + pad_t + pad_b - k) / stride + 1;
            let ow = (w + pad_l + pad_r - k) / stride + 1;
            let g = Conv2dGeom {
                cin: 1 + r.below(4),
                h,
                w,
                cout: 1 + r.below(4),
                k,
                stride,
                pad_t,
                pad_l,
                oh,
                ow,
            };
            let x = r.vec(g.cin * h * w);
            let wt = r.vec(g.cout * g.cin * k * k);
            let b = r.vec(g.cout);
            let mut out = vec![f32::NAN; g.cout * oh * ow];
            conv2d(&g, &x, Weights::F32(&wt), Some(Weights::F32(&b)), &mut out);
            close(&out, &naive_conv(&g, &x, &wt, &b), 1e-5);
            // f16 weights: same as f32 weights rounded to f16.
            let wh: std::vec::Vec<f16> = wt.iter().map(|&v| f16::from_f32(v)).collect();
            let bh: std::vec::Vec<f16> = b.iter().map(|&v| f16::from_f32(v)).collect();
            let wr: std::vec::Vec<f32> = wh.iter().map(|v| v.to_f32()).collect();
            let br: std::vec::Vec<f32> = bh.iter().map(|v| v.to_f32()).collect();
            conv2d(&g, &x, Weights::F16(&wh), Some(Weights::F16(&bh)), &mut out);
            close(&out, &naive_conv(&g, &x, &wr, &br), 1e-5);
        }
    }

    #[test]
    fn linear_matches_definition() {
        let mut r = Rng(42);
        let (n_in, n_out) = (13, 7);
        let x = r.vec(n_in);
        let w = r.vec(n_in * n_out);
        let b = r.vec(n_out);
        let mut out = vec![0f32; n_out];
        linear(
            &x,
            Weights::F32(&w),
            Some(Weights::F32(&b)),
            true,
            true,
            &mut out,
        );
        let s = |v: f64| v / (1.0 + (-v).exp());
        let want: std::vec::Vec<f32> = (0..n_out)
            .map(|o| {
                s(b[o] as f64
                    + (0..n_in)
                        .map(|i| w[o * n_in + i] as f64 * s(x[i] as f64))
                        .sum::<f64>()) as f32
            })
            .collect();
        close(&out, &want, 1e-5);
    }

    #[test]
    fn group_norm_matches_definition_with_scale_shift() {
        let mut r = Rng(7);
        let (c, hw, groups) = (12, 10, 3);
        let x: std::vec::Vec<f32> = r.vec(c * hw).iter().map(|v| v * 5.0 + 2.0).collect();
        let gamma = r.vec(c);
        let beta = r.vec(c);
        let ss = r.vec(2 * c);
        let a = GroupNormArgs {
            c,
            hw,
            groups,
            eps: 1e-5,
            gamma: Weights::F32(&gamma),
            beta: Weights::F32(&beta),
            scale_shift: Some(&ss),
            silu: true,
        };
        let mut out = vec![0f32; c * hw];
        group_norm(&a, &x, &mut out);
        let cpg = c / groups;
        let mut want = vec![0f32; c * hw];
        for g in 0..groups {
            let xs = &x[g * cpg * hw..(g + 1) * cpg * hw];
            let mean = xs.iter().map(|&v| v as f64).sum::<f64>() / xs.len() as f64;
            let var = xs.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / xs.len() as f64;
            for ch in g * cpg..(g + 1) * cpg {
                for p in 0..hw {
                    let n = (x[ch * hw + p] as f64 - mean) / (var + 1e-5).sqrt();
                    let y = (n * gamma[ch] as f64 + beta[ch] as f64) * (1.0 + ss[ch] as f64)
                        + ss[c + ch] as f64;
                    want[ch * hw + p] = (y / (1.0 + (-y).exp())) as f32;
                }
            }
        }
        close(&out, &want, 1e-5);
    }

    #[test]
    fn attention_matches_full_softmax() {
        let mut r = Rng(99);
        let (heads, d, n) = (3, 4, 17);
        let q: std::vec::Vec<f32> = r.vec(heads * d * n).iter().map(|v| v * 4.0).collect();
        let k = r.vec(heads * d * n);
        let v = r.vec(heads * d * n);
        let mut scores = vec![0f32; n];
        let mut out = vec![0f32; heads * d * n];
        attention(
            &AttentionGeom {
                heads,
                head_dim: d,
                n,
            },
            &q,
            &k,
            &v,
            &mut scores,
            &mut out,
        );
        let mut want = vec![0f32; heads * d * n];
        for h in 0..heads {
            let at = |t: &[f32], c: usize, i: usize| t[(h * d + c) * n + i] as f64;
            for i in 0..n {
                let s: std::vec::Vec<f64> = (0..n)
                    .map(|j| {
                        (0..d).map(|c| at(&q, c, i) * at(&k, c, j)).sum::<f64>() / (d as f64).sqrt()
                    })
                    .collect();
                let m = s.iter().cloned().fold(f64::MIN, f64::max);
                let e: std::vec::Vec<f64> = s.iter().map(|x| (x - m).exp()).collect();
                let z: f64 = e.iter().sum();
                for c in 0..d {
                    want[(h * d + c) * n + i] =
                        ((0..n).map(|j| e[j] * at(&v, c, j)).sum::<f64>() / z) as f32;
                }
            }
        }
        close(&out, &want, 1e-5);
    }

    #[test]
    fn pooling_upsampling_and_embedding() {
        let x: std::vec::Vec<f32> = (0..2 * 3 * 5).map(|i| i as f32).collect();
        let mut p = vec![0f32; 4]; // [2, 1, 2]
        avg_pool2(&x, 2, 3, 5, &mut p);
        assert_eq!(p, vec![3.0, 5.0, 18.0, 20.0]);
        let mut u = vec![0f32; 2 * 6 * 10];
        upsample_nearest2(&x, 2, 3, 5, &mut u);
        for c in 0..2 {
            for y in 0..6 {
                for xx in 0..10 {
                    assert_eq!(u[(c * 6 + y) * 10 + xx], x[(c * 3 + y / 2) * 5 + xx / 2]);
                }
            }
        }
        let mut e = vec![0f32; 6];
        timestep_embedding(10.0, true, 1.0, &mut e);
        // half = 3, freq_i = exp(-ln(1e4) * i / 2): cos first when flipped.
        for i in 0..3 {
            let f = (-(10000f64.ln()) * i as f64 / 2.0).exp();
            assert!((e[i] as f64 - (10.0 * f).cos()).abs() < 1e-5);
            assert!((e[3 + i] as f64 - (10.0 * f).sin()).abs() < 1e-5);
        }
    }
}
