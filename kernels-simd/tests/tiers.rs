//! Every SIMD tier against the generic kernels, on tails, unaligned slices and random shapes. A custom harness, so
//! a tier this CPU cannot run is reported as SKIPPED (not as passed): one line per (tier, kernel).
//!
//! int8 kernels must be bit-identical to generic; f32 kernels must stay within `1e-5 · Σ|w·x|` (+1e-6) of it per
//! output (FMA and reordered sums change only the rounding).

use ember_kernels::pack;
use ember_kernels::parallel::{self, Parallel};
use ember_kernels::quant::{self, ActQ, QOut};
use ember_kernels::registry::{all_tiers, tier, Conv2dI8PackedFn, KernelTable, GENERIC};
use ember_kernels::{Conv2dGeom, Weights};

struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) as u32
    }
    fn below(&mut self, n: usize) -> usize {
        self.next() as usize % n
    }
    fn f(&mut self) -> f32 {
        self.next() as f32 / (1u64 << 31) as f32 - 1.0
    }
    fn i8(&mut self) -> i8 {
        (self.next() % 256) as i32 as u8 as i8
    }
}

/// Shapes: fixed edge cases (tails around the 8/16/32-pixel blocks, 1×1, odd channels, stride 2) + random ones.
fn shapes(rng: &mut Lcg) -> Vec<Conv2dGeom> {
    let mut v = Vec::new();
    let mk = |cin, h, w, cout, k, stride, pad| {
        let oh = (h + 2 * pad - k) / stride + 1;
        let ow = (w + 2 * pad - k) / stride + 1;
        Conv2dGeom {
            cin,
            h,
            w,
            cout,
            k,
            stride,
            pad_t: pad,
            pad_l: pad,
            oh,
            ow,
        }
    };
    for w in [1usize, 7, 8, 9, 15, 16, 17, 31, 32, 33, 40] {
        v.push(mk(3, 5, w, 5, 3, 1, 1));
        v.push(mk(2, 3, w, 4, 1, 1, 0));
    }
    v.push(mk(1, 1, 1, 1, 1, 1, 0));
    v.push(mk(9, 8, 8, 7, 3, 2, 1));
    v.push(mk(16, 16, 16, 8, 3, 2, 0));
    v.push(mk(64, 32, 32, 64, 3, 1, 1));
    // Wide layers: the large stack buffers (a 384-channel concatenation at 32 columns, 512 channels at 4×4).
    v.push(mk(384, 3, 32, 5, 3, 1, 1));
    v.push(mk(512, 4, 4, 6, 3, 1, 1));
    // Layers the AVX-512 implicit-GEMM kernels split into bands of output rows.
    v.push(mk(512, 16, 16, 9, 3, 1, 1));
    v.push(mk(256, 32, 32, 9, 3, 1, 1));
    v.push(mk(256, 33, 33, 5, 3, 2, 1));
    v.push(mk(5, 6, 6, 3, 5, 1, 2));
    // Small outputs (the AVX-512 f32 kernel's im2col path): 4×4 and 8×8, stride 1 and 2, 1×1 and 3×3, and input
    // channels past one im2col chunk (256 · 9 · 64 floats).
    v.push(mk(64, 4, 4, 17, 3, 1, 1));
    v.push(mk(256, 8, 8, 20, 3, 1, 1));
    v.push(mk(32, 8, 8, 9, 3, 2, 1));
    v.push(mk(48, 8, 8, 8, 1, 1, 0));
    v.push(mk(7, 6, 8, 5, 3, 1, 0));
    for _ in 0..40 {
        let k: usize = [1, 3, 5][rng.below(3)];
        let pad = rng.below(k.div_ceil(2) + 1).min(k - 1);
        let h = 1 + rng.below(20) + k;
        let w = 1 + rng.below(40) + k;
        v.push(mk(
            1 + rng.below(20),
            h,
            w,
            1 + rng.below(12),
            k,
            1 + rng.below(2),
            pad,
        ));
    }
    v
}

/// Layers the AVX2 and NEON integer Winograd kernels take (`pack::wino8`): every padding up to 2, odd output sizes (the last
/// tile row or column half outside), tile rows of 4 to 64 tiles, bands of several tile rows and many bands, odd
/// input channel counts (a half-empty pair), output channels not a multiple of 4, and the largest input.
fn wino8_shapes(rng: &mut Lcg) -> Vec<Conv2dGeom> {
    let mk = |cin, h, w, cout, pad_t: usize, pad_l: usize, pad_b: usize, pad_r: usize| Conv2dGeom {
        cin,
        h,
        w,
        cout,
        k: 3,
        stride: 1,
        pad_t,
        pad_l,
        oh: h + pad_t + pad_b - 2,
        ow: w + pad_l + pad_r - 2,
    };
    let mut v = vec![
        mk(8, 8, 8, 4, 1, 1, 1, 1),
        mk(9, 8, 8, 5, 1, 1, 1, 1),
        mk(32, 32, 32, 8, 1, 1, 1, 1),
        mk(33, 16, 16, 12, 1, 1, 1, 1),
        mk(17, 7, 7, 4, 1, 1, 1, 1),
        mk(16, 9, 15, 6, 1, 1, 1, 1),
        mk(12, 10, 10, 4, 0, 0, 0, 0),
        mk(12, 6, 6, 4, 2, 2, 2, 2),
        mk(10, 5, 9, 3, 2, 0, 1, 1),
        mk(24, 64, 64, 4, 1, 1, 1, 1),
        mk(128, 8, 8, 8, 1, 1, 1, 1),
        mk(96, 32, 32, 4, 1, 1, 1, 1),
        mk(1024, 2, 8, 4, 1, 1, 1, 1),
        mk(1024, 3, 7, 5, 1, 1, 1, 1),
        mk(40, 127, 16, 4, 1, 1, 1, 1),
    ];
    for _ in 0..12 {
        let (ow, oh) = (8 * (1 + rng.below(8)) - rng.below(2), 2 + rng.below(30));
        let (pt, pl, pb, pr) = (rng.below(3), rng.below(3), rng.below(3), rng.below(3));
        let (h, w) = (
            (oh + 2).saturating_sub(pt + pb),
            (ow + 2).saturating_sub(pl + pr),
        );
        if h > 0 && w > 0 {
            v.push(mk(
                8 + rng.below(60),
                h,
                w,
                1 + rng.below(9),
                pt,
                pl,
                pb,
                pr,
            ));
        }
    }
    v
}

