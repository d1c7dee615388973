//! Cortex-M int8 group norm (+ SiLU), bit-identical to [`quant::group_norm_i8`]: the statistics and the
//! per-channel constants are generic's ([`quant::group_norm_i8_by`]), the element function is generic's table over
//! the channel's input range ([`quant::GnChannel::apply_slice_with`], scalar `libm::expf`); the tiers replace the
//! three passes over the data, which are exact integer work:
//!
//! * `dsp`: `Σx`, `Σx²` with `SMLAD` on sign-extended pairs (4 elements in 7 instructions), the range with
//!   `SSUB8` + `SEL` (a byte-wise max and min of 4 elements in 4 instructions); the table lookup stays scalar.
//! * `mve`: `VADDVA.S8` and `VMLADAVA.S8` (16 elements each), `VMINV.S8` / `VMAXV.S8`, and the lookup as a byte
//!   gather (`VLDRB.U8` with the 16 offsets `x − lo`), all in tail-predicated loops.

use crate::quant::{self, GroupNormI8Args};

/// Values summed in `i32` before widening: `2^16 · 2^14 = 2^30` bounds `Σx²`.
const BLOCK: usize = 1 << 16;

/// [`quant::channel_sums`] from `i32` block sums (integers: the same result in any order).
#[inline(always)]
fn blocked(x: &[i8], block: impl Fn(&[i8]) -> (i32, i32)) -> (i64, i64) {
    let (mut s1, mut s2) = (0i64, 0i64);
    for b in x.chunks(BLOCK) {
        let (a, c) = block(b);
        s1 += a as i64;
        s2 += c as i64;
    }
    (s1, s2)
}

/// int8 group norm with the DSP extension (see [`quant::group_norm_i8`]).
pub(super) fn group_norm_i8_dsp(a: &GroupNormI8Args<'_>, input: &[i8], out: &mut [i8]) {
    quant::group_norm_i8_by(
        a,
        input,
        out,
        |x| blocked(x, sums_dsp),
        |ch, x, y| {
            ch.apply_slice_with(
                x,
                y,
                range_dsp,
                quant::lookup_i8,
                |x, y| ch.apply_each(x, y),
                1,
            )
        },
    );
}

/// `(Σx, Σx²)` of at most [`BLOCK`] values: words of 4 bytes as two sign-extended pairs, `SMLAD` for the squares,
/// `SADD16` + `SMLAD` by `(1, 1)` for the sum; the last `len % 4` values in Rust.
fn sums_dsp(x: &[i8]) -> (i32, i32) {
    let words = x.len() / 4;
    let (mut s1, mut s2) = (0i32, 0i32);
    if words > 0 {
        // SAFETY: `words ≥ 1` iterations, each reading the next 4 bytes of `x` (`4·words ≤ x.len()`; `LDR` may be
        // unaligned on ARMv7E-M / ARMv8-M). Registers only; the flags are clobbered (`SUBS`).
        unsafe {
            core::arch::asm!(
                "2:",
                "ldr {w}, [{p}], #4",
                "sxtb16 {a}, {w}",
                "sxtb16 {b}, {w}, ror #8",
                "smlad {s2}, {a}, {a}, {s2}",
                "smlad {s2}, {b}, {b}, {s2}",
                "sadd16 {a}, {a}, {b}",
                "smlad {s1}, {a}, {one}, {s1}",
                "subs {n}, {n}, #1",
                "bne 2b",
                p = inout(reg) x.as_ptr() => _,
                n = inout(reg) words => _,
                s1 = inout(reg) s1,
                s2 = inout(reg) s2,
                one = in(reg) 0x0001_0001u32,
                w = out(reg) _,
                a = out(reg) _,
                b = out(reg) _,
                options(nostack, readonly),
            );
        }
    }
    for &v in x.get(4 * words..).unwrap_or(&[]) {
        let v = v as i32;
        s1 += v;
        s2 += v * v;
    }
    (s1, s2)
}

/// `(min x, max x)`: per word, `SSUB8` sets each byte's GE flag where `x ≥` the running value and `SEL` keeps the
/// larger (max) or the smaller (min) byte; the 4 lanes and the last `len % 4` values are folded in Rust.
fn range_dsp(x: &[i8]) -> (i8, i8) {
    let words = x.len() / 4;
    let (mut mn, mut mx) = (0x7f7f_7f7fu32, 0x8080_8080u32);
    if words > 0 {
        // SAFETY: `words ≥ 1` iterations, each reading the next 4 bytes of `x` (`4·words ≤ x.len()`; unaligned
        // `LDR` is allowed). Registers only; the flags (GE included) are clobbered.
        unsafe {
            core::arch::asm!(
                "2:",
                "ldr {w}, [{p}], #4",
                "ssub8 {t}, {w}, {mx}",
                "sel {mx}, {w}, {mx}",
                "ssub8 {t}, {w}, {mn}",
                "sel {mn}, {mn}, {w}",
                "subs {n}, {n}, #1",
                "bne 2b",
                p = inout(reg) x.as_ptr() => _,
                n = inout(reg) words => _,
                mn = inout(reg) mn,
                mx = inout(reg) mx,
                w = out(reg) _,
                t = out(reg) _,
                options(nostack, readonly),
            );
        }
    }
    let (lanes_lo, lanes_hi) = (mn.to_le_bytes(), mx.to_le_bytes());
    let (mut lo, mut hi) = quant::range_i8(x.get(4 * words..).unwrap_or(&[]));
    for (&l, &h) in lanes_lo.iter().zip(&lanes_hi) {
        lo = lo.min(l as i8);
        hi = hi.max(h as i8);
    }
    (lo, hi)
}

