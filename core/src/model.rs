//! Parsing and validating a blob ([`Model::parse`]), binding it to an arena ([`Model::bind`]) and running the U-Net
//! ([`Session::forward`]).
//!
//! `parse` checks everything once — header, checksum, every table entry, every op's shapes, tensor and buffer
//! references and aliasing — so `forward` runs the op list without further checks and cannot read out of bounds.

use ember_kernels::parallel::{self, Parallel};
use ember_kernels::quant::{self, ActQ, QOut};
use ember_kernels::{generic, KernelTable, Weights};
use half::f16;

use crate::error::{Error, OpFault, SectionKind};
use crate::format::*;
use crate::op::{Access, Op, ProjSource};

/// A blob's explicit timestep list (validated: strictly decreasing, below `num_train_timesteps`).
#[derive(Clone, Copy, Debug)]
pub struct Timesteps<'a>(&'a [u8]);

impl Timesteps<'_> {
    /// Number of timesteps.
    pub fn len(&self) -> usize {
        self.0.len() / 4
    }
    /// True when there are none (never for a list a [`Model`] returns).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// Timestep `i`, from the noisiest.
    pub fn get(&self, i: usize) -> Option<u32> {
        rd_u32(self.0, i.checked_mul(4)?)
    }
}

/// Bytes of the SELF_TEST section: seed (2 words), timestep, class (`NONE`: unconditional), output hash, 3 reserved.
pub const SELF_TEST_LEN: usize = 32;

/// A blob's boot self-test record ([`Model::self_test`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SelfTest {
    /// Seed of the standard-normal input (`Pcg32::new(seed, 0)`).
    pub seed: u64,
    /// Timestep of the forward call.
    pub timestep: f32,
    /// Class label, for class-conditional models.
    pub class: Option<u32>,
    /// FNV-1a of the output's bits with the generic kernels.
    pub hash: u32,
}

/// A validated model: views into the blob, nothing copied.
#[derive(Clone, Copy, Debug)]
pub struct Model<'a> {
    blob: &'a [u8],
    info: ModelInfo,
    schedule: Option<ScheduleInfo>,
    timesteps: &'a [u8],
    betas: &'a [u8],
    quant: &'a [u8],
    self_test: &'a [u8],
    packed: &'a [u8],
    tensors: &'a [u8],
    buffers: &'a [u8],
    ops: &'a [u8],
    strings: &'a [u8],
    data: (usize, usize),
}

fn section_err(kind: u32) -> Error {
    Error::BadSection(section_kind(kind))
}

impl<'a> Model<'a> {
    /// Parse and validate a blob in place (e.g. in flash). The blob must start on a 16-byte boundary.
    ///
    /// Every offset, length, alignment, dtype, op shape and buffer reference is checked here; nothing is copied.
    pub fn parse(blob: &'a [u8]) -> Result<Model<'a>, Error> {
        let len32 = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        if blob.len() < HEADER_LEN {
            return Err(Error::Truncated {
                needed: HEADER_LEN as u32,
                got: len32(blob.len()),
            });
        }
        if blob.get(0..4) != Some(&MAGIC[..]) {
            return Err(Error::BadMagic);
        }
        let major = rd_u16(blob, 4).ok_or(Error::BadMagic)?;
        let minor = rd_u16(blob, 6).ok_or(Error::BadMagic)?;
        if major != VERSION_MAJOR {
            return Err(Error::UnsupportedVersion { major, minor });
        }
        let total = rd_u32(blob, 8).ok_or(Error::BadMagic)? as usize;
        if total < HEADER_LEN || total > blob.len() {
            return Err(Error::Truncated {
                needed: len32(total),
                got: len32(blob.len()),
            });
        }
        let blob = &blob[..total];
        let stored = rd_u32(blob, 12).ok_or(Error::BadMagic)?;
        let computed = crc32(&blob[16..]);
        if stored != computed {
            return Err(Error::ChecksumMismatch { stored, computed });
        }
        if !(blob.as_ptr() as usize).is_multiple_of(ALIGN) {
            return Err(Error::BlobMisaligned);
        }
        let n_sections = rd_u32(blob, 20).ok_or(Error::BadMagic)? as usize;
        let table = rd_u32(blob, 24).ok_or(Error::BadMagic)? as usize;
        if n_sections > 64 {
            return Err(Error::BadSection(SectionKind::Unknown(u32::MAX)));
        }
        let mut found: [Option<&'a [u8]>; 13] = [None; 13];
        let mut data = (0usize, 0usize);
        for i in 0..n_sections {
            let e = table
                .checked_add(i * SECTION_ENTRY_LEN)
                .ok_or(Error::Truncated {
                    needed: u32::MAX,
                    got: len32(total),
                })?;
            let w: [u32; 4] = rd_words(blob, e).ok_or(Error::Truncated {
                needed: len32(e + 16),
                got: len32(total),
            })?;
            let (kind, off, len, flags) = (w[0], w[1] as usize, w[2] as usize, w[3]);
            let end = off.checked_add(len).ok_or(section_err(kind))?;
            if off < HEADER_LEN || end > total || off % 4 != 0 {
                return Err(section_err(kind));
            }
            let slot = match kind {
                section::MODEL..=section::PACKED => kind as usize,
                _ if flags & SECTION_OPTIONAL != 0 => continue,
                _ => return Err(section_err(kind)),
            };
            if found[slot].is_some() {
                return Err(section_err(kind));
            }
            found[slot] = Some(&blob[off..end]);
            if kind == section::DATA {
                data = (off, end);
            }
        }
        let req = |k: u32| found[k as usize].ok_or(Error::MissingSection(section_kind(k)));
        let model_sec = req(section::MODEL)?;
        let mw: [u32; MODEL_WORDS] =
            rd_words(model_sec, 0).ok_or(Error::BadSection(SectionKind::Model))?;
        let info = ModelInfo::from_words(&mw);
        let schedule = match found[section::SCHEDULE as usize] {
            Some(s) => Some(ScheduleInfo::from_words(
                &rd_words::<SCHEDULE_WORDS>(s, 0)
                    .ok_or(Error::BadSection(SectionKind::Schedule))?,
            )?),
            None => None,
        };
        let timesteps = found[section::TIMESTEPS as usize].unwrap_or(&[]);
        let betas = found[section::BETAS as usize].unwrap_or(&[]);
        let quant = found[section::QUANT as usize].unwrap_or(&[]);
        let self_test = found[section::SELF_TEST as usize].unwrap_or(&[]);
        let packed = found[section::PACKED as usize].unwrap_or(&[]);
        let tensors = req(section::TENSORS)?;
        let buffers = req(section::BUFFERS)?;
        let ops = req(section::OPS)?;
        req(section::DATA)?;
        let strings = found[section::STRINGS as usize].unwrap_or(&[]);
        if tensors.len() % TENSOR_ENTRY_LEN != 0 {
            return Err(Error::BadSection(SectionKind::Tensors));
        }
        if buffers.len() % BUFFER_ENTRY_LEN != 0 {
            return Err(Error::BadSection(SectionKind::Buffers));
        }
        if ops.len() % OP_RECORD_LEN != 0 || ops.is_empty() {
            return Err(Error::BadSection(SectionKind::Ops));
        }
        let m = Model {
            blob,
            info,
            schedule,
            timesteps,
            betas,
            quant,
            self_test,
            packed,
            tensors,
            buffers,
            ops,
            strings,
            data,
        };
        m.validate()?;
        m.validate_packed()?;
        Ok(m)
    }

    /// The PACKED section's entry `i`: `[family, op, split, offset, len, reserved]`.
    fn packed_entry(&self, i: usize) -> Option<[u32; PACKED_ENTRY_WORDS]> {
        rd_words(self.packed, 4 + i * PACKED_ENTRY_WORDS * 4)
    }

    /// Entries of the PACKED section (0 without one).
    fn packed_count(&self) -> usize {
        rd_u32(self.packed, 0).map_or(0, |n| n as usize)
    }

    /// The PACKED section, if any: its entry table inside the section, every entry's bytes inside the section and
    /// 16-aligned, ops in range, entries strictly sorted by `(family, op)`.
    fn validate_packed(&self) -> Result<(), Error> {
        if self.packed.is_empty() {
            return Ok(());
        }
        let bad = Error::BadSection(SectionKind::Packed);
        let n = self.packed_count();
        let table_end = n
            .checked_mul(PACKED_ENTRY_WORDS * 4)
            .and_then(|b| b.checked_add(4))
            .ok_or(bad)?;
        if self.packed.len() < 4 || table_end > self.packed.len() {
            return Err(bad);
        }
        let mut prev: Option<(u32, u32)> = None;
        for i in 0..n {
            let [fam, op, _split, off, len, _] = self.packed_entry(i).ok_or(bad)?;
            let (off, len) = (off as usize, len as usize);
            let end = off.checked_add(len).ok_or(bad)?;
            if op >= self.n_ops()
                || off < table_end
                || !off.is_multiple_of(ALIGN)
                || end > self.packed.len()
                || prev.is_some_and(|p| p >= (fam, op))
            {
                return Err(bad);
            }
            prev = Some((fam, op));
        }
        Ok(())
    }

    /// Weights of op `op` packed offline for kernel family `family` (`ember_kernels::pack`), with the input split
    /// (channels of branch A) they were packed for; `None` if the blob has none.
    pub fn packed_weights(&self, family: u32, op: u32) -> Option<(u32, &'a [u8])> {
        let (mut lo, mut hi) = (0usize, self.packed_count());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let [f, o, split, off, len, _] = self.packed_entry(mid)?;
            match (f, o).cmp(&(family, op)) {
                core::cmp::Ordering::Less => lo = mid + 1,
                core::cmp::Ordering::Greater => hi = mid,
                core::cmp::Ordering::Equal => {
                    let off = off as usize;
                    return Some((split, self.packed.get(off..off.checked_add(len as usize)?)?));
                }
            }
        }
        None
    }

    /// The PACKED section's entries as `(family, op, split, bytes)` (none without the section).
    pub fn packed_entries(&self) -> impl Iterator<Item = (u32, u32, u32, u32)> + '_ {
        (0..self.packed_count()).map_while(|i| {
            self.packed_entry(i)
                .map(|[f, op, split, _, len, _]| (f, op, split, len))
        })
    }

