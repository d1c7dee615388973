//! Serializing a planned graph into a `.ember` blob (layout in `docs/FORMAT.md`), and writing files atomically.

use std::io::Write;
use std::path::Path;

use ember_core::format::*;
use ember_core::{ModelInfo, ScheduleInfo};
use half::f16;

use crate::error::ConvertError;
use crate::lower::Graph;
use crate::plan::Plan;

/// Storage dtype of the weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightDtype {
    /// 32-bit floats.
    F32,
    /// Half floats (math stays f32).
    F16,
    /// int8 with per-channel scales where the graph says so (`NamedTensor::store`), half floats elsewhere.
    I8,
}

fn pad_to(v: &mut Vec<u8>, align: usize) {
    while !v.len().is_multiple_of(align) {
        v.push(0);
    }
}

fn too_large(what: &str) -> ConvertError {
    ConvertError::TooLarge {
        what: what.to_string(),
    }
}

/// Everything the writer needs besides the graph.
#[derive(Clone, Copy, Debug)]
pub struct BlobMeta<'t> {
    /// Model description (buffers/arena fields are filled in by the writer).
    pub info: ModelInfo,
    /// Schedule, when the checkpoint had one.
    pub schedule: Option<ScheduleInfo>,
    /// Weight storage.
    pub dtype: WeightDtype,
    /// Explicit inference timesteps, if any.
    pub timesteps: Option<&'t [u32]>,
    /// Explicit betas, if any.
    pub betas: Option<&'t [f32]>,
    /// Boot self-test record (SELF_TEST section, marked optional), if any.
    pub self_test: Option<[u32; 8]>,
    /// PACKED section payload (weights packed offline per kernel family, marked optional), if any.
    pub packed: Option<&'t [u8]>,
}

