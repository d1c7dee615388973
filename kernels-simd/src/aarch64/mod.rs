//! aarch64 tiers (NEON, dotprod). Each exposes a [`KernelTable`](crate::KernelTable) with its kernels installed over
//! the generic ones; [`tier`] returns it only when the CPU (runtime detection with `std`, `target_feature` without)
//! can run it.
//!
//! * `neon` (Advanced SIMD, every Cortex-A): `f32` convolution with lane-indexed FMA, int8 convolution with
//!   `smull`/`smlal`/`sadalp`, `f32` group norm and attention with a polynomial `exp`, `f16` weights converted by
//!   `fcvtl` (ARMv8.0 Advanced SIMD, no FEAT_FP16 needed) in the convolution and the linear layer ([`neon`]);
//!   int8 attention with lane-indexed `smlal` scores and query rows in the lanes, bit-identical to generic
//!   (`attn_i8.rs`).
//!   On weights packed offline (family `aarch64-neon-wino8`) its int8 3×3 stride-1 layers run as exact integer
//!   Winograd F(2×2, 3×3) with `smlal` by lane, bit-identical too ([`wino8`]); on family `aarch64-neon-f32` its
//!   `f32` 3×3 stride-1 layers run as Winograd F(2×2, 3×3) with `fmla` by lane ([`winof`], both tiers).
//! * `dotprod` (FEAT_DotProd, Cortex-A55/A76 and later): int8 convolution with `sdot` ([`dotprod`]); the rest from
//!   `neon`.
//!
//! Both share the band-tile drivers of [`rows`]; int8 results are bit-identical to the generic tier.
#![allow(unsafe_code)] // SIMD intrinsics and `sdot` behind #[target_feature]; every block states its invariant.

mod attn_i8;
pub mod dotprod;
pub mod neon;
mod rows;
mod wino8;
mod winof;

use crate::registry::{KernelTable, GENERIC};

/// NEON: `f32` and int8 direct convolution, `f32` group norm, `f32` and int8 attention, `fcvtl` conversion of `f16`
/// weights (convolution and linear); the int8 group norm from the generic tier.
static NEON: KernelTable = KernelTable {
    name: "neon",
    bit_exact: false, // float kernels sum in other orders
    conv2d: neon::conv2d,
    conv2d_packed: Some((crate::pack::AARCH64_NEON_F32, winof::conv2d_packed)),
    conv2d_i8: neon::conv2d_i8,
    conv2d_i8_packed: Some((crate::pack::AARCH64_NEON_WINO8, wino8::conv2d_i8_packed)),
    linear: neon::linear,
    f16_to_f32: neon::f16_to_f32,
    group_norm: neon::group_norm,
    attention: neon::attention,
    attention_rows: Some(neon::attention_rows),
    attention_i8: attn_i8::attention_i8,
    attention_i8_rows: Some(attn_i8::attention_i8_rows),
    ..GENERIC
};

/// dotprod: int8 convolution with `sdot`; everything else from [`NEON`] (every dotprod CPU has NEON).
static DOTPROD: KernelTable = KernelTable {
    name: "dotprod",
    bit_exact: false, // float kernels sum in other orders
    conv2d_i8: dotprod::conv2d_i8,
    conv2d_i8_packed: Some((crate::pack::AARCH64_NEON, dotprod::conv2d_i8_packed)),
    ..NEON
};

/// Every tier name this build knows on aarch64, lowest first.
pub const ALL_TIERS: &[&str] = &["generic", "neon", "dotprod"];

/// Whether this CPU has Advanced SIMD (NEON).
pub fn has_neon() -> bool {
    #[cfg(feature = "std")]
    {
        std::arch::is_aarch64_feature_detected!("neon")
    }
    #[cfg(not(feature = "std"))]
    {
        cfg!(target_feature = "neon")
    }
}

/// Whether this CPU has NEON and FEAT_DotProd (`sdot` / `udot`).
pub fn has_dotprod() -> bool {
    #[cfg(feature = "std")]
    {
        has_neon() && std::arch::is_aarch64_feature_detected!("dotprod")
    }
    #[cfg(not(feature = "std"))]
    {
        has_neon() && cfg!(target_feature = "dotprod")
    }
}

/// The tier named `name` if this CPU can run it.
pub fn tier(name: &str) -> Option<&'static KernelTable> {
    match name {
        "neon" if has_neon() => Some(&NEON),
        "dotprod" if has_dotprod() => Some(&DOTPROD),
        _ => None,
    }
}