    fn validate(&self) -> Result<(), Error> {
        let info = &self.info;
        // Model description.
        for (field, v) in [
            (0u32, info.in_channels),
            (1, info.out_channels),
            (2, info.height),
            (3, info.width),
        ] {
            if v == 0 || v > 1 << 16 {
                return Err(Error::BadModel { field });
            }
        }
        let plane = info.height as u64 * info.width as u64;
        if info.in_channels as u64 * plane > MAX_ELEMS as u64
            || info.out_channels as u64 * plane > MAX_ELEMS as u64
        {
            return Err(Error::BadModel { field: 2 });
        }
        let class_ok = match info.class_kind {
            0 => info.num_classes == 0,
            1 | 2 => info.num_classes > 0,
            _ => false,
        };
        if !class_ok {
            return Err(Error::BadModel { field: 5 });
        }
        if !(info.arena_bytes as usize).is_multiple_of(ALIGN) {
            return Err(Error::BadModel { field: 8 });
        }
        if let Some(null) = info.null_class() {
            if null >= info.num_classes {
                return Err(Error::BadModel { field: 14 });
            }
        }
        // Explicit betas: exactly when the schedule says so, one per train timestep, each in (0, 1].
        let explicit = self.schedule.is_some_and(|s| s.beta_schedule == 3);
        if explicit || !self.betas.is_empty() {
            let bad = Error::BadSection(SectionKind::Betas);
            let s = self.schedule.ok_or(bad)?;
            if self.betas.is_empty() {
                return Err(Error::MissingSection(SectionKind::Betas));
            }
            if s.beta_schedule != 3 || self.betas.len() != s.num_train_timesteps as usize * 4 {
                return Err(bad);
            }
            for i in 0..s.num_train_timesteps as usize {
                let b = f32::from_bits(rd_u32(self.betas, i * 4).ok_or(bad)?);
                if !(b > 0.0 && b <= 1.0) {
                    return Err(bad);
                }
            }
        }
        // Explicit timesteps: need a schedule; strictly decreasing, each below num_train_timesteps.
        if !self.timesteps.is_empty() {
            let bad = Error::BadSection(SectionKind::Timesteps);
            let n_train = self.schedule.ok_or(bad)?.num_train_timesteps;
            if !self.timesteps.len().is_multiple_of(4)
                || self.timesteps.len() / 4 > n_train as usize
            {
                return Err(bad);
            }
            let mut prev = u32::MAX;
            for i in 0..self.timesteps.len() / 4 {
                let t = rd_u32(self.timesteps, i * 4).ok_or(bad)?;
                if t >= n_train || (i > 0 && t >= prev) {
                    return Err(bad);
                }
                prev = t;
            }
        }
        for (field, b, n) in [
            (6u32, info.input_buffer, info.input_len()),
            (7, info.output_buffer, info.output_len()),
        ] {
            match self.buffer(b) {
                Ok(e) if e.numel as usize == n && e.dtype == DType::F32 => {}
                _ => return Err(Error::BadModel { field }),
            }
        }
        self.validate_quant()?;
        if !self.self_test.is_empty() {
            let bad = Error::BadSection(SectionKind::SelfTest);
            let r = self.self_test_record().ok_or(bad)?;
            let class_ok = match r.class {
                None => info.num_classes == 0,
                Some(c) => c < info.num_classes,
            };
            if self.self_test.len() != SELF_TEST_LEN || !r.timestep.is_finite() || !class_ok {
                return Err(bad);
            }
        }
        // Tables.
        for i in 0..self.n_tensors() {
            let t = self.tensor(i)?;
            let start = t.offset as usize;
            let end = start
                .checked_add(t.nbytes as usize)
                .ok_or(Error::BadTensor { index: i })?;
            if start < self.data.0 || end > self.data.1 {
                return Err(Error::BadTensor { index: i });
            }
            if t.name_len != 0 && self.tensor_name(i).is_none() {
                return Err(Error::BadTensor { index: i });
            }
            // An int8 tensor names its per-output-channel scale tensor: F32, one finite positive scale per row.
            let scales_ok = match t.dtype {
                DType::I8 => self.tensor(t.quant).ok().is_some_and(|q| {
                    q.dtype == DType::F32
                        && q.quant == NONE
                        && q.numel() == t.dims[0]
                        && matches!(self.weights(t.quant), Some(Weights::F32(s))
                            if s.iter().all(|x| x.is_finite() && *x > 0.0))
                }),
                _ => t.quant == NONE,
            };
            if !scales_ok {
                return Err(Error::BadTensor { index: i });
            }
        }
        for i in 0..self.n_buffers() {
            self.buffer(i)?;
        }
        // Ops: shapes, references, aliasing.
        for i in 0..self.n_ops() {
            self.validate_op(i)
                .map_err(|fault| Error::BadOp { index: i, fault })?;
        }
        Ok(())
    }

