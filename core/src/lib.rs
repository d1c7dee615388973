//! # ember-core
//!
//! The runtime of ember: it runs diffusion U-Nets on edge CPUs with no operating system, no heap and no copies of
//! the weights. A firmware author keeps a `.ember` blob in flash, gives ember one fixed RAM arena, and calls
//! [`Session::forward`]:
//!
//! ```no_run
//! # fn demo(blob: &[u8], arena: &mut [u8], x: &[f32], eps: &mut [f32]) -> Result<(), ember_core::Error> {
//! let model = ember_core::Model::parse(blob)?;          // validates everything, once
//! assert!(arena.len() >= model.arena_bytes());
//! let mut session = model.bind(arena)?;                 // ArenaTooSmall { needed, got } if it does not fit
//! session.forward(x, 999.0, Some(3), eps)?;             // sample, timestep, class label
//! # Ok(()) }
//! ```
//!
//! The blob comes from `quantize-tool convert`, which reads a diffusers checkpoint, lowers the U-Net to a flat op
//! list and plans every activation's arena offset offline. This crate only checks that plan ([`Model::parse`]) and
//! executes it: `#![no_std]`, no `alloc`, no `unsafe`, and no panic or out-of-bounds read for any input bytes.
#![no_std]
#![deny(missing_docs)]

#[cfg(feature = "std")]
extern crate std;

pub mod error;
pub mod format;
mod model;
pub mod op;
pub mod rng;
pub mod sampler;

pub use error::{Error, OpFault, SamplerFault, SectionKind};
pub use format::{ModelInfo, ScheduleInfo};
pub use model::{BufView, Model, Observer, SelfTest, Session, Timesteps};

/// A 16-byte-aligned byte array, for a `static` arena or an embedded blob:
/// `static mut ARENA: ember_core::Aligned<{ ARENA_BYTES }> = ember_core::Aligned([0; ARENA_BYTES]);`
#[derive(Debug)]
#[repr(C, align(16))]
pub struct Aligned<const N: usize>(pub [u8; N]);
