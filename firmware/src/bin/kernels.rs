//! Cortex-M kernel test program (`scripts/cortexm-kernels.sh`): runs every 32-bit Arm kernel tier of
//! `ember-kernels` this build knows (`registry::all_tiers()`) against the generic kernels on many shapes with
//! pseudo-random data, bit for bit, and prints one line per (tier, kernel) over semihosting: `PASS`, `FAIL` or
//! `SKIPPED` (a tier the core cannot run, e.g. `mve` on the Cortex-M7), then a `SUMMARY` line. The kernels: the int8
//! convolution, the int8 attention and the int8 group norm. It then measures the instructions per MAC of both for every runnable tier on
//! representative shapes of the MNIST student (exact under QEMU `-icount shift=0`; `BENCH` lines). Exit status 0
//! when nothing failed.
#![no_std]
#![no_main]

use core::panic::PanicInfo;
use core::ptr::addr_of_mut;

use core::sync::atomic::{AtomicU32, Ordering};
use cortex_m_rt::entry;
use cortex_m_semihosting::{debug, hprintln};

use ember_kernels::generic::AttentionGeom;
use ember_kernels::parallel::{self, Parallel};
use ember_kernels::quant::{self, ActQ, QOut};
use ember_kernels::registry::{self, KernelTable, GENERIC};
use ember_kernels::{Conv2dGeom, Weights};

/// Largest buffers the cases use.
const MAX_X: usize = 40 * 1024;
const MAX_W: usize = 40 * 1024;
const MAX_OI: usize = 32 * 1024;
const MAX_OF: usize = 8 * 1024;
const MAX_ACC: usize = 2 * 1024;
const MAX_C: usize = 512;
const MAX_SC: usize = 1024;

/// Every buffer of the program (.bss): taken once, in `main`.
struct Bufs {
    x: [i8; MAX_X],
    w: [i8; MAX_W],
    res: [i8; MAX_OI],
    oi_ref: [i8; MAX_OI],
    oi_got: [i8; MAX_OI],
    of_ref: [f32; MAX_OF],
    of_got: [f32; MAX_OF],
    acc: [i32; MAX_ACC],
    ws: [f32; MAX_C],
    bias: [f32; MAX_C],
    cadd: [f32; MAX_C],
    /// Attention score row scratch.
    sc: [f32; MAX_SC],
}

static mut BUFS: Bufs = Bufs {
    x: [0; MAX_X],
    w: [0; MAX_W],
    res: [0; MAX_OI],
    oi_ref: [0; MAX_OI],
    oi_got: [0; MAX_OI],
    of_ref: [0.0; MAX_OF],
    of_got: [0.0; MAX_OF],
    acc: [0; MAX_ACC],
    ws: [0.0; MAX_C],
    bias: [0.0; MAX_C],
    cadd: [0.0; MAX_C],
    sc: [0.0; MAX_SC],
};

/// 64-bit LCG (Knuth's MMIX constants), upper bits out.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u32 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) as u32
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() as usize) % n.max(1)
    }
    fn i8(&mut self) -> i8 {
        (self.next() >> 8) as u8 as i8
    }
    /// Uniform in [lo, hi).
    fn f32(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * ((self.next() >> 8) as f32 / (1u32 << 24) as f32)
    }
}

/// One convolution case.
#[derive(Clone, Copy, Debug)]
struct ConvCase {
    g: Conv2dGeom,
    split: Option<usize>,
    bias: bool,
    chan_add: bool,
    residual: bool,
    div: f32,
    f32_out: bool,
    /// Shorten these slices (malformed input: the tier must behave exactly as generic).
    short_x: usize,
    short_w: usize,
    short_out: usize,
    short_acc: usize,
    /// Output scale of an int8 output (small ones make requantization multipliers of 1/2 and more).
    out_scale: f32,
}

/// A geometry with pads `[top, left, bottom, right]`; `None` when the output would be empty.
fn geom(
    cin: usize,
    cout: usize,
    h: usize,
    w: usize,
    k: usize,
    stride: usize,
    pads: [usize; 4],
) -> Option<Conv2dGeom> {
    let (hp, wp) = (h + pads[0] + pads[2], w + pads[1] + pads[3]);
    if hp < k || wp < k || stride == 0 {
        return None;
    }
    Some(Conv2dGeom {
        cin,
        h,
        w,
        cout,
        k,
        stride,
        pad_t: pads[0],
        pad_l: pads[1],
        oh: (hp - k) / stride + 1,
        ow: (wp - k) / stride + 1,
    })
}

impl ConvCase {
    fn plain(g: Conv2dGeom) -> ConvCase {
        ConvCase {
            g,
            split: None,
            bias: true,
            chan_add: false,
            residual: false,
            div: 1.0,
            f32_out: false,
            short_x: 0,
            short_w: 0,
            short_out: 0,
            short_acc: 0,
            out_scale: 0.09,
        }
    }