/// Float layers with output channels in multiples of 16, which the AVX-512 float packing family takes: every group
/// width of the channels-in-lanes kernel (64, 32, 16 and their sums), rows split into tiles of every size, input
/// channels off its chunk of 8, bands capped by its 1 024 parked positions, strides 1 and 2, kernel sides 1, 3, 5,
/// and pointwise layers past one column chunk (the column path).
fn packed_shapes(rng: &mut Lcg) -> Vec<Conv2dGeom> {
    let mk = |cin, h: usize, w: usize, cout, k: usize, stride, pad: usize| Conv2dGeom {
        cin,
        h,
        w,
        cout,
        k,
        stride,
        pad_t: pad,
        pad_l: pad,
        oh: (h + 2 * pad - k) / stride + 1,
        ow: (w + 2 * pad - k) / stride + 1,
    };
    let mut v = vec![
        mk(13, 9, 9, 64, 3, 1, 1),
        mk(20, 8, 8, 48, 3, 1, 1),
        mk(9, 5, 7, 112, 3, 1, 1),
        mk(17, 16, 16, 16, 3, 1, 1),
        mk(8, 4, 4, 80, 3, 1, 1),
        mk(24, 17, 17, 32, 3, 2, 1),
        mk(6, 12, 11, 32, 5, 1, 2),
        mk(16, 16, 16, 64, 1, 1, 0),
        mk(200, 32, 32, 48, 1, 1, 0),
        mk(128, 64, 40, 16, 3, 1, 1),
        mk(256, 32, 32, 64, 3, 1, 1),
        mk(3, 1, 1, 16, 1, 1, 0),
        // Winograd layers (`pack::winograd`): odd sizes, padding 0 and 2, more than 16 tiles per row, bands of
        // several tile rows, channel groups of 64 + 32 + 16, the smallest output.
        mk(24, 17, 17, 64, 3, 1, 1),
        mk(40, 20, 18, 112, 3, 1, 0),
        mk(16, 15, 15, 64, 3, 1, 2),
        mk(32, 8, 33, 80, 3, 1, 1),
        mk(192, 4, 4, 48, 3, 1, 1),
        mk(512, 16, 16, 64, 3, 1, 1),
    ];
    for _ in 0..20 {
        let k: usize = [1, 3, 5][rng.below(3)];
        let pad = rng.below(k.div_ceil(2) + 1).min(k - 1);
        v.push(mk(
            1 + rng.below(40),
            1 + rng.below(20) + k,
            1 + rng.below(40) + k,
            16 * (1 + rng.below(7)),
            k,
            1 + rng.below(2),
            pad,
        ));
    }
    v
}

fn check_f32(t: &KernelTable, rng: &mut Lcg) -> Result<usize, String> {
    let mut n = 0;
    for g in shapes(rng) {
        // Unaligned: every slice starts one element into its allocation.
        let x: Vec<f32> = (0..g.cin * g.h * g.w + 1).map(|_| rng.f()).collect();
        let w: Vec<f32> = (0..g.cout * g.cin * g.k * g.k + 1)
            .map(|_| rng.f())
            .collect();
        let b: Vec<f32> = (0..g.cout + 1).map(|_| rng.f()).collect();
        let (x, w, b) = (&x[1..], &w[1..], &b[1..]);
        let len = g.cout * g.oh * g.ow;
        let mut want = vec![0f32; len + 1];
        let mut got = vec![0f32; len + 1];
        let mut mag = vec![0f32; len];
        let wa: Vec<f32> = w.iter().map(|v| v.abs()).collect();
        let xa: Vec<f32> = x.iter().map(|v| v.abs()).collect();
        (GENERIC.conv2d)(&g, &xa, Weights::F32(&wa), None, &mut mag);
        // f32 weights, then the same rounded to f16 (the tier's own conversion; |w16| <= |w|·(1 + 2^-11)).
        let wh: Vec<half::f16> = w.iter().map(|&v| half::f16::from_f32(v)).collect();
        for wt in [Weights::F32(w), Weights::F16(&wh)] {
            (GENERIC.conv2d)(&g, x, wt, Some(Weights::F32(b)), &mut want[1..]);
            got.fill(0.0);
            (t.conv2d)(&g, x, wt, Some(Weights::F32(b)), &mut got[1..]);
            for i in 0..len {
                let tol = 1e-5 * mag[i] + 1e-6;
                if (want[i + 1] - got[i + 1]).abs() > tol {
                    let kind = if matches!(wt, Weights::F16(_)) {
                        "f16"
                    } else {
                        "f32"
                    };
                    return Err(format!(
                        "{g:?} {kind} weights, output {i}: generic {} vs {}",
                        want[i + 1],
                        got[i + 1]
                    ));
                }
            }
            n += 1;
        }
    }
    Ok(n)
}

