//! Splitting convolution work across cores.
//!
//! [`Parallel`] is the hook: anything that can run one job on `workers()` cores at once. With the `std` feature,
//! [`ThreadPool`] implements it with persistent OS threads (edge Linux boards: 4 cores). Without `std`, firmware on
//! a dual-core MCU implements it itself: `run` starts the job on the second core (e.g. through a mailbox or an
//! inter-processor interrupt), runs worker 0 on the calling core and returns once both are done.
//!
//! [`conv2d`] and [`conv2d_i8`] split a convolution by output channels: each worker computes a contiguous block of
//! channels with the tier's own kernel, reading the shared input and writing its own slice of the output, so the
//! result is bit-identical to a one-core call (every output element is summed in the same order). [`group_norm`]
//! and [`group_norm_i8`] split by whole groups, [`linear`] by output rows, the same way (on cifar-size models these
//! were a tenth of the 2-thread time while they ran on one core). Winograd layers with enough rows are split by
//! rows of output tiles instead ([`RowsOut`], `KernelTable::conv2d_packed_rows`), so each worker transforms only
//! the part of the input its rows need. [`attention`] and [`attention_i8`] split by query tokens (every query's
//! softmax is its own), on tiers with a kernel for a range of queries. The int8
//! kernel's `i32` scratch belongs to one call, so worker 0 uses the caller's and the others ask
//! [`Parallel::scratch`] for their own.

#![allow(unsafe_code)] // Slots/Mailbox hand per-worker data across threads, RowsOut disjoint rows of one output; ThreadPool erases a lifetime. Each states why.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, Ordering};

use crate::quant::{ActQ, QOut};
use crate::registry::KernelTable;
use crate::{Conv2dGeom, Weights};

/// Most workers a split uses (more are ignored).
pub const MAX_WORKERS: usize = 8;

/// Convolutions below this many multiply-accumulates run on the calling core alone: waking another core costs a few
/// microseconds, more than a small layer takes.
pub const MIN_SPLIT_MACS: u64 = 1 << 20;

/// A way to run one job on several cores at once.
///
/// # Contract
/// `run(job)` calls `job(w)` exactly once for every `w` in `0..workers()`, concurrently or not, and returns only
/// after every call has returned. `scratch(w, n, f)` calls `f` with an `i32` buffer of at least `n` elements that
/// only worker `w` uses during the current `run` (return `false` without calling `f` if there is none that large;
/// the worker then computes its share with [`conv2d_i8`]'s fallback, see there).
pub trait Parallel: Sync + core::fmt::Debug {
    /// Number of workers, the calling core included (at least 1).
    fn workers(&self) -> usize;
    /// Run `job(w)` for every worker index `w`, and return when all have finished.
    fn run(&self, job: &(dyn Fn(usize) + Sync));
    /// Lend worker `w` (`w ≥ 1`, called from inside its job) a private `i32` buffer of at least `n` elements.
    fn scratch(&self, w: usize, n: usize, f: &mut dyn FnMut(&mut [i32])) -> bool;
}

/// One value per worker, each taken at most once, from any thread.
struct Slots<T, const N: usize> {
    taken: [AtomicBool; N],
    cells: [UnsafeCell<Option<T>>; N],
}

// SAFETY: a cell is only read by the one caller that flips its `taken` flag from false to true (an atomic swap, so
// exactly one thread wins), which then moves the value out; no two threads ever access the same cell, and `T: Send`
// lets the value move to the winning thread.
unsafe impl<T: Send, const N: usize> Sync for Slots<T, N> {}

impl<T, const N: usize> Slots<T, N> {
    fn new(mut f: impl FnMut(usize) -> Option<T>) -> Self {
        Slots {
            taken: core::array::from_fn(|_| AtomicBool::new(false)),
            cells: core::array::from_fn(|i| UnsafeCell::new(f(i))),
        }
    }

    fn take(&self, i: usize) -> Option<T> {
        let flag = self.taken.get(i)?;
        if flag.swap(true, Ordering::AcqRel) {
            return None;
        }
        let cell = self.cells.get(i)?;
        // SAFETY: the swap above returned `false`, so this is the only access to cell `i` there will ever be
        // (see the `Sync` impl); no reference to its contents exists elsewhere.
        unsafe { (*cell.get()).take() }
    }
}

/// Channel ranges of a split of `cout` channels over `workers`, in multiples of 4 channels (the register tiles of
/// the SIMD tiers) where possible: `(start, end)` per worker, empty ranges for the unlucky ones.
fn channel_blocks(cout: usize, workers: usize, gran: usize) -> [(usize, usize); MAX_WORKERS] {
    let mut r = [(0usize, 0usize); MAX_WORKERS];
    let n = workers.clamp(1, MAX_WORKERS);
    let gran = gran.max(1);
    let quads = cout.div_ceil(gran);
    let mut start = 0usize;
    for (w, slot) in r.iter_mut().enumerate().take(n) {
        let q_end = quads * (w + 1) / n;
        let end = (q_end * gran).min(cout);
        *slot = (start, end.max(start));
        start = end.max(start);
    }
    r
}

/// Bytes per block of `n` output channels when a layer of `cout` channels packs into `len` bytes (0 if `n` is 0).
/// Checked forms throughout: the firmware's panic-site list has no division by zero here.
fn packed_block_bytes(len: usize, cout: usize, n: usize) -> usize {
    (cout + n.saturating_sub(1))
        .checked_div(n)
        .and_then(|blocks| len.checked_div(blocks))
        .unwrap_or(0)
}