    fn sizes(&self) -> (usize, usize, usize, usize) {
        let g = &self.g;
        (
            g.cin * g.h * g.w,
            g.cout * g.cin * g.k * g.k,
            g.cout * g.oh * g.ow,
            quant::conv2d_i8_scratch_len(g),
        )
    }

    fn fits(&self) -> bool {
        let (nx, nw, no, na) = self.sizes();
        nx <= MAX_X
            && nw <= MAX_W
            && no <= if self.f32_out { MAX_OF } else { MAX_OI }
            && na <= MAX_ACC
            && self.g.cout <= MAX_C
    }
}

/// Fill the inputs of `c` with pseudo-random data.
fn fill(b: &mut Bufs, r: &mut Lcg, c: &ConvCase) {
    let (nx, nw, no, _) = c.sizes();
    for v in &mut b.x[..nx] {
        *v = r.i8();
    }
    for v in &mut b.w[..nw] {
        *v = r.i8();
    }
    for v in &mut b.res[..no.min(MAX_OI)] {
        *v = r.i8();
    }
    for i in 0..c.g.cout {
        b.ws[i] = r.f32(0.002, 0.02);
        b.bias[i] = r.f32(-1.0, 1.0);
        b.cadd[i] = r.f32(-0.5, 0.5);
    }
}

/// Run `t`'s int8 convolution on the case's buffers into `got` (`true`) or `ref` (`false`) outputs.
fn run_conv(b: &mut Bufs, t: &KernelTable, c: &ConvCase, into_got: bool) {
    let (nx, nw, no, na) = c.sizes();
    let g = &c.g;
    let in_q = match c.split {
        Some(s) => ActQ {
            scale: 0.03,
            split: s,
            scale2: 0.07,
        },
        None => ActQ::single(0.05),
    };
    let bias = c.bias.then_some(Weights::F32(&b.bias[..g.cout]));
    let cadd = c.chan_add.then_some(&b.cadd[..g.cout]);
    let residual = c.residual.then_some((&b.res[..no.min(MAX_OI)], 0.04f32));
    let x = &b.x[..nx - c.short_x.min(nx)];
    let w = &b.w[..nw - c.short_w.min(nw)];
    let acc = &mut b.acc[..na - c.short_acc.min(na)];
    let n_out = no - c.short_out.min(no);
    let (of, oi) = if into_got {
        (&mut b.of_got, &mut b.oi_got)
    } else {
        (&mut b.of_ref, &mut b.oi_ref)
    };
    let out = out_buf(of, oi, c.f32_out, n_out, c.out_scale);
    (t.conv2d_i8)(
        g,
        x,
        in_q,
        w,
        &b.ws[..g.cout],
        bias,
        cadd,
        residual,
        c.div,
        acc,
        out,
    );
}

/// The first `n` elements of an output buffer, prefilled with a sentinel: `f32` or int8 (of scale `scale`).
fn out_buf<'a>(
    of: &'a mut [f32; MAX_OF],
    oi: &'a mut [i8; MAX_OI],
    f32_out: bool,
    n: usize,
    scale: f32,
) -> QOut<'a> {
    if f32_out {
        let o = &mut of[..n];
        o.fill(-7.0);
        QOut::F32(o)
    } else {
        let o = &mut oi[..n];
        o.fill(99);
        QOut::I8 { data: o, scale }
    }
}

/// Whether the first `n` elements of the generic and the tier outputs have the same bits (printing the first
/// difference of an int8 output).
fn same_outputs(b: &Bufs, f32_out: bool, n: usize) -> bool {
    if f32_out {
        return b.of_ref[..n]
            .iter()
            .zip(&b.of_got[..n])
            .all(|(a, g)| a.to_bits() == g.to_bits());
    }
    let (want, got) = (&b.oi_ref[..n], &b.oi_got[..n]);
    if let Some(i) = (0..n).find(|&i| want[i] != got[i]) {
        let nd = (0..n).filter(|&i| want[i] != got[i]).count();
        hprintln!(
            "DIFF element {} of {}: generic {}, tier {} ({} differ)",
            i,
            n,
            want[i],
            got[i],
            nd
        );
    }
    want == got
}

/// Whether `t` and generic give the same bits on `c`.
fn check_conv(b: &mut Bufs, t: &KernelTable, c: &ConvCase) -> bool {
    run_conv(b, &GENERIC, c, false);
    run_conv(b, t, c, true);
    let (_, _, no, _) = c.sizes();
    same_outputs(b, c.f32_out, no - c.short_out.min(no))
}