/// Serialize `g` with memory plan `p`.
pub fn to_blob(g: &Graph, p: &Plan, meta: &BlobMeta<'_>) -> Result<Vec<u8>, ConvertError> {
    let mut info = meta.info;
    info.input_buffer = g.input;
    info.output_buffer = g.output;
    info.arena_bytes = u32::try_from(p.arena_bytes).map_err(|_| too_large("arena"))?;
    info.liveness_bytes = u32::try_from(p.liveness_bytes).map_err(|_| too_large("arena"))?;
    let params: u64 = g.tensors.iter().map(|t| t.tensor.data.len() as u64).sum();
    info.params = u32::try_from(params).map_err(|_| too_large("parameter count"))?;
    let macs: u64 = g.ops.iter().map(|o| o.macs()).sum();
    info.macs_lo = macs as u32;
    info.macs_hi = (macs >> 32) as u32;
    info.weight_dtype = match meta.dtype {
        WeightDtype::F32 => DType::F32 as u32,
        WeightDtype::F16 => DType::F16 as u32,
        WeightDtype::I8 => DType::I8 as u32,
    };

    // Small sections first.
    let model_sec: [u8; MODEL_WORDS * 4] = words_to_bytes(&info.to_words());
    let sched_sec: Option<[u8; SCHEDULE_WORDS * 4]> =
        meta.schedule.map(|s| words_to_bytes(&s.to_words()));
    let mut strings = Vec::new();
    let mut name_pos = Vec::new();
    for t in &g.tensors {
        name_pos.push((strings.len() as u32, t.name.len() as u32));
        strings.extend_from_slice(t.name.as_bytes());
    }
    let mut buffers = Vec::new();
    for (i, &n) in g.buffers.iter().enumerate() {
        buffers.extend_from_slice(
            &BufferEntry {
                offset: p.offsets[i],
                numel: n,
                dtype: g.dtype(i as u32),
                split: g.split(i as u32),
            }
            .encode(),
        );
    }
    let mut ops = Vec::new();
    for op in &g.ops {
        ops.extend_from_slice(&words_to_bytes::<OP_WORDS, OP_RECORD_LEN>(&op.encode()));
    }
    let ts_sec: Option<Vec<u8>> = meta
        .timesteps
        .map(|ts| ts.iter().flat_map(|t| t.to_le_bytes()).collect());
    let betas_sec: Option<Vec<u8>> = meta
        .betas
        .map(|b| b.iter().flat_map(|x| x.to_le_bytes()).collect());
    let quant_sec: Option<Vec<u8>> = g.quant.as_ref().map(|q| {
        let mut v = Vec::new();
        v.extend_from_slice(&(q.timesteps.len() as u32).to_le_bytes());
        v.extend_from_slice(&(g.buffers.len() as u32).to_le_bytes());
        q.timesteps
            .iter()
            .for_each(|t| v.extend_from_slice(&t.to_le_bytes()));
        for &(a, b) in &q.scales {
            v.extend_from_slice(&a.to_le_bytes());
            v.extend_from_slice(&b.to_le_bytes());
        }
        v
    });
    let st_sec: Option<[u8; 32]> = meta.self_test.map(|w| words_to_bytes(&w));
    let n_sections = 6
        + st_sec.is_some() as usize
        + meta.packed.is_some() as usize
        + sched_sec.is_some() as usize
        + ts_sec.is_some() as usize
        + betas_sec.is_some() as usize
        + quant_sec.is_some() as usize;
    let table_off = HEADER_LEN;
    let mut body_off = table_off + n_sections * SECTION_ENTRY_LEN;
    // Layout: model, schedule, tensors, buffers, ops, strings, data.
    let tensors_len = g.tensors.len() * TENSOR_ENTRY_LEN;
    let mut sections: Vec<(u32, usize, usize)> = Vec::new();
    let mut place = |kind: u32, len: usize, align: usize| {
        body_off = body_off.div_ceil(align) * align;
        sections.push((kind, body_off, len));
        body_off += len;
    };
    place(section::MODEL, model_sec.len(), 4);
    if let Some(s) = &sched_sec {
        place(section::SCHEDULE, s.len(), 4);
    }
    if let Some(t) = &ts_sec {
        place(section::TIMESTEPS, t.len(), 4);
    }
    if let Some(b) = &betas_sec {
        place(section::BETAS, b.len(), 4);
    }
    if let Some(q) = &quant_sec {
        place(section::QUANT, q.len(), 4);
    }
    if let Some(t) = &st_sec {
        place(section::SELF_TEST, t.len(), 4);
    }
    place(section::TENSORS, tensors_len, 4);
    place(section::BUFFERS, buffers.len(), 4);
    place(section::OPS, ops.len(), 4);
    place(section::STRINGS, strings.len(), 4);
    if let Some(p) = meta.packed {
        place(section::PACKED, p.len(), crate::pack::PACK_ALIGN);
    }
    let data_start = body_off.div_ceil(ALIGN) * ALIGN;
    // Tensor data.
    let mut data = Vec::new();
    let mut entries = Vec::new();
    for (i, t) in g.tensors.iter().enumerate() {
        pad_to(&mut data, ALIGN);
        let offset = data_start + data.len();
        let dtype = t.store.unwrap_or(match meta.dtype {
            WeightDtype::F32 => DType::F32,
            WeightDtype::F16 | WeightDtype::I8 => DType::F16,
        });
        let vals = t.tensor.data.iter();
        match dtype {
            DType::F16 => {
                vals.for_each(|x| data.extend_from_slice(&f16::from_f32(*x).to_le_bytes()))
            }
            DType::I8 => vals.for_each(|x| data.push((*x as i8) as u8)),
            DType::I32 => vals.for_each(|x| data.extend_from_slice(&(*x as i32).to_le_bytes())),
            DType::F32 => vals.for_each(|x| data.extend_from_slice(&x.to_le_bytes())),
        }
        let shape = &t.tensor.shape;
        if shape.is_empty() || shape.len() > 4 {
            return Err(too_large(&format!(
                "tensor {} has rank {}",
                t.name,
                shape.len()
            )));
        }
        let mut dims = [1u32; 4];
        for (d, &s) in dims.iter_mut().zip(shape) {
            *d = u32::try_from(s).map_err(|_| too_large(&t.name))?;
        }
        entries.push(TensorEntry {
            dtype,
            rank: shape.len() as u32,
            dims,
            offset: u32::try_from(offset).map_err(|_| too_large("blob over 4 GiB"))?,
            nbytes: u32::try_from(t.tensor.data.len() * dtype.size() as usize)
                .map_err(|_| too_large(&t.name))?,
            name_off: name_pos[i].0,
            name_len: name_pos[i].1,
            quant: t.quant,
        });
    }
    pad_to(&mut data, ALIGN);
    sections.push((section::DATA, data_start, data.len()));
    let total = data_start + data.len();
    let total32 = u32::try_from(total).map_err(|_| too_large("blob over 4 GiB"))?;

    let mut blob = vec![0u8; total];
    blob[0..4].copy_from_slice(&MAGIC);
    blob[4..6].copy_from_slice(&VERSION_MAJOR.to_le_bytes());
    blob[6..8].copy_from_slice(&VERSION_MINOR.to_le_bytes());
    blob[8..12].copy_from_slice(&total32.to_le_bytes());
    blob[16..20].copy_from_slice(&(HEADER_LEN as u32).to_le_bytes());
    blob[20..24].copy_from_slice(&(sections.len() as u32).to_le_bytes());
    blob[24..28].copy_from_slice(&(table_off as u32).to_le_bytes());
    for (i, &(kind, off, len)) in sections.iter().enumerate() {
        let e = table_off + i * SECTION_ENTRY_LEN;
        let flags = if kind == section::SELF_TEST || kind == section::PACKED {
            SECTION_OPTIONAL
        } else {
            0
        };
        let w: [u8; 16] = words_to_bytes(&[kind, off as u32, len as u32, flags]);
        blob[e..e + 16].copy_from_slice(&w);
        let payload: &[u8] = match kind {
            section::MODEL => &model_sec,
            section::SCHEDULE => sched_sec.as_ref().map(|s| &s[..]).unwrap_or(&[]),
            section::TIMESTEPS => ts_sec.as_deref().unwrap_or(&[]),
            section::BETAS => betas_sec.as_deref().unwrap_or(&[]),
            section::QUANT => quant_sec.as_deref().unwrap_or(&[]),
            section::SELF_TEST => st_sec.as_ref().map(|t| &t[..]).unwrap_or(&[]),
            section::PACKED => meta.packed.unwrap_or(&[]),
            section::BUFFERS => &buffers,
            section::OPS => &ops,
            section::STRINGS => &strings,
            section::DATA => &data,
            _ => &[],
        };
        if kind == section::TENSORS {
            for (j, t) in entries.iter().enumerate() {
                blob[off + j * TENSOR_ENTRY_LEN..off + (j + 1) * TENSOR_ENTRY_LEN]
                    .copy_from_slice(&t.encode());
            }
        } else {
            blob[off..off + len].copy_from_slice(payload);
        }
    }
    let crc = crc32fast::hash(&blob[16..]);
    blob[12..16].copy_from_slice(&crc.to_le_bytes());
    Ok(blob)
}

