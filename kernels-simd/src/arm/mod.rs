//! 32-bit Arm (Cortex-M) tiers (DSP, Helium/MVE). Each exposes a [`KernelTable`](crate::KernelTable) with its
//! kernels installed over the generic ones; [`tier`] returns it only when the target features allow it.

use crate::registry::KernelTable;

/// Every tier name this build knows on 32-bit Arm, lowest first.
pub const ALL_TIERS: &[&str] = &["generic"];

/// The tier named `name` if this target can run it.
pub fn tier(_name: &str) -> Option<&'static KernelTable> {
    None
}
