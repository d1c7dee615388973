//! Kernel dispatch: one table of function pointers per tier.
//!
//! Only the generic tier exists so far; SIMD tiers (AVX2/AVX-512, NEON, Cortex-M DSP/MVE) install their entries on
//! top of it. With `std` a tier is picked by runtime detection, without it by `cfg(target_feature)`, and the
//! environment variable `EMBER_KERNELS=generic` forces the reference tier (std only).

use crate::{generic, Conv2dGeom, Weights};

/// Function pointers to the kernels a runtime calls. Every entry has the signature of its [`generic`] twin.
#[derive(Clone, Copy, Debug)]
pub struct KernelTable {
    /// Name of the tier, e.g. `"generic"`.
    pub name: &'static str,
    /// See [`generic::conv2d`].
    pub conv2d: fn(&Conv2dGeom, &[f32], Weights<'_>, Option<Weights<'_>>, &mut [f32]),
    /// See [`generic::linear`].
    pub linear: fn(&[f32], Weights<'_>, Option<Weights<'_>>, bool, bool, &mut [f32]),
    /// See [`generic::group_norm`].
    pub group_norm: fn(&generic::GroupNormArgs<'_>, &[f32], &mut [f32]),
    /// See [`generic::attention`].
    pub attention: fn(&generic::AttentionGeom, &[f32], &[f32], &[f32], &mut [f32], &mut [f32]),
}

/// The scalar reference tier.
pub static GENERIC: KernelTable = KernelTable {
    name: "generic",
    conv2d: generic::conv2d,
    linear: generic::linear,
    group_norm: generic::group_norm,
    attention: generic::attention,
};

/// The best tier this build can run. Today: [`GENERIC`] on every target.
pub fn best() -> &'static KernelTable {
    #[cfg(feature = "std")]
    {
        if let Ok(v) = std::env::var("EMBER_KERNELS") {
            if v == "generic" {
                return &GENERIC;
            }
        }
    }
    &GENERIC
}