    fn validate_op(&self, i: u32) -> Result<(), OpFault> {
        let op = self.op_raw(i)?;
        if let Op::TimeProj {
            source: ProjSource::ClassLabel,
            ..
        } = op
        {
            if self.info.class_kind != 2 {
                return Err(OpFault::Flag(5));
            }
        }
        if let Op::Embedding { num, .. } = op {
            if self.info.class_kind != 1 || num != self.info.num_classes {
                return Err(OpFault::Shape(3));
            }
        }
        let req = op.requirements()?;
        let uses = req.buffer_uses();
        let mut ranges = [(0u64, 0u64); 6];
        for (j, &(b, n, _)) in uses.iter().enumerate() {
            let e = self.buffer(b).map_err(|_| OpFault::BufferIndex(b))?;
            if e.numel != n {
                return Err(OpFault::BufferSize {
                    buffer: b,
                    expected: n,
                    got: e.numel,
                });
            }
            ranges[j] = (e.offset as u64, e.offset as u64 + e.nbytes());
        }
        // The buffers of one op never share bytes; the one exception is a concat of a buffer with itself (a U-Net
        // without a mid block concatenates the last down output with its own skip), which the executor handles.
        let self_concat = matches!(op, Op::Concat { a, b, .. } if a == b);
        for j in 0..uses.len() {
            for k in j + 1..uses.len() {
                let (a, b) = (ranges[j], ranges[k]);
                let both_reads = uses[j].2 == Some(Access::Read) && uses[k].2 == Some(Access::Read);
                if a.0 < b.1 && b.0 < a.1 && !(self_concat && both_reads && uses[j].0 == uses[k].0)
                {
                    return Err(OpFault::Aliasing);
                }
            }
        }
        // Weights may be int8 (per-channel scales) for convolutions and linear layers; everything else is float.
        let i8_ok = matches!(op, Op::Conv2d { .. } | Op::Linear { .. });
        for (j, &(t, n)) in req.tensor_uses().iter().enumerate() {
            let e = self.tensor(t).map_err(|_| OpFault::TensorIndex(t))?;
            let ok = match e.dtype {
                DType::F32 | DType::F16 => true,
                DType::I8 => i8_ok && j == 0,
                DType::I32 => false,
            };
            if !ok {
                return Err(OpFault::TensorDtype(t));
            }
            if e.numel() != n {
                return Err(OpFault::TensorSize {
                    tensor: t,
                    expected: n,
                    got: e.numel(),
                });
            }
        }
        self.check_dtypes(&op)
    }

    /// Which activation dtypes an op accepts. Float ops see `F32` only; the int8 path is chosen by the input's
    /// dtype, and every combination the executor handles is listed here (the executor relies on it).
    fn check_dtypes(&self, op: &Op) -> Result<(), OpFault> {
        use DType::{F32, I32, I8};
        let e = |b: u32| self.buffer(b).map_err(|_| OpFault::BufferIndex(b));
        let is = |b: u32, d: DType| -> Result<(), OpFault> {
            if b == NONE || e(b)?.dtype == d {
                Ok(())
            } else {
                Err(OpFault::BufferDtype(b))
            }
        };
        // An int8 buffer with one scale.
        let single = |b: u32| -> Result<(), OpFault> {
            is(b, I8)?;
            if b != NONE && e(b)?.split != 0 {
                return Err(OpFault::BufferDtype(b));
            }
            Ok(())
        };
        // A split must fall on a channel boundary of the reading op.
        let split_on = |b: u32, plane: u32| -> Result<(), OpFault> {
            match e(b)?.split {
                s if plane != 0 && s % plane == 0 => Ok(()),
                _ => Err(OpFault::BufferDtype(b)),
            }
        };
        let int8 = |b: u32| -> Result<bool, OpFault> { Ok(e(b)?.dtype == I8) };
        let rows = self.quant_rows();
        // Each (source, second): the source's scale is the output's first (false) or second (true) scale.
        let same_scales = |out: u32, pairs: &[(u32, bool)]| -> Result<(), OpFault> {
            for r in 0..rows {
                let o = self.act_scales(r, out);
                for &(src, second) in pairs {
                    let sv = self.act_scales(r, src).0;
                    let ov = if second { o.1 } else { o.0 };
                    if sv.to_bits() != ov.to_bits() {
                        return Err(OpFault::ScaleMismatch(out));
                    }
                }
            }
            Ok(())
        };
        match *op {
            Op::TimeProj { out, .. } => is(out, F32),
            Op::Linear { input, out, .. } => {
                is(input, F32)?;
                is(out, F32)
            }
            Op::Embedding { buf, .. } | Op::Affine { buf, .. } => is(buf, F32),
            Op::Add { a, b, .. } => {
                is(a, F32)?;
                is(b, F32)
            }
            Op::Conv2d {
                input,
                out,
                h,
                w,
                weight,
                chan_add,
                residual,
                scratch,
                ..
            } => {
                is(chan_add, F32)?;
                if int8(input)? {
                    split_on(input, h * w)?;
                    if self.tensor(weight).map(|t| t.dtype) != Ok(I8) {
                        return Err(OpFault::TensorDtype(weight));
                    }
                    if e(out)?.dtype == F32 {
                        is(residual, F32)?;
                    } else {
                        single(out)?;
                        single(residual)?;
                    }
                    if scratch == NONE {
                        return Err(OpFault::BufferIndex(NONE));
                    }
                    is(scratch, I32)
                } else {
                    is(out, F32)?;
                    is(residual, F32)?;
                    if scratch != NONE {
                        return Err(OpFault::BufferDtype(scratch));
                    }
                    Ok(())
                }
            }
            Op::GroupNorm {
                input,
                out,
                hw,
                scale_shift,
                ..
            } => {
                is(scale_shift, F32)?;
                if int8(input)? {
                    split_on(input, hw)?;
                    single(out)
                } else {
                    is(out, F32)
                }
            }
            Op::Concat { a, b, out, na, .. } => {
                if int8(a)? {
                    single(a)?;
                    single(b)?;
                    is(out, I8)?;
                    if e(out)?.split != na {
                        return Err(OpFault::BufferDtype(out));
                    }
                    same_scales(out, &[(a, false), (b, true)])
                } else {
                    is(b, F32)?;
                    is(out, F32)
                }
            }
            Op::AvgPool2 { input, out, .. } => {
                if int8(input)? {
                    single(input)?;
                    single(out)
                } else {
                    is(out, F32)
                }
            }
            Op::Upsample2 { input, out, .. } => {
                if int8(input)? {
                    single(input)?;
                    single(out)?;
                    same_scales(out, &[(input, false)])
                } else {
                    is(out, F32)
                }
            }
            Op::Attention {
                q,
                k,
                v,
                out,
                scores,
                ..
            } => {
                is(scores, F32)?;
                if int8(q)? {
                    single(q)?;
                    single(k)?;
                    single(v)?;
                    if e(out)?.dtype == F32 {
                        Ok(())
                    } else {
                        single(out)
                    }
                } else {
                    is(k, F32)?;
                    is(v, F32)?;
                    is(out, F32)
                }
            }
            Op::Quantize { input, out, .. } => {
                is(input, F32)?;
                single(out)
            }
            Op::Dequantize {
                input, out, plane, ..
            } => {
                is(input, I8)?;
                split_on(input, plane)?;
                is(out, F32)
            }
        }
    }