fn check_i8(t: &KernelTable, rng: &mut Lcg) -> Result<usize, String> {
    let mut n = 0;
    for g in shapes(rng) {
        // Variants 4 and 5: an output scale so small that the multipliers exceed 1 (shifts below 31), which the
        // AVX-512 epilogue keeps off its 16-lane i32 path.
        for variant in 0..6 {
            let oscale = if variant >= 4 { 0.0005 } else { 0.5 };
            let x: Vec<i8> = (0..g.cin * g.h * g.w + 1).map(|_| rng.i8()).collect();
            let w: Vec<i8> = (0..g.cout * g.cin * g.k * g.k + 1)
                .map(|_| rng.i8() / 2)
                .collect();
            let ws: Vec<f32> = (0..g.cout).map(|_| 0.001 + 0.01 * rng.f().abs()).collect();
            let b: Vec<f32> = (0..g.cout).map(|_| rng.f()).collect();
            let ca: Vec<f32> = (0..g.cout).map(|_| 0.5 * rng.f()).collect();
            let len = g.cout * g.oh * g.ow;
            let r: Vec<i8> = (0..len).map(|_| rng.i8()).collect();
            let in_q = if variant % 2 == 1 && g.cin > 1 {
                ActQ {
                    scale: 0.02,
                    split: 1 + rng.below(g.cin - 1),
                    scale2: 0.05,
                }
            } else {
                ActQ::single(0.03)
            };
            let res = (variant >= 2).then_some((&r[..], 0.04f32));
            let scratch = quant::conv2d_i8_scratch_len(&g);
            let (mut sa, mut sb) = (vec![0i32; scratch], vec![0i32; scratch]);
            let (mut qa, mut qb) = (vec![0i8; len], vec![0i8; len]);
            let (x, w) = (&x[1..], &w[1..]);
            let run = |k: &KernelTable, acc: &mut [i32], out: QOut<'_>| {
                (k.conv2d_i8)(
                    &g,
                    x,
                    in_q,
                    w,
                    &ws,
                    Some(Weights::F32(&b)),
                    Some(&ca),
                    res,
                    1.5,
                    acc,
                    out,
                )
            };
            run(
                &GENERIC,
                &mut sa,
                QOut::I8 {
                    data: &mut qa,
                    scale: oscale,
                },
            );
            run(
                t,
                &mut sb,
                QOut::I8 {
                    data: &mut qb,
                    scale: oscale,
                },
            );
            if qa != qb {
                let i = qa.iter().zip(&qb).position(|(a, b)| a != b).unwrap();
                return Err(format!(
                    "{g:?} {in_q:?} int8 out {i}: generic {} vs {}",
                    qa[i], qb[i]
                ));
            }
            let (mut fa, mut fb) = (vec![0f32; len], vec![0f32; len]);
            run(&GENERIC, &mut sa, QOut::F32(&mut fa));
            run(t, &mut sb, QOut::F32(&mut fb));
            if fa.iter().zip(&fb).any(|(a, b)| a.to_bits() != b.to_bits()) {
                return Err(format!("{g:?} {in_q:?}: f32 output differs"));
            }
            n += 1;
        }
    }
    Ok(n)
}

fn check_attention(t: &KernelTable, rng: &mut Lcg) -> Result<usize, String> {
    let mut cases = 0;
    for (heads, d, n) in [
        (1, 1, 1),
        (2, 4, 7),
        (1, 8, 8),
        (2, 32, 64),
        (1, 16, 9),
        (3, 5, 33),
        (2, 32, 256),
        // Query blocks with tails, channels past one 8-channel tile, tokens past the AVX-512 stack block.
        (1, 40, 130),
        (1, 13, 520),
        (1, 256, 256),
        (1, 8, 1100),
    ] {
        let g = ember_kernels::generic::AttentionGeom {
            heads,
            head_dim: d,
            n,
        };
        let total = heads * d * n;
        let mk =
            |rng: &mut Lcg, s: f32| -> Vec<f32> { (0..total + 1).map(|_| s * rng.f()).collect() };
        let (q, k, v) = (mk(rng, 3.0), mk(rng, 3.0), mk(rng, 1.0));
        let (mut s1, mut s2) = (vec![0f32; n], vec![0f32; n]);
        let (mut o1, mut o2) = (vec![0f32; total], vec![0f32; total]);
        (GENERIC.attention)(&g, &q[1..], &k[1..], &v[1..], &mut s1, &mut o1);
        (t.attention)(&g, &q[1..], &k[1..], &v[1..], &mut s2, &mut o2);
        for i in 0..total {
            // Outputs are convex combinations of values in [-1, 1]: an absolute bound.
            if (o1[i] - o2[i]).abs() > 2e-6 {
                return Err(format!("{g:?} output {i}: generic {} vs {}", o1[i], o2[i]));
            }
        }
        cases += 1;
    }
    Ok(cases)
}

fn check_group_norm(t: &KernelTable, rng: &mut Lcg) -> Result<usize, String> {
    let mut cases = 0;
    for (c, hw, groups) in [
        (4, 1, 1),
        (8, 7, 4),
        (32, 1024, 16),
        (64, 64, 16),
        (6, 9, 3),
        (16, 17, 2),
    ] {
        // amp 200: normalized values far outside SiLU's linear range, into the clamps of polynomial `exp`s.
        for (silu, film, amp) in [
            (false, false, 1.0),
            (true, false, 1.0),
            (true, true, 1.0),
            (true, false, 200.0),
        ] {
            let x: Vec<f32> = (0..c * hw + 1).map(|_| 2.0 * rng.f() + 0.3).collect();
            let gamma: Vec<f32> = (0..c).map(|_| amp * rng.f()).collect();
            let beta: Vec<f32> = (0..c).map(|_| rng.f()).collect();
            let ss: Vec<f32> = (0..2 * c).map(|_| 0.5 * rng.f()).collect();
            let a = ember_kernels::generic::GroupNormArgs {
                c,
                hw,
                groups,
                eps: 1e-5,
                gamma: Weights::F32(&gamma),
                beta: Weights::F32(&beta),
                scale_shift: film.then_some(&ss[..]),
                silu,
            };
            let (mut o1, mut o2) = (vec![0f32; c * hw], vec![0f32; c * hw]);
            (GENERIC.group_norm)(&a, &x[1..], &mut o1);
            (t.group_norm)(&a, &x[1..], &mut o2);
            for i in 0..c * hw {
                // The statistics are summed in another order; gamma scales their rounding by `amp`.
                let d = (o1[i] - o2[i]).abs();
                if d.is_nan() || d > 1e-5 * amp * (1.0 + o1[i].abs()) {
                    return Err(format!(
                        "c {c} hw {hw} silu {silu} film {film} output {i}: {} vs {}",
                        o1[i], o2[i]
                    ));
                }
            }
            cases += 1;
        }
    }
    Ok(cases)
}