/// The packed bytes of output channels `[a, b)` (`a` a multiple of `n`), `pblock` bytes per block of `n`.
fn packed_range(p: &[u8], a: usize, b: usize, n: usize, pblock: usize) -> Option<&[u8]> {
    let lo = a.checked_div(n)? * pblock;
    let hi = (b + n.saturating_sub(1)).checked_div(n)? * pblock;
    p.get(lo..hi)
}

/// The elements `[lo, hi)` of a weight view (for I8, with the matching scales; `per` is the elements per scale).
fn sub_weights<'a>(w: Weights<'a>, lo: usize, hi: usize) -> Weights<'a> {
    match w {
        Weights::F32(s) => Weights::F32(s.get(lo..hi).unwrap_or(&[])),
        Weights::F16(s) => Weights::F16(s.get(lo..hi).unwrap_or(&[])),
        Weights::I8 { data, scale, per } => {
            let (c0, c1) = match per {
                0 => (0, 0),
                p => (lo / p, hi.div_ceil(p)),
            };
            Weights::I8 {
                data: data.get(lo..hi).unwrap_or(&[]),
                scale: scale.get(c0..c1).unwrap_or(&[]),
                per,
            }
        }
    }
}

/// The float convolution `table.conv2d` split over `par`'s workers by output channels (one core below
/// [`MIN_SPLIT_MACS`], or when `par` has one worker). Bit-identical to `(table.conv2d)(g, input, w, bias, out)`.
#[allow(clippy::too_many_arguments)]
pub fn conv2d(
    table: &KernelTable,
    par: &dyn Parallel,
    g: &Conv2dGeom,
    input: &[f32],
    w: Weights<'_>,
    packed: Option<&[u8]>,
    bias: Option<Weights<'_>>,
    out: &mut [f32],
) {
    // Packed weights go to the tier's packed kernel, in whole blocks of the family's channel count.
    let packed = match (packed, table.conv2d_packed) {
        (Some(p), Some((fam, f))) => Some((p, f, crate::pack::block_channels(fam))),
        _ => None,
    };
    let call = |g: &Conv2dGeom,
                wt: Weights<'_>,
                pw: Option<&[u8]>,
                bs: Option<Weights<'_>>,
                o: &mut [f32]| match (packed, pw) {
        (Some((_, f, _)), Some(pw)) => f(g, input, wt, pw, bs, o),
        _ => (table.conv2d)(g, input, wt, bs, o),
    };
    let workers = par.workers().min(MAX_WORKERS);
    if workers < 2 || g.macs() < MIN_SPLIT_MACS || g.cout < 8 {
        call(g, w, packed.map(|p| p.0), bias, out);
        return;
    }
    let plane = g.oh * g.ow;
    // Winograd layers with enough rows: split by rows of 2×2 tiles, so each worker transforms only the input its
    // rows need (split by channels, every worker transforms all of it).
    if let (Some((p, _, _)), Some(rows_fn)) = (packed, table.conv2d_packed_rows) {
        let th = g.oh.div_ceil(2);
        if crate::pack::winograd(g)
            && th >= MIN_TILE_ROWS_PER_WORKER * workers
            && out.len() >= g.cout * plane
        {
            let rows = channel_blocks(th, workers, 1).map(|(a, b)| (2 * a, 2 * b));
            let shape = (g.cout, g.oh, g.ow);
            if !run_rows(par, &rows, out, shape, &|o| rows_fn(g, input, p, bias, o)) {
                call(g, w, Some(p), bias, out);
            }
            return;
        }
    }
    let per_co = g.cin * g.k * g.k;
    let gran = packed.map_or(4, |p| p.2);
    let pblock = packed.map_or(0, |(p, _, n)| packed_block_bytes(p.len(), g.cout, n));
    let blocks = channel_blocks(g.cout, workers, gran);
    run_shares(par, &blocks, out, plane, &|a, b, o| {
        let sub = Conv2dGeom { cout: b - a, ..*g };
        let wt = sub_weights(w, a * per_co, b * per_co);
        let bs = bias.map(|bw| sub_weights(bw, a, b));
        let pw = packed.and_then(|(p, _, n)| packed_range(p, a, b, n, pblock));
        call(&sub, wt, pw, bs, o);
    });
}