/// The cases of one run: fixed shapes (the student's, channel chunks, a split inside a chunk, stride 2, 1×1,
/// asymmetric padding, odd channel counts), malformed slices and pseudo-random shapes.
fn conv_cases(r: &mut Lcg, mut each: impl FnMut(&ConvCase, &mut Lcg)) -> usize {
    let mut n = 0;
    let mut run = |c: ConvCase, r: &mut Lcg| {
        if c.fits() {
            each(&c, r);
            n += 1;
        }
    };
    let fixed = [
        (64, 64, 8, 8, 3, 1, [1, 1, 1, 1]),
        (32, 32, 16, 16, 3, 1, [1, 1, 1, 1]),
        (130, 6, 5, 5, 3, 1, [1, 1, 1, 1]),
        (96, 5, 4, 6, 1, 1, [0, 0, 0, 0]),
        (300, 3, 3, 3, 1, 1, [0, 0, 0, 0]),
        (33, 7, 9, 7, 3, 2, [0, 0, 1, 1]),
        (17, 9, 11, 13, 3, 2, [1, 1, 1, 1]),
        (3, 1, 32, 32, 3, 1, [1, 1, 1, 1]),
        (11, 4, 6, 5, 5, 1, [2, 2, 2, 2]),
        (5, 3, 2, 2, 3, 1, [2, 2, 2, 2]),
        (2, 2, 1, 1, 1, 1, [0, 0, 0, 0]),
        (7, 3, 3, 3, 17, 1, [7, 7, 7, 7]),
    ];
    for (i, &(cin, cout, h, w, k, s, pads)) in fixed.iter().enumerate() {
        let Some(g) = geom(cin, cout, h, w, k, s, pads) else {
            continue;
        };
        for variant in 0..4 {
            let mut c = ConvCase::plain(g);
            c.f32_out = variant == 1;
            if variant == 3 {
                // Multipliers from about 1/8 to 4 (shifts below and above 32), with a residual on every other.
                c.out_scale = [0.0004, 0.002, 0.0001][i % 3];
                c.residual = i % 2 == 0;
            }
            if variant == 2 {
                c.split = Some([cin / 2, 64.min(cin), cin, 0][i % 4]);
                c.chan_add = true;
                c.residual = true;
                c.div = 1.414;
            }
            run(c, r);
        }
    }
    // Malformed slices: the tiers must do exactly what generic does (nothing, or read missing values as zero).
    if let Some(g) = geom(9, 5, 6, 7, 3, 1, [1, 1, 1, 1]) {
        for (sx, sw, so, sa) in [
            (1, 0, 0, 0),
            (42, 0, 0, 0),
            (0, 1, 0, 0),
            (0, 81, 0, 0),
            (0, 0, 1, 0),
            (0, 0, 42, 0),
            (0, 0, 0, 1),
        ] {
            for f32_out in [false, true] {
                let mut c = ConvCase::plain(g);
                (c.short_x, c.short_w, c.short_out, c.short_acc, c.f32_out) =
                    (sx, sw, so, sa, f32_out);
                run(c, r);
            }
        }
        for g in [
            Conv2dGeom { k: 0, ..g },
            Conv2dGeom { stride: 0, ..g },
            Conv2dGeom { cin: 0, ..g },
            Conv2dGeom { oh: 0, ..g },
            Conv2dGeom { h: 0, ..g },
            Conv2dGeom { w: 0, ..g },
        ] {
            run(ConvCase::plain(g), r);
        }
    }
    // Pseudo-random shapes and options.
    for case in 0..160 {
        let k = [1, 3, 3, 5][case % 4];
        let stride = 1 + (case / 4) % 2;
        let (h, w) = (1 + r.below(10), 1 + r.below(10));
        let pads = [r.below(k), r.below(k), r.below(k), r.below(k)];
        let cin = if case % 5 == 0 {
            1 + r.below(70)
        } else {
            1 + r.below(24)
        };
        let Some(g) = geom(cin, 1 + r.below(9), h, w, k, stride, pads) else {
            continue;
        };
        let c = ConvCase {
            split: (r.below(2) == 0).then(|| r.below(cin + 1)),
            bias: r.below(2) == 0,
            chan_add: r.below(2) == 0,
            residual: r.below(2) == 0,
            div: [1.0, 2.0, 1.414][r.below(3)],
            f32_out: r.below(2) == 0,
            ..ConvCase::plain(g)
        };
        run(c, r);
    }
    n
}

/// One int8 attention case: `q` and `k` in `x`, `v` in `w`, the output in `oi_*` / `of_*`, the scratch in `sc`.
#[derive(Clone, Copy, Debug)]
struct AttnCase {
    g: AttentionGeom,
    f32_out: bool,
    scales: [f32; 4],
    /// Shorten these slices (malformed input: the tier must behave exactly as generic).
    short_q: usize,
    short_v: usize,
    short_out: usize,
    short_sc: usize,
}