    /// The model description.
    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// The noise-schedule metadata, when the checkpoint had a scheduler config.
    pub fn schedule(&self) -> Option<&ScheduleInfo> {
        self.schedule.as_ref()
    }

    /// The explicit inference timesteps stored in the blob (a distilled student's own), if any.
    pub fn timesteps(&self) -> Option<Timesteps<'a>> {
        (!self.timesteps.is_empty()).then_some(Timesteps(self.timesteps))
    }

    /// Fill `betas` (`num_train_timesteps` long) with the blob's explicit betas (`trained_betas`, schedule code 3)
    /// or, for the other schedules, with [`crate::sampler::schedule::fill_betas`].
    pub fn fill_betas(&self, betas: &mut [f32]) -> Result<(), Error> {
        let s = self
            .schedule
            .ok_or(Error::MissingSection(SectionKind::Schedule))?;
        if s.beta_schedule != 3 {
            return crate::sampler::schedule::fill_betas(&s, betas);
        }
        if betas.len() * 4 != self.betas.len() {
            return Err(Error::OutputLen {
                expected: (self.betas.len() / 4) as u32,
                got: u32::try_from(betas.len()).unwrap_or(u32::MAX),
            });
        }
        for (i, b) in betas.iter_mut().enumerate() {
            *b = f32::from_bits(
                rd_u32(self.betas, i * 4).ok_or(Error::BadSection(SectionKind::Betas))?,
            );
        }
        Ok(())
    }

    /// Arena bytes [`Model::bind`] needs.
    pub fn arena_bytes(&self) -> usize {
        self.info.arena_bytes as usize
    }

    /// Size of the blob in bytes (what lives in flash).
    pub fn blob_len(&self) -> usize {
        self.blob.len()
    }

    /// Number of ops.
    pub fn n_ops(&self) -> u32 {
        (self.ops.len() / OP_RECORD_LEN) as u32
    }

    /// Number of tensors.
    pub fn n_tensors(&self) -> u32 {
        (self.tensors.len() / TENSOR_ENTRY_LEN) as u32
    }

    /// Number of activation buffers.
    pub fn n_buffers(&self) -> u32 {
        (self.buffers.len() / BUFFER_ENTRY_LEN) as u32
    }

    fn op_raw(&self, i: u32) -> Result<Op, OpFault> {
        let w: [u32; OP_WORDS] = rd_words(
            self.ops,
            (i as usize)
                .checked_mul(OP_RECORD_LEN)
                .ok_or(OpFault::UnknownKind(0))?,
        )
        .ok_or(OpFault::UnknownKind(0))?;
        Op::decode(&w)
    }

    /// Op `i`, decoded.
    pub fn op(&self, i: u32) -> Result<Op, Error> {
        self.op_raw(i)
            .map_err(|fault| Error::BadOp { index: i, fault })
    }

    /// Tensor-table entry `i`.
    pub fn tensor(&self, i: u32) -> Result<TensorEntry, Error> {
        let off = (i as usize)
            .checked_mul(TENSOR_ENTRY_LEN)
            .ok_or(Error::BadTensor { index: i })?;
        let b = self
            .tensors
            .get(
                off..off
                    .checked_add(TENSOR_ENTRY_LEN)
                    .ok_or(Error::BadTensor { index: i })?,
            )
            .ok_or(Error::BadTensor { index: i })?;
        TensorEntry::decode(b, i)
    }

    /// Name of tensor `i` (the checkpoint's key), if the blob carries names.
    pub fn tensor_name(&self, i: u32) -> Option<&'a str> {
        let t = self.tensor(i).ok()?;
        let s = t.name_off as usize;
        let bytes = self.strings.get(s..s.checked_add(t.name_len as usize)?)?;
        core::str::from_utf8(bytes).ok()
    }

    /// Buffer-table entry `i` (checked: aligned, inside the arena).
    pub fn buffer(&self, i: u32) -> Result<BufferEntry, Error> {
        let bad = Error::BadBuffer { index: i };
        let off = (i as usize).checked_mul(BUFFER_ENTRY_LEN).ok_or(bad)?;
        let w: [u32; 4] = rd_words(self.buffers, off).ok_or(bad)?;
        let dtype = match DType::from_code(w[2]) {
            Some(d @ (DType::F32 | DType::I8 | DType::I32)) => d,
            _ => return Err(bad),
        };
        if w[1] == 0
            || w[1] > MAX_ELEMS
            || !(w[0] as usize).is_multiple_of(ALIGN)
            || (w[3] != 0 && (dtype != DType::I8 || w[3] >= w[1]))
        {
            return Err(bad);
        }
        let e = BufferEntry {
            offset: w[0],
            numel: w[1],
            dtype,
            split: w[3],
        };
        if e.offset as u64 + e.nbytes() > self.info.arena_bytes as u64 {
            return Err(bad);
        }
        Ok(e)
    }

    /// The weights of tensor `t`, read in place from the blob.
    pub fn weights(&self, t: u32) -> Option<Weights<'a>> {
        let e = self.tensor(t).ok()?;
        let bytes = self
            .blob
            .get(e.offset as usize..(e.offset as usize).checked_add(e.nbytes as usize)?)?;
        match e.dtype {
            DType::F32 => bytemuck::try_cast_slice::<u8, f32>(bytes)
                .ok()
                .map(Weights::F32),
            DType::F16 => bytemuck::try_cast_slice::<u8, f16>(bytes)
                .ok()
                .map(Weights::F16),
            DType::I8 => {
                let scale = match self.weights(e.quant)? {
                    Weights::F32(s) => s,
                    _ => return None,
                };
                Some(Weights::I8 {
                    data: bytemuck::try_cast_slice::<u8, i8>(bytes).ok()?,
                    scale,
                    per: (e.numel() / e.dims[0].max(1)) as usize,
                })
            }
            _ => None,
        }
    }

    /// The blob's boot self-test record, if the converter wrote one (`quantize-tool convert --self-test`).
    pub fn self_test_record(&self) -> Option<SelfTest> {
        let w: [u32; 8] = rd_words(self.self_test, 0)?;
        Some(SelfTest {
            seed: w[0] as u64 | (w[1] as u64) << 32,
            timestep: f32::from_bits(w[2]),
            class: (w[3] != NONE).then_some(w[3]),
            hash: w[4],
        })
    }

    /// Arena bytes [`Model::self_test`] needs: the model's arena, then its input and output (each 16-aligned).
    pub fn self_test_arena_bytes(&self) -> usize {
        let a = |n: usize| n.next_multiple_of(ALIGN);
        a(self.arena_bytes()) + a(self.info.input_len() * 4) + a(self.info.output_len() * 4)
    }

    /// FNV-1a hash of one forward pass with the generic kernels on the seeded standard-normal input
    /// (`Pcg32::new(seed, 0)`), at `timestep` with `class`. `arena` holds [`Model::self_test_arena_bytes`].
    pub fn self_test_hash(
        &self,
        arena: &mut [u8],
        seed: u64,
        timestep: f32,
        class: Option<u32>,
    ) -> Result<u32, Error> {
        let a = |n: usize| n.next_multiple_of(ALIGN);
        let need = self.self_test_arena_bytes();
        if arena.len() < need {
            return Err(Error::ArenaTooSmall {
                needed: u32::try_from(need).unwrap_or(u32::MAX),
                got: u32::try_from(arena.len()).unwrap_or(u32::MAX),
            });
        }
        let short = Error::ArenaTooSmall {
            needed: u32::try_from(need).unwrap_or(u32::MAX),
            got: u32::try_from(arena.len()).unwrap_or(u32::MAX),
        };
        let (model, rest) = arena
            .split_at_mut_checked(a(self.arena_bytes()))
            .ok_or(short)?;
        let (inp, rest) = rest
            .split_at_mut_checked(a(self.info.input_len() * 4))
            .ok_or(short)?;
        let (n_in, n_out) = (self.info.input_len(), self.info.output_len());
        let mis = |_| Error::ArenaMisaligned;
        let x: &mut [f32] =
            bytemuck::try_cast_slice_mut(inp.get_mut(..n_in * 4).ok_or(short)?).map_err(mis)?;
        let y: &mut [f32] =
            bytemuck::try_cast_slice_mut(rest.get_mut(..n_out * 4).ok_or(short)?).map_err(mis)?;
        crate::rng::Pcg32::new(seed, 0).fill_normal(x);
        let mut s = self.bind(model)?;
        let best = ember_kernels::registry::best();
        s.set_kernels(if best.bit_exact {
            best
        } else {
            &ember_kernels::registry::GENERIC
        });
        s.forward(x, timestep, class, y)?;
        Ok(fnv1a_f32(y))
    }

    /// The boot self-test: one forward pass on the recorded seeded input, compared by hash with the output the
    /// converter recorded, proving the blob's weights and plan and the kernels give the converter's bits on this
    /// device. The kernels are the best tier's where that tier is bit-exact (`KernelTable::bit_exact`: the generic
    /// and Cortex-M tiers, so a microcontroller checks the very kernels it samples with, at their speed), else the
    /// generic ones (the converter's bits are generic's; x86_64 and aarch64 float kernels sum in other orders). `Err(MissingSection(SelfTest))` when the blob has no record, `Err(SelfTestFailed)` on a mismatch.
    pub fn self_test(&self, arena: &mut [u8]) -> Result<(), Error> {
        let r = self
            .self_test_record()
            .ok_or(Error::MissingSection(SectionKind::SelfTest))?;
        let got = self.self_test_hash(arena, r.seed, r.timestep, r.class)?;
        if got != r.hash {
            return Err(Error::SelfTestFailed {
                expected: r.hash,
                got,
            });
        }
        Ok(())
    }

    /// Number of calibration timesteps in the QUANT section (0 for a float blob).
    pub fn quant_rows(&self) -> usize {
        rd_u32(self.quant, 0).unwrap_or(0) as usize
    }

    /// Calibration timestep `r` (the `timestep` a forward call passes), if present.
    pub fn quant_timestep(&self, r: usize) -> Option<f32> {
        if r >= self.quant_rows() {
            return None;
        }
        rd_u32(self.quant, 8 + 4 * r).map(f32::from_bits)
    }

    /// The QUANT row a forward call at `timestep` uses: the calibration timestep nearest to it (the first on a tie).
    pub fn quant_row(&self, timestep: f32) -> usize {
        let mut best = (0usize, f32::INFINITY);
        for r in 0..self.quant_rows() {
            let d = libm::fabsf(self.quant_timestep(r).unwrap_or(f32::INFINITY) - timestep);
            if d < best.1 {
                best = (r, d);
            }
        }
        best.0
    }

    /// The two scales of buffer `b` in QUANT row `r` (`(0, 0)` when absent, e.g. for float buffers).
    pub fn act_scales(&self, r: usize, b: u32) -> (f32, f32) {
        let k = self.quant_rows();
        let at = |j: usize| {
            rd_u32(self.quant, 8 + 4 * k + 4 * j)
                .map(f32::from_bits)
                .unwrap_or(0.0)
        };
        let j = (r * self.n_buffers() as usize + b as usize) * 2;
        (at(j), at(j + 1))
    }

    /// Quantization of int8 buffer `b` in row `r`, its split expressed in channels of `plane` elements.
    pub fn act_q(&self, r: usize, b: u32, plane: usize) -> ActQ {
        let (s1, s2) = self.act_scales(r, b);
        let split = match self.buffer(b) {
            Ok(e) if e.split != 0 && plane != 0 => e.split as usize / plane,
            _ => usize::MAX,
        };
        ActQ {
            scale: s1,
            split,
            scale2: if split == usize::MAX { s1 } else { s2 },
        }
    }

    /// The QUANT section: present exactly when some buffer is int8; `K >= 1` rows, each a finite calibration
    /// timestep and, for every int8 buffer, finite positive scales (both when the buffer is split).
    fn validate_quant(&self) -> Result<(), Error> {
        let bad = Error::BadSection(SectionKind::Quant);
        let nb = self.n_buffers() as usize;
        let mut any_i8 = false;
        for b in 0..self.n_buffers() {
            any_i8 |= self.buffer(b)?.dtype == DType::I8;
        }
        if self.quant.is_empty() {
            return if any_i8 {
                Err(Error::MissingSection(SectionKind::Quant))
            } else {
                Ok(())
            };
        }
        let k = self.quant_rows();
        let expected = (k as u64) * (4 + 8 * nb as u64) + 8;
        if k == 0 || rd_u32(self.quant, 4) != Some(nb as u32) || self.quant.len() as u64 != expected
        {
            return Err(bad);
        }
        for r in 0..k {
            if !self.quant_timestep(r).is_some_and(f32::is_finite) {
                return Err(bad);
            }
            for b in 0..self.n_buffers() {
                let e = self.buffer(b)?;
                if e.dtype != DType::I8 {
                    continue;
                }
                let (s1, s2) = self.act_scales(r, b);
                let ok = |s: f32| s.is_finite() && s > 0.0;
                if !ok(s1) || (e.split != 0 && !ok(s2)) {
                    return Err(bad);
                }
            }
        }
        Ok(())
    }

    /// Bind to a caller-provided arena (16-byte aligned, at least [`Model::arena_bytes`] long).
    pub fn bind<'s>(&'s self, arena: &'s mut [u8]) -> Result<Session<'s, 'a>, Error> {
        let needed = self.arena_bytes();
        if arena.len() < needed {
            return Err(Error::ArenaTooSmall {
                needed: needed as u32,
                got: u32::try_from(arena.len()).unwrap_or(u32::MAX),
            });
        }
        let arena = &mut arena[..needed];
        if !(arena.as_ptr() as usize).is_multiple_of(ALIGN) {
            return Err(Error::ArenaMisaligned);
        }
        Ok(Session {
            model: self,
            arena,
            kernels: ember_kernels::registry::best(),
            par: &ember_kernels::parallel::Serial,
            row: 0,
        })
    }
}

