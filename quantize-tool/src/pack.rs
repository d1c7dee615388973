//! `convert --pack FAMILY`: the PACKED section, every convolution's weights re-laid out offline in a kernel
//! family's tile layout (`ember_kernels::pack`, `docs/FORMAT.md`): int8 convolutions in the family's int8 layout,
//! float ones in its float layout (each only where the family's kernel takes the layer).
//!
//! The section is built from the finished blob as the runtime parses it, so the geometry and the input split
//! each entry records are exactly what the runtime will see; the kernel checks both before it uses the bytes.

use ember_core::format::{NONE, PACKED_ENTRY_WORDS};
use ember_core::op::Op;
use ember_core::Model;
use ember_kernels::{pack, Weights};

use crate::error::ConvertError;

/// Alignment of the PACKED section and of every entry in it (the format asks for 16): a cache line, so the packed
/// weights' 64-byte vectors never straddle two lines when the blob itself is loaded 64-aligned.
pub const PACK_ALIGN: usize = 64;

/// What one PACKED entry holds and how to fill it.
#[derive(Clone, Copy)]
enum Layout {
    /// int8 weights in the family's int8 layout.
    Int8,
    /// float weights in the family's float layout.
    Float,
}

/// One entry to pack: family, op, input split, layout, geometry, weights, packed length.
struct Job<'m> {
    fam: u32,
    op: u32,
    split: usize,
    layout: Layout,
    g: ember_kernels::Conv2dGeom,
    wt: Weights<'m>,
    len: usize,
}

impl Job<'_> {
    /// Pack into `out` (exactly `len` bytes); false if the weights are shorter than the shape.
    fn fill(&self, out: &mut [u8]) -> bool {
        match (self.layout, self.wt) {
            (Layout::Int8, Weights::I8 { data, .. }) => {
                pack::int8_pack(self.fam, &self.g, self.split, data, out)
            }
            (Layout::Float, wt) => pack::float_pack(self.fam, &self.g, wt, out),
            _ => false,
        }
    }
}

/// The PACKED section payload for `families` (deduplicated), or `None` if the model has no convolution to pack.
/// The entries are laid out first and then packed in place, in parallel over the machine's cores (the host
/// runner packs a blob at load with this).
pub fn section(m: &Model<'_>, families: &[u32]) -> Result<Option<Vec<u8>>, ConvertError> {
    let mut fams = families.to_vec();
    fams.sort_unstable();
    fams.dedup();
    let mut jobs: Vec<Job<'_>> = Vec::new();
    for &fam in &fams {
        if pack::family_name(fam).is_none() {
            return Err(ConvertError::Pack {
                msg: format!("unknown packing family {fam}"),
            });
        }
        for i in 0..m.n_ops() {
            let op = m.op(i).map_err(|err| ConvertError::Invalid { err })?;
            let (
                Op::Conv2d {
                    input,
                    weight,
                    scratch,
                    ..
                },
                Some(g),
            ) = (op, op.conv_geom())
            else {
                continue;
            };
            let Some(wt) = m.weights(weight) else {
                continue;
            };
            // The runtime's split (`Model::act_q`): the input buffer's split in elements over its plane.
            let e = m
                .buffer(input)
                .map_err(|err| ConvertError::Invalid { err })?;
            let plane = g.h * g.w;
            let split = if e.split != 0 && plane != 0 {
                (e.split as usize / plane).min(g.cin)
            } else {
                g.cin
            };
            let (layout, len) = match (fam, wt) {
                // int8 convolution (the runtime's int8 path: int8 weights and a scratch buffer).
                // int8 convolution (the runtime's int8 path: int8 weights and a scratch buffer), where the family's
                // kernel takes it.
                (_, Weights::I8 { .. }) if scratch != NONE => {
                    let Some(len) = pack::int8_len(fam, &g, split) else {
                        continue;
                    };
                    (Layout::Int8, len)
                }
                // Float convolution (f32 or f16 weights, f32 math), where the family's kernel takes it.
                (_, Weights::F32(_) | Weights::F16(_)) if scratch == NONE => {
                    let Some(len) = pack::float_len(fam, &g) else {
                        continue;
                    };
                    (Layout::Float, len)
                }
                _ => continue,
            };
            jobs.push(Job {
                fam,
                op: i,
                split,
                layout,
                g,
                wt,
                len,
            });
        }
    }
    if jobs.is_empty() {
        return Ok(None);
    }
    let too_large = || ConvertError::TooLarge {
        what: "packed weights".into(),
    };
    // Table: entry count, then `[family, op, split, offset, len, 0]` per entry; every entry 64-aligned after it.
    let table_end = 4 + jobs.len() * PACKED_ENTRY_WORDS * 4;
    let mut offs = Vec::with_capacity(jobs.len());
    let mut off = table_end.next_multiple_of(PACK_ALIGN);
    for j in &jobs {
        offs.push(off);
        off = (off + j.len).next_multiple_of(PACK_ALIGN);
    }
    let mut out = vec![0u8; off];
    out[..4].copy_from_slice(&(jobs.len() as u32).to_le_bytes());
    for (k, (j, &o)) in jobs.iter().zip(&offs).enumerate() {
        let len = u32::try_from(j.len).map_err(|_| too_large())?;
        let o = u32::try_from(o).map_err(|_| too_large())?;
        let at = 4 + k * PACKED_ENTRY_WORDS * 4;
        for (w, wd) in [j.fam, j.op, j.split as u32, o, len, 0]
            .into_iter()
            .enumerate()
        {
            out[at + 4 * w..at + 4 * w + 4].copy_from_slice(&wd.to_le_bytes());
        }
    }
    // Hand every job its own slice of the payload, largest first, to a few threads.
    let mut rest = &mut out[..];
    let mut pos = 0;
    let mut work: Vec<(&Job<'_>, &mut [u8])> = Vec::with_capacity(jobs.len());
    for (j, &o) in jobs.iter().zip(&offs) {
        let (_, tail) = std::mem::take(&mut rest).split_at_mut(o - pos);
        let (mine, tail) = tail.split_at_mut(j.len);
        work.push((j, mine));
        rest = tail;
        pos = o + j.len;
    }
    work.sort_by_key(|w| w.0.len); // popped from the end: largest first
    let queue = std::sync::Mutex::new(work);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(8));
    let failed: Vec<u32> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut bad = Vec::new();
                    loop {
                        // A poisoned lock only means another worker panicked; the queue itself is intact.
                        let next = queue.lock().unwrap_or_else(|p| p.into_inner()).pop();
                        let Some((j, buf)) = next else { break };
                        if !j.fill(buf) {
                            bad.push(j.op);
                        }
                    }
                    bad
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap_or_else(|_| vec![u32::MAX]))
            .collect()
    });
    if let Some(&op) = failed.iter().min() {
        return Err(ConvertError::Pack {
            msg: format!("op {op}: weights shorter than the convolution's shape"),
        });
    }
    Ok(Some(out))
}