fn check_group_norm_i8(t: &KernelTable, rng: &mut Lcg) -> Result<usize, String> {
    let mut cases = 0;
    for (c, hw, groups) in [
        (4, 1, 1),
        (8, 7, 4),
        (32, 1024, 16),
        (64, 64, 16),
        (6, 9, 3),
        (16, 17, 2),
        (8, 300, 4),
        (16, 256, 8),
        (2, 40_000, 2), // channels longer than a SIMD tier's 2^15-value block of i32 sums
    ] {
        // Output scales from fine to coarse; the tiny one pushes SiLU arguments far out (|y| > 87: the SIMD
        // tiers' scalar fallback for expf).
        for (silu, film, split, out_scale, gain) in [
            (false, false, usize::MAX, 0.05, 1.0),
            (true, false, usize::MAX, 0.02, 1.0),
            (true, true, c / 2, 0.03, 1.0),
            (true, true, usize::MAX, 1e-3, 300.0),
        ] {
            let x: Vec<i8> = (0..c * hw + 1).map(|_| rng.i8()).collect();
            let gamma: Vec<f32> = (0..c).map(|_| gain * rng.f()).collect();
            let beta: Vec<f32> = (0..c).map(|_| gain * rng.f()).collect();
            let ss: Vec<f32> = (0..2 * c).map(|_| 0.5 * rng.f()).collect();
            let a = ember_kernels::quant::GroupNormI8Args {
                c,
                hw,
                groups,
                eps: 1e-5,
                gamma: Weights::F32(&gamma),
                beta: Weights::F32(&beta),
                scale_shift: film.then_some(&ss[..]),
                silu,
                in_q: ActQ {
                    scale: 0.02,
                    split,
                    scale2: 0.05,
                },
                out_scale,
            };
            let (mut o1, mut o2) = (vec![0i8; c * hw], vec![0i8; c * hw]);
            (GENERIC.group_norm_i8)(&a, &x[1..], &mut o1);
            (t.group_norm_i8)(&a, &x[1..], &mut o2);
            if let Some(i) = (0..c * hw).find(|&i| o1[i] != o2[i]) {
                return Err(format!(
                    "c {c} hw {hw} silu {silu} film {film} scale {out_scale}: output {i}: {} vs {}",
                    o1[i], o2[i]
                ));
            }
            cases += 1;
        }
    }
    // Channels holding few distinct values (the table-of-the-range path), at both ends of the int8 range (table
    // entries past 127 wrap) and constant.
    for (lo, width) in [(120i32, 8i32), (-128, 5), (-3, 40), (7, 1), (-128, 256)] {
        for (c, hw, groups) in [(8, 300, 4), (16, 64, 8), (4, 1024, 2), (2, 9, 1)] {
            let x: Vec<i8> = (0..c * hw)
                .map(|_| (lo + (rng.i8() as i32 + 128) % width) as i8)
                .collect();
            let gamma: Vec<f32> = (0..c).map(|_| rng.f()).collect();
            let beta: Vec<f32> = (0..c).map(|_| rng.f()).collect();
            let a = ember_kernels::quant::GroupNormI8Args {
                c,
                hw,
                groups,
                eps: 1e-5,
                gamma: Weights::F32(&gamma),
                beta: Weights::F32(&beta),
                scale_shift: None,
                silu: true,
                in_q: ActQ {
                    scale: 0.02,
                    split: usize::MAX,
                    scale2: 0.05,
                },
                out_scale: 0.03,
            };
            let (mut o1, mut o2) = (vec![0i8; c * hw], vec![0i8; c * hw]);
            (GENERIC.group_norm_i8)(&a, &x, &mut o1);
            (t.group_norm_i8)(&a, &x, &mut o2);
            if o1 != o2 {
                return Err(format!(
                    "c {c} hw {hw}, inputs {lo}..{}: output differs",
                    lo + width
                ));
            }
            cases += 1;
        }
    }
    Ok(cases)
}

fn check_attention_i8(t: &KernelTable, rng: &mut Lcg) -> Result<usize, String> {
    let mut cases = 0;
    for (heads, d, n) in [
        (1, 1, 1),
        (2, 4, 7),
        (1, 8, 8),
        (2, 32, 64),
        (1, 16, 9),
        (3, 5, 33),
        (2, 32, 256),
        // Channels past one 32-lane block, and token counts near / past the AVX-512 kernel's stack limit.
        (1, 40, 130),
        (1, 64, 520),
        (1, 256, 256),
        (1, 8, 1100),
    ] {
        let g = ember_kernels::generic::AttentionGeom {
            heads,
            head_dim: d,
            n,
        };
        let total = heads * d * n;
        let mk = |rng: &mut Lcg| -> Vec<i8> { (0..total + 1).map(|_| rng.i8()).collect() };
        let (q, k, v) = (mk(rng), mk(rng), mk(rng));
        let (q, k, v) = (&q[1..], &k[1..], &v[1..]);
        let (mut s1, mut s2) = (vec![0f32; n], vec![0f32; n]);
        let (mut a, mut b) = (vec![0i8; total], vec![0i8; total]);
        (GENERIC.attention_i8)(
            &g,
            q,
            0.02,
            k,
            0.03,
            v,
            0.05,
            &mut s1,
            QOut::I8 {
                data: &mut a,
                scale: 0.04,
            },
        );
        (t.attention_i8)(
            &g,
            q,
            0.02,
            k,
            0.03,
            v,
            0.05,
            &mut s2,
            QOut::I8 {
                data: &mut b,
                scale: 0.04,
            },
        );
        if a != b {
            return Err(format!("{g:?}: int8 output differs"));
        }
        let (mut fa, mut fb) = (vec![0f32; total], vec![0f32; total]);
        (GENERIC.attention_i8)(&g, q, 0.02, k, 0.03, v, 0.05, &mut s1, QOut::F32(&mut fa));
        (t.attention_i8)(&g, q, 0.02, k, 0.03, v, 0.05, &mut s2, QOut::F32(&mut fb));
        if fa.iter().zip(&fb).any(|(x, y)| x.to_bits() != y.to_bits()) {
            return Err(format!("{g:?}: f32 output differs"));
        }
        cases += 1;
    }
    // Score scales that make scores zero, negative, infinite (inf − inf = NaN in the softmax) or NaN.
    for sq in [0.0f32, -0.03, 1e30, f32::INFINITY, f32::NAN] {
        let g = ember_kernels::generic::AttentionGeom {
            heads: 2,
            head_dim: 16,
            n: 40,
        };
        let total = 2 * 16 * 40;
        let mk = |rng: &mut Lcg| -> Vec<i8> { (0..total).map(|_| rng.i8()).collect() };
        let (q, k, v) = (mk(rng), mk(rng), mk(rng));
        let run = |table: &KernelTable| -> (Vec<i8>, Vec<f32>) {
            let mut s = vec![0f32; 40];
            let (mut a, mut f) = (vec![0i8; total], vec![0f32; total]);
            let out = QOut::I8 {
                data: &mut a,
                scale: 0.04,
            };
            (table.attention_i8)(&g, &q, sq, &k, 0.03, &v, 0.05, &mut s, out);
            (table.attention_i8)(&g, &q, sq, &k, 0.03, &v, 0.05, &mut s, QOut::F32(&mut f));
            (a, f)
        };
        let ((a, fa), (b, fb)) = (run(&GENERIC), run(t));
        if a != b || fa.iter().zip(&fb).any(|(x, y)| x.to_bits() != y.to_bits()) {
            return Err(format!("query scale {sq}: output differs from generic"));
        }
        cases += 1;
    }
    // Malformed slices, as generic handles them: a short score row (nothing written), a short output or `q` (the
    // heads that fit written).
    let g = ember_kernels::generic::AttentionGeom {
        heads: 2,
        head_dim: 8,
        n: 40,
    };
    let total = 2 * 8 * 40;
    let (q, k, v): (Vec<i8>, Vec<i8>, Vec<i8>) = (
        (0..total).map(|_| rng.i8()).collect(),
        (0..total).map(|_| rng.i8()).collect(),
        (0..total).map(|_| rng.i8()).collect(),
    );
    for (short_scores, short_out, short_q) in [(1, 0, 0), (0, 1, 0), (0, 0, 1)] {
        let run = |table: &KernelTable| -> (Vec<i8>, Vec<f32>) {
            let mut s = vec![0f32; 40 - short_scores];
            let mut a = vec![99i8; total - short_out];
            let mut f = vec![-7f32; total - short_out];
            let qs = &q[..total - short_q];
            let out = QOut::I8 {
                data: &mut a,
                scale: 0.04,
            };
            (table.attention_i8)(&g, qs, 0.02, &k, 0.03, &v, 0.05, &mut s, out);
            (table.attention_i8)(&g, qs, 0.02, &k, 0.03, &v, 0.05, &mut s, QOut::F32(&mut f));
            (a, f)
        };
        let ((a, fa), (b, fb)) = (run(&GENERIC), run(t));
        if a != b || fa.iter().zip(&fb).any(|(x, y)| x.to_bits() != y.to_bits()) {
            return Err(format!(
                "short scores/out/q by {short_scores}/{short_out}/{short_q}: output differs from generic"
            ));
        }
        cases += 1;
    }
    Ok(cases)
}