impl AttnCase {
    fn plain(heads: usize, head_dim: usize, n: usize, f32_out: bool) -> AttnCase {
        AttnCase {
            g: AttentionGeom { heads, head_dim, n },
            f32_out,
            scales: [0.03, 0.04, 0.02, 0.01],
            short_q: 0,
            short_v: 0,
            short_out: 0,
            short_sc: 0,
        }
    }

    fn len(&self) -> usize {
        self.g.heads * self.g.head_dim * self.g.n
    }

    fn fits(&self) -> bool {
        let t = self.len();
        2 * t <= MAX_X
            && t <= MAX_W
            && t <= if self.f32_out { MAX_OF } else { MAX_OI }
            && self.g.n <= MAX_SC
    }
}

fn fill_attn(b: &mut Bufs, r: &mut Lcg, c: &AttnCase) {
    let t = c.len();
    for v in &mut b.x[..2 * t] {
        *v = r.i8();
    }
    for v in &mut b.w[..t] {
        *v = r.i8();
    }
}

fn run_attn(b: &mut Bufs, t: &KernelTable, c: &AttnCase, into_got: bool) {
    let len = c.len();
    let (qx, kx) = b.x.split_at(len);
    let q = &qx[..len - c.short_q.min(len)];
    let k = &kx[..len];
    let v = &b.w[..len - c.short_v.min(len)];
    let sc = &mut b.sc[..c.g.n - c.short_sc.min(c.g.n)];
    let n_out = len - c.short_out.min(len);
    let (of, oi) = if into_got {
        (&mut b.of_got, &mut b.oi_got)
    } else {
        (&mut b.of_ref, &mut b.oi_ref)
    };
    let out = out_buf(of, oi, c.f32_out, n_out, c.scales[3]);
    let [sq, sk, sv, _] = c.scales;
    (t.attention_i8)(&c.g, q, sq, k, sk, v, sv, sc, out);
}

/// Whether `t` and generic give the same bits on `c`: the tier's kernel called once, and split by query tokens
/// over two workers run one after the other (`parallel::attention_i8` with [`InTurn`], the no_std hook a dual-core
/// MCU implements; it falls back to one call where the tier has no range kernel or the attention is small).
fn check_attn(b: &mut Bufs, t: &KernelTable, c: &AttnCase) -> bool {
    run_attn(b, &GENERIC, c, false);
    run_attn(b, t, c, true);
    let n = c.len() - c.short_out.min(c.len());
    if !same_outputs(b, c.f32_out, n) {
        return false;
    }
    run_attn_split(b, t, c);
    same_outputs(b, c.f32_out, n)
}

/// Two workers, run in turn on this core; counts the jobs it ran. `InTurn(_, false)` runs only worker 0, to check
/// that a worker writes its own query tokens and nothing else.
#[derive(Debug)]
struct InTurn(AtomicU32, bool);

impl Parallel for InTurn {
    fn workers(&self) -> usize {
        2
    }
    fn run(&self, job: &(dyn Fn(usize) + Sync)) {
        self.0.fetch_add(1, Ordering::Relaxed);
        job(0);
        if self.1 {
            job(1);
        }
    }
    fn scratch(&self, _: usize, _: usize, _: &mut dyn FnMut(&mut [i32])) -> bool {
        false
    }
}

static SPLITS: InTurn = InTurn(AtomicU32::new(0), true);
static FIRST_ONLY: InTurn = InTurn(AtomicU32::new(0), false);

/// Worker 0 alone (the student's 2×32×256 attention, int8 output): it must write generic's values for a block of
/// leading query tokens, the same in every channel, and leave every other token untouched.
fn check_first_worker(b: &mut Bufs, t: &KernelTable) -> bool {
    let c = AttnCase::plain(2, 32, 256, false);
    let mut r = Lcg(0xf1_2026);
    fill_attn(b, &mut r, &c);
    run_attn(b, &GENERIC, &c, false);
    run_attn_split_with(b, t, &c, &FIRST_ONLY);
    let n = c.g.n;
    let written = |i: usize| b.oi_got[i] != 99 || b.oi_ref[i] == 99;
    // The first token worker 0 did not write, in channel 0 (99 is the sentinel; a generic 99 counts as written).
    let m = (0..n).find(|&i| !written(i)).unwrap_or(n);
    let ok = m > 0
        && m < n
        && b.oi_got[..c.len()]
            .chunks_exact(n)
            .zip(b.oi_ref[..c.len()].chunks_exact(n))
            .all(|(got, want)| got[..m] == want[..m] && got[m..].iter().all(|&x| x == 99));
    if !ok {
        hprintln!("DIFF worker 0 alone: first unwritten token {} of {}", m, n);
    }
    ok
}

/// [`run_attn`] through `parallel::attention_i8` over [`SPLITS`], into the `got` outputs.
fn run_attn_split(b: &mut Bufs, t: &KernelTable, c: &AttnCase) {
    run_attn_split_with(b, t, c, &SPLITS);
}

