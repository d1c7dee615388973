//! The one error type of ember-core: small, `Copy`, carrying the numbers that explain it.

use core::fmt;

/// Which part of a blob a [`Error::BadSection`] or [`Error::MissingSection`] names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum SectionKind {
    /// Model description (shapes, inputs, arena size).
    Model,
    /// Tensor table.
    Tensors,
    /// Activation buffer table (the memory plan).
    Buffers,
    /// Op list.
    Ops,
    /// Tensor data.
    Data,
    /// Names.
    Strings,
    /// Noise-schedule metadata.
    Schedule,
    /// Explicit inference timesteps.
    Timesteps,
    /// Explicit betas.
    Betas,
    /// Activation quantization scales.
    Quant,
    /// Boot self-test record.
    SelfTest,
    /// Weights packed offline per target family.
    Packed,
    /// A section kind this version does not know, by number.
    Unknown(u32),
}

/// Why an op record was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum OpFault {
    /// The op kind number is not known to this runtime.
    UnknownKind(u32),
    /// A buffer index is past the buffer table.
    BufferIndex(u32),
    /// A tensor index is past the tensor table.
    TensorIndex(u32),
    /// A buffer has a different element count than the op's shape needs.
    BufferSize {
        /// Buffer index.
        buffer: u32,
        /// Elements the op needs.
        expected: u32,
        /// Elements the buffer holds.
        got: u32,
    },
    /// A tensor has a different element count than the op's shape needs.
    TensorSize {
        /// Tensor index.
        tensor: u32,
        /// Elements the op needs.
        expected: u32,
        /// Elements the tensor holds.
        got: u32,
    },
    /// A tensor's dtype cannot be used by this op.
    TensorDtype(u32),
    /// Two buffers of the op share arena bytes although the op needs them apart.
    Aliasing,
    /// A buffer's dtype (or its quantization split) does not fit the op: int8 and float activations may only
    /// meet where the op supports it (the buffer index given).
    BufferDtype(u32),
    /// A concat or upsample of int8 buffers whose scales do not carry through unchanged (the output buffer).
    ScaleMismatch(u32),
    /// A shape parameter is zero, too large, or inconsistent (the argument's position in the record).
    Shape(u32),
    /// A flag argument is not 0 or 1, or names an input the model does not have.
    Flag(u32),
}

/// Why a sampler set-up was refused ([`Error::Sampler`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum SamplerFault {
    /// The blob has no schedule section (its checkpoint had no scheduler config).
    NoSchedule,
    /// The number of inference steps is 0 or above what the schedule allows (`max`). With `steps` 0 and no
    /// explicit timestep list in the blob, `max` is 0.
    Steps {
        /// Steps asked for.
        steps: u32,
        /// Largest number allowed.
        max: u32,
    },
    /// The schedule's `variance_type` is one this sampler does not implement (code given).
    VarianceType(u32),
    /// `eta` is negative or not finite.
    Eta,
    /// Classifier-free guidance needs a class-conditional model with a null class recorded in the blob.
    NoNullClass,
    /// The guidance scale is not finite.
    GuidanceScale,
    /// `strength` is outside (0, 1], not finite, below 1 without an image, or leaves no step to run.
    Strength,
    /// A conditioning input has the wrong length (`what`: 0 image, 1 mask, 2 concat channels, 3 initial noise).
    ConditioningLen {
        /// Which input.
        what: u32,
        /// Elements expected.
        expected: u32,
        /// Elements given.
        got: u32,
    },
    /// The model takes extra (concat) input channels and none were given, or they were given to a model that
    /// takes none.
    Concat,
    /// A mask was given without an image.
    MaskWithoutImage,
    /// RePaint resampling (`resample` > 1) needs a mask and an ᾱ-space sampler (DDPM, DDIM).
    Resample,
    /// The Langevin corrector needs an ᾱ-space sampler (DDPM, DDIM), at least one step and a finite positive SNR.
    Corrector,
    /// The model's input or output channels do not fit the sampler (e.g. fewer input than output channels).
    Channels,
}

impl fmt::Display for SamplerFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            SamplerFault::NoSchedule => write!(f, "the blob has no noise schedule"),
            SamplerFault::Steps { steps: 0, max: 0 } => {
                write!(f, "0 steps asks for the blob's own timesteps, and it has none")
            }
            SamplerFault::Steps { steps, max } => write!(f, "{steps} steps: allowed 1..={max}"),
            SamplerFault::VarianceType(v) => write!(f, "variance_type code {v} is not implemented"),
            SamplerFault::Eta => write!(f, "eta must be a finite number >= 0"),
            SamplerFault::NoNullClass => write!(
                f,
                "guidance needs a class-conditional model with a null class (convert with --null-class)"
            ),
            SamplerFault::GuidanceScale => write!(f, "the guidance scale is not finite"),
            SamplerFault::Strength => write!(
                f,
                "strength must be in (0, 1], needs an image below 1, and must leave at least one step"
            ),
            SamplerFault::ConditioningLen { what, expected, got } => write!(
                f,
                "{} has {got} elements, expected {expected}",
                ["the image", "the mask", "the concat channels", "the initial noise"]
                    .get(what as usize)
                    .unwrap_or(&"an input")
            ),
            SamplerFault::Concat => write!(
                f,
                "concat channels must be given exactly when the model's in_channels exceed its sample channels"
            ),
            SamplerFault::MaskWithoutImage => write!(f, "a mask needs an image"),
            SamplerFault::Resample => write!(
                f,
                "resampling (> 1) needs a mask and the ddpm or ddim sampler (and 0 is not a count)"
            ),
            SamplerFault::Corrector => write!(
                f,
                "the Langevin corrector needs ddpm or ddim, at least one step and a positive finite SNR"
            ),
            SamplerFault::Channels => {
                write!(f, "the model's channels do not fit a sampler (input < output channels)")
            }
        }
    }
}