/// The int8 convolution `table.conv2d_i8` (arguments as there) split over `par`'s workers by output channels.
/// Worker 0 uses `acc`; a worker that gets no scratch from [`Parallel::scratch`] leaves its channels to worker 0,
/// which computes them after its own (so the result is complete and bit-identical to one call either way).
#[allow(clippy::too_many_arguments)]
pub fn conv2d_i8(
    table: &KernelTable,
    par: &dyn Parallel,
    g: &Conv2dGeom,
    input: &[i8],
    in_q: ActQ,
    w: &[i8],
    packed: Option<&[u8]>,
    w_scale: &[f32],
    bias: Option<Weights<'_>>,
    chan_add: Option<&[f32]>,
    residual: Option<(&[i8], f32)>,
    div: f32,
    acc: &mut [i32],
    out: QOut<'_>,
) {
    // Packed weights go to the tier's packed kernel, in whole blocks of the family's channel count.
    let packed = match (packed, table.conv2d_i8_packed) {
        (Some(p), Some((fam, f))) => Some((p, f, crate::pack::block_channels(fam))),
        _ => None,
    };
    let call = |g: &Conv2dGeom,
                ws: &[i8],
                pw: Option<&[u8]>,
                ss: &[f32],
                bs: Option<Weights<'_>>,
                ca: Option<&[f32]>,
                rs: Option<(&[i8], f32)>,
                acc: &mut [i32],
                o: QOut<'_>| {
        match (packed, pw) {
            (Some((_, f, _)), Some(pw)) => f(g, input, in_q, ws, pw, ss, bs, ca, rs, div, acc, o),
            _ => (table.conv2d_i8)(g, input, in_q, ws, ss, bs, ca, rs, div, acc, o),
        }
    };
    let workers = par.workers().min(MAX_WORKERS);
    if workers < 2 || g.macs() < MIN_SPLIT_MACS || g.cout < 8 {
        call(
            g,
            w,
            packed.map(|p| p.0),
            w_scale,
            bias,
            chan_add,
            residual,
            acc,
            out,
        );
        return;
    }
    let plane = g.oh * g.ow;
    let per_co = g.cin * g.k * g.k;
    let gran = packed.map_or(4, |p| p.2);
    // Bytes per channel block of the packed layout (whole layer / blocks).
    let pblock = packed.map_or(0, |(p, _, n)| packed_block_bytes(p.len(), g.cout, n));
    let blocks = channel_blocks(g.cout, workers, gran);
    // The output split into per-worker chunks (same dtype as `out`).
    enum Chunk<'o> {
        I8(&'o mut [i8], f32),
        F32(&'o mut [f32]),
    }
    let chunks: Slots<Chunk<'_>, MAX_WORKERS> = match out {
        QOut::I8 { data, scale } => {
            let mut rest = data;
            Slots::new(|i| {
                let (a, b) = blocks[i];
                let n = ((b - a) * plane).min(rest.len());
                let (mine, tail) = core::mem::take(&mut rest).split_at_mut(n);
                rest = tail;
                Some(Chunk::I8(mine, scale))
            })
        }
        QOut::F32(data) => {
            let mut rest = data;
            Slots::new(|i| {
                let (a, b) = blocks[i];
                let n = ((b - a) * plane).min(rest.len());
                let (mine, tail) = core::mem::take(&mut rest).split_at_mut(n);
                rest = tail;
                Some(Chunk::F32(mine))
            })
        }
    };
    // Worker 0's scratch, and the chunks other workers could not compute (no scratch) for worker 0 to finish.
    let mut acc_once = Some(&mut *acc);
    let acc0 = Slots::<&mut [i32], 1>::new(|_| acc_once.take());
    let mut leftover: Mailbox<Chunk<'_>, MAX_WORKERS> = Mailbox::new();
    let need = crate::quant::conv2d_i8_scratch_len(g);
    let one = |(a, b): (usize, usize), o: Chunk<'_>, scratch: &mut [i32]| {
        if a == b {
            return;
        }
        let sub = Conv2dGeom { cout: b - a, ..*g };
        let ws = w.get(a * per_co..b * per_co).unwrap_or(&[]);
        let ss = w_scale.get(a..b).unwrap_or(&[]);
        let bs = bias.map(|bw| sub_weights(bw, a, b));
        let ca = chan_add.map(|c| c.get(a..b).unwrap_or(&[]));
        let rs = residual.map(|(r, s)| (r.get(a * plane..b * plane).unwrap_or(&[]), s));
        let o = match o {
            Chunk::I8(d, s) => QOut::I8 { data: d, scale: s },
            Chunk::F32(d) => QOut::F32(d),
        };
        let pw = packed.and_then(|(p, _, n)| packed_range(p, a, b, n, pblock));
        call(&sub, ws, pw, ss, bs, ca, rs, scratch, o);
    };
    {
        let leftover = &leftover;
        par.run(&|wk| {
            let Some(range) = blocks.get(wk).copied() else {
                return;
            };
            let Some(o) = chunks.take(wk) else { return };
            if wk == 0 {
                if let Some(s) = acc0.take(0) {
                    one(range, o, s);
                }
                return;
            }
            let mut o = Some(o);
            let ok = par.scratch(wk, need, &mut |s| {
                if let Some(o) = o.take() {
                    one(range, o, s);
                }
            });
            if let (false, Some(o)) = (ok, o) {
                leftover.put(wk, o);
            }
        });
    }
    // Worker 0's scratch is free again: compute what the others could not.
    for wk in 1..MAX_WORKERS {
        if let (Some(o), Some(range)) = (leftover.take(wk), blocks.get(wk).copied()) {
            one(range, o, acc);
        }
    }
}

/// One output `[channels][oh][ow]` that several workers write at the same time, each only the output rows
/// [`RowsOut::rows`] of every channel: the split of [`conv2d`] by rows (`T = f32`), and of [`attention`] /
/// [`attention_i8`] by query tokens (`oh` the token count, `ow` 1, so a worker's rows are its queries). Only this
/// module makes them, from the `&mut [T]` it holds for the whole run, with row ranges that do not overlap.
pub struct RowsOut<'a, T = f32> {
    ptr: *mut T,
    len: usize,
    ow: usize,
    oh: usize,
    rows: (usize, usize),
    _out: core::marker::PhantomData<&'a mut [T]>,
}

// SAFETY: a `RowsOut` stands for the rows `rows` of every channel of a slice that its maker borrows mutably for
// `'a`; the `RowsOut`s of one split have disjoint row ranges, so the worker that gets one writes memory no other
// thread touches. Its users write only there (the contract of `as_mut_ptr`); `T: Send` lets the values be written
// from the worker's thread.
unsafe impl<T: Send> Send for RowsOut<'_, T> {}

impl<T> core::fmt::Debug for RowsOut<'_, T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "RowsOut(rows {:?} of {}x{})",
            self.rows, self.oh, self.ow
        )
    }
}

