//! 32-bit Arm (Cortex-M) tiers. Each exposes a [`KernelTable`](crate::KernelTable) with its kernels installed over
//! the generic ones; [`tier`] returns it only when the target features allow it (there is no runtime detection on
//! bare metal: the tier is chosen by `cfg!(target_feature)` at build time).
//!
//! * `"dsp"` (Cortex-M4 / M7 / M33 / M55: the DSP extension, `target_feature = "dsp"`): int8 convolution with
//!   `SMLAD` (two 16-bit MACs per instruction), 2 output channels × 2 pixels per inner loop.
//! * `"mve"` (Cortex-M55 / M85: Helium integer MVE): int8 convolution with `VMLADAVA.S8` (16 int8 MACs per
//!   instruction), tail-predicated `DLSTP`/`LETP` loops.
//! * Both: int8 attention with `SMLAD` scores and register-tiled value sums (`attn.rs`), and the int8 group
//!   norm's integer passes (statistics, range, table lookup) in `SMLAD` / `SEL` or Helium reductions (`gn.rs`). rustc does not know the `mve` target feature (it is an LLVM
//!   code-generation feature only), but it reports `neon` for an M-profile core exactly when the core has MVE
//!   (`target-cpu=cortex-m55` / `cortex-m85`), so the tier is selected by `mclass` + `neon`.
//!
//! Both reuse the generic epilogue ([`crate::quant::ConvEpilogue`]) over exact integer sums, so their output is
//! bit-identical to [`crate::quant::conv2d_i8`]. Instructions are written with `core::arch::asm!` (stable Rust); the
//! `core::arch::arm` DSP intrinsics are unstable.
#![allow(unsafe_code)] // inline assembly and the attention's writes through `RawQOut`; every block states its invariant.

#[cfg(target_feature = "dsp")]
mod attn;
mod conv;
#[cfg(target_feature = "dsp")]
mod dsp;
#[cfg(target_feature = "dsp")]
mod gn;
#[cfg(all(target_feature = "mclass", target_feature = "neon"))]
mod mve;

use crate::registry::KernelTable;
#[cfg(any(
    target_feature = "dsp",
    all(target_feature = "mclass", target_feature = "neon")
))]
use crate::registry::GENERIC;

/// DSP extension: `SMLAD` int8 convolution and attention.
#[cfg(target_feature = "dsp")]
static DSP: KernelTable = KernelTable {
    name: "dsp",
    bit_exact: true,
    conv2d_i8: dsp::conv2d_i8,
    attention_i8: attn::attention_i8_dsp,
    attention_i8_rows: Some(attn::attention_i8_rows_dsp),
    group_norm_i8: gn::group_norm_i8_dsp,
    ..GENERIC
};

/// Helium (integer MVE): `VMLADAVA.S8` int8 convolution; the `SMLAD` attention.
#[cfg(all(target_feature = "mclass", target_feature = "neon"))]
static MVE: KernelTable = KernelTable {
    name: "mve",
    bit_exact: true,
    conv2d_i8: mve::conv2d_i8,
    // Helium implies the DSP extension (Armv8.1-M): the `SMLAD` scores, Helium value sums.
    attention_i8: attn::attention_i8_mve,
    attention_i8_rows: Some(attn::attention_i8_rows_mve),
    group_norm_i8: gn::group_norm_i8_mve,
    ..GENERIC
};

/// Every tier name this build knows on 32-bit Arm, lowest first (whether or not this core can run them).
pub const ALL_TIERS: &[&str] = &["generic", "dsp", "mve"];

/// Whether the build targets a core with the DSP extension (`SMLAD`, `SXTB16`).
pub const fn has_dsp() -> bool {
    cfg!(target_feature = "dsp")
}

/// Whether the build targets a core with Helium (integer MVE): an M-profile core for which rustc reports `neon`.
pub const fn has_mve() -> bool {
    cfg!(all(target_feature = "mclass", target_feature = "neon"))
}

/// The tier named `name` if this target can run it.
pub fn tier(name: &str) -> Option<&'static KernelTable> {
    match name {
        #[cfg(target_feature = "dsp")]
        "dsp" => Some(&DSP),
        #[cfg(all(target_feature = "mclass", target_feature = "neon"))]
        "mve" => Some(&MVE),
        _ => None,
    }
}