/// A [`Parallel`] hook that runs its workers one after another on this thread (so it works under qemu-user too),
/// last first, and counts the jobs it ran.
#[derive(Debug)]
struct InTurn {
    n: usize,
    runs: std::sync::atomic::AtomicUsize,
}

impl Parallel for InTurn {
    fn workers(&self) -> usize {
        self.n
    }
    fn run(&self, job: &(dyn Fn(usize) + Sync)) {
        self.runs.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        for w in (0..self.n).rev() {
            job(w);
        }
    }
    fn scratch(&self, _w: usize, _n: usize, _f: &mut dyn FnMut(&mut [i32])) -> bool {
        false
    }
}

/// The tier's attention split by query tokens (`parallel::attention` / `attention_i8` through the tier's
/// `attention_rows` / `attention_i8_rows`, on 2, 3 and 5 workers) against one call of the same tier, bit for bit:
/// token counts that are and are not multiples of 32, several heads, one past the kernels' token limit (the split
/// then falls back to one call).
fn check_attention_rows(t: &KernelTable, rng: &mut Lcg) -> Result<usize, String> {
    let mut cases = 0;
    for (heads, d, n) in [
        (1, 256, 256),
        (2, 32, 100),
        (1, 40, 130),
        (3, 16, 161),
        (1, 13, 520),
        (1, 8, 1100),
    ] {
        let g = ember_kernels::generic::AttentionGeom {
            heads,
            head_dim: d,
            n,
        };
        let total = heads * d * n;
        let (q, k, v): (Vec<f32>, Vec<f32>, Vec<f32>) = (
            (0..total).map(|_| 3.0 * rng.f()).collect(),
            (0..total).map(|_| 3.0 * rng.f()).collect(),
            (0..total).map(|_| rng.f()).collect(),
        );
        let (qq, kq, vq): (Vec<i8>, Vec<i8>, Vec<i8>) = (
            (0..total).map(|_| rng.i8()).collect(),
            (0..total).map(|_| rng.i8()).collect(),
            (0..total).map(|_| rng.i8()).collect(),
        );
        let mut s = vec![0f32; n];
        let mut want = vec![0f32; total];
        (t.attention)(&g, &q, &k, &v, &mut s, &mut want);
        let mut want_q = vec![0i8; total];
        let out = QOut::I8 {
            data: &mut want_q,
            scale: 0.004,
        };
        (t.attention_i8)(&g, &qq, 0.02, &kq, 0.03, &vq, 0.01, &mut s, out);
        for workers in [2, 3, 5] {
            let par = InTurn {
                n: workers,
                runs: Default::default(),
            };
            let mut got = vec![f32::NAN; total];
            parallel::attention(t, &par, &g, &q, &k, &v, &mut s, &mut got);
            if let Some(i) = (0..total).find(|&i| want[i].to_bits() != got[i].to_bits()) {
                return Err(format!(
                    "{g:?} on {workers} workers, output {i}: {} vs one call {}",
                    got[i], want[i]
                ));
            }
            let mut got_q = vec![0x55i8; total];
            let out = QOut::I8 {
                data: &mut got_q,
                scale: 0.004,
            };
            parallel::attention_i8(t, &par, &g, &qq, 0.02, &kq, 0.03, &vq, 0.01, &mut s, out);
            if want_q != got_q {
                return Err(format!("{g:?} on {workers} workers: int8 output differs"));
            }
            // The cifar-size case must really have been split (one parallel run per kernel with a range form).
            let expect = usize::from(t.attention_rows.is_some())
                + usize::from(t.attention_i8_rows.is_some());
            let runs = par.runs.load(std::sync::atomic::Ordering::Relaxed);
            if (heads, d, n) == (1, 256, 256) && runs != expect {
                return Err(format!(
                    "{g:?} on {workers} workers: {runs} parallel runs, expected {expect}"
                ));
            }
        }
        cases += 1;
    }
    Ok(cases)
}