/// int8 group norm with Helium (see [`quant::group_norm_i8`]).
#[cfg(all(target_feature = "mclass", target_feature = "neon"))]
pub(super) fn group_norm_i8_mve(a: &GroupNormI8Args<'_>, input: &[i8], out: &mut [i8]) {
    quant::group_norm_i8_by(
        a,
        input,
        out,
        |x| blocked(x, sums_mve),
        |ch, x, y| ch.apply_slice_with(x, y, range_mve, lookup_mve, |x, y| ch.apply_each(x, y), 1),
    );
}

/// `(Σx, Σx²)` of at most [`BLOCK`] values: `VADDVA.S8` and `VMLADAVA.S8` over 16 lanes, the tail predicated.
#[cfg(all(target_feature = "mclass", target_feature = "neon"))]
fn sums_mve(x: &[i8]) -> (i32, i32) {
    let (mut s1, mut s2) = (0i32, 0i32);
    if x.is_empty() {
        return (0, 0);
    }
    // SAFETY: the tail-predicated loop reads exactly `x.len() ≥ 1` bytes of `x` (lanes past the end are off).
    // The accumulators are the even registers the reductions need; `lr` is the loop counter; q0 is clobbered.
    unsafe {
        core::arch::asm!(
            "dlstp.8 lr, {n}",
            "2:",
            "vldrb.s8 q0, [{p}], #16",
            "vaddva.s8 r0, q0",
            "vmladava.s8 r2, q0, q0",
            "letp lr, 2b",
            p = inout(reg) x.as_ptr() => _,
            n = in(reg) x.len(),
            inout("r0") s1,
            inout("r2") s2,
            out("lr") _,
            out("q0") _,
            options(nostack, readonly),
        );
    }
    (s1, s2)
}

/// `(min x, max x)` with `VMINV.S8` / `VMAXV.S8` (the running values in general registers), the tail predicated.
#[cfg(all(target_feature = "mclass", target_feature = "neon"))]
fn range_mve(x: &[i8]) -> (i8, i8) {
    if x.is_empty() {
        return (i8::MAX, i8::MIN);
    }
    let (mut lo, mut hi) = (i8::MAX as i32, i8::MIN as i32);
    // SAFETY: the tail-predicated loop reads exactly `x.len() ≥ 1` bytes of `x`; `lr` is the loop counter; q0 is
    // clobbered.
    unsafe {
        core::arch::asm!(
            "dlstp.8 lr, {n}",
            "2:",
            "vldrb.s8 q0, [{p}], #16",
            "vminv.s8 {lo}, q0",
            "vmaxv.s8 {hi}, q0",
            "letp lr, 2b",
            p = inout(reg) x.as_ptr() => _,
            n = in(reg) x.len(),
            lo = inout(reg) lo,
            hi = inout(reg) hi,
            out("lr") _,
            out("q0") _,
            options(nostack, readonly),
        );
    }
    // The reductions keep the result in the low byte (sign-extended); read it as a byte either way.
    (lo as i8, hi as i8)
}

/// [`quant::lookup_i8`] with Helium: per 16 elements, the offsets `x − lo` (wrapping bytes, so in `0..256`) index
/// the table through a byte gather (`VLDRB.U8 Qd, [lut, Qoffsets]`); the tail predicated.
#[cfg(all(target_feature = "mclass", target_feature = "neon"))]
fn lookup_mve(lut: &[i8; 256], lo: i8, x: &[i8], y: &mut [i8]) {
    let n = x.len().min(y.len());
    if n == 0 {
        return;
    }
    // SAFETY: the tail-predicated loop reads exactly `n` bytes of `x` and writes `n` of `y` (`n` is at most
    // either length); each gathered byte is `lut[offset]` with an unsigned byte offset, inside the 256-byte
    // table. `lr` is the loop counter; q0–q2 are clobbered.
    unsafe {
        core::arch::asm!(
            "vdup.8 q2, {lo}",
            "dlstp.8 lr, {n}",
            "2:",
            "vldrb.u8 q0, [{x}], #16",
            "vsub.i8 q0, q0, q2",
            "vldrb.u8 q1, [{lut}, q0]",
            "vstrb.8 q1, [{y}], #16",
            "letp lr, 2b",
            x = inout(reg) x.as_ptr() => _,
            y = inout(reg) y.as_mut_ptr() => _,
            lut = in(reg) lut.as_ptr(),
            lo = in(reg) lo as i32,
            n = in(reg) n,
            out("lr") _,
            out("q0") _,
            out("q1") _,
            out("q2") _,
            options(nostack),
        );
    }
}