/// [`run_attn`] through `parallel::attention_i8` over `par`, into the `got` outputs.
fn run_attn_split_with(b: &mut Bufs, t: &KernelTable, c: &AttnCase, par: &InTurn) {
    let len = c.len();
    let (qx, kx) = b.x.split_at(len);
    let q = &qx[..len - c.short_q.min(len)];
    let v = &b.w[..len - c.short_v.min(len)];
    let sc = &mut b.sc[..c.g.n - c.short_sc.min(c.g.n)];
    let n_out = len - c.short_out.min(len);
    let out = out_buf(&mut b.of_got, &mut b.oi_got, c.f32_out, n_out, c.scales[3]);
    let [sq, sk, sv, _] = c.scales;
    parallel::attention_i8(t, par, &c.g, q, sq, &kx[..len], sk, v, sv, sc, out);
}

/// The attention cases: the student's shapes, odd channel and token counts, geometries past the tiers' stack
/// buffers (they fall back to generic), malformed slices, saturating scales and pseudo-random shapes.
fn attn_cases(r: &mut Lcg, mut each: impl FnMut(&AttnCase, &mut Lcg)) -> usize {
    let mut n = 0;
    let mut run = |c: AttnCase, r: &mut Lcg| {
        if c.fits() {
            each(&c, r);
            n += 1;
        }
    };
    for (heads, d, tokens) in [
        (2, 32, 256),
        (2, 32, 64),
        (1, 32, 256),
        (1, 1, 1),
        (3, 5, 7),
        (1, 63, 127),
        (2, 2, 512),
        (1, 3, 513),
        (1, 64, 130),
        (1, 257, 4),
        (4, 7, 33),
    ] {
        for f32_out in [false, true] {
            run(AttnCase::plain(heads, d, tokens, f32_out), r);
        }
    }
    for (sq, sv, so, ss) in [
        (1, 0, 0, 0),
        (0, 1, 0, 0),
        (0, 0, 1, 0),
        (0, 0, 0, 1),
        (0, 0, 7, 0),
    ] {
        for f32_out in [false, true] {
            let mut c = AttnCase::plain(2, 6, 9, f32_out);
            (c.short_q, c.short_v, c.short_out, c.short_sc) = (sq, sv, so, ss);
            run(c, r);
        }
    }
    for (heads, d, tokens) in [(0, 4, 4), (1, 0, 4), (1, 4, 0)] {
        run(AttnCase::plain(heads, d, tokens, false), r);
    }
    // Large scores (softmax close to one-hot) and a saturating output scale.
    let mut c = AttnCase::plain(2, 9, 21, false);
    c.scales = [0.4, 0.5, 0.3, 0.0005];
    run(c, r);
    // Score scales that are not positive and finite (the tiers' shortcut for the row maximum does not apply):
    // zero, negative, infinite (inf − inf = NaN scores), NaN; and a huge one.
    for sq in [0.0, -0.03, f32::INFINITY, f32::NAN, 1e30] {
        for f32_out in [false, true] {
            let mut c = AttnCase::plain(2, 5, 11, f32_out);
            c.scales[0] = sq;
            run(c, r);
        }
    }
    for _ in 0..120 {
        let heads = 1 + r.below(3);
        let d = if r.below(4) == 0 {
            1 + r.below(80)
        } else {
            1 + r.below(40)
        };
        let tokens = 1 + r.below(300);
        let mut c = AttnCase::plain(heads, d, tokens, r.below(2) == 0);
        c.scales = [
            r.f32(0.005, 0.1),
            r.f32(0.005, 0.1),
            r.f32(0.005, 0.05),
            r.f32(0.002, 0.05),
        ];
        run(c, r);
    }
    n
}

/// One int8 group-norm case: input in `x`, gamma / beta in `ws` / `bias`, the FiLM modulation in `sc`.
#[derive(Clone, Copy, Debug)]
struct GnCase {
    c: usize,
    hw: usize,
    groups: usize,
    silu: bool,
    film: bool,
    /// `ActQ` of the input: `(scale, split, scale2)`.
    in_q: (f32, usize, f32),
    out_scale: f32,
    eps: f32,
    /// Input values: 0 uniform over all of int8, 1 a narrow range, 2 one constant, 3 the extremes only.
    dist: u8,
    /// Shorten these slices (malformed input: the tier must behave exactly as generic).
    short_x: usize,
    short_out: usize,
}

impl GnCase {
    fn plain(c: usize, hw: usize, groups: usize, silu: bool) -> GnCase {
        GnCase {
            c,
            hw,
            groups,
            silu,
            film: false,
            in_q: (0.05, c, 0.0),
            out_scale: 0.03,
            eps: 1e-5,
            dist: 0,
            short_x: 0,
            short_out: 0,
        }
    }