impl<'a, T> RowsOut<'a, T> {
    /// The shares of `out` (`channels` × `oh` × `ow`, or `None` if `out` is shorter) for the row ranges `blocks`.
    fn split(
        out: &'a mut [T],
        channels: usize,
        oh: usize,
        ow: usize,
        blocks: &[(usize, usize); MAX_WORKERS],
    ) -> Option<Slots<RowsOut<'a, T>, MAX_WORKERS>> {
        let len = channels.checked_mul(oh)?.checked_mul(ow)?;
        if out.len() < len {
            return None;
        }
        let ptr = out.as_mut_ptr();
        Some(Slots::new(|i| {
            let (a, b) = blocks[i];
            Some(RowsOut {
                ptr,
                len,
                ow,
                oh,
                rows: (a.min(oh), b.min(oh)),
                _out: core::marker::PhantomData,
            })
        }))
    }

    /// The output rows `[start, end)` this worker writes, of every channel.
    pub fn rows(&self) -> (usize, usize) {
        self.rows
    }
    /// Elements of the whole output (every channel, every row).
    pub fn len(&self) -> usize {
        self.len
    }
    /// Whether the whole output is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Output height and width.
    pub fn shape(&self) -> (usize, usize) {
        (self.oh, self.ow)
    }
    /// The start of the whole output (channel 0, row 0). A kernel may write through it only elements
    /// `c · oh · ow + r · ow + x` with `r` in [`rows`](Self::rows), `x < ow` and the element below [`len`](Self::len).
    pub fn as_mut_ptr(&self) -> *mut T {
        self.ptr
    }
}

/// A worker's share of an int8 attention's output split by query tokens ([`attention_i8`]): int8 with its scale
/// (as [`QOut::I8`]), or `f32` (as [`QOut::F32`]).
#[derive(Clone, Copy, Debug)]
pub enum QRowsOut<'r, 'a> {
    /// Quantized with `scale`.
    I8 {
        /// This worker's tokens of the output.
        out: &'r RowsOut<'a, i8>,
        /// Output scale.
        scale: f32,
    },
    /// Float output.
    F32(&'r RowsOut<'a, f32>),
}

/// Where an int8 attention kernel writes: the start of a `[heads·head_dim][n]` int8 output with its scale, or of an
/// `f32` one, and the query tokens `rows` it may write of every channel. Made only from a `QOut` (all tokens) or a
/// [`QRowsOut`] (its worker's), after the length and shape checks of [`RawQOut::for_kernel`] / [`RawQOut::rows_for_kernel`].
// Used by the x86_64, aarch64 and 32-bit Arm attention kernels only.
#[cfg_attr(
    not(any(target_arch = "x86_64", target_arch = "aarch64", target_arch = "arm")),
    allow(dead_code)
)]
#[derive(Clone, Copy, Debug)]
pub(crate) struct RawQOut {
    /// The output and its element type (the scale for int8).
    pub(crate) out: RawQ,
    /// The query tokens `[start, end)` this call may write (`end <= n`).
    pub(crate) rows: (usize, usize),
}

/// The start of an int8 attention output: int8 with its scale, or `f32`.
// Used by the x86_64, aarch64 and 32-bit Arm attention kernels only.
#[cfg_attr(
    not(any(target_arch = "x86_64", target_arch = "aarch64", target_arch = "arm")),
    allow(dead_code)
)]
#[derive(Clone, Copy, Debug)]
pub(crate) enum RawQ {
    I8(*mut i8, f32),
    F32(*mut f32),
}

// Used by the x86_64, aarch64 and 32-bit Arm attention kernels only.
#[cfg_attr(
    not(any(target_arch = "x86_64", target_arch = "aarch64", target_arch = "arm")),
    allow(dead_code)
)]
impl RawQOut {
    /// The whole of `out` for a tier's own int8 attention kernel, after the checks every tier makes so that its
    /// result is generic's: the geometry `fits` the kernel, `q`, `k`, `v` and `out` hold `heads·head_dim·n` elements
    /// and `scores` (`scores_len`) at least `n`. Otherwise `out`, untouched, for the generic fallback (which
    /// writes the heads a short output holds, and nothing at all with a short score row).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn for_kernel<'o>(
        g: &crate::generic::AttentionGeom,
        q: &[i8],
        k: &[i8],
        v: &[i8],
        scores_len: usize,
        out: QOut<'o>,
        fits: bool,
    ) -> Result<RawQOut, QOut<'o>> {
        let Some(total) = g
            .heads
            .checked_mul(g.head_dim)
            .and_then(|x| x.checked_mul(g.n))
        else {
            return Err(out);
        };
        let out_len = out.len();
        if !fits
            || q.len() < total
            || k.len() < total
            || v.len() < total
            || out_len < total
            || scores_len < g.n
        {
            return Err(out);
        }
        let raw = match out {
            QOut::I8 { data, scale } => RawQ::I8(data.as_mut_ptr(), scale),
            QOut::F32(data) => RawQ::F32(data.as_mut_ptr()),
        };
        Ok(RawQOut {
            out: raw,
            rows: (0, g.n),
        })
    }

    /// A worker's tokens of `out` for a tier's own int8 attention kernel, if the geometry `fits` the kernel, `q`,
    /// `k` and `v` hold `heads·head_dim·n` elements and `out` is `[heads·head_dim][n][1]` of at least as many
    /// (the query-range twin of [`RawQOut::for_kernel`]; `None`: the caller returns false, nothing written).
    pub(crate) fn rows_for_kernel(
        g: &crate::generic::AttentionGeom,
        q: &[i8],
        k: &[i8],
        v: &[i8],
        out: QRowsOut<'_, '_>,
        fits: bool,
    ) -> Option<RawQOut> {
        let total = g.heads.checked_mul(g.head_dim)?.checked_mul(g.n)?;
        if !fits || q.len() < total || k.len() < total || v.len() < total {
            return None;
        }
        let (raw, len, shape, rows) = match out {
            QRowsOut::I8 { out, scale } => (
                RawQ::I8(out.as_mut_ptr(), scale),
                out.len(),
                out.shape(),
                out.rows(),
            ),
            QRowsOut::F32(out) => (
                RawQ::F32(out.as_mut_ptr()),
                out.len(),
                out.shape(),
                out.rows(),
            ),
        };
        (len >= total && shape == (g.n, 1) && rows.0 <= rows.1 && rows.1 <= g.n)
            .then_some(RawQOut { out: raw, rows })
    }
}

