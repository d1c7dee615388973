//! Helium (integer MVE) tier (Cortex-M55 / M85): int8 convolution with `VMLADAVA.S8`.
//!
//! The patch holds the two pixels as plain int8 rows. The inner loop is a tail-predicated low-overhead loop
//! (`DLSTP.8` / `LETP`: the last iteration's lanes past the row's end are switched off, so nothing is read past a
//! weight row and no scalar tail is needed) doing 2 output channels × 2 pixels × 16 lanes (64 MACs) in 9
//! instructions: 4 `VLDRB.S8`, 4 `VMLADAVA.S8` (16 int8 products summed into an `i32`, wrapping) and `LETP`.

use super::conv::{self, PatchKernel};
use crate::quant::{ActQ, QOut};
use crate::{Conv2dGeom, Weights};

/// Patch elements per pixel: 64 input channels of a 3×3 kernel (1152 B for the two pixels).
const CH: usize = 576;

/// Two pixels of [`CH`] int8 each: pixel `px` at `px · CH`.
#[repr(C, align(16))]
pub(super) struct Patch8([i8; 2 * CH]);

struct Mve;

impl PatchKernel for Mve {
    const CH: usize = CH;
    type Patch = Patch8;

    #[inline(always)]
    fn new_patch() -> Patch8 {
        Patch8([0; 2 * CH])
    }

    #[inline(always)]
    fn rows(p: &mut Patch8) -> (&mut [i8], &mut [i8]) {
        p.0.split_at_mut(CH)
    }

    #[inline(always)]
    fn prepare(_: &mut Patch8, _: usize) {}

    #[inline(always)]
    fn dot(p: &Patch8, len: usize, w0: &[i8], w1: &[i8]) -> [i32; 4] {
        let len = len.min(CH).min(w0.len()).min(w1.len());
        if len == 0 {
            return [0; 4];
        }
        let (mut a00, mut a01, mut a10, mut a11) = (0i32, 0i32, 0i32, 0i32);
        // SAFETY: `len ≥ 1`; the tail-predicated loop reads exactly `len` bytes from each weight row (both at least
        // `len` long) and from each pixel's patch row (`len ≤ CH`). The accumulators are even registers as
        // `VMLADAVA` requires; `lr` is the loop counter; q0–q2 are clobbered. No stack, no memory written.
        unsafe {
            core::arch::asm!(
                "dlstp.8 lr, {n}",
                "2:",
                "vldrb.s8 q0, [{x0}], #16",
                "vldrb.s8 q1, [{x1}], #16",
                "vldrb.s8 q2, [{w0}], #16",
                "vmladava.s8 r0, q2, q0",
                "vmladava.s8 r2, q2, q1",
                "vldrb.s8 q2, [{w1}], #16",
                "vmladava.s8 r4, q2, q0",
                "vmladava.s8 r8, q2, q1",
                "letp lr, 2b",
                n = in(reg) len,
                x0 = inout(reg) p.0.as_ptr() => _,
                x1 = inout(reg) p.0.as_ptr().wrapping_add(CH) => _,
                w0 = inout(reg) w0.as_ptr() => _,
                w1 = inout(reg) w1.as_ptr() => _,
                inout("r0") a00,
                inout("r2") a01,
                inout("r4") a10,
                inout("r8") a11,
                out("lr") _,
                out("q0") _,
                out("q1") _,
                out("q2") _,
                options(nostack, readonly),
            );
        }
        [a00, a01, a10, a11]
    }
}

/// Helium int8 convolution, bit-identical to [`crate::quant::conv2d_i8`] (same signature).
#[allow(clippy::too_many_arguments)]
pub(super) fn conv2d_i8(
    g: &Conv2dGeom,
    input: &[i8],
    in_q: ActQ,
    w: &[i8],
    w_scale: &[f32],
    bias: Option<Weights<'_>>,
    chan_add: Option<&[f32]>,
    residual: Option<(&[i8], f32)>,
    div: f32,
    acc: &mut [i32],
    out: QOut<'_>,
) {
    conv::conv2d_i8_patch::<Mve>(
        g, input, in_q, w, w_scale, bias, chan_add, residual, div, acc, out,
    );
}