    fn len(&self) -> usize {
        self.c * self.hw
    }

    fn fits(&self) -> bool {
        self.len() <= MAX_X && self.len() <= MAX_OI && self.c <= MAX_C && 2 * self.c <= MAX_SC
    }
}

fn fill_gn(b: &mut Bufs, r: &mut Lcg, c: &GnCase) {
    let (lo, span) = (r.below(200) as i32 - 128, 1 + r.below(60) as i32);
    let k = r.i8();
    for v in &mut b.x[..c.len()] {
        *v = match c.dist {
            0 => r.i8(),
            1 => (lo + r.below(span as usize) as i32).clamp(-128, 127) as i8,
            2 => k,
            _ => [i8::MIN, i8::MAX, 0, -1][r.below(4)],
        };
    }
    for i in 0..c.c {
        b.ws[i] = r.f32(0.5, 1.5);
        b.bias[i] = r.f32(-0.5, 0.5);
    }
    for v in &mut b.sc[..2 * c.c] {
        *v = r.f32(-0.5, 0.5);
    }
}

fn run_gn(b: &mut Bufs, t: &KernelTable, c: &GnCase, into_got: bool) {
    let len = c.len();
    let x = &b.x[..len - c.short_x.min(len)];
    let n_out = len - c.short_out.min(len);
    let oi = if into_got { &mut b.oi_got } else { &mut b.oi_ref };
    let out = &mut oi[..n_out];
    out.fill(99);
    let (scale, split, scale2) = c.in_q;
    let a = quant::GroupNormI8Args {
        c: c.c,
        hw: c.hw,
        groups: c.groups,
        eps: c.eps,
        gamma: Weights::F32(&b.ws[..c.c]),
        beta: Weights::F32(&b.bias[..c.c]),
        scale_shift: c.film.then_some(&b.sc[..2 * c.c]),
        silu: c.silu,
        in_q: ActQ {
            scale,
            split,
            scale2,
        },
        out_scale: c.out_scale,
    };
    (t.group_norm_i8)(&a, x, out);
}

/// Whether `t` and generic give the same bits on `c`.
fn check_gn(b: &mut Bufs, t: &KernelTable, c: &GnCase) -> bool {
    run_gn(b, &GENERIC, c, false);
    run_gn(b, t, c, true);
    same_outputs(b, false, c.len() - c.short_out.min(c.len()))
}

/// The cases of one run: the student's shapes, every value distribution, SiLU and FiLM on and off, a second input
/// part, scales that are zero / NaN / infinite, malformed slices and geometries, and pseudo-random shapes.
fn gn_cases(r: &mut Lcg, mut each: impl FnMut(&GnCase, &mut Lcg)) -> usize {
    let mut n = 0;
    let mut run = |c: GnCase, r: &mut Lcg| {
        if c.fits() {
            each(&c, r);
            n += 1;
        }
    };
    // The student's group norms (32 groups) and shapes around the vector and word lengths.
    for (i, &(c, hw, groups)) in [
        (32, 1024, 32),
        (64, 256, 32),
        (64, 64, 32),
        (96, 256, 32),
        (8, 15, 2),
        (8, 16, 4),
        (8, 17, 8),
        (6, 33, 3),
        (5, 3, 5),
        (4, 1, 1),
        (2, 300, 1),
        (1, 4099, 1),
    ]
    .iter()
    .enumerate()
    {
        for variant in 0..6u8 {
            let mut g = GnCase::plain(c, hw, groups, variant % 2 == 0);
            g.dist = variant % 4;
            g.film = variant >= 3;
            if variant == 5 {
                g.in_q = (0.02, [c / 2, 0, c, 1][i % 4], 0.09);
            }
            run(g, r);
        }
    }
    // Degenerate scales and constants.
    for (in_s, out_s, eps) in [
        (0.0, 0.03, 1e-5),
        (f32::NAN, 0.03, 1e-5),
        (0.05, 0.0, 1e-5),
        (0.05, f32::NAN, 1e-5),
        (0.05, f32::INFINITY, 1e-5),
        (f32::INFINITY, 0.03, 1e-5),
        (0.05, 1e-30, 1e-5),
        (1e30, 0.03, 0.0),
        (0.05, 0.03, 1e30),
    ] {
        for silu in [false, true] {
            let mut g = GnCase::plain(16, 40, 4, silu);
            g.in_q.0 = in_s;
            g.out_scale = out_s;
            g.eps = eps;
            run(g, r);
        }
    }
    // Malformed slices and geometries: the tier must do exactly what generic does.
    for (sx, so) in [(1, 0), (40, 0), (0, 1), (0, 41), (640, 0)] {
        let mut g = GnCase::plain(16, 40, 4, true);
        (g.short_x, g.short_out) = (sx, so);
        run(g, r);
    }
    for (c, hw, groups) in [(10, 7, 4), (8, 7, 0), (8, 0, 2), (0, 7, 1), (3, 7, 5)] {
        run(GnCase::plain(c, hw, groups, true), r);
    }
    // Pseudo-random shapes and options.
    for _ in 0..80 {
        let groups = 1 + r.below(8);
        let c = groups * (1 + r.below(6));
        let max_hw = if r.below(4) == 0 { 600 } else { 70 };
        let hw = 1 + r.below(max_hw);
        let mut g = GnCase::plain(c, hw, groups, r.below(2) == 0);
        g.film = r.below(2) == 0;
        g.dist = r.below(4) as u8;
        g.out_scale = r.f32(0.005, 0.1);
        if r.below(3) == 0 {
            g.in_q = (r.f32(0.01, 0.1), r.below(c + 1), r.f32(0.01, 0.1));
        }
        run(g, r);
    }
    n
}