/// Run `f` on every worker whose row range in `blocks` is not empty, with its [`RowsOut`] of `out`
/// (`channels` × `oh` × `ow` in `shape`). False if `out` is shorter than that or a call returned false (the
/// caller then computes the whole output on one core).
fn run_rows<T: Send>(
    par: &dyn Parallel,
    blocks: &[(usize, usize); MAX_WORKERS],
    out: &mut [T],
    shape: (usize, usize, usize),
    f: &(dyn Fn(&RowsOut<'_, T>) -> bool + Sync),
) -> bool {
    let Some(shares) = RowsOut::split(out, shape.0, shape.1, shape.2, blocks) else {
        return false;
    };
    let failed = AtomicBool::new(false);
    par.run(&|wk| {
        if let Some(o) = shares.take(wk) {
            if o.rows.0 < o.rows.1 && !f(&o) {
                failed.store(true, Ordering::Relaxed);
            }
        }
    });
    !failed.load(Ordering::Relaxed)
}

/// Tile rows (pairs of output rows) per worker at least for [`conv2d`] to split a Winograd layer by rows.
const MIN_TILE_ROWS_PER_WORKER: usize = 4;

/// Group norms and linear layers below this many elements (input plus output for a group norm, weights for a
/// linear layer) run on the calling core alone.
pub const MIN_SPLIT_ELEMS: usize = 1 << 15;

/// Most channels of one worker's share of a split group norm: its FiLM scale and shift are gathered into a stack
/// buffer of twice this many floats (4 KiB, small enough for a second core's stack on an MCU).
const GN_MAX_SHARE: usize = 512;

/// `out` cut into the per-worker item ranges `blocks`, `per` elements per item: one chunk per worker.
fn chunks_of<'o, T>(
    out: &'o mut [T],
    blocks: &[(usize, usize); MAX_WORKERS],
    per: usize,
) -> Slots<&'o mut [T], MAX_WORKERS> {
    let mut rest = out;
    Slots::new(|i| {
        let (a, b) = blocks[i];
        let n = ((b - a) * per).min(rest.len());
        let (mine, tail) = core::mem::take(&mut rest).split_at_mut(n);
        rest = tail;
        Some(mine)
    })
}

/// Channel ranges of a group norm's split over `par`'s workers, whole groups each, or `None` where it runs on one
/// core (one worker, a small tensor, one group, a share over [`GN_MAX_SHARE`] channels, or arguments the kernel
/// would refuse).
fn gn_blocks(
    par: &dyn Parallel,
    c: usize,
    hw: usize,
    groups: usize,
    film: Option<&[f32]>,
    lens: (usize, usize),
) -> Option<([(usize, usize); MAX_WORKERS], usize)> {
    let workers = par.workers().min(MAX_WORKERS);
    let cpg = c.checked_div(groups)?;
    let n = c.checked_mul(hw)?;
    if workers < 2
        || groups < 2
        || cpg == 0
        || !c.is_multiple_of(groups)
        || 2 * n < MIN_SPLIT_ELEMS
        || lens.0 < n
        || lens.1 < n
        || film.is_some_and(|f| f.len() < 2 * c)
    {
        return None;
    }
    let blocks = channel_blocks(c, workers, cpg);
    blocks
        .iter()
        .all(|&(a, b)| b - a <= GN_MAX_SHARE)
        .then_some((blocks, cpg))
}

/// The FiLM scale and shift of channels `[a, b)` of a `c`-channel `[scale; shift]`, gathered into `buf`.
fn film_share<'b>(
    film: Option<&[f32]>,
    c: usize,
    a: usize,
    b: usize,
    buf: &'b mut [f32],
) -> Option<&'b [f32]> {
    let f = film?;
    let n = b - a;
    let (sc, sh) = (f.get(a..b)?, f.get(c + a..c + b)?);
    let dst = buf.get_mut(..2 * n)?;
    // Element copies, not `copy_from_slice`: no length-mismatch panic site for the firmware's list.
    for (d, v) in dst.iter_mut().zip(sc.iter().chain(sh)) {
        *d = *v;
    }
    Some(dst)
}

/// Run `f(start, end, share)` on every worker whose item range in `blocks` is not empty, `share` being its part of
/// `out` (`per` elements per item).
fn run_shares<T: Send>(
    par: &dyn Parallel,
    blocks: &[(usize, usize); MAX_WORKERS],
    out: &mut [T],
    per: usize,
    f: &(dyn Fn(usize, usize, &mut [T]) + Sync),
) {
    let chunks = chunks_of(out, blocks, per);
    par.run(&|wk| {
        if let (Some((a, b)), Some(o)) = (blocks.get(wk).copied(), chunks.take(wk)) {
            if a < b {
                f(a, b, o);
            }
        }
    });
}

/// The per-channel arguments of channels `[c0, c1)` of a group norm over `c` channels in groups of `cpg`:
/// groups, gamma, beta and the FiLM share (gathered into `buf`).
struct GnShare<'a, 'b> {
    groups: usize,
    gamma: Weights<'a>,
    beta: Weights<'a>,
    film: Option<&'b [f32]>,
}

