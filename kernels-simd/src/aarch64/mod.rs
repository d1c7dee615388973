//! aarch64 tiers (NEON, dotprod). Each exposes a [`KernelTable`](crate::KernelTable) with its kernels installed over
//! the generic ones; [`tier`] returns it only when the CPU can run it.

use crate::registry::KernelTable;

/// Every tier name this build knows on aarch64, lowest first.
pub const ALL_TIERS: &[&str] = &["generic"];

/// The tier named `name` if this CPU can run it.
pub fn tier(_name: &str) -> Option<&'static KernelTable> {
    None
}