/// Prints the `PASS` / `FAIL` line of one (tier, kernel): `nbad` of `n` cases differed, `first` the first of them.
fn report(
    tier: &str,
    kernel: &str,
    n: usize,
    nbad: u32,
    first: Option<impl core::fmt::Debug>,
) -> bool {
    match first {
        None => {
            hprintln!(
                "PASS {} {}: {} cases bit-identical to generic",
                tier,
                kernel,
                n
            );
            true
        }
        Some(c) => {
            hprintln!(
                "FAIL {} {}: {} of {} cases differ from generic; first {:?}",
                tier,
                kernel,
                nbad,
                n,
                c
            );
            false
        }
    }
}

fn tally(passed: bool, pass: &mut u32, fail: &mut u32) {
    if passed {
        *pass += 1;
    } else {
        *fail += 1;
    }
}

#[entry]
fn main() -> ! {
    let ok = run();
    debug::exit(if ok {
        debug::EXIT_SUCCESS
    } else {
        debug::EXIT_FAILURE
    });
    #[allow(clippy::empty_loop)]
    loop {}
}

fn run() -> bool {
    hprintln!(
        "ember kernel tiers on {}: build knows {:?}, best {:?}",
        if cfg!(board_an547) {
            "Cortex-M55 (mps3-an547)"
        } else {
            "Cortex-M7 (mps2-an500)"
        },
        registry::all_tiers(),
        registry::best().name
    );
    // SAFETY: `run` is called once, from `main`, with no interrupts touching BUFS: this is the only reference.
    let b: &mut Bufs = unsafe { &mut *addr_of_mut!(BUFS) };
    let (mut pass, mut fail, mut skipped) = (0u32, 0u32, 0u32);
    let mut runnable: [Option<&'static KernelTable>; 8] = [None; 8];
    let mut nrun = 0;
    // Build with EMBER_KERNELS_BENCH_ONLY=1 to skip the checks (profiling the benchmarks alone).
    let check = option_env!("EMBER_KERNELS_BENCH_ONLY").is_none();
    for &name in registry::all_tiers() {
        let Some(t) = registry::tier(name) else {
            for kernel in ["conv2d_i8", "attention_i8", "group_norm_i8"] {
                hprintln!("SKIPPED {} {}: this core cannot run the tier", name, kernel);
                skipped += 1;
            }
            continue;
        };
        if let Some(slot) = runnable.get_mut(nrun) {
            *slot = Some(t);
            nrun += 1;
        }
        if name == "generic" || !check {
            continue; // the reference itself
        }
        let mut r = Lcg(0x5eed_2026);
        let mut bad: Option<ConvCase> = None;
        let mut nbad = 0u32;
        let n = conv_cases(&mut r, |c, r| {
            fill(b, r, c);
            if !check_conv(b, t, c) {
                nbad += 1;
                bad.get_or_insert(*c);
            }
        });
        tally(
            report(name, "conv2d_i8", n, nbad, bad),
            &mut pass,
            &mut fail,
        );
        let mut r = Lcg(0xa77e_2026);
        let mut bad: Option<AttnCase> = None;
        let mut nbad = 0u32;
        let n = attn_cases(&mut r, |c, r| {
            fill_attn(b, r, c);
            if !check_attn(b, t, c) {
                nbad += 1;
                bad.get_or_insert(*c);
            }
        });
        let splits = SPLITS.0.swap(0, Ordering::Relaxed);
        let mut r = Lcg(0x9a0c_2026);
        let mut bad_gn: Option<GnCase> = None;
        let mut nbad_gn = 0u32;
        let n_gn = gn_cases(&mut r, |c, r| {
            fill_gn(b, r, c);
            if !check_gn(b, t, c) {
                nbad_gn += 1;
                bad_gn.get_or_insert(*c);
            }
        });
        tally(
            report(name, "group_norm_i8", n_gn, nbad_gn, bad_gn),
            &mut pass,
            &mut fail,
        );
        tally(
            report(name, "attention_i8", n, nbad, bad),
            &mut pass,
            &mut fail,
        );
        // The range kernel must have been used (the student's attention is large enough to split), and write only
        // its worker's tokens.
        if t.attention_i8_rows.is_some() && !check_first_worker(b, t) {
            hprintln!(
                "FAIL {} attention_i8 split: worker 0 alone did not write exactly its own query tokens",
                name
            );
            fail += 1;
        } else if t.attention_i8_rows.is_some() && splits == 0 {
            hprintln!(
                "FAIL {} attention_i8 split: the tier has a range kernel but no case was split",
                name
            );
            fail += 1;
        } else {
            hprintln!(
                "NOTE {} attention_i8: {} cases split over 2 workers (bit-identical, in the count above)",
                name,
                splits
            );
        }
    }
    hprintln!(
        "SUMMARY kernels: {} PASS, {} FAIL, {} SKIPPED",
        pass,
        fail,
        skipped
    );

    // Instructions per MAC of the int8 convolution (int8 output, bias, no residual: the student's common case).
    let clock = timer::calibrate();
    let shapes = [
        ("64->64 8x8 3x3", geom(64, 64, 8, 8, 3, 1, [1, 1, 1, 1])),
        ("32->32 16x16 3x3", geom(32, 32, 16, 16, 3, 1, [1, 1, 1, 1])),
        ("32->32 32x32 3x3", geom(32, 32, 32, 32, 3, 1, [1, 1, 1, 1])),
    ];
    let mut r = Lcg(7);
    for (label, g) in shapes {
        let Some(g) = g else { continue };
        let c = ConvCase::plain(g);
        if !c.fits() {
            continue;
        }
        fill(b, &mut r, &c);
        let macs = g.macs();
        for t in runnable.iter().take(nrun).flatten() {
            let t0 = timer::now();
            run_conv(b, t, &c, true);
            let instr = clock.instructions(timer::now() - t0);
            let centi = instr * 100 / macs.max(1);
            hprintln!(
                "BENCH {} {}: {} instructions, {} MACs, {}.{:02} instructions/MAC",
                t.name,
                label,
                instr,
                macs,
                centi / 100,
                centi % 100
            );
        }
    }

    // Instructions per MAC of the int8 attention (QKᵀ and the value sums: 2·heads·n²·d MACs; int8 output): the
    // student's shapes at 16×16 (down and up blocks) and 8×8 (middle block).
    for (label, heads, d, tokens) in [("2x32x256", 2, 32, 256), ("2x32x64", 2, 32, 64)] {
        let c = AttnCase::plain(heads, d, tokens, false);
        if !c.fits() {
            continue;
        }
        fill_attn(b, &mut r, &c);
        let macs = (2 * heads * tokens * tokens * d) as u64;
        for t in runnable.iter().take(nrun).flatten() {
            let t0 = timer::now();
            run_attn(b, t, &c, true);
            let instr = clock.instructions(timer::now() - t0);
            let centi = instr * 100 / macs.max(1);
            hprintln!(
                "BENCH {} attention {}: {} instructions, {} MACs, {}.{:02} instructions/MAC",
                t.name,
                label,
                instr,
                macs,
                centi / 100,
                centi % 100
            );
        }
    }

    // Instructions per element of the int8 group norm + SiLU at the student's largest shape (32 channels of
    // 32×32 in 32 groups), on activations that span a quarter of the int8 range.
    let mut c = GnCase::plain(32, 1024, 32, true);
    c.dist = 1;
    if c.fits() {
        fill_gn(b, &mut r, &c);
        for t in runnable.iter().take(nrun).flatten() {
            let t0 = timer::now();
            run_gn(b, t, &c, true);
            let instr = clock.instructions(timer::now() - t0);
            let centi = instr * 100 / c.len().max(1) as u64;
            hprintln!(
                "BENCH {} group_norm 32x1024 silu: {} instructions, {} elements, {}.{:02} instructions/element",
                t.name,
                instr,
                c.len(),
                centi / 100,
                centi % 100
            );
        }
    }
    fail == 0
}

/// Instruction counts from a hardware timer (as in the firmware's main.rs): under `-icount shift=0` QEMU's virtual
/// clock advances 1 ns per instruction; the ratio is calibrated with a loop of known length.
#[path = "../timer.rs"]
#[allow(unused_imports)] // the timer's name is printed by the firmware, not here
mod timer;

#[panic_handler]
fn panic(info: &PanicInfo) -> ! {
    if let Some(l) = info.location() {
        hprintln!("FAIL: panic at {}:{}", l.file(), l.line());
    } else {
        hprintln!("FAIL: panic");
    }
    debug::exit(debug::EXIT_FAILURE);
    #[allow(clippy::empty_loop)]
    loop {}
}
