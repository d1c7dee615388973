//! The `.ember` blob format: constants, little-endian readers and the record types shared by the runtime (which
//! reads them) and `quantize-tool` (which writes them). `docs/FORMAT.md` is the prose specification.
//!
//! Every reader here is total: it returns `None`/an error on short input instead of panicking.

use crate::error::{Error, SectionKind};

/// First four bytes of every blob.
pub const MAGIC: [u8; 4] = *b"EMBR";
/// Format major version this runtime reads; a different major is rejected.
pub const VERSION_MAJOR: u16 = 1;
/// Format minor version written by this crate's writer; higher minors are read (additions are optional sections).
pub const VERSION_MINOR: u16 = 0;
/// Size of the fixed header.
pub const HEADER_LEN: usize = 64;
/// Size of one section-table entry.
pub const SECTION_ENTRY_LEN: usize = 16;
/// Size of one tensor-table entry.
pub const TENSOR_ENTRY_LEN: usize = 48;
/// Size of one buffer-table entry.
pub const BUFFER_ENTRY_LEN: usize = 16;
/// Number of `u32` words in one op record.
pub const OP_WORDS: usize = 24;
/// Size of one op record.
pub const OP_RECORD_LEN: usize = OP_WORDS * 4;
/// Number of `u32` words of the model section.
pub const MODEL_WORDS: usize = 16;
/// Number of `u32` words of the schedule section.
pub const SCHEDULE_WORDS: usize = 16;
/// Alignment of tensor data and of arena buffers, in bytes.
pub const ALIGN: usize = 16;
/// "No index" in optional index fields.
pub const NONE: u32 = u32::MAX;
/// Section flag: a reader that does not know this section kind may skip it.
pub const SECTION_OPTIONAL: u32 = 1;
/// Largest element count of any tensor or buffer (2^26, 256 MiB of f32): keeps all index math far from overflow.
pub const MAX_ELEMS: u32 = 1 << 26;

/// Section kind numbers.
pub mod section {
    /// Model description.
    pub const MODEL: u32 = 1;
    /// Tensor table.
    pub const TENSORS: u32 = 2;
    /// Buffer table (memory plan).
    pub const BUFFERS: u32 = 3;
    /// Op list.
    pub const OPS: u32 = 4;
    /// Tensor data.
    pub const DATA: u32 = 5;
    /// UTF-8 names.
    pub const STRINGS: u32 = 6;
    /// Noise schedule.
    pub const SCHEDULE: u32 = 7;
    /// Explicit inference timesteps (`u32` each, strictly decreasing, below `num_train_timesteps`): the schedule a
    /// distilled student was trained on. Not optional: a runtime that ignored it would sample wrongly.
    pub const TIMESTEPS: u32 = 8;
    /// Explicit betas (`f32` each, `num_train_timesteps` of them): the schedule when `beta_schedule` is 3
    /// (`trained_betas`). Not optional.
    pub const BETAS: u32 = 9;
    /// Activation quantization (int8 blobs): calibration timesteps and per-timestep scales of every buffer.
    pub const QUANT: u32 = 10;
    /// Boot self-test record (optional): a seeded input, a timestep, a class and the FNV-1a hash of the output.
    pub const SELF_TEST: u32 = 11;
    /// Weights packed offline into a kernel family's tile layout (optional): a `u32` entry count, then per entry
    /// `family, op, split, offset, len, 0` (`u32` each; `offset` from the section's start, 16-aligned; entries
    /// sorted by `(family, op)`, no repeats), then the packed bytes. See `ember_kernels::pack`.
    pub const PACKED: u32 = 12;
}

/// `u32` words of one entry of the PACKED section.
pub const PACKED_ENTRY_WORDS: usize = 6;

pub(crate) fn section_kind(k: u32) -> SectionKind {
    match k {
        section::MODEL => SectionKind::Model,
        section::TENSORS => SectionKind::Tensors,
        section::BUFFERS => SectionKind::Buffers,
        section::OPS => SectionKind::Ops,
        section::DATA => SectionKind::Data,
        section::STRINGS => SectionKind::Strings,
        section::SCHEDULE => SectionKind::Schedule,
        section::TIMESTEPS => SectionKind::Timesteps,
        section::BETAS => SectionKind::Betas,
        section::QUANT => SectionKind::Quant,
        section::SELF_TEST => SectionKind::SelfTest,
        section::PACKED => SectionKind::Packed,
        other => SectionKind::Unknown(other),
    }
}

