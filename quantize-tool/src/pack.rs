//! `convert --pack FAMILY`: the PACKED section, every convolution's weights re-laid out offline in a kernel
//! family's tile layout (`ember_kernels::pack`, `docs/FORMAT.md`): int8 convolutions in the family's int8 layout,
//! float ones in its float layout.
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

/// The PACKED section payload for `families` (deduplicated), or `None` if the model has no convolution to pack.
pub fn section(m: &Model<'_>, families: &[u32]) -> Result<Option<Vec<u8>>, ConvertError> {
    let mut fams = families.to_vec();
    fams.sort_unstable();
    fams.dedup();
    // (family, op, split, bytes)
    let mut packs: Vec<(u32, u32, u32, Vec<u8>)> = Vec::new();
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
            let short = || ConvertError::Pack {
                msg: format!("op {i}: weights shorter than the convolution's shape"),
            };
            let bytes = match (fam, wt) {
                // int8 convolution (the runtime's int8 path: int8 weights and a scratch buffer).
                (pack::X86_AVX512, Weights::I8 { data, .. }) if scratch != NONE => {
                    let mut b = vec![0u8; pack::vnni8_len(&g, split)];
                    if !pack::vnni8_pack(&g, split, data, &mut b) {
                        return Err(short());
                    }
                    b
                }
                (pack::AARCH64_NEON, Weights::I8 { data, .. }) if scratch != NONE => {
                    let mut b = vec![0u8; pack::neon4_len(&g, split)];
                    if !pack::neon4_pack(&g, split, data, &mut b) {
                        return Err(short());
                    }
                    b
                }
                // Float convolution (f32 or f16 weights, f32 math), where the family's kernel takes it.
                (_, Weights::F32(_) | Weights::F16(_)) if scratch == NONE => {
                    let Some(len) = pack::float_len(fam, &g) else {
                        continue;
                    };
                    let mut b = vec![0u8; len];
                    if !pack::float_pack(fam, &g, wt, &mut b) {
                        return Err(short());
                    }
                    b
                }
                _ => continue,
            };
            packs.push((fam, i, split as u32, bytes));
        }
    }
    if packs.is_empty() {
        return Ok(None);
    }
    let table_end = 4 + packs.len() * PACKED_ENTRY_WORDS * 4;
    let mut off = table_end.next_multiple_of(PACK_ALIGN);
    let mut out =
        Vec::with_capacity(off + packs.iter().map(|p| p.3.len() + PACK_ALIGN).sum::<usize>());
    out.extend_from_slice(&(packs.len() as u32).to_le_bytes());
    for (fam, op, split, bytes) in &packs {
        let len = u32::try_from(bytes.len()).map_err(|_| ConvertError::TooLarge {
            what: "packed weights".into(),
        })?;
        let o = u32::try_from(off).map_err(|_| ConvertError::TooLarge {
            what: "packed weights".into(),
        })?;
        for wd in [*fam, *op, *split, o, len, 0] {
            out.extend_from_slice(&wd.to_le_bytes());
        }
        off = (off + bytes.len()).next_multiple_of(PACK_ALIGN);
    }
    for (_, _, _, bytes) in &packs {
        out.resize(out.len().next_multiple_of(PACK_ALIGN), 0);
        out.extend_from_slice(bytes);
    }
    Ok(Some(out))
}