/// The tier's float convolution on weights packed offline against the same tier packing per call, bit for bit
/// (f32 and f16 weights), and proof the packed bytes are read.
fn check_f32_packed(t: &KernelTable, rng: &mut Lcg) -> Result<usize, String> {
    let Some((fam, conv)) = t.conv2d_packed else {
        return Ok(0);
    };
    let (mut n, mut read, mut wino) = (0, 0, 0);
    let mut all = shapes(rng);
    all.extend(packed_shapes(rng));
    if fam == pack::AARCH64_NEON_F32 {
        all.extend(wino8_shapes(rng));
    }
    for g in all {
        let Some(plen) = pack::float_len(fam, &g) else {
            continue;
        };
        let x: Vec<f32> = (0..g.cin * g.h * g.w).map(|_| rng.f()).collect();
        let wf: Vec<f32> = (0..g.cout * g.cin * g.k * g.k)
            .map(|_| rng.f() * 0.1)
            .collect();
        let wh: Vec<half::f16> = wf.iter().map(|&v| half::f16::from_f32(v)).collect();
        let b: Vec<f32> = (0..g.cout).map(|_| rng.f()).collect();
        let len = g.cout * g.oh * g.ow;
        for w in [Weights::F32(&wf), Weights::F16(&wh)] {
            let mut p = vec![0u8; plen + 1];
            let p = &mut p[1..]; // unaligned on purpose
            if !pack::float_pack(fam, &g, w, p) {
                return Err(format!("{g:?}: pack refused"));
            }
            let (mut a, mut c, mut d) = (vec![0f32; len], vec![0f32; len], vec![0f32; len]);
            (t.conv2d)(&g, &x, w, Some(Weights::F32(&b)), &mut a);
            conv(&g, &x, w, p, Some(Weights::F32(&b)), &mut c);
            if pack::float_winograd(fam, &g) {
                // Winograd F(2x2, 3x3) on the packed layout: another summation than the per-call kernel, so held
                // to the float bound against generic instead of bit equality.
                let mut want = vec![0f32; len];
                let mut mag = vec![0f32; len];
                let wa: Vec<f32> = (0..w.len()).map(|i| w.get(i).abs()).collect();
                let xa: Vec<f32> = x.iter().map(|v| v.abs()).collect();
                (GENERIC.conv2d)(&g, &xa, Weights::F32(&wa), None, &mut mag);
                (GENERIC.conv2d)(&g, &x, w, Some(Weights::F32(&b)), &mut want);
                for i in 0..len {
                    let err = (want[i] - c[i]).abs();
                    if err.is_nan() || err > 1e-5 * mag[i] + 1e-6 {
                        return Err(format!(
                            "{g:?}: Winograd output {i}: generic {} vs {}",
                            want[i], c[i]
                        ));
                    }
                }
                wino += 1;
            } else if a.iter().zip(&c).any(|(u, v)| u.to_bits() != v.to_bits()) {
                return Err(format!(
                    "{g:?}: packed f32 output differs from the per-call packing"
                ));
            }
            p.iter_mut().for_each(|v| *v ^= 0x55);
            conv(&g, &x, w, p, Some(Weights::F32(&b)), &mut d);
            if pack::float_winograd(fam, &g)
                && c.iter().zip(&d).all(|(u, v)| u.to_bits() == v.to_bits())
            {
                return Err(format!(
                    "{g:?}: a Winograd layer's output ignores its packed weights (the kernel fell back)"
                ));
            }
            read += (a.iter().zip(&d).any(|(u, v)| u.to_bits() != v.to_bits())) as usize;
            n += 1;
        }
    }
    if read == 0 {
        return Err(
            "corrupted packed weights never changed an output: the packed path is not taken".into(),
        );
    }
    if wino == 0 {
        return Err("no layer took the Winograd path".into());
    }
    Ok(n)
}

/// The tier's linear layer against generic, bit for bit (f32 and f16 weights, with and without the SiLUs, output
/// counts off the row block, inputs past one chunk).
fn check_linear(t: &KernelTable, rng: &mut Lcg) -> Result<usize, String> {
    let mut n = 0;
    for (n_in, n_out) in [
        (1, 1),
        (7, 3),
        (32, 8),
        (128, 512),
        (300, 13),
        (512, 256),
        (513, 9),
    ] {
        let x: Vec<f32> = (0..n_in).map(|_| rng.f() * 3.0).collect();
        let wf: Vec<f32> = (0..n_in * n_out).map(|_| rng.f() * 0.2).collect();
        let wh: Vec<half::f16> = wf.iter().map(|&v| half::f16::from_f32(v)).collect();
        let b: Vec<f32> = (0..n_out).map(|_| rng.f()).collect();
        let wq: Vec<i8> = (0..n_in * n_out).map(|_| rng.i8()).collect();
        let ws: Vec<f32> = (0..n_out).map(|_| 0.001 + 0.01 * rng.f().abs()).collect();
        let wi = Weights::I8 {
            data: &wq,
            scale: &ws,
            per: n_in,
        };
        for (silu_in, silu_out) in [(false, false), (true, false), (false, true)] {
            for w in [Weights::F32(&wf), Weights::F16(&wh), wi] {
                let (mut a, mut c) = (vec![0f32; n_out], vec![1f32; n_out]);
                (GENERIC.linear)(&x, w, Some(Weights::F32(&b)), silu_in, silu_out, &mut a);
                (t.linear)(&x, w, Some(Weights::F32(&b)), silu_in, silu_out, &mut c);
                if a.iter().zip(&c).any(|(p, q)| p.to_bits() != q.to_bits()) {
                    return Err(format!(
                        "linear {n_in}->{n_out} silu {silu_in}/{silu_out}: differs"
                    ));
                }
                n += 1;
            }
        }
    }
    Ok(n)
}

/// The tier's `f16` → `f32` conversion against generic (the `half` crate's) over all 65 536 bit patterns, bit for
/// bit (NaNs included), at every offset into an 8-value vector and with a tail.
fn check_f16_to_f32(t: &KernelTable, _rng: &mut Lcg) -> Result<usize, String> {
    let all: Vec<half::f16> = (0..=u16::MAX).map(half::f16::from_bits).collect();
    let mut n = 0;
    for skip in [0usize, 1, 3, 7] {
        let src = &all[skip..];
        let (mut a, mut c) = (vec![0f32; src.len()], vec![1f32; src.len()]);
        (GENERIC.f16_to_f32)(src, &mut a);
        (t.f16_to_f32)(src, &mut c);
        if let Some(i) = (0..src.len()).find(|&i| a[i].to_bits() != c[i].to_bits()) {
            return Err(format!(
                "f16 {:#06x}: generic {:#010x} vs {:#010x}",
                src[i].to_bits(),
                a[i].to_bits(),
                c[i].to_bits()
            ));
        }
        n += src.len();
    }
    // A destination shorter than the source: only its length is written.
    let mut short = [7f32; 5];
    (t.f16_to_f32)(&all[0x3c00..0x3c10], &mut short);
    if short.iter().any(|v| !(1.0..=1.01).contains(v)) {
        return Err(format!("short destination: {short:?}"));
    }
    Ok(n + 1)
}