/// A model bound to an arena, ready to run forward passes.
#[derive(Debug)]
pub struct Session<'s, 'a> {
    model: &'s Model<'a>,
    arena: &'s mut [u8],
    kernels: &'static KernelTable,
    /// Where convolutions split their output channels (one core unless [`Session::set_parallel`]).
    par: &'static dyn Parallel,
    /// QUANT row of the current forward call.
    row: usize,
}

/// What [`Session::forward_observed`] calls after every op: `(timestep, op, buffer, contents)` for each buffer the
/// op wrote; before the first op it reports the input buffer with op index [`NONE`].
pub type Observer<'o> = dyn FnMut(f32, u32, u32, BufView<'_>) + 'o;

/// A buffer's contents as an observer sees them after an op ([`Session::forward_observed`]).
#[derive(Clone, Copy, Debug)]
pub enum BufView<'x> {
    /// Float activations.
    F32(&'x [f32]),
    /// int8 activations with their quantization at this timestep.
    I8(&'x [i8], ActQ),
    /// Integer scratch.
    I32(&'x [i32]),
}

/// Borrow `N` pairwise-disjoint byte ranges `(start, len)` of `s` mutably at once (safe: repeated
/// `split_at_mut`); empty ranges give empty slices.
fn split_disjoint<'x, const N: usize>(
    s: &'x mut [u8],
    ranges: [(usize, usize); N],
) -> Option<[&'x mut [u8]; N]> {
    let mut order = [0usize; N];
    for (i, o) in order.iter_mut().enumerate() {
        *o = i;
    }
    order.sort_unstable_by_key(|&i| ranges.get(i).map_or(0, |r| r.0));
    let mut out: [&'x mut [u8]; N] = core::array::from_fn(|_| Default::default());
    let mut rest = s;
    let mut consumed = 0usize;
    for &i in &order {
        let (start, len) = *ranges.get(i)?;
        if len == 0 {
            continue;
        }
        let skip = start.checked_sub(consumed)?;
        if skip.checked_add(len)? > rest.len() {
            return None;
        }
        let (_, tail) = core::mem::take(&mut rest).split_at_mut_checked(skip)?;
        let (mine, tail) = tail.split_at_mut_checked(len)?;
        *out.get_mut(i)? = mine;
        rest = tail;
        consumed = start + len;
    }
    Some(out)
}

// An absent buffer is an empty slice (whose dangling pointer has no alignment to speak of).
fn f32s(b: &mut [u8]) -> Result<&mut [f32], Error> {
    if b.is_empty() {
        return Ok(&mut []);
    }
    bytemuck::try_cast_slice_mut(b).map_err(|_| Error::ArenaMisaligned)
}

fn i32s(b: &mut [u8]) -> Result<&mut [i32], Error> {
    if b.is_empty() {
        return Ok(&mut []);
    }
    bytemuck::try_cast_slice_mut(b).map_err(|_| Error::ArenaMisaligned)
}

fn i8s(b: &mut [u8]) -> &mut [i8] {
    bytemuck::cast_slice_mut(b)
}

/// `dst.copy_from_slice(src)` without its panic: `false` (and nothing copied) when the lengths differ. (Parse-time
/// validation makes the lengths equal on every path; this keeps the firmware's panic-check build free of the site.)
fn copy_exact<T: Copy>(dst: &mut [T], src: &[T]) -> bool {
    if dst.len() != src.len() {
        return false;
    }
    for (d, s) in dst.iter_mut().zip(src) {
        *d = *s;
    }
    true
}

fn len32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn opt<T>(id: u32, v: T) -> Option<T> {
    (id != NONE).then_some(v)
}

impl<'a> Session<'_, 'a> {
    /// The model this session runs.
    pub fn model(&self) -> &Model<'_> {
        self.model
    }

    /// Use another kernel tier (e.g. the generic reference for comparisons).
    pub fn set_kernels(&mut self, k: &'static KernelTable) {
        self.kernels = k;
    }

    /// Split convolutions, group norms and linear layers across `par`'s workers (e.g.
    /// `ember_kernels::parallel::ThreadPool` with `std`, or a firmware's second core). Results are bit-identical
    /// to one core.
    pub fn set_parallel(&mut self, par: &'static dyn Parallel) {
        self.par = par;
    }

    /// Byte range of buffer `b`; `NONE` gives an empty range.
    fn range(&self, b: u32) -> Result<(usize, usize), Error> {
        if b == NONE {
            return Ok((0, 0));
        }
        let e = self.model.buffer(b)?;
        Ok((e.offset as usize, e.nbytes() as usize))
    }

    fn raw<const N: usize>(&mut self, ids: [u32; N]) -> Result<[&mut [u8]; N], Error> {
        let mut r = [(0usize, 0usize); N];
        for (x, &b) in r.iter_mut().zip(&ids) {
            *x = self.range(b)?;
        }
        split_disjoint(self.arena, r).ok_or(Error::BadBuffer {
            index: ids.first().copied().unwrap_or(NONE),
        })
    }

    fn bufs<const N: usize>(&mut self, ids: [u32; N]) -> Result<[&mut [f32]; N], Error> {
        let raw = self.raw(ids)?;
        let mut out: [&mut [f32]; N] = core::array::from_fn(|_| Default::default());
        for (o, r) in out.iter_mut().zip(raw) {
            *o = f32s(r)?;
        }
        Ok(out)
    }

    fn q(&self, b: u32, plane: usize) -> ActQ {
        self.model.act_q(self.row, b, plane)
    }

    fn w(&self, t: u32, op: u32) -> Result<Weights<'a>, Error> {
        self.model.weights(t).ok_or(Error::BadOp {
            index: op,
            fault: OpFault::TensorIndex(t),
        })
    }

    fn opt_w(&self, t: u32, op: u32) -> Result<Option<Weights<'a>>, Error> {
        if t == NONE {
            Ok(None)
        } else {
            self.w(t, op).map(Some)
        }
    }

    /// The current contents of buffer `b`.
    pub fn view(&self, b: u32) -> Result<BufView<'_>, Error> {
        let e = self.model.buffer(b)?;
        let (o, n) = (e.offset as usize, e.nbytes() as usize);
        let bytes = self
            .arena
            .get(o..o + n)
            .ok_or(Error::BadBuffer { index: b })?;
        let mis = |_| Error::ArenaMisaligned;
        Ok(match e.dtype {
            DType::I8 => BufView::I8(bytemuck::cast_slice(bytes), self.q(b, 1)),
            DType::I32 => BufView::I32(bytemuck::try_cast_slice(bytes).map_err(mis)?),
            _ => BufView::F32(bytemuck::try_cast_slice(bytes).map_err(mis)?),
        })
    }

    /// One U-Net evaluation: `out = unet(sample, timestep, class_label)`.
    ///
    /// `sample` is `[C, H, W]` channel-major (batch 1), `out` is `[C_out, H, W]`. A class label is required exactly
    /// when the model is class-conditional. An int8 model uses the activation scales calibrated for the timestep
    /// nearest to `timestep`.
    pub fn forward(
        &mut self,
        sample: &[f32],
        timestep: f32,
        class_label: Option<u32>,
        out: &mut [f32],
    ) -> Result<(), Error> {
        self.forward_impl(sample, timestep, class_label, out, None)
    }

    /// [`Session::forward`], calling `observe` after every op for each buffer it wrote (host tools use it to
    /// calibrate activation ranges and to compare layers); see [`Observer`].
    pub fn forward_observed(
        &mut self,
        sample: &[f32],
        timestep: f32,
        class_label: Option<u32>,
        out: &mut [f32],
        observe: &mut Observer<'_>,
    ) -> Result<(), Error> {
        self.forward_impl(sample, timestep, class_label, out, Some(observe))
    }

    fn forward_impl(
        &mut self,
        sample: &[f32],
        timestep: f32,
        class_label: Option<u32>,
        out: &mut [f32],
        mut observe: Option<&mut Observer<'_>>,
    ) -> Result<(), Error> {
        let info = *self.model.info();
        let n32 = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        if sample.len() != info.input_len() {
            return Err(Error::InputLen {
                expected: n32(info.input_len()),
                got: n32(sample.len()),
            });
        }
        if out.len() != info.output_len() {
            return Err(Error::OutputLen {
                expected: n32(info.output_len()),
                got: n32(out.len()),
            });
        }
        if !timestep.is_finite() {
            return Err(Error::BadTimestep);
        }
        let label = match (info.num_classes, class_label) {
            (0, None) => 0,
            (0, Some(_)) => return Err(Error::ClassLabelUnexpected),
            (_, None) => return Err(Error::ClassLabelRequired),
            (n, Some(l)) if l >= n => {
                return Err(Error::ClassLabelOutOfRange {
                    label: l,
                    num_classes: n,
                })
            }
            (_, Some(l)) => l,
        };
        self.row = self.model.quant_row(timestep);
        {
            let [inp] = self.bufs([info.input_buffer])?;
            if !copy_exact(inp, sample) {
                return Err(Error::InputLen {
                    expected: len32(inp.len()),
                    got: len32(sample.len()),
                });
            }
        }
        if let Some(obs) = observe.as_mut() {
            obs(
                timestep,
                NONE,
                info.input_buffer,
                self.view(info.input_buffer)?,
            );
        }
        for i in 0..self.model.n_ops() {
            self.run_op(i, timestep, label)?;
            if let Some(obs) = observe.as_mut() {
                let req = self
                    .model
                    .op(i)?
                    .requirements()
                    .map_err(|fault| Error::BadOp { index: i, fault })?;
                for &(b, _, acc) in req.buffer_uses() {
                    if acc != Some(crate::op::Access::Read) {
                        obs(timestep, i, b, self.view(b)?);
                    }
                }
            }
        }
        let [res] = self.bufs([info.output_buffer])?;
        if !copy_exact(out, res) {
            return Err(Error::OutputLen {
                expected: len32(res.len()),
                got: len32(out.len()),
            });
        }
        Ok(())
    }

    fn run_op(&mut self, i: u32, timestep: f32, label: u32) -> Result<(), Error> {
        let op = self.model.op(i)?;
        let (k, par) = (self.kernels, self.par);
        match op {
            Op::TimeProj {
                out,
                flip_sin_to_cos,
                freq_shift,
                source,
                ..
            } => {
                let t = match source {
                    ProjSource::Timestep => timestep,
                    ProjSource::ClassLabel => label as f32,
                };
                let [o] = self.bufs([out])?;
                generic::timestep_embedding(t, flip_sin_to_cos, freq_shift, o);
            }
            Op::Linear {
                input,
                out,
                weight,
                bias,
                silu_in,
                silu_out,
                ..
            } => {
                let (w, b) = (self.w(weight, i)?, self.opt_w(bias, i)?);
                let [x, y] = self.bufs([input, out])?;
                parallel::linear(k, par, x, w, b, silu_in, silu_out, y);
            }
            Op::Embedding {
                buf, table, dim, ..
            } => {
                let tw = self.w(table, i)?;
                let [x] = self.bufs([buf])?;
                let base = label as usize * dim as usize;
                for (j, v) in x.iter_mut().enumerate() {
                    *v += tw.get(base + j);
                }
            }
            Op::Conv2d {
                input,
                out,
                weight,
                bias,
                chan_add,
                residual,
                div,
                scratch,
                ..
            } => {
                let Some(g) = op.conv_geom() else {
                    return Ok(());
                };
                let (wt, b) = (self.w(weight, i)?, self.opt_w(bias, i)?);
                if scratch != NONE {
                    // int8 path (the validator guarantees the dtypes).
                    let Weights::I8 { data, scale, .. } = wt else {
                        return Err(Error::BadOp {
                            index: i,
                            fault: OpFault::TensorDtype(weight),
                        });
                    };
                    let in_q = self.q(input, g.h * g.w);
                    let sr = self.q(residual, 1).scale;
                    let out_i8 = self.model.buffer(out)?.dtype == DType::I8;
                    let so = self.q(out, 1).scale;
                    // Weights packed offline for this tier's family, if the blob has them for this split.
                    let model = self.model;
                    let packed = k.conv2d_i8_packed.and_then(|(fam, _)| {
                        let (split, p) = model.packed_weights(fam, i)?;
                        (split as usize == in_q.split.min(g.cin)).then_some(p)
                    });
                    let [x, y, acc, c, r] = self.raw([input, out, scratch, chan_add, residual])?;
                    let c = opt(chan_add, f32s(c)?);
                    let r = opt(residual, (&*i8s(r), sr));
                    let o = if out_i8 {
                        QOut::I8 {
                            data: i8s(y),
                            scale: so,
                        }
                    } else {
                        QOut::F32(f32s(y)?)
                    };
                    parallel::conv2d_i8(
                        k,
                        par,
                        &g,
                        i8s(x),
                        in_q,
                        data,
                        packed,
                        scale,
                        b,
                        c.as_deref(),
                        r,
                        div,
                        i32s(acc)?,
                        o,
                    );
                    return Ok(());
                }
                let hw = g.oh * g.ow;
                // Weights packed offline for this tier's family, if the blob has them (float: split = cin).
                let model = self.model;
                let packed = k.conv2d_packed.and_then(|(fam, _)| {
                    let (split, p) = model.packed_weights(fam, i)?;
                    (split as usize == g.cin).then_some(p)
                });
                let [x, y, c, r] = self.bufs([input, out, chan_add, residual])?;
                parallel::conv2d(k, par, &g, x, wt, packed, b, y);
                if chan_add != NONE {
                    generic::add_channel_bias(y, hw, c);
                }
                if residual != NONE {
                    generic::residual_div(y, r, div);
                }
            }
            Op::GroupNorm {
                input,
                out,
                c,
                hw,
                groups,
                eps,
                gamma,
                beta,
                silu,
                scale_shift,
            } => {
                let (gm, bt) = (self.w(gamma, i)?, self.w(beta, i)?);
                if self.model.buffer(input)?.dtype == DType::I8 {
                    let in_q = self.q(input, hw as usize);
                    let out_scale = self.q(out, 1).scale;
                    let [x, y, ss] = self.raw([input, out, scale_shift])?;
                    let a = quant::GroupNormI8Args {
                        c: c as usize,
                        hw: hw as usize,
                        groups: groups as usize,
                        eps,
                        gamma: gm,
                        beta: bt,
                        scale_shift: opt(scale_shift, &*f32s(ss)?),
                        silu,
                        in_q,
                        out_scale,
                    };
                    parallel::group_norm_i8(k, par, &a, i8s(x), i8s(y));
                    return Ok(());
                }
                let [x, y, ss] = self.bufs([input, out, scale_shift])?;
                let a = generic::GroupNormArgs {
                    c: c as usize,
                    hw: hw as usize,
                    groups: groups as usize,
                    eps,
                    gamma: gm,
                    beta: bt,
                    scale_shift: opt(scale_shift, &*ss),
                    silu,
                };
                parallel::group_norm(k, par, &a, x, y);
            }
            Op::Concat { a, b, out, na, .. } => {
                // A byte copy for either dtype: int8 branches keep their own scales (the out buffer's two).
                let cut = na as usize * self.model.buffer(a)?.dtype.size() as usize;
                let bad = Error::BadBuffer { index: out };
                if a == b {
                    let [x, o] = self.raw([a, out])?;
                    let (lo, hi) = o.split_at_mut_checked(cut).ok_or(bad)?;
                    if !(copy_exact(lo, x) && copy_exact(hi, x)) {
                        return Err(bad);
                    }
                } else {
                    let [x, y, o] = self.raw([a, b, out])?;
                    let (lo, hi) = o.split_at_mut_checked(cut).ok_or(bad)?;
                    if !(copy_exact(lo, x) && copy_exact(hi, y)) {
                        return Err(bad);
                    }
                }
            }
            Op::AvgPool2 {
                input,
                out,
                c,
                h,
                w,
            } => {
                let (c, h, w) = (c as usize, h as usize, w as usize);
                if self.model.buffer(input)?.dtype == DType::I8 {
                    let (si, so) = (self.q(input, 1).scale, self.q(out, 1).scale);
                    let [x, y] = self.raw([input, out])?;
                    quant::avg_pool2_i8(i8s(x), si, c, h, w, i8s(y), so);
                } else {
                    let [x, y] = self.bufs([input, out])?;
                    generic::avg_pool2(x, c, h, w, y);
                }
            }
            Op::Upsample2 {
                input,
                out,
                c,
                h,
                w,
            } => {
                let (c, h, w) = (c as usize, h as usize, w as usize);
                if self.model.buffer(input)?.dtype == DType::I8 {
                    let [x, y] = self.raw([input, out])?;
                    quant::upsample_nearest2_i8(i8s(x), c, h, w, i8s(y));
                } else {
                    let [x, y] = self.bufs([input, out])?;
                    generic::upsample_nearest2(x, c, h, w, y);
                }
            }
            Op::Attention {
                q,
                k: kb,
                v,
                out,
                scores,
                heads,
                head_dim,
                n,
            } => {
                let g = generic::AttentionGeom {
                    heads: heads as usize,
                    head_dim: head_dim as usize,
                    n: n as usize,
                };
                if self.model.buffer(q)?.dtype == DType::I8 {
                    let (sq, sk, sv) =
                        (self.q(q, 1).scale, self.q(kb, 1).scale, self.q(v, 1).scale);
                    let out_i8 = self.model.buffer(out)?.dtype == DType::I8;
                    let so = self.q(out, 1).scale;
                    let [qq, kk, vv, o, s] = self.raw([q, kb, v, out, scores])?;
                    let o = if out_i8 {
                        QOut::I8 {
                            data: i8s(o),
                            scale: so,
                        }
                    } else {
                        QOut::F32(f32s(o)?)
                    };
                    parallel::attention_i8(
                        k,
                        par,
                        &g,
                        i8s(qq),
                        sq,
                        i8s(kk),
                        sk,
                        i8s(vv),
                        sv,
                        f32s(s)?,
                        o,
                    );
                } else {
                    let [qq, kk, vv, o, s] = self.bufs([q, kb, v, out, scores])?;
                    parallel::attention(k, par, &g, qq, kk, vv, s, o);
                }
            }
            Op::Quantize { input, out, .. } => {
                let so = self.q(out, 1).scale;
                let [x, y] = self.raw([input, out])?;
                quant::quantize_slice(f32s(x)?, so, i8s(y));
            }
            Op::Dequantize {
                input, out, plane, ..
            } => {
                let q = self.q(input, plane as usize);
                let [x, y] = self.raw([input, out])?;
                quant::dequantize_slice(i8s(x), q, plane as usize, f32s(y)?);
            }
            Op::Affine { buf, mul, add, .. } => {
                let [x] = self.bufs([buf])?;
                generic::affine_inplace(x, mul, add);
            }
            Op::Add { a, b, .. } => {
                let [x, y] = self.bufs([a, b])?;
                for (p, q) in x.iter_mut().zip(y.iter()) {
                    *p += *q;
                }
            }
        }
        Ok(())
    }
}
