//! Splitting convolutions across threads (`ember_kernels::parallel`) gives results bit-identical to one core: for
//! the whole 4-step sampling of the committed f32, f16 and int8 students on every kernel tier this CPU runs, and
//! for single convolutions of many shapes, including a worker that gets no scratch (its channels fall back to
//! worker 0) and a hook that runs its workers one after another in reverse order; for split group norms (f32
//! and int8, with FiLM and a two-scale input) and linear layers (f32 and f16 weights); and for attention split by
//! query tokens (f32, int8 with int8 and f32 outputs).

use std::path::PathBuf;
use std::sync::Mutex;

use ember_core::sampler::driver::{arena_bytes, Conditioning, Control, Init, Sampler};
use ember_core::Model;
use ember_kernels::parallel::{self, Parallel, Serial, ThreadPool};
use ember_kernels::quant::{ActQ, QOut};
use ember_kernels::registry::{all_tiers, tier};
use ember_kernels::{Conv2dGeom, Weights};
use quantize_tool::AlignedBytes;

fn read(p: &str) -> AlignedBytes {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join(p);
    AlignedBytes::read(&path).unwrap_or_else(|e| panic!("{p}: {e}"))
}

fn sample_bits(
    blob: &str,
    kernels: &'static ember_kernels::KernelTable,
    par: &'static dyn Parallel,
) -> Vec<u32> {
    let b = read(blob);
    let m = Model::parse(b.as_slice()).unwrap();
    let cfg = quantize_tool::inspect::default_sampler(&m);
    let mut arena = AlignedBytes::zeroed(arena_bytes(&m, &cfg).unwrap());
    let mut bits = Vec::new();
    for (seed, class) in [(11u64, 2u32), (12, 9)] {
        let cond = Conditioning {
            class: Some(class),
            ..Conditioning::default()
        };
        let mut s = Sampler::new(&m, arena.as_mut_slice(), cfg, cond, Init::Seed(seed)).unwrap();
        s.set_kernels(kernels);
        s.set_parallel(par);
        s.run(&mut |_| Control::Continue).unwrap();
        bits.extend(s.sample().iter().map(|v| v.to_bits()));
    }
    bits
}

#[test]
fn sampling_with_threads_is_bit_identical() {
    let pools: [&'static dyn Parallel; 2] = [ThreadPool::leak(2), ThreadPool::leak(3)];
    for blob in [
        "models/mnist-student/student-4.ember",
        "models/mnist-student/student-4-f16.ember",
        "models/mnist-student/student-4-int8.ember",
    ] {
        for name in all_tiers() {
            let Some(t) = tier(name) else {
                println!("{blob} tier {name}: SKIPPED (this CPU cannot run it)");
                continue;
            };
            let one = sample_bits(blob, t, &Serial);
            for p in pools {
                assert!(
                    one == sample_bits(blob, t, p),
                    "{blob}, tier {name}: {} workers differ from one",
                    p.workers()
                );
            }
            println!("{blob} tier {name}: 2 and 3 threads bit-identical to 1");
        }
    }
}

/// Runs its workers one after another, last first, and lends scratch only to workers in `lend`.
#[derive(Debug)]
struct Reverse {
    n: usize,
    lend: &'static [usize],
    scratch: Mutex<Vec<i32>>,
}

impl Parallel for Reverse {
    fn workers(&self) -> usize {
        self.n
    }
    fn run(&self, job: &(dyn Fn(usize) + Sync)) {
        for w in (0..self.n).rev() {
            job(w);
        }
    }
    fn scratch(&self, w: usize, n: usize, f: &mut dyn FnMut(&mut [i32])) -> bool {
        if !self.lend.contains(&w) {
            return false;
        }
        let mut v = self.scratch.lock().unwrap();
        let len = n.max(v.len());
        v.resize(len, 0);
        f(&mut v[..n]);
        true
    }
}

struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) as u32
    }
    fn f(&mut self) -> f32 {
        self.next() as f32 / (1u64 << 31) as f32 - 1.0
    }
    fn i8(&mut self) -> i8 {
        self.next() as u8 as i8
    }
}

fn geom(cin: usize, h: usize, cout: usize, k: usize, stride: usize, pad: usize) -> Conv2dGeom {
    let oh = (h + 2 * pad - k) / stride + 1;
    Conv2dGeom {
        cin,
        h,
        w: h,
        cout,
        k,
        stride,
        pad_t: pad,
        pad_l: pad,
        oh,
        ow: oh,
    }
}