/// Element type of a tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[repr(u32)]
pub enum DType {
    /// IEEE binary32.
    F32 = 1,
    /// IEEE binary16.
    F16 = 2,
    /// Signed 8-bit integer (quantized; scales in a later section).
    I8 = 3,
    /// Signed 32-bit integer.
    I32 = 4,
}

impl DType {
    /// From the on-disk code.
    pub fn from_code(c: u32) -> Option<DType> {
        Some(match c {
            1 => DType::F32,
            2 => DType::F16,
            3 => DType::I8,
            4 => DType::I32,
            _ => return None,
        })
    }
    /// Bytes per element.
    pub fn size(self) -> u32 {
        match self {
            DType::F32 | DType::I32 => 4,
            DType::F16 => 2,
            DType::I8 => 1,
        }
    }
}

/// Little-endian `u32` at byte `off`, or `None` past the end.
#[inline]
pub fn rd_u32(b: &[u8], off: usize) -> Option<u32> {
    let s = b.get(off..off.checked_add(4)?)?;
    Some(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

/// Little-endian `u16` at byte `off`, or `None` past the end.
#[inline]
pub fn rd_u16(b: &[u8], off: usize) -> Option<u16> {
    let s = b.get(off..off.checked_add(2)?)?;
    Some(u16::from_le_bytes([s[0], s[1]]))
}

/// `n` little-endian words starting at byte `off`.
pub fn rd_words<const N: usize>(b: &[u8], off: usize) -> Option<[u32; N]> {
    let mut w = [0u32; N];
    for (i, x) in w.iter_mut().enumerate() {
        *x = rd_u32(b, off.checked_add(i * 4)?)?;
    }
    Some(w)
}

/// One entry of the tensor table (48 bytes: dtype, rank, dims\[4\], offset, nbytes, name offset, name length,
/// quantization-parameter index, reserved).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TensorEntry {
    /// Element type.
    pub dtype: DType,
    /// Number of meaningful dims (1..=4).
    pub rank: u32,
    /// Dimensions, unused ones 1.
    pub dims: [u32; 4],
    /// Absolute byte offset of the data in the blob (16-aligned, inside the data section).
    pub offset: u32,
    /// Byte length of the data.
    pub nbytes: u32,
    /// Offset of the name in the strings section.
    pub name_off: u32,
    /// Length of the name.
    pub name_len: u32,
    /// Index of quantization parameters ([`NONE`] for float tensors; reserved for int8).
    pub quant: u32,
}

impl TensorEntry {
    /// Element count.
    pub fn numel(&self) -> u32 {
        self.nbytes / self.dtype.size()
    }

    /// Encode to the on-disk form.
    pub fn encode(&self) -> [u8; TENSOR_ENTRY_LEN] {
        let w = [
            self.dtype as u32,
            self.rank,
            self.dims[0],
            self.dims[1],
            self.dims[2],
            self.dims[3],
            self.offset,
            self.nbytes,
            self.name_off,
            self.name_len,
            self.quant,
            0,
        ];
        words_to_bytes(&w)
    }

    /// Decode and check self-consistency (not yet against the blob); `index` is for the error.
    pub fn decode(b: &[u8], index: u32) -> Result<TensorEntry, Error> {
        let bad = Error::BadTensor { index };
        let w: [u32; 12] = rd_words(b, 0).ok_or(bad)?;
        let dtype = DType::from_code(w[0]).ok_or(bad)?;
        let rank = w[1];
        if !(1..=4).contains(&rank) {
            return Err(bad);
        }
        let dims = [w[2], w[3], w[4], w[5]];
        let mut n: u64 = 1;
        for (i, &d) in dims.iter().enumerate() {
            if d == 0 || (i as u32 >= rank && d != 1) {
                return Err(bad);
            }
            n = n.saturating_mul(d as u64);
        }
        if n > MAX_ELEMS as u64
            || n * dtype.size() as u64 != w[7] as u64
            || !(w[6] as usize).is_multiple_of(ALIGN)
        {
            return Err(bad);
        }
        Ok(TensorEntry {
            dtype,
            rank,
            dims,
            offset: w[6],
            nbytes: w[7],
            name_off: w[8],
            name_len: w[9],
            quant: w[10],
        })
    }
}

/// One entry of the buffer table: an activation's place in the arena (16 bytes: offset, numel, dtype, split).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BufferEntry {
    /// Byte offset in the arena (16-aligned).
    pub offset: u32,
    /// Element count.
    pub numel: u32,
    /// Element type: `F32` activations, `I8` quantized activations (scales in the QUANT section), `I32` scratch.
    pub dtype: DType,
    /// `I8` only: the element index where the second scale starts (a skip concatenation keeps one scale per
    /// branch); 0 means one scale for the whole buffer.
    pub split: u32,
}

