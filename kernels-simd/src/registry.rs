//! Kernel dispatch: one table of function pointers per tier.
//!
//! Only the generic tier exists so far; SIMD tiers (AVX2/AVX-512, NEON, Cortex-M DSP/MVE) install their entries on
//! top of it. With `std` a tier is picked by runtime detection, without it by `cfg(target_feature)`, and the
//! environment variable `EMBER_KERNELS=generic` forces the reference tier (std only).

use crate::{generic, Conv2dGeom, Weights};

/// Signature of a conv2d kernel (see [`generic::conv2d`]).
pub type Conv2dFn = fn(&Conv2dGeom, &[f32], Weights<'_>, Option<Weights<'_>>, &mut [f32]);
/// Signature of a linear kernel (see [`generic::linear`]).
pub type LinearFn = fn(&[f32], Weights<'_>, Option<Weights<'_>>, bool, bool, &mut [f32]);
/// Signature of a group-norm kernel (see [`generic::group_norm`]).
pub type GroupNormFn = fn(&generic::GroupNormArgs<'_>, &[f32], &mut [f32]);
/// Signature of an attention kernel (see [`generic::attention`]): q, k, v, scores scratch, out.
pub type AttentionFn = fn(&generic::AttentionGeom, &[f32], &[f32], &[f32], &mut [f32], &mut [f32]);

/// Function pointers to the kernels a runtime calls. Every entry has the signature of its [`generic`] twin.
#[derive(Clone, Copy, Debug)]
pub struct KernelTable {
    /// Name of the tier, e.g. `"generic"`.
    pub name: &'static str,
    /// See [`generic::conv2d`].
    pub conv2d: Conv2dFn,
    /// See [`generic::linear`].
    pub linear: LinearFn,
    /// See [`generic::group_norm`].
    pub group_norm: GroupNormFn,
    /// See [`generic::attention`].
    pub attention: AttentionFn,
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