#[allow(clippy::too_many_arguments)]
fn gn_share<'a, 'b>(
    gamma: Weights<'a>,
    beta: Weights<'a>,
    film: Option<&[f32]>,
    c: usize,
    cpg: usize,
    c0: usize,
    c1: usize,
    buf: &'b mut [f32],
) -> GnShare<'a, 'b> {
    GnShare {
        groups: (c1 - c0).checked_div(cpg).unwrap_or(0),
        gamma: sub_weights(gamma, c0, c1),
        beta: sub_weights(beta, c0, c1),
        film: film_share(film, c, c0, c1, buf),
    }
}

/// The float group norm `table.group_norm` split over `par`'s workers by whole groups (each worker normalizes a
/// contiguous block of channels). Bit-identical to `(table.group_norm)(a, input, out)`: every group's statistics
/// and outputs are computed from that group alone.
pub fn group_norm(
    table: &KernelTable,
    par: &dyn Parallel,
    a: &crate::generic::GroupNormArgs<'_>,
    input: &[f32],
    out: &mut [f32],
) {
    let lens = (input.len(), out.len());
    let Some((blocks, cpg)) = gn_blocks(par, a.c, a.hw, a.groups, a.scale_shift, lens) else {
        (table.group_norm)(a, input, out);
        return;
    };
    run_shares(par, &blocks, out, a.hw, &|c0, c1, o| {
        let mut buf = [0f32; 2 * GN_MAX_SHARE];
        let sh = gn_share(a.gamma, a.beta, a.scale_shift, a.c, cpg, c0, c1, &mut buf);
        let sub = crate::generic::GroupNormArgs {
            c: c1 - c0,
            groups: sh.groups,
            gamma: sh.gamma,
            beta: sh.beta,
            scale_shift: sh.film,
            ..*a
        };
        (table.group_norm)(&sub, input.get(c0 * a.hw..c1 * a.hw).unwrap_or(&[]), o);
    });
}

/// The int8 group norm `table.group_norm_i8` split over `par`'s workers by whole groups, as [`group_norm`];
/// bit-identical to one call.
pub fn group_norm_i8(
    table: &KernelTable,
    par: &dyn Parallel,
    a: &crate::quant::GroupNormI8Args<'_>,
    input: &[i8],
    out: &mut [i8],
) {
    let lens = (input.len(), out.len());
    let Some((blocks, cpg)) = gn_blocks(par, a.c, a.hw, a.groups, a.scale_shift, lens) else {
        (table.group_norm_i8)(a, input, out);
        return;
    };
    run_shares(par, &blocks, out, a.hw, &|c0, c1, o| {
        let mut buf = [0f32; 2 * GN_MAX_SHARE];
        let sh = gn_share(a.gamma, a.beta, a.scale_shift, a.c, cpg, c0, c1, &mut buf);
        let sub = crate::quant::GroupNormI8Args {
            c: c1 - c0,
            groups: sh.groups,
            gamma: sh.gamma,
            beta: sh.beta,
            scale_shift: sh.film,
            // The second input scale starts at channel `split` of the whole tensor.
            in_q: ActQ {
                split: a.in_q.split.saturating_sub(c0),
                ..a.in_q
            },
            ..*a
        };
        (table.group_norm_i8)(&sub, input.get(c0 * a.hw..c1 * a.hw).unwrap_or(&[]), o);
    });
}

/// The linear layer `table.linear` (arguments as there) split over `par`'s workers by output rows, 16 at a time.
/// Bit-identical to one call: every output is summed over the inputs in their order, whichever rows go together.
#[allow(clippy::too_many_arguments)]
pub fn linear(
    table: &KernelTable,
    par: &dyn Parallel,
    input: &[f32],
    w: Weights<'_>,
    bias: Option<Weights<'_>>,
    silu_in: bool,
    silu_out: bool,
    out: &mut [f32],
) {
    let (n_in, n_out) = (input.len(), out.len());
    let workers = par.workers().min(MAX_WORKERS);
    if workers < 2 || n_in.saturating_mul(n_out) < MIN_SPLIT_ELEMS || n_out < 32 {
        (table.linear)(input, w, bias, silu_in, silu_out, out);
        return;
    }
    let blocks = channel_blocks(n_out, workers, 16);
    run_shares(par, &blocks, out, 1, &|a, b, o| {
        let wt = sub_weights(w, a * n_in, b * n_in);
        let bs = bias.map(|bw| sub_weights(bw, a, b));
        (table.linear)(input, wt, bs, silu_in, silu_out, o);
    });
}

/// Query tokens per worker at least for [`attention`] and [`attention_i8`] to split (the SIMD kernels take 32 query
/// rows per block).
const MIN_TOKENS_PER_WORKER: usize = 32;

/// The query-token ranges of an attention's split over `par`'s workers, in blocks of 32 tokens, or `None` where it
/// runs on one core (one worker, fewer than 32 tokens per worker, or under [`MIN_SPLIT_MACS`]).
fn attention_blocks(
    par: &dyn Parallel,
    g: &crate::generic::AttentionGeom,
) -> Option<[(usize, usize); MAX_WORKERS]> {
    let workers = par.workers().min(MAX_WORKERS);
    let macs = (2 * g.heads as u64)
        .saturating_mul(g.head_dim as u64)
        .saturating_mul(g.n as u64)
        .saturating_mul(g.n as u64);
    (workers >= 2 && g.n >= MIN_TOKENS_PER_WORKER * workers && macs >= MIN_SPLIT_MACS)
        .then(|| channel_blocks(g.n, workers, MIN_TOKENS_PER_WORKER))
}

