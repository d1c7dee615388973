//! Stack scratch shared by the host SIMD tiers (x86_64, aarch64): large uninitialized buffers of which a kernel
//! zeroes only the prefix a layer uses.
#![allow(unsafe_code)] // one `write_bytes` + `from_raw_parts_mut`, stated below.

use core::mem::MaybeUninit;

/// Element types whose all-zero bytes are a valid value (the scratch element types of these kernels).
pub(crate) trait Zeroable: Copy {}
impl Zeroable for f32 {}
impl Zeroable for i32 {}
impl Zeroable for i16 {}
impl Zeroable for i8 {}
impl Zeroable for u8 {}
impl<T: Zeroable, const M: usize> Zeroable for [T; M] {}

/// The first `n` elements (at most `N`) of the uninitialized stack array `buf`, zeroed: what a kernel needs of a
/// scratch sized for its largest layer, without zeroing the rest (hundreds of KiB) on every call.
pub(crate) fn zeroed_prefix<T: Zeroable, const N: usize>(
    buf: &mut MaybeUninit<[T; N]>,
    n: usize,
) -> &mut [T] {
    let n = n.min(N);
    let p = buf.as_mut_ptr() as *mut T;
    // SAFETY: `p` is the start of `N` contiguous `T` inside `buf` (arrays have no padding) and `n <= N`; the first
    // `n` are written with zero bytes, a valid `T` (`Zeroable`), before the slice over exactly them is formed, and
    // the slice borrows `buf` mutably for its lifetime.
    unsafe {
        core::ptr::write_bytes(p, 0, n);
        core::slice::from_raw_parts_mut(p, n)
    }
}