/// The tier's float and int8 convolutions on the widest layers of the benchmark models, and its attention kernels at
/// their largest stack-block geometries, run in a thread with Rust's default 2 MiB stack (the kernels keep their scratch on the stack; an overflow aborts the test).
fn check_stack(t: &KernelTable, rng: &mut Lcg) -> Result<usize, String> {
    let t = *t;
    let seed = rng.next();
    let run = move || {
        let mut rng = Lcg(seed as u64);
        let mk = |cin, hw, cout, k: usize| Conv2dGeom {
            cin,
            h: hw,
            w: hw,
            cout,
            k,
            stride: 1,
            pad_t: k / 2,
            pad_l: k / 2,
            oh: hw,
            ow: hw,
        };
        let mut n = 0;
        for g in [
            mk(512, 4, 256, 3),
            mk(512, 8, 256, 3),
            mk(512, 16, 256, 3),
            mk(384, 32, 128, 3),
            mk(512, 16, 256, 1),
        ] {
            let x: Vec<f32> = (0..g.cin * g.h * g.w).map(|_| rng.f()).collect();
            let w: Vec<f32> = (0..g.cout * g.cin * g.k * g.k).map(|_| rng.f()).collect();
            let mut out = vec![0f32; g.cout * g.oh * g.ow];
            (t.conv2d)(&g, &x, Weights::F32(&w), None, &mut out);
            // The packed float kernel too (its own stack scratch), where the tier has one.
            if let Some((fam, f)) = t.conv2d_packed {
                if let Some(len) = pack::float_len(fam, &g) {
                    let mut p = vec![0u8; len];
                    if pack::float_pack(fam, &g, Weights::F32(&w), &mut p) {
                        f(&g, &x, Weights::F32(&w), &p, None, &mut out);
                        n += 1;
                    }
                }
            }
            let xq: Vec<i8> = (0..g.cin * g.h * g.w).map(|_| rng.i8()).collect();
            let wq: Vec<i8> = (0..g.cout * g.cin * g.k * g.k).map(|_| rng.i8()).collect();
            let ws = vec![0.01f32; g.cout];
            let mut acc = vec![0i32; quant::conv2d_i8_scratch_len(&g)];
            let mut o8 = vec![0i8; g.cout * g.oh * g.ow];
            (t.conv2d_i8)(
                &g,
                &xq,
                ActQ::single(0.02),
                &wq,
                &ws,
                None,
                None,
                None,
                1.0,
                &mut acc,
                QOut::I8 {
                    data: &mut o8,
                    scale: 0.5,
                },
            );
            n += 2;
            // The packed int8 kernel too (the integer Winograd kernels keep a band of 256 KiB on the stack).
            if let Some((fam, f)) = t.conv2d_i8_packed {
                if let Some(len) = pack::int8_len(fam, &g, g.cin) {
                    let mut p = vec![0u8; len];
                    if pack::int8_pack(fam, &g, g.cin, &wq, &mut p) {
                        let o = QOut::I8 {
                            data: &mut o8,
                            scale: 0.5,
                        };
                        let q = ActQ::single(0.02);
                        f(&g, &xq, q, &wq, &p, &ws, None, None, None, 1.0, &mut acc, o);
                        n += 1;
                    }
                }
            }
        }
        // The attention kernels at the largest geometries of their stack blocks (ddpm-cifar10-32's 256 channels ×
        // 256 tokens, and 1024 tokens).
        for (d, tokens) in [(256, 256), (64, 1024)] {
            let g = ember_kernels::generic::AttentionGeom {
                heads: 1,
                head_dim: d,
                n: tokens,
            };
            let x: Vec<f32> = (0..d * tokens).map(|_| rng.f()).collect();
            let xq: Vec<i8> = (0..d * tokens).map(|_| rng.i8()).collect();
            let mut s = vec![0f32; tokens];
            let mut out = vec![0f32; d * tokens];
            (t.attention)(&g, &x, &x, &x, &mut s, &mut out);
            (t.attention_i8)(
                &g,
                &xq,
                0.02,
                &xq,
                0.02,
                &xq,
                0.02,
                &mut s,
                QOut::F32(&mut out),
            );
            n += 2;
        }
        n
    };
    std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(run)
        .map_err(|e| format!("spawn: {e}"))?
        .join()
        .map_err(|_| "the thread panicked".to_string())
}

/// A tier check: number of cases passed, or the first mismatch.
type Check = fn(&KernelTable, &mut Lcg) -> Result<usize, String>;

