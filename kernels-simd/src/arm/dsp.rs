//! DSP-extension tier (Cortex-M4 / M7 / M33 / M55): int8 convolution with `SMLAD`.
//!
//! The patch holds the two pixels as sign-extended `i16`, interleaved in groups of four elements and reordered
//! `x0 x2 x1 x3` (CMSIS-NN's `read_and_pad_reordered`): one `LDR` of four weights and `SXTB16` / `SXTB16 ROR #8`
//! give the pairs `(w0, w2)` and `(w1, w3)`, which meet the patch's pairs in `SMLAD` (two 16-bit MACs into an `i32`
//! accumulator, wrapping). The inner loop does 2 output channels × 2 pixels × 4 elements (16 MACs) in 17
//! instructions: 2 `LDR`, 4 `SXTB16`, 3 `LDRD`, 8 `SMLAD`, plus `SUBS` + `BNE` per two such groups (unrolled twice):
//! 1.125 instructions per MAC, against the ISA's floor of 0.5 (`SMLAD` alone).

use super::conv::{self, PatchKernel};
use crate::quant::{ActQ, QOut};
use crate::{Conv2dGeom, Weights};

/// Patch elements per pixel: 32 input channels of a 3×3 kernel (1152 B of `i16` for the two pixels, plus their
/// 576 B of gathered int8).
const CH: usize = 288;

/// Two pixels of [`CH`] `i16` each, interleaved per group of four (`LDRD` needs 4-byte alignment), and the two
/// pixels' plain int8 rows they are expanded from.
#[repr(C, align(8))]
pub(super) struct Patch16 {
    p16: [i16; 2 * CH],
    lin: [i8; 2 * CH],
}

/// Position of element `e % 4` inside its group: `x0 x2 x1 x3`.
const PERM: [usize; 4] = [0, 2, 1, 3];

struct Dsp;

impl PatchKernel for Dsp {
    const CH: usize = CH;
    type Patch = Patch16;

    #[inline(always)]
    fn new_patch() -> Patch16 {
        Patch16 {
            p16: [0; 2 * CH],
            lin: [0; 2 * CH],
        }
    }

    #[inline(always)]
    fn rows(p: &mut Patch16) -> (&mut [i8], &mut [i8]) {
        p.lin.split_at_mut(CH)
    }

    /// Sign-extend and reorder: per group of four elements and pixel, `SXTB16` / `SXTB16 ROR #8` give the words
    /// `(x0, x2)`, `(x1, x3)` (10 instructions per group of both pixels).
    #[inline(always)]
    fn prepare(p: &mut Patch16, len: usize) {
        let groups = len.min(CH).div_ceil(4);
        if groups == 0 {
            return;
        }
        let src = p.lin.as_ptr();
        // SAFETY: reads `4·groups ≤ CH` bytes of each pixel's row (`lin[..CH]`, `lin[CH..]`), writes `16·groups ≤
        // 4·CH` bytes of `p16` (4-byte aligned for `STRD`); `groups ≥ 1`. No stack.
        unsafe {
            core::arch::asm!(
                "2:",
                "ldr {a}, [{s0}], #4",
                "ldr {b}, [{s1}], #4",
                "sxtb16 {c}, {a}",
                "sxtb16 {a}, {a}, ror #8",
                "sxtb16 {d}, {b}",
                "sxtb16 {b}, {b}, ror #8",
                "strd {d}, {b}, [{o}, #8]",
                "strd {c}, {a}, [{o}], #16",
                "subs {n}, {n}, #1",
                "bne 2b",
                s0 = inout(reg) src => _,
                s1 = inout(reg) src.wrapping_add(CH) => _,
                o = inout(reg) p.p16.as_mut_ptr() => _,
                n = inout(reg) groups => _,
                a = out(reg) _,
                b = out(reg) _,
                c = out(reg) _,
                d = out(reg) _,
                options(nostack),
            );
        }
    }

    #[inline(always)]
    fn dot(p: &Patch16, len: usize, w0: &[i8], w1: &[i8]) -> [i32; 4] {
        let len = len.min(CH).min(w0.len()).min(w1.len());
        let groups = len / 4;
        let mut acc = [0i32; 4];
        if groups > 0 {
            acc = dot_groups(p, groups, w0, w1);
        }
        // Tail: the last `len % 4` elements, in plain Rust.
        for e in groups * 4..len {
            let i = (e >> 2) * 8 + PERM[e & 3];
            let (x0, x1) = (
                p.p16.get(i).map_or(0, |&v| v as i32),
                p.p16.get(i + 4).map_or(0, |&v| v as i32),
            );
            let (a, b) = (
                w0.get(e).map_or(0, |&v| v as i32),
                w1.get(e).map_or(0, |&v| v as i32),
            );
            acc[0] = acc[0].wrapping_add(a * x0);
            acc[1] = acc[1].wrapping_add(a * x1);
            acc[2] = acc[2].wrapping_add(b * x0);
            acc[3] = acc[3].wrapping_add(b * x1);
        }
        acc
    }
}