/// Everything that can go wrong in ember-core.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum Error {
    /// The blob does not start with the `.ember` magic bytes.
    BadMagic,
    /// The blob's format version is not one this runtime reads.
    UnsupportedVersion {
        /// Major version in the blob.
        major: u16,
        /// Minor version in the blob.
        minor: u16,
    },
    /// The blob is shorter than its header says (or than a header).
    Truncated {
        /// Bytes needed.
        needed: u32,
        /// Bytes present.
        got: u32,
    },
    /// CRC32 over the blob does not match the stored one.
    ChecksumMismatch {
        /// CRC stored in the header.
        stored: u32,
        /// CRC computed over the bytes.
        computed: u32,
    },
    /// The blob's start address is not 16-byte aligned (needed to read weights in place).
    BlobMisaligned,
    /// A section is out of bounds, misaligned or malformed.
    BadSection(SectionKind),
    /// A required section is absent.
    MissingSection(SectionKind),
    /// A tensor-table entry is malformed (bad dtype, shape, or data out of the data section).
    BadTensor {
        /// Tensor index.
        index: u32,
    },
    /// A buffer-table entry is malformed (misaligned, or past the arena).
    BadBuffer {
        /// Buffer index.
        index: u32,
    },
    /// An op record is malformed.
    BadOp {
        /// Op index in the op list.
        index: u32,
        /// What is wrong with it.
        fault: OpFault,
    },
    /// The model description is inconsistent (field number given).
    BadModel {
        /// Word index in the model section.
        field: u32,
    },
    /// The schedule section holds an unknown code (word index given).
    BadSchedule {
        /// Word index in the schedule section.
        field: u32,
    },
    /// The arena given to [`crate::Model::bind`] is too small.
    ArenaTooSmall {
        /// Bytes the model's memory plan needs.
        needed: u32,
        /// Bytes given.
        got: u32,
    },
    /// The arena's start address is not 16-byte aligned.
    ArenaMisaligned,
    /// The input sample has the wrong number of elements.
    InputLen {
        /// Elements expected (`C·H·W`).
        expected: u32,
        /// Elements given.
        got: u32,
    },
    /// The output slice has the wrong number of elements.
    OutputLen {
        /// Elements expected.
        expected: u32,
        /// Elements given.
        got: u32,
    },
    /// The model is class-conditional and no class label was given.
    ClassLabelRequired,
    /// A class label was given to a model that takes none.
    ClassLabelUnexpected,
    /// The class label is past the model's class count.
    ClassLabelOutOfRange {
        /// Label given.
        label: u32,
        /// Number of classes the model knows.
        num_classes: u32,
    },
    /// The timestep is not a finite number, or is outside the schedule.
    BadTimestep,
    /// [`crate::Model::self_test`]: the output's hash differs from the one the converter recorded (the blob or the
    /// kernels are not what the converter ran).
    SelfTestFailed {
        /// Hash recorded in the blob.
        expected: u32,
        /// Hash of this run.
        got: u32,
    },
    /// The sampler set-up is invalid.
    Sampler(SamplerFault),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Error::BadMagic => write!(f, "not an .ember blob (bad magic bytes)"),
            Error::UnsupportedVersion { major, minor } => {
                write!(
                    f,
                    "unsupported .ember format version {major}.{minor} (this runtime reads 1.x)"
                )
            }
            Error::Truncated { needed, got } => {
                write!(f, "blob truncated: needs {needed} bytes, has {got}")
            }
            Error::ChecksumMismatch { stored, computed } => {
                write!(
                    f,
                    "blob checksum mismatch: stored {stored:#010x}, computed {computed:#010x}"
                )
            }
            Error::BlobMisaligned => write!(f, "blob start address is not 16-byte aligned"),
            Error::BadSection(k) => write!(f, "malformed {k:?} section"),
            Error::MissingSection(k) => write!(f, "missing {k:?} section"),
            Error::BadTensor { index } => write!(f, "malformed tensor table entry {index}"),
            Error::BadBuffer { index } => write!(f, "malformed buffer table entry {index}"),
            Error::BadOp { index, fault } => write!(f, "malformed op {index}: {fault:?}"),
            Error::BadModel { field } => {
                write!(f, "inconsistent model description (field {field})")
            }
            Error::Sampler(fault) => write!(f, "invalid sampler set-up: {fault}"),
            Error::BadSchedule { field } => {
                write!(f, "unknown code in schedule section (field {field})")
            }
            Error::ArenaTooSmall { needed, got } => {
                write!(f, "arena too small: model needs {needed} bytes, got {got}")
            }
            Error::ArenaMisaligned => write!(f, "arena start address is not 16-byte aligned"),
            Error::InputLen { expected, got } => {
                write!(f, "input sample has {got} elements, model takes {expected}")
            }
            Error::OutputLen { expected, got } => {
                write!(
                    f,
                    "output slice has {got} elements, model writes {expected}"
                )
            }
            Error::ClassLabelRequired => {
                write!(f, "model is class-conditional: a class label is required")
            }
            Error::ClassLabelUnexpected => {
                write!(f, "model is unconditional: no class label expected")
            }
            Error::ClassLabelOutOfRange { label, num_classes } => {
                write!(
                    f,
                    "class label {label} out of range (model has {num_classes} classes)"
                )
            }
            Error::BadTimestep => write!(f, "timestep is not finite or outside the schedule"),
            Error::SelfTestFailed { expected, got } => write!(
                f,
                "self-test failed: output hash {got:#010x}, the blob records {expected:#010x}"
            ),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for Error {}