#[test]
fn split_convolutions_are_bit_identical() {
    let hooks: [&'static dyn Parallel; 5] = [
        ThreadPool::leak(2),
        ThreadPool::leak(4),
        Box::leak(Box::new(Reverse {
            n: 3,
            lend: &[1, 2],
            scratch: Mutex::new(Vec::new()),
        })),
        Box::leak(Box::new(Reverse {
            n: 3,
            lend: &[2],
            scratch: Mutex::new(Vec::new()),
        })),
        Box::leak(Box::new(Reverse {
            n: 8,
            lend: &[],
            scratch: Mutex::new(Vec::new()),
        })),
    ];
    let shapes = [
        geom(64, 32, 64, 3, 1, 1), // packed: Winograd, split by rows of tiles
        geom(32, 17, 32, 3, 1, 1), // packed: Winograd by rows, the last worker's band ending on an odd row
        geom(32, 32, 33, 3, 1, 1),
        geom(128, 16, 22, 3, 2, 1),
        geom(96, 16, 64, 1, 1, 0),
        geom(64, 8, 9, 3, 1, 1), // below MIN_SPLIT_MACS: one core
    ];
    let mut rng = Lcg(7);
    let mut splits = 0;
    for g in shapes {
        let x: Vec<f32> = (0..g.cin * g.h * g.w).map(|_| rng.f()).collect();
        let wt: Vec<f32> = (0..g.cout * g.cin * g.k * g.k)
            .map(|_| rng.f() * 0.1)
            .collect();
        let bias: Vec<f32> = (0..g.cout).map(|_| rng.f()).collect();
        let xq: Vec<i8> = (0..x.len()).map(|_| rng.i8()).collect();
        let wq: Vec<i8> = (0..wt.len()).map(|_| rng.i8()).collect();
        let ws: Vec<f32> = (0..g.cout).map(|_| 0.001 + rng.f().abs() * 0.01).collect();
        let add: Vec<f32> = (0..g.cout).map(|_| rng.f()).collect();
        let res: Vec<i8> = (0..g.cout * g.oh * g.ow).map(|_| rng.i8()).collect();
        let n_out = g.cout * g.oh * g.ow;
        let in_q = ActQ {
            scale: 0.02,
            split: g.cin / 2,
            scale2: 0.03,
        };
        for name in all_tiers() {
            let Some(t) = tier(name) else { continue };
            let mut want = vec![0f32; n_out];
            (t.conv2d)(
                &g,
                &x,
                Weights::F32(&wt),
                Some(Weights::F32(&bias)),
                &mut want,
            );
            let mut want_q = vec![0i8; n_out];
            let mut acc = vec![0i32; ember_kernels::quant::conv2d_i8_scratch_len(&g)];
            // The float layer packed offline in the tier's family, if it reads one.
            let fpacked: Option<Vec<u8>> = t.conv2d_packed.and_then(|(fam, _)| {
                let mut p = vec![0u8; ember_kernels::pack::float_len(fam, &g)?];
                assert!(ember_kernels::pack::float_pack(
                    fam,
                    &g,
                    Weights::F32(&wt),
                    &mut p
                ));
                Some(p)
            });
            // The layer also packed offline in the tier's family, if it reads one.
            let packed: Option<Vec<u8>> = t.conv2d_i8_packed.and_then(|(fam, _)| {
                let split = in_q.split.min(g.cin);
                let mut p = vec![0u8; ember_kernels::pack::int8_len(fam, &g, split)?];
                assert!(ember_kernels::pack::int8_pack(fam, &g, split, &wq, &mut p));
                Some(p)
            });
            let run_q = |par: &dyn Parallel, pw: Option<&[u8]>, acc: &mut [i32], out: &mut [i8]| {
                parallel::conv2d_i8(
                    t,
                    par,
                    &g,
                    &xq,
                    in_q,
                    &wq,
                    pw,
                    &ws,
                    Some(Weights::F32(&bias)),
                    Some(&add),
                    Some((&res, 0.05)),
                    2.0,
                    acc,
                    QOut::I8 {
                        data: out,
                        scale: 0.04,
                    },
                )
            };
            run_q(&Serial, None, &mut acc, &mut want_q);
            // Packed weights may take another kernel (Winograd for 3x3 layers): their one-call result is the
            // reference for their splits.
            let mut want_p = vec![0f32; n_out];
            parallel::conv2d(
                t,
                &Serial,
                &g,
                &x,
                Weights::F32(&wt),
                fpacked.as_deref(),
                Some(Weights::F32(&bias)),
                &mut want_p,
            );
            for par in hooks {
                for pw in [None, fpacked.as_deref()] {
                    let want = if pw.is_some() { &want_p } else { &want };
                    let mut got = vec![f32::NAN; n_out];
                    parallel::conv2d(
                        t,
                        par,
                        &g,
                        &x,
                        Weights::F32(&wt),
                        pw,
                        Some(Weights::F32(&bias)),
                        &mut got,
                    );
                    assert!(
                        want.iter()
                            .zip(&got)
                            .all(|(a, b)| a.to_bits() == b.to_bits()),
                        "f32 conv {g:?} tier {name} {par:?} packed {}",
                        pw.is_some()
                    );
                }
                let mut got_q = vec![0x55u8 as i8; n_out];
                run_q(par, None, &mut acc, &mut got_q);
                assert_eq!(want_q, got_q, "int8 conv {g:?} tier {name} {par:?}");
                if let Some(p) = &packed {
                    let mut got_p = vec![0x55u8 as i8; n_out];
                    run_q(par, Some(p), &mut acc, &mut got_p);
                    assert_eq!(want_q, got_p, "packed int8 conv {g:?} tier {name} {par:?}");
                }
                splits += 1;
            }
        }
    }
    println!("{splits} split convolutions bit-identical to one call");
}

