//! Kernel dispatch: one table of function pointers per tier.
//!
//! The generic tier is complete; SIMD tiers (today x86_64 AVX2 + FMA; AVX-512, NEON, Cortex-M DSP/MVE to come)
//! install their entries on top of it. With `std` a tier is picked by runtime detection, without it by
//! `cfg(target_feature)`, and the environment variable `EMBER_KERNELS=<tier>` forces a lower one (std only).

use crate::quant::{self, ActQ, QOut};
use crate::{generic, Conv2dGeom, Weights};

/// Signature of a conv2d kernel (see [`generic::conv2d`]).
pub type Conv2dFn = fn(&Conv2dGeom, &[f32], Weights<'_>, Option<Weights<'_>>, &mut [f32]);
/// Signature of a linear kernel (see [`generic::linear`]).
pub type LinearFn = fn(&[f32], Weights<'_>, Option<Weights<'_>>, bool, bool, &mut [f32]);
/// Signature of an exact `f16` → `f32` conversion (see [`generic::f16_to_f32`]): converts
/// `min(src.len(), dst.len())` values.
pub type F16ToF32Fn = fn(&[half::f16], &mut [f32]);
/// Signature of a group-norm kernel (see [`generic::group_norm`]).
pub type GroupNormFn = fn(&generic::GroupNormArgs<'_>, &[f32], &mut [f32]);
/// Signature of an attention kernel (see [`generic::attention`]): q, k, v, scores scratch, out.
pub type AttentionFn = fn(&generic::AttentionGeom, &[f32], &[f32], &[f32], &mut [f32], &mut [f32]);
/// Signature of a float attention kernel for the query tokens `out.rows()` only (the output viewed as
/// `[heads·head_dim][n][1]`), which returns false, writing nothing, where it cannot: the threads of a split by
/// queries each write their own tokens of one output at once. Geometry, q, k, v, output tokens.
pub type AttentionRowsFn =
    fn(&generic::AttentionGeom, &[f32], &[f32], &[f32], &crate::parallel::RowsOut<'_>) -> bool;
/// Signature of an int8 conv2d kernel (see [`quant::conv2d_i8`]): geometry, input, input quantization, weights,
/// weight scales, bias, per-channel add, residual with its scale, divisor, `i32` scratch, output.
pub type Conv2dI8Fn = fn(
    &Conv2dGeom,
    &[i8],
    ActQ,
    &[i8],
    &[f32],
    Option<Weights<'_>>,
    Option<&[f32]>,
    Option<(&[i8], f32)>,
    f32,
    &mut [i32],
    QOut<'_>,
);
/// Signature of a float conv2d kernel on weights packed offline (see [`crate::pack`]): as [`Conv2dFn`], with the
/// packed weights of the whole layer after the canonical ones.
pub type Conv2dPackedFn =
    fn(&Conv2dGeom, &[f32], Weights<'_>, &[u8], Option<Weights<'_>>, &mut [f32]);
/// Signature of a float conv2d kernel on packed weights that computes only the output rows `rows.rows()` of every
/// channel (and returns false, writing nothing, where it cannot): the threads of a split by rows each write their
/// own rows of one output at once. Geometry, input, the whole layer's packed weights, bias, output rows.
pub type Conv2dPackedRowsFn =
    fn(&Conv2dGeom, &[f32], &[u8], Option<Weights<'_>>, &crate::parallel::RowsOut<'_>) -> bool;
/// Signature of an int8 conv2d kernel on weights packed offline (see [`crate::pack`]): as [`Conv2dI8Fn`], with
/// the packed weights of the whole layer after the canonical ones (which it falls back to if they do not fit).
pub type Conv2dI8PackedFn = fn(
    &Conv2dGeom,
    &[i8],
    ActQ,
    &[i8],
    &[u8],
    &[f32],
    Option<Weights<'_>>,
    Option<&[f32]>,
    Option<(&[i8], f32)>,
    f32,
    &mut [i32],
    QOut<'_>,
);
/// Signature of an int8 group-norm kernel (see [`quant::group_norm_i8`]).
pub type GroupNormI8Fn = fn(&quant::GroupNormI8Args<'_>, &[i8], &mut [i8]);
/// Signature of an int8 attention kernel (see [`quant::attention_i8`]): q, its scale, k, its scale, v, its scale,
/// scores scratch, out.
pub type AttentionI8Fn =
    fn(&generic::AttentionGeom, &[i8], f32, &[i8], f32, &[i8], f32, &mut [f32], QOut<'_>);
/// Signature of an int8 attention kernel for a range of query tokens, as [`AttentionRowsFn`] for
/// [`quant::attention_i8`]: geometry, q, its scale, k, its scale, v, its scale, output tokens.
pub type AttentionI8RowsFn = fn(
    &generic::AttentionGeom,
    &[i8],
    f32,
    &[i8],
    f32,
    &[i8],
    f32,
    crate::parallel::QRowsOut<'_, '_>,
) -> bool;

/// Function pointers to the kernels a runtime calls. Every entry has the signature of its [`generic`] (float) or
/// [`quant`] (int8) twin.
#[derive(Clone, Copy, Debug)]
pub struct KernelTable {
    /// Name of the tier, e.g. `"generic"`.
    pub name: &'static str,
    /// Whether every kernel of the table gives the generic kernels' bits: true for the generic tier and the Cortex-M
    /// tiers, whose own kernels are all bit-identical int8 ones (`scripts/cortexm-kernels.sh` checks them bit for
    /// bit). `ember_core::Model::self_test` then runs with this table rather than the generic one, so the boot
    /// check proves the kernels the device will sample with, in their time. Tiers built with `..GENERIC` must set
    /// it themselves.
    pub bit_exact: bool,
    /// See [`generic::conv2d`].
    pub conv2d: Conv2dFn,
    /// The packed-weight family ([`crate::pack`]) this tier's float convolution reads, and that convolution.
    pub conv2d_packed: Option<(u32, Conv2dPackedFn)>,
    /// The packed float convolution restricted to a band of output rows, where the tier has one (the Winograd
    /// layers of [`crate::pack::winograd`]): [`crate::parallel::conv2d`] then splits those layers by rows, so each
    /// worker transforms only its own part of the input.
    pub conv2d_packed_rows: Option<Conv2dPackedRowsFn>,
    /// See [`generic::linear`].
    pub linear: LinearFn,
    /// See [`generic::f16_to_f32`]: the exact conversion the tier's float kernels use on `f16` weights (F16C on
    /// x86_64, `fcvtl` on aarch64), exposed so it can be checked over every bit pattern.
    pub f16_to_f32: F16ToF32Fn,
    /// See [`generic::group_norm`].
    pub group_norm: GroupNormFn,
    /// See [`generic::attention`].
    pub attention: AttentionFn,
    /// The float attention restricted to a range of query tokens, where the tier has one:
    /// [`crate::parallel::attention`] then splits attention by queries.
    pub attention_rows: Option<AttentionRowsFn>,
    /// See [`quant::conv2d_i8`].
    pub conv2d_i8: Conv2dI8Fn,
    /// The packed-weight family ([`crate::pack`]) this tier's int8 convolution reads, and that convolution;
    /// `None` where the tier only reads canonical weights.
    pub conv2d_i8_packed: Option<(u32, Conv2dI8PackedFn)>,
    /// See [`quant::group_norm_i8`].
    pub group_norm_i8: GroupNormI8Fn,
    /// See [`quant::attention_i8`].
    pub attention_i8: AttentionI8Fn,
    /// The int8 attention restricted to a range of query tokens, where the tier has one (see `attention_rows`).
    pub attention_i8_rows: Option<AttentionI8RowsFn>,
}

/// The scalar reference tier.
pub static GENERIC: KernelTable = KernelTable {
    name: "generic",
    bit_exact: true,
    conv2d: generic::conv2d,
    conv2d_packed: None,
    conv2d_packed_rows: None,
    linear: generic::linear,
    f16_to_f32: generic::f16_to_f32,
    group_norm: generic::group_norm,
    attention: generic::attention,
    attention_rows: None,
    conv2d_i8: quant::conv2d_i8,
    conv2d_i8_packed: None,
    group_norm_i8: quant::group_norm_i8,
    attention_i8: quant::attention_i8,
    attention_i8_rows: None,
};

/// Names of every tier this build knows, lowest first (whether or not this CPU can run them).
pub fn all_tiers() -> &'static [&'static str] {
    #[cfg(target_arch = "x86_64")]
    {
        &["generic", "avx2", "avxvnni", "avx512"]
    }
    #[cfg(target_arch = "aarch64")]
    {
        crate::aarch64::ALL_TIERS
    }
    #[cfg(target_arch = "arm")]
    {
        crate::arm::ALL_TIERS
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64", target_arch = "arm")))]
    {
        &["generic"]
    }
}

/// The tier named `name`, if this build has it and this CPU can run it.
pub fn tier(name: &str) -> Option<&'static KernelTable> {
    if name == "generic" {
        return Some(&GENERIC);
    }
    #[cfg(target_arch = "x86_64")]
    {
        crate::x86_64::tier(name)
    }
    #[cfg(target_arch = "aarch64")]
    {
        crate::aarch64::tier(name)
    }
    #[cfg(target_arch = "arm")]
    {
        crate::arm::tier(name)
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64", target_arch = "arm")))]
    {
        None
    }
}

/// The best tier this CPU can run (runtime detection with `std`, `target_feature` without). With `std`, the
/// environment variable `EMBER_KERNELS=<tier>` forces a tier (e.g. `generic`) if the CPU can run it.
pub fn best() -> &'static KernelTable {
    #[cfg(feature = "std")]
    {
        if let Ok(v) = std::env::var("EMBER_KERNELS") {
            if let Some(t) = tier(v.trim()) {
                return t;
            }
        }
    }
    all_tiers()
        .iter()
        .rev()
        .find_map(|n| tier(n))
        .unwrap_or(&GENERIC)
}