/// The tier's convolution on weights packed offline (`ember_kernels::pack`) against generic on canonical ones, bit
/// for bit; and proof the packed bytes are read: corrupting them must change some output.
fn check_i8_packed(t: &KernelTable, rng: &mut Lcg) -> Result<usize, String> {
    let Some((fam, conv)) = t.conv2d_i8_packed else {
        return Ok(0);
    };
    let (mut n, mut read) = (0, 0);
    let mut all = shapes(rng);
    if [pack::X86_AVX2_WINO8, pack::AARCH64_NEON_WINO8].contains(&fam) {
        all.extend(wino8_shapes(rng));
    }
    for g in all {
        for variant in 0..3 {
            // The widest layers also at the extremes: from 1024 channels every input and weight -128 (the largest
            // product, the same sign everywhere: the integer Winograd kernel's largest sums, about 6e8 in `i32`),
            // from 512 random -128 / 127.
            let extreme = (variant == 2 && g.cin >= 512).then_some(g.cin >= 1024);
            let mut val = || match extreme {
                Some(true) => -128,
                Some(false) => [-128, 127][rng.below(2)],
                None => rng.i8(),
            };
            let x: Vec<i8> = (0..g.cin * g.h * g.w).map(|_| val()).collect();
            let w: Vec<i8> = (0..g.cout * g.cin * g.k * g.k).map(|_| val()).collect();
            let ws: Vec<f32> = (0..g.cout).map(|_| 0.001 + 0.01 * rng.f().abs()).collect();
            let b: Vec<f32> = (0..g.cout).map(|_| rng.f()).collect();
            let len = g.cout * g.oh * g.ow;
            let in_q = if variant == 1 && g.cin > 1 {
                ActQ {
                    scale: 0.02,
                    split: 1 + rng.below(g.cin - 1),
                    scale2: 0.05,
                }
            } else {
                ActQ::single(0.03)
            };
            let split = in_q.split.min(g.cin);
            // A family packs only the layers its kernel takes (the x86 integer Winograd family: 3×3 stride 1).
            let Some(plen) = pack::int8_len(fam, &g, split) else {
                continue;
            };
            // Variant 2: the packed bytes 4-byte aligned (a `Vec<u32>`'s memory), which the aarch64 kernels use
            // in place; variants 0 and 1: one byte off, which they must not read as words (and still be right).
            let mut words = vec![0u32; plen / 4 + 2];
            let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut words);
            let p = if variant == 2 {
                &mut bytes[..plen]
            } else {
                &mut bytes[1..1 + plen]
            };
            if !pack::int8_pack(fam, &g, split, &w, p) {
                return Err(format!("{g:?}: pack refused"));
            }
            let mut acc = vec![0i32; quant::conv2d_i8_scratch_len(&g)];
            let (mut qa, mut qb, mut qc) = (vec![0i8; len], vec![0i8; len], vec![0i8; len]);
            (GENERIC.conv2d_i8)(
                &g,
                &x,
                in_q,
                &w,
                &ws,
                Some(Weights::F32(&b)),
                None,
                None,
                1.0,
                &mut acc,
                QOut::I8 {
                    data: &mut qa,
                    scale: 0.5,
                },
            );
            conv(
                &g,
                &x,
                in_q,
                &w,
                p,
                &ws,
                Some(Weights::F32(&b)),
                None,
                None,
                1.0,
                &mut acc,
                QOut::I8 {
                    data: &mut qb,
                    scale: 0.5,
                },
            );
            if qa != qb {
                return Err(format!(
                    "{g:?} {in_q:?}: packed int8 output differs from generic"
                ));
            }
            // Variant 0 also with a per-channel add, a residual and a divisor, into int8 and into f32.
            if variant == 0 {
                let res: Vec<i8> = (0..len).map(|_| rng.i8()).collect();
                let add: Vec<f32> = (0..g.cout).map(|_| rng.f()).collect();
                let (mut fa, mut fb) = (vec![0f32; len], vec![0f32; len]);
                for f32_out in [false, true] {
                    let run = |k: Conv2dI8PackedFn,
                               generic: bool,
                               q: &mut [i8],
                               f: &mut [f32],
                               acc: &mut [i32]| {
                        let o = if f32_out {
                            QOut::F32(f)
                        } else {
                            QOut::I8 {
                                data: q,
                                scale: 0.4,
                            }
                        };
                        let args = (
                            Some(Weights::F32(&b[..])),
                            Some(&add[..]),
                            Some((&res[..], 0.07)),
                        );
                        if generic {
                            (GENERIC.conv2d_i8)(
                                &g, &x, in_q, &w, &ws, args.0, args.1, args.2, 1.5, acc, o,
                            )
                        } else {
                            k(
                                &g, &x, in_q, &w, p, &ws, args.0, args.1, args.2, 1.5, acc, o,
                            )
                        }
                    };
                    run(conv, true, &mut qa, &mut fa, &mut acc);
                    run(conv, false, &mut qb, &mut fb, &mut acc);
                    let same = if f32_out {
                        fa.iter().zip(&fb).all(|(a, b)| a.to_bits() == b.to_bits())
                    } else {
                        qa == qb
                    };
                    if !same {
                        return Err(format!(
                            "{g:?} {in_q:?}: packed int8 conv with residual (f32 output: {f32_out}) differs from generic"
                        ));
                    }
                }
            }
            p.iter_mut().for_each(|v| *v ^= 0x55);
            conv(
                &g,
                &x,
                in_q,
                &w,
                p,
                &ws,
                Some(Weights::F32(&b)),
                None,
                None,
                1.0,
                &mut acc,
                QOut::I8 {
                    data: &mut qc,
                    scale: 0.5,
                },
            );
            read += (qc != qa) as usize;
            n += 1;
        }
    }
    if read == 0 {
        return Err(
            "corrupted packed weights never changed an output: the packed path is not taken".into(),
        );
    }
    Ok(n)
}

fn main() {
    let mut failed = false;
    for name in all_tiers().iter().filter(|n| **n != "generic") {
        let kernels: [(&str, Check); 12] = [
            (
                "conv2d packed (= per call; Winograd 1e-5)",
                check_f32_packed,
            ),
            ("kernels in a 2 MiB thread (stack scratch)", check_stack),
            ("linear (bit-exact)", check_linear),
            ("f16 -> f32 (all 65536, bit-exact)", check_f16_to_f32),
            ("attention_i8 (bit-exact)", check_attention_i8),
            ("group_norm_i8 (bit-exact)", check_group_norm_i8),
            ("group_norm (f32, within 1e-5)", check_group_norm),
            ("conv2d (f32/f16, within 1e-5 of Σ|w·x|)", check_f32),
            ("conv2d_i8 (bit-exact)", check_i8),
            ("conv2d_i8 on packed weights (bit-exact)", check_i8_packed),
            ("attention (f32, within 2e-6)", check_attention),
            (
                "attention split by queries (bit-exact)",
                check_attention_rows,
            ),
        ];
        for (kname, f) in kernels {
            match tier(name) {
                None => println!("tier {name:<8} {kname:<40} SKIPPED: this CPU cannot run it"),
                Some(t)
                    if (kname.starts_with("conv2d_i8 on packed")
                        && t.conv2d_i8_packed.is_none())
                        || (kname.starts_with("conv2d on packed") && t.conv2d_packed.is_none())
                        || (kname.starts_with("attention split")
                            && t.attention_rows.is_none()
                            && t.attention_i8_rows.is_none()) =>
                {
                    let why = if kname.starts_with("attention") {
                        "this tier has no attention kernel for a range of queries"
                    } else {
                        "this tier reads canonical weights only"
                    };
                    println!("tier {name:<8} {kname:<40} n/a: {why}")
                }
                Some(t) => match f(t, &mut Lcg(42)) {
                    Ok(n) => println!("tier {name:<8} {kname:<40} ok ({n} cases)"),
                    Err(e) => {
                        println!("tier {name:<8} {kname:<40} FAILED: {e}");
                        failed = true;
                    }
                },
            }
        }
    }
    if failed {
        std::process::exit(1);
    }
}