#[test]
fn split_group_norms_and_linear_layers_are_bit_identical() {
    use ember_kernels::generic::GroupNormArgs;
    use ember_kernels::quant::GroupNormI8Args;
    let hooks: [&'static dyn Parallel; 4] = [
        ThreadPool::leak(2),
        ThreadPool::leak(3),
        ThreadPool::leak(8),
        Box::leak(Box::new(Reverse {
            n: 5,
            lend: &[],
            scratch: Mutex::new(Vec::new()),
        })),
    ];
    let mut r = Lcg(11);
    // (channels, pixels, groups): cifar's and the student's shapes, an odd group count, one below the split size.
    let norms = [
        (128, 1024, 32),
        (512, 64, 32),
        (96, 256, 3),
        (64, 1024, 32),
        (32, 64, 8),
    ];
    let mut split_seen = false;
    for name in all_tiers() {
        let Some(t) = tier(name) else { continue };
        for &(c, hw, groups) in &norms {
            let x: Vec<f32> = (0..c * hw).map(|_| 2.0 * r.f() + 0.3).collect();
            let xq: Vec<i8> = (0..c * hw).map(|_| r.i8()).collect();
            let gamma: Vec<f32> = (0..c).map(|_| 1.0 + 0.5 * r.f()).collect();
            let beta: Vec<f32> = (0..c).map(|_| 0.2 * r.f()).collect();
            let film: Vec<f32> = (0..2 * c).map(|_| 0.3 * r.f()).collect();
            for (ss, silu) in [
                (None, true),
                (Some(&film[..]), false),
                (Some(&film[..]), true),
            ] {
                let a = GroupNormArgs {
                    c,
                    hw,
                    groups,
                    eps: 1e-5,
                    gamma: Weights::F32(&gamma),
                    beta: Weights::F32(&beta),
                    scale_shift: ss,
                    silu,
                };
                let mut want = vec![0f32; c * hw];
                (t.group_norm)(&a, &x, &mut want);
                // A second input scale from a channel inside some worker's share (a concat's two branches).
                let aq = GroupNormI8Args {
                    c,
                    hw,
                    groups,
                    eps: 1e-5,
                    gamma: Weights::F32(&gamma),
                    beta: Weights::F32(&beta),
                    scale_shift: ss,
                    silu,
                    in_q: ActQ {
                        scale: 0.02,
                        split: c / 3,
                        scale2: 0.05,
                    },
                    out_scale: 0.03,
                };
                let mut want_q = vec![0i8; c * hw];
                (t.group_norm_i8)(&aq, &xq, &mut want_q);
                for &par in &hooks {
                    let mut got = vec![f32::NAN; c * hw];
                    parallel::group_norm(t, par, &a, &x, &mut got);
                    let same = want
                        .iter()
                        .zip(&got)
                        .all(|(p, q)| p.to_bits() == q.to_bits());
                    assert!(
                        same,
                        "group norm c {c} hw {hw} groups {groups} tier {name} {par:?}"
                    );
                    let mut got_q = vec![0x55i8; c * hw];
                    parallel::group_norm_i8(t, par, &aq, &xq, &mut got_q);
                    assert_eq!(
                        want_q, got_q,
                        "int8 group norm c {c} hw {hw} tier {name} {par:?}"
                    );
                }
                split_seen |= 2 * c * hw >= parallel::MIN_SPLIT_ELEMS;
            }
        }
        // Time-embedding projections (512 -> C), one not a multiple of 16 rows, one below the split size.
        for (n_in, n_out) in [(512, 512), (512, 128), (128, 512), (512, 200), (64, 64)] {
            let x: Vec<f32> = (0..n_in).map(|_| r.f()).collect();
            let w: Vec<f32> = (0..n_in * n_out).map(|_| 0.1 * r.f()).collect();
            let b: Vec<f32> = (0..n_out).map(|_| r.f()).collect();
            let wh: Vec<half::f16> = w.iter().map(|&v| half::f16::from_f32(v)).collect();
            for wt in [Weights::F32(&w), Weights::F16(&wh)] {
                for (si, so) in [(false, false), (true, false), (false, true)] {
                    let mut want = vec![0f32; n_out];
                    (t.linear)(&x, wt, Some(Weights::F32(&b)), si, so, &mut want);
                    for &par in &hooks {
                        let mut got = vec![f32::NAN; n_out];
                        parallel::linear(t, par, &x, wt, Some(Weights::F32(&b)), si, so, &mut got);
                        let same = want
                            .iter()
                            .zip(&got)
                            .all(|(p, q)| p.to_bits() == q.to_bits());
                        assert!(same, "linear {n_in}->{n_out} tier {name} {par:?}");
                    }
                }
            }
        }
    }
    assert!(split_seen, "no group norm was large enough to be split");
}