/// The float attention `table.attention` (arguments as there) split over `par`'s workers by query tokens, where
/// the tier has a kernel for a range of queries (`KernelTable::attention_rows`; otherwise one call). Bit-identical
/// to one call: each query's scores, softmax and weighted sums come from that query alone, in the same order
/// whichever queries share a block. Each worker's kernel keeps its own score scratch (on its stack).
#[allow(clippy::too_many_arguments)]
pub fn attention(
    table: &KernelTable,
    par: &dyn Parallel,
    g: &crate::generic::AttentionGeom,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    scores: &mut [f32],
    out: &mut [f32],
) {
    if let (Some(f), Some(blocks)) = (table.attention_rows, attention_blocks(par, g)) {
        let shape = (g.heads.saturating_mul(g.head_dim), g.n, 1);
        if run_rows(par, &blocks, out, shape, &|o| f(g, q, k, v, o)) {
            return;
        }
    }
    (table.attention)(g, q, k, v, scores, out);
}

/// The int8 attention `table.attention_i8` (arguments as there) split over `par`'s workers by query tokens, as
/// [`attention`] (`KernelTable::attention_i8_rows`); bit-identical to one call.
#[allow(clippy::too_many_arguments)]
pub fn attention_i8(
    table: &KernelTable,
    par: &dyn Parallel,
    g: &crate::generic::AttentionGeom,
    q: &[i8],
    sq: f32,
    k: &[i8],
    sk: f32,
    v: &[i8],
    sv: f32,
    scores: &mut [f32],
    mut out: QOut<'_>,
) {
    if let (Some(f), Some(blocks)) = (table.attention_i8_rows, attention_blocks(par, g)) {
        let shape = (g.heads.saturating_mul(g.head_dim), g.n, 1);
        let done = match &mut out {
            QOut::I8 { data, scale } => {
                let scale = *scale;
                run_rows(par, &blocks, data, shape, &|o| {
                    f(g, q, sq, k, sk, v, sv, QRowsOut::I8 { out: o, scale })
                })
            }
            QOut::F32(data) => run_rows(par, &blocks, data, shape, &|o| {
                f(g, q, sq, k, sk, v, sv, QRowsOut::F32(o))
            }),
        };
        if done {
            return;
        }
    }
    (table.attention_i8)(g, q, sq, k, sk, v, sv, scores, out);
}

/// One value per worker that any thread may deposit once (`put`), and that is read back only with exclusive
/// access (`take`, after the parallel region).
struct Mailbox<T, const N: usize> {
    full: [AtomicBool; N],
    cells: [UnsafeCell<Option<T>>; N],
}

// SAFETY: `put` writes cell `i` only after winning the atomic swap of `full[i]` (so at most one write per cell,
// ever), and cells are read only through `take(&mut self)`, i.e. after every shared borrow has ended; no access
// races. `T: Send` lets the value move between threads.
unsafe impl<T: Send, const N: usize> Sync for Mailbox<T, N> {}

impl<T, const N: usize> Mailbox<T, N> {
    fn new() -> Self {
        Mailbox {
            full: core::array::from_fn(|_| AtomicBool::new(false)),
            cells: core::array::from_fn(|_| UnsafeCell::new(None)),
        }
    }

    fn put(&self, i: usize, v: T) {
        let (Some(flag), Some(cell)) = (self.full.get(i), self.cells.get(i)) else {
            return;
        };
        if !flag.swap(true, Ordering::AcqRel) {
            // SAFETY: this thread won the swap of `full[i]`, so it is the only writer cell `i` will ever have, and
            // no reader exists while `self` is shared (`take` needs `&mut self`).
            unsafe { *cell.get() = Some(v) };
        }
    }

    fn take(&mut self, i: usize) -> Option<T> {
        self.cells.get_mut(i)?.get_mut().take()
    }
}