impl BufferEntry {
    /// Encode to the on-disk form.
    pub fn encode(&self) -> [u8; BUFFER_ENTRY_LEN] {
        words_to_bytes(&[self.offset, self.numel, self.dtype as u32, self.split])
    }
    /// Byte length.
    pub fn nbytes(&self) -> u64 {
        self.numel as u64 * self.dtype.size() as u64
    }
}

/// Little-endian bytes of `N` words (`M` must be `4·N`).
pub fn words_to_bytes<const N: usize, const M: usize>(w: &[u32; N]) -> [u8; M] {
    let mut out = [0u8; M];
    for (chunk, x) in out.chunks_exact_mut(4).zip(w) {
        chunk.copy_from_slice(&x.to_le_bytes());
    }
    out
}

/// The model section: what the network takes and gives, and its memory plan's totals.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ModelInfo {
    /// Input channels (including any concat-conditioning channels).
    pub in_channels: u32,
    /// Output channels (`2·C` for learned-variance models).
    pub out_channels: u32,
    /// Sample height.
    pub height: u32,
    /// Sample width.
    pub width: u32,
    /// Number of class labels (0: unconditional).
    pub num_classes: u32,
    /// Class conditioning kind: 0 none, 1 embedding table, 2 sinusoidal projection + MLP (`class_embed_type="timestep"`).
    pub class_kind: u32,
    /// Buffer receiving the input sample.
    pub input_buffer: u32,
    /// Buffer holding the output after the last op.
    pub output_buffer: u32,
    /// Arena bytes the memory plan needs.
    pub arena_bytes: u32,
    /// Parameter count.
    pub params: u32,
    /// Multiply-accumulates per forward (low word).
    pub macs_lo: u32,
    /// Multiply-accumulates per forward (high word).
    pub macs_hi: u32,
    /// Largest total of simultaneously live activation bytes (the plan's lower bound).
    pub liveness_bytes: u32,
    /// Weight dtype code of the blob (informational: 1 f32, 2 f16).
    pub weight_dtype: u32,
    /// The class label that means "no class" (classifier-free guidance's unconditional pass), stored as
    /// label + 1; 0 when the model has none.
    pub null_class_plus1: u32,
}

impl ModelInfo {
    /// Decode from the section's words.
    pub fn from_words(w: &[u32; MODEL_WORDS]) -> ModelInfo {
        ModelInfo {
            in_channels: w[0],
            out_channels: w[1],
            height: w[2],
            width: w[3],
            num_classes: w[4],
            class_kind: w[5],
            input_buffer: w[6],
            output_buffer: w[7],
            arena_bytes: w[8],
            params: w[9],
            macs_lo: w[10],
            macs_hi: w[11],
            liveness_bytes: w[12],
            weight_dtype: w[13],
            null_class_plus1: w[14],
        }
    }
    /// Encode to the section's words.
    pub fn to_words(&self) -> [u32; MODEL_WORDS] {
        let mut w = [0u32; MODEL_WORDS];
        w[..15].copy_from_slice(&[
            self.in_channels,
            self.out_channels,
            self.height,
            self.width,
            self.num_classes,
            self.class_kind,
            self.input_buffer,
            self.output_buffer,
            self.arena_bytes,
            self.params,
            self.macs_lo,
            self.macs_hi,
            self.liveness_bytes,
            self.weight_dtype,
            self.null_class_plus1,
        ]);
        w
    }
    /// The null (unconditional) class label for classifier-free guidance, if the model has one.
    pub fn null_class(&self) -> Option<u32> {
        self.null_class_plus1.checked_sub(1)
    }
    /// Multiply-accumulates per forward.
    pub fn macs(&self) -> u64 {
        (self.macs_hi as u64) << 32 | self.macs_lo as u64
    }
    /// Elements of the input sample (saturating: a validated model keeps it ≤ 2^26, on 32-bit targets too).
    pub fn input_len(&self) -> usize {
        (self.in_channels as usize)
            .saturating_mul(self.height as usize)
            .saturating_mul(self.width as usize)
    }
    /// Elements of the output (saturating, as [`ModelInfo::input_len`]).
    pub fn output_len(&self) -> usize {
        (self.out_channels as usize)
            .saturating_mul(self.height as usize)
            .saturating_mul(self.width as usize)
    }
}

