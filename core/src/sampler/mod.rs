//! Samplers' building blocks: the training noise schedule and the inference timesteps, computed on the device from
//! a blob's [`ScheduleInfo`](crate::ScheduleInfo) into caller-owned slices (no allocation).
//!
//! Everything here reproduces diffusers 0.42.1 (`DDPMScheduler` / `DDIMScheduler`, torch 2.15.0, numpy 2.4.6) bit
//! for bit; `tests/tests/schedules.rs` checks it against tensors diffusers itself produced
//! (`tests/golden/schedules.py`). Random noise for the samplers comes from [`crate::rng`].
//!
//! ```
//! use ember_core::sampler::schedule::{fill_alphas_cumprod, fill_timesteps};
//! use ember_core::ScheduleInfo;
//!
//! // DDPMScheduler() defaults: linear 1e-4..0.02 over 1000 steps, "leading" spacing.
//! let s = ScheduleInfo { num_train_timesteps: 1000, beta_start: 1e-4, beta_end: 0.02, ..Default::default() };
//! let mut betas = [0f32; 1000];
//! let mut alphas_cumprod = [0f32; 1000];
//! fill_alphas_cumprod(&s, &mut betas, &mut alphas_cumprod)?;
//!
//! let mut timesteps = [0u32; 10]; // 10 inference steps
//! fill_timesteps(&s, &mut timesteps)?;
//! assert_eq!(timesteps, [900, 800, 700, 600, 500, 400, 300, 200, 100, 0]);
//! # Ok::<(), ember_core::Error>(())
//! ```

pub mod driver;
pub mod schedule;
pub mod step;

pub use schedule::{
    alphas_cumprod_from_betas, fill_alphas_cumprod, fill_betas, fill_timesteps, BetaSchedule,
    TimestepSpacing,
};