#[cfg(feature = "std")]
mod pool {
    use super::Parallel;
    use std::boxed::Box;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Condvar, Mutex};
    use std::thread;
    use std::vec::Vec;

    type Job = &'static (dyn Fn(usize) + Sync);

    struct State {
        /// Incremented for every job; workers run each generation once.
        generation: u64,
        job: Option<Job>,
        shutdown: bool,
    }

    struct Shared {
        state: Mutex<State>,
        start: Condvar,
        done: Condvar,
        /// Mirrors `state.generation` for the spin phase.
        gen_hint: AtomicUsize,
        /// Workers still running the current job: the caller spins on it before it sleeps on `done`, because a
        /// futex wake-up costs more than a group norm's half takes.
        pending: AtomicUsize,
    }

    /// A fixed set of worker threads that run [`Parallel`] jobs (`std` feature). `ThreadPool::new(1)` spawns none
    /// and runs everything on the caller.
    pub struct ThreadPool {
        shared: Arc<Shared>,
        threads: Vec<thread::JoinHandle<()>>,
        n: usize,
        /// Worker `w`'s scratch at index `w - 1`.
        scratch: Vec<Mutex<Vec<i32>>>,
        /// Serialises `run` calls from several threads.
        run_lock: Mutex<()>,
    }

    impl core::fmt::Debug for ThreadPool {
        fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
            write!(f, "ThreadPool({} workers)", self.n)
        }
    }

    impl ThreadPool {
        /// A pool of `n` workers (the caller counts as one, so `n - 1` threads are spawned; `n` is clamped to
        /// `1..=MAX_WORKERS`).
        pub fn new(n: usize) -> ThreadPool {
            let n = n.clamp(1, super::MAX_WORKERS);
            let shared = Arc::new(Shared {
                state: Mutex::new(State {
                    generation: 0,
                    job: None,
                    shutdown: false,
                }),
                start: Condvar::new(),
                done: Condvar::new(),
                gen_hint: AtomicUsize::new(0),
                pending: AtomicUsize::new(0),
            });
            // A thread the OS refuses to start just means fewer workers.
            let mut threads = Vec::new();
            for w in 1..n {
                let s = Arc::clone(&shared);
                match thread::Builder::new()
                    .name(std::format!("ember-worker-{w}"))
                    .spawn(move || worker(&s, w))
                {
                    Ok(t) => threads.push(t),
                    Err(_) => break,
                }
            }
            let n = threads.len() + 1;
            ThreadPool {
                shared,
                threads,
                n,
                scratch: (1..n).map(|_| Mutex::new(Vec::new())).collect(),
                run_lock: Mutex::new(()),
            }
        }

        /// A pool with one worker per available core (`std::thread::available_parallelism`).
        pub fn with_available_cores() -> ThreadPool {
            ThreadPool::new(thread::available_parallelism().map_or(1, |n| n.get()))
        }

        /// A pool that lives for the rest of the program (e.g. to hand to a `Session` as `&'static dyn
        /// Parallel`).
        pub fn leak(n: usize) -> &'static ThreadPool {
            Box::leak(Box::new(ThreadPool::new(n)))
        }
    }

    fn worker(s: &Shared, w: usize) {
        let mut seen = 0u64;
        loop {
            // Spin briefly: jobs come in bursts (one per convolution), and waking from a condvar costs more than
            // a small layer takes.
            for _ in 0..20_000 {
                if s.gen_hint.load(Ordering::Acquire) as u64 != seen {
                    break;
                }
                core::hint::spin_loop();
            }
            let job = {
                let mut st = s.state.lock().unwrap_or_else(|e| e.into_inner());
                while st.generation == seen && !st.shutdown {
                    st = s.start.wait(st).unwrap_or_else(|e| e.into_inner());
                }
                if st.shutdown {
                    return;
                }
                seen = st.generation;
                st.job
            };
            if let Some(job) = job {
                job(w);
            }
            // The last worker out wakes the caller if it went to sleep; the decrement comes first and the notify
            // under the lock, so a caller that saw `pending > 0` under the lock is waiting when it comes.
            if s.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
                let _st = s.state.lock().unwrap_or_else(|e| e.into_inner());
                s.done.notify_all();
            }
        }
    }

    impl Parallel for ThreadPool {
        fn workers(&self) -> usize {
            self.n
        }

        fn run(&self, job: &(dyn Fn(usize) + Sync)) {
            if self.n == 1 {
                job(0);
                return;
            }
            let _one_at_a_time = self.run_lock.lock().unwrap_or_else(|e| e.into_inner());
            // SAFETY: the `'static` lifetime is a lie told only to the workers, and never observed: a worker
            // decrements `pending` only after its call of `job` has returned and never touches the reference again
            // for this generation, and this function does not return before `pending == 0` (and it clears
            // `st.job` first), so no use of the reference outlives the borrow `job`.
            let job_static: Job =
                unsafe { core::mem::transmute::<&(dyn Fn(usize) + Sync), Job>(job) };
            {
                let mut st = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
                st.generation += 1;
                st.job = Some(job_static);
                self.shared.pending.store(self.n - 1, Ordering::Release);
                self.shared
                    .gen_hint
                    .store(st.generation as usize, Ordering::Release);
                self.shared.start.notify_all();
            }
            job(0);
            for _ in 0..100_000 {
                if self.shared.pending.load(Ordering::Acquire) == 0 {
                    break;
                }
                core::hint::spin_loop();
            }
            let mut st = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
            while self.shared.pending.load(Ordering::Acquire) > 0 {
                st = self.shared.done.wait(st).unwrap_or_else(|e| e.into_inner());
            }
            st.job = None;
        }

        fn scratch(&self, w: usize, n: usize, f: &mut dyn FnMut(&mut [i32])) -> bool {
            let Some(m) = w.checked_sub(1).and_then(|i| self.scratch.get(i)) else {
                return false;
            };
            let mut v = m.lock().unwrap_or_else(|e| e.into_inner());
            if v.len() < n {
                v.resize(n, 0);
            }
            f(&mut v[..n]);
            true
        }
    }

    impl Drop for ThreadPool {
        fn drop(&mut self) {
            {
                let mut st = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
                st.shutdown = true;
                self.shared.start.notify_all();
            }
            for t in self.threads.drain(..) {
                let _ = t.join();
            }
        }
    }
}

#[cfg(feature = "std")]
pub use pool::ThreadPool;

/// Runs every job on the calling core: the one-worker [`Parallel`] (what a session uses when given none).
#[derive(Clone, Copy, Debug, Default)]
pub struct Serial;

impl Parallel for Serial {
    fn workers(&self) -> usize {
        1
    }
    fn run(&self, job: &(dyn Fn(usize) + Sync)) {
        job(0);
    }
    fn scratch(&self, _w: usize, _n: usize, _f: &mut dyn FnMut(&mut [i32])) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_cover_every_channel_once() {
        for cout in 0..70 {
            for w in 1..=MAX_WORKERS {
                let b = channel_blocks(cout, w, 4);
                let mut next = 0;
                for &(a, e) in b.iter().take(w) {
                    assert_eq!(a, next, "cout {cout} workers {w}: {b:?}");
                    assert!(e >= a);
                    next = e;
                }
                assert_eq!(next, cout, "cout {cout} workers {w}: {b:?}");
                assert!(b.iter().skip(w).all(|&(a, e)| a == e));
            }
        }
    }
}