/// Noise-schedule metadata from the checkpoint's `scheduler_config.json` (samplers read it; the forward pass does not).
#[derive(Clone, Copy, Debug, PartialEq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ScheduleInfo {
    /// `num_train_timesteps`.
    pub num_train_timesteps: u32,
    /// `beta_start`.
    pub beta_start: f32,
    /// `beta_end`.
    pub beta_end: f32,
    /// `beta_schedule`: 0 linear, 1 scaled_linear, 2 squaredcos_cap_v2, 3 explicit (`trained_betas`, not yet stored).
    pub beta_schedule: u32,
    /// `prediction_type`: 0 epsilon, 1 v_prediction, 2 sample.
    pub prediction_type: u32,
    /// `variance_type`: 0 fixed_small, 1 fixed_large, 2 learned_range, 3 learned, 4 fixed_small_log, 5 fixed_large_log.
    pub variance_type: u32,
    /// `clip_sample` (0/1).
    pub clip_sample: u32,
    /// `clip_sample_range`.
    pub clip_sample_range: f32,
    /// `timestep_spacing`: 0 leading, 1 trailing, 2 linspace.
    pub timestep_spacing: u32,
    /// `steps_offset`.
    pub steps_offset: u32,
    /// Scheduler class: 0 unknown, 1 DDPM, 2 DDIM, 3 Euler, 4 Euler ancestral, 5 DPM-Solver multistep, 6 LCM.
    pub scheduler_class: u32,
    /// LCM `timestep_scaling` as f32 bits; 0 means diffusers' default, 10.0.
    pub timestep_scaling_bits: u32,
    /// 1 when `set_alpha_to_one` is false (DDIM / LCM use ᾱ₀ past the last step); 0: true, diffusers' default.
    pub alpha_final_is_first: u32,
    /// LCM `original_inference_steps`; 0 means diffusers' default, 50.
    pub original_inference_steps: u32,
    /// Guidance scale a distilled student has folded in, as f32 bits; 0: none (informational, shown to users).
    pub distilled_guidance_bits: u32,
}

impl ScheduleInfo {
    /// Decode and check every code.
    pub fn from_words(w: &[u32; SCHEDULE_WORDS]) -> Result<ScheduleInfo, Error> {
        let limits = [(3, 3), (4, 2), (5, 5), (6, 1), (8, 2), (10, 6), (12, 1)];
        for (field, max) in limits {
            if w[field] > max {
                return Err(Error::BadSchedule {
                    field: field as u32,
                });
            }
        }
        Ok(ScheduleInfo {
            num_train_timesteps: w[0],
            beta_start: f32::from_bits(w[1]),
            beta_end: f32::from_bits(w[2]),
            beta_schedule: w[3],
            prediction_type: w[4],
            variance_type: w[5],
            clip_sample: w[6],
            clip_sample_range: f32::from_bits(w[7]),
            timestep_spacing: w[8],
            steps_offset: w[9],
            scheduler_class: w[10],
            timestep_scaling_bits: w[11],
            alpha_final_is_first: w[12],
            original_inference_steps: w[13],
            distilled_guidance_bits: w[14],
        })
    }
    /// Encode to the section's words.
    pub fn to_words(&self) -> [u32; SCHEDULE_WORDS] {
        let mut w = [0u32; SCHEDULE_WORDS];
        w[..15].copy_from_slice(&[
            self.num_train_timesteps,
            self.beta_start.to_bits(),
            self.beta_end.to_bits(),
            self.beta_schedule,
            self.prediction_type,
            self.variance_type,
            self.clip_sample,
            self.clip_sample_range.to_bits(),
            self.timestep_spacing,
            self.steps_offset,
            self.scheduler_class,
            self.timestep_scaling_bits,
            self.alpha_final_is_first,
            self.original_inference_steps,
            self.distilled_guidance_bits,
        ]);
        w
    }
    /// LCM `timestep_scaling` (default 10).
    pub fn timestep_scaling(&self) -> f32 {
        match self.timestep_scaling_bits {
            0 => 10.0,
            b => f32::from_bits(b),
        }
    }
    /// LCM `original_inference_steps` (default 50).
    pub fn original_steps(&self) -> u32 {
        match self.original_inference_steps {
            0 => 50,
            n => n,
        }
    }
    /// The guidance scale folded into a distilled student, if recorded.
    pub fn distilled_guidance(&self) -> Option<f32> {
        (self.distilled_guidance_bits != 0).then(|| f32::from_bits(self.distilled_guidance_bits))
    }
}