/// `SMLAD` dot products over `groups` (≥ 1) groups of four elements: `[w0·x0, w0·x1, w1·x0, w1·x1]`.
#[inline(always)]
fn dot_groups(p: &Patch16, groups: usize, w0: &[i8], w1: &[i8]) -> [i32; 4] {
    let groups = groups.min(CH / 4).min(w0.len() / 4).min(w1.len() / 4);
    if groups == 0 {
        return [0; 4];
    }
    let (mut a00, mut a01, mut a10, mut a11) = (0i32, 0i32, 0i32, 0i32);
    // Offset from the post-incremented row-0 pointer to the same group of row 1.
    let st = (w1.as_ptr() as isize)
        .wrapping_sub(w0.as_ptr() as isize)
        .wrapping_sub(4);
    // SAFETY: `groups ≥ 1` and `4·groups` is within both weight rows (unaligned `LDR` is allowed on v7-M/v8-M) and
    // within the patch (`groups ≤ CH/4`: 16 bytes per group, 4-byte aligned for `LDRD`); `r1 = r0 + st + 4` for every
    // group. Registers only otherwise; no stack, no flags live across the block.
    unsafe {
        core::arch::asm!(
            // groups = 2·n + c: one group first when c = 1, then n double groups (no flags set in between).
            "lsrs {n}, {n}, #1",
            "bcc 3f",
            "ldr {a}, [{pw}], #4",
            "sxtb16 {b}, {a}",
            "sxtb16 {a}, {a}, ror #8",
            "ldrd {c}, {d}, [{px}]",
            "smlad {r00}, {b}, {c}, {r00}",
            "smlad {r00}, {a}, {d}, {r00}",
            "ldrd {c}, {d}, [{px}, #8]",
            "smlad {r01}, {b}, {c}, {r01}",
            "smlad {r01}, {a}, {d}, {r01}",
            "ldr {a}, [{pw}, {st}]",
            "sxtb16 {b}, {a}",
            "sxtb16 {a}, {a}, ror #8",
            "smlad {r11}, {b}, {c}, {r11}",
            "smlad {r11}, {a}, {d}, {r11}",
            "ldrd {c}, {d}, [{px}], #16",
            "smlad {r10}, {b}, {c}, {r10}",
            "smlad {r10}, {a}, {d}, {r10}",
            "3:",
            "beq 4f",
            "2:",
            "ldr {a}, [{pw}], #4",
            "sxtb16 {b}, {a}",
            "sxtb16 {a}, {a}, ror #8",
            "ldrd {c}, {d}, [{px}]",
            "smlad {r00}, {b}, {c}, {r00}",
            "smlad {r00}, {a}, {d}, {r00}",
            "ldrd {c}, {d}, [{px}, #8]",
            "smlad {r01}, {b}, {c}, {r01}",
            "smlad {r01}, {a}, {d}, {r01}",
            "ldr {a}, [{pw}, {st}]",
            "sxtb16 {b}, {a}",
            "sxtb16 {a}, {a}, ror #8",
            "smlad {r11}, {b}, {c}, {r11}",
            "smlad {r11}, {a}, {d}, {r11}",
            "ldrd {c}, {d}, [{px}], #16",
            "smlad {r10}, {b}, {c}, {r10}",
            "smlad {r10}, {a}, {d}, {r10}",
            "ldr {a}, [{pw}], #4",
            "sxtb16 {b}, {a}",
            "sxtb16 {a}, {a}, ror #8",
            "ldrd {c}, {d}, [{px}]",
            "smlad {r00}, {b}, {c}, {r00}",
            "smlad {r00}, {a}, {d}, {r00}",
            "ldrd {c}, {d}, [{px}, #8]",
            "smlad {r01}, {b}, {c}, {r01}",
            "smlad {r01}, {a}, {d}, {r01}",
            "ldr {a}, [{pw}, {st}]",
            "sxtb16 {b}, {a}",
            "sxtb16 {a}, {a}, ror #8",
            "smlad {r11}, {b}, {c}, {r11}",
            "smlad {r11}, {a}, {d}, {r11}",
            "ldrd {c}, {d}, [{px}], #16",
            "smlad {r10}, {b}, {c}, {r10}",
            "smlad {r10}, {a}, {d}, {r10}",
            "subs {n}, {n}, #1",
            "bne 2b",
            "4:",
            r00 = inout(reg) a00,
            r01 = inout(reg) a01,
            r10 = inout(reg) a10,
            r11 = inout(reg) a11,
            pw = inout(reg) w0.as_ptr() => _,
            px = inout(reg) p.p16.as_ptr() => _,
            st = in(reg) st,
            n = inout(reg) groups => _,
            a = out(reg) _,
            b = out(reg) _,
            c = out(reg) _,
            d = out(reg) _,
            options(nostack, readonly),
        );
    }
    [a00, a01, a10, a11]
}

/// `SMLAD` int8 convolution, bit-identical to [`crate::quant::conv2d_i8`] (same signature).
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
    conv::conv2d_i8_patch::<Dsp>(
        g, input, in_q, w, w_scale, bias, chan_add, residual, div, acc, out,
    );
}