/// Attention split by query tokens (`parallel::attention`, `parallel::attention_i8`) is bit-identical to one call,
/// f32 and int8 (int8 and f32 outputs), on token counts that are and are not multiples of the kernels' 32-query
/// blocks, with several heads, and below the split size.
#[test]
fn split_attention_is_bit_identical() {
    use ember_kernels::generic::AttentionGeom;
    let hooks: [&'static dyn Parallel; 4] = [
        ThreadPool::leak(2),
        ThreadPool::leak(3),
        ThreadPool::leak(8),
        Box::leak(Box::new(Reverse {
            n: 5,
            lend: &[],
            scratch: Mutex::new(Vec::new()),
        })),
    ];
    let mut r = Lcg(23);
    // (heads, head_dim, tokens): cifar's 16×16 block, the student's 8×8 one, odd counts, one below the split size.
    let shapes = [
        (1, 256, 256),
        (1, 64, 64),
        (2, 32, 100),
        (4, 16, 200),
        (1, 48, 161),
        (1, 8, 40),
    ];
    let mut split_seen = false;
    for name in all_tiers() {
        let Some(t) = tier(name) else { continue };
        for &(heads, d, n) in &shapes {
            let g = AttentionGeom {
                heads,
                head_dim: d,
                n,
            };
            let len = heads * d * n;
            let (q, k, v): (Vec<f32>, Vec<f32>, Vec<f32>) = (
                (0..len).map(|_| 1.5 * r.f()).collect(),
                (0..len).map(|_| 1.5 * r.f()).collect(),
                (0..len).map(|_| r.f()).collect(),
            );
            let (qq, kq, vq): (Vec<i8>, Vec<i8>, Vec<i8>) = (
                (0..len).map(|_| r.i8()).collect(),
                (0..len).map(|_| r.i8()).collect(),
                (0..len).map(|_| r.i8()).collect(),
            );
            let (sq, sk, sv, so) = (0.02, 0.03, 0.01, 0.004);
            let mut scores = vec![0f32; n];
            let mut want = vec![0f32; len];
            (t.attention)(&g, &q, &k, &v, &mut scores, &mut want);
            let mut want_q = vec![0i8; len];
            let out = QOut::I8 {
                data: &mut want_q,
                scale: so,
            };
            (t.attention_i8)(&g, &qq, sq, &kq, sk, &vq, sv, &mut scores, out);
            let mut want_qf = vec![0f32; len];
            let out = QOut::F32(&mut want_qf);
            (t.attention_i8)(&g, &qq, sq, &kq, sk, &vq, sv, &mut scores, out);
            for &par in &hooks {
                let mut got = vec![f32::NAN; len];
                parallel::attention(t, par, &g, &q, &k, &v, &mut scores, &mut got);
                let same = want
                    .iter()
                    .zip(&got)
                    .all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(
                    same,
                    "attention {heads}x{d}, {n} tokens, tier {name} {par:?}"
                );
                let mut got_q = vec![0x55i8; len];
                let out = QOut::I8 {
                    data: &mut got_q,
                    scale: so,
                };
                parallel::attention_i8(t, par, &g, &qq, sq, &kq, sk, &vq, sv, &mut scores, out);
                assert_eq!(
                    want_q, got_q,
                    "int8 attention {heads}x{d}, {n} tokens, tier {name} {par:?}"
                );
                let mut got_qf = vec![f32::NAN; len];
                let out = QOut::F32(&mut got_qf);
                parallel::attention_i8(t, par, &g, &qq, sq, &kq, sk, &vq, sv, &mut scores, out);
                let same = want_qf
                    .iter()
                    .zip(&got_qf)
                    .all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(
                    same,
                    "int8 attention, f32 out, {heads}x{d}, {n} tokens, tier {name} {par:?}"
                );
            }
            split_seen |= t.attention_rows.is_some()
                && t.attention_i8_rows.is_some()
                && n >= 64
                && 2 * heads * d * n * n >= parallel::MIN_SPLIT_MACS as usize;
        }
    }
    if !split_seen {
        eprintln!("SKIPPED (split part): no kernel tier this CPU runs splits attention by queries");
    }
}