/// FNV-1a (32-bit) over the bit patterns of `x` (little-endian bytes): the self-test's output hash.
pub fn fnv1a_f32(x: &[f32]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for v in x {
        for b in v.to_bits().to_le_bytes() {
            h ^= b as u32;
            h = h.wrapping_mul(0x0100_0193);
        }
    }
    h
}

/// CRC-32 (IEEE 802.3, reflected, polynomial 0xEDB88320), as zlib computes it.
pub fn crc32(data: &[u8]) -> u32 {
    crc32_update(0xFFFF_FFFF, data) ^ 0xFFFF_FFFF
}

/// CRC tables for slicing by 8: `CRC_TABLES[0]` is the classic byte table; `CRC_TABLES[k][i]` is the CRC of byte
/// `i` followed by `k` zero bytes, so eight bytes fold into the state with eight lookups and no loop-carried
/// dependency between them (about 4× the byte-at-a-time speed; 8 KiB of flash).
const CRC_TABLES: [[u32; 256]; 8] = {
    let mut t = [[0u32; 256]; 8];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        t[0][i] = c;
        i += 1;
    }
    let mut k = 1;
    while k < 8 {
        let mut i = 0;
        while i < 256 {
            let prev = t[k - 1][i];
            t[k][i] = t[0][(prev & 0xFF) as usize] ^ (prev >> 8);
            i += 1;
        }
        k += 1;
    }
    t
};

fn crc32_update(mut c: u32, data: &[u8]) -> u32 {
    let t = &CRC_TABLES;
    let mut chunks = data.chunks_exact(8);
    for ch in &mut chunks {
        let lo = c ^ u32::from_le_bytes([ch[0], ch[1], ch[2], ch[3]]);
        c = t[7][(lo & 0xFF) as usize]
            ^ t[6][((lo >> 8) & 0xFF) as usize]
            ^ t[5][((lo >> 16) & 0xFF) as usize]
            ^ t[4][(lo >> 24) as usize]
            ^ t[3][ch[4] as usize]
            ^ t[2][ch[5] as usize]
            ^ t[1][ch[6] as usize]
            ^ t[0][ch[7] as usize];
    }
    for &b in chunks.remainder() {
        c = t[0][((c ^ b as u32) & 0xFF) as usize] ^ (c >> 8);
    }
    c
}

#[cfg(test)]
mod tests {
    use super::{crc32, CRC_TABLES};

    /// The byte-at-a-time definition the sliced form must equal.
    fn crc32_bytewise(data: &[u8]) -> u32 {
        let mut c = 0xFFFF_FFFFu32;
        for &b in data {
            c = CRC_TABLES[0][((c ^ b as u32) & 0xFF) as usize] ^ (c >> 8);
        }
        c ^ 0xFFFF_FFFF
    }

    #[test]
    fn crc32_matches_zlib_and_the_bytewise_form() {
        // The standard check value of CRC-32/ISO-HDLC (zlib's crc32).
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
        let mut x = 0x9E37_79B9u32;
        let data: [u8; 300] = core::array::from_fn(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        });
        // Every length and start offset across the 8-byte slicing boundaries.
        for start in 0..9 {
            for end in start..data.len() {
                let s = &data[start..end];
                assert_eq!(crc32(s), crc32_bytewise(s), "bytes {start}..{end}");
            }
        }
    }
}