/// `blob` with one more section (`kind`, `payload`, `flags`): the payload and a new section table (the old entries
/// plus the new one) are appended, 16-aligned, and the header's table offset, section count, length and CRC are
/// rewritten. The old table stays behind as unused bytes; nothing else moves, so every existing offset holds.
/// Refuses a kind the blob already has. The result is built in place in 64-aligned storage (one copy of each
/// byte: the runner packs a 360 MB blob at load with this).
pub fn add_section(
    blob: &[u8],
    kind: u32,
    payload: &[u8],
    flags: u32,
) -> Result<crate::AlignedBytes, ConvertError> {
    let invalid = |what: &str| ConvertError::Pack {
        msg: format!("cannot add a section: {what}"),
    };
    let rd = |o: usize| rd_u32(blob, o).ok_or_else(|| invalid("truncated header"));
    let (n, table) = (rd(20)? as usize, rd(24)? as usize);
    let old = table
        .checked_add(n.saturating_mul(SECTION_ENTRY_LEN))
        .and_then(|end| blob.get(table..end))
        .ok_or_else(|| invalid("section table outside the blob"))?;
    if old
        .chunks_exact(SECTION_ENTRY_LEN)
        .any(|e| rd_u32(e, 0) == Some(kind))
    {
        return Err(invalid("the blob already has this section"));
    }
    // 64, not the format's 16: a PACKED payload's entries are 64-aligned from its start ([`crate::pack::PACK_ALIGN`]).
    let at = blob.len().next_multiple_of(crate::pack::PACK_ALIGN);
    let new_table = (at + payload.len()).next_multiple_of(ALIGN);
    let total = new_table + old.len() + SECTION_ENTRY_LEN;
    let total32 = u32::try_from(total).map_err(|_| too_large("blob over 4 GiB"))?;
    let entry: [u8; 16] = words_to_bytes(&[
        kind,
        u32::try_from(at).map_err(|_| too_large("blob over 4 GiB"))?,
        u32::try_from(payload.len()).map_err(|_| too_large("section over 4 GiB"))?,
        flags,
    ]);
    let mut a = crate::AlignedBytes::zeroed(total);
    let out = a.as_mut_slice();
    out[..blob.len()].copy_from_slice(blob);
    out[at..at + payload.len()].copy_from_slice(payload);
    out[new_table..new_table + old.len()].copy_from_slice(old);
    out[new_table + old.len()..].copy_from_slice(&entry);
    out[8..12].copy_from_slice(&total32.to_le_bytes());
    out[20..24].copy_from_slice(&((n + 1) as u32).to_le_bytes());
    out[24..28].copy_from_slice(&(new_table as u32).to_le_bytes());
    let crc = crc32fast::hash(&out[16..]);
    out[12..16].copy_from_slice(&crc.to_le_bytes());
    Ok(a)
}

/// Write `bytes` to `path` atomically: a temporary file in the same directory, fsync, rename. A failure leaves no
/// partial file behind.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ConvertError> {
    let p = path.display().to_string();
    let io = |e: std::io::Error| ConvertError::Io {
        path: p.clone(),
        msg: e.to_string(),
    };
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path.file_name().ok_or_else(|| ConvertError::Io {
        path: p.clone(),
        msg: "not a file path".into(),
    })?;
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let res = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res.map_err(io)
}
