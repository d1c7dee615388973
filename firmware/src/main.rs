//! ember firmware demo: the int8, guidance-distilled 4-step MNIST student (`models/mnist-student/student-4-int8.ember`)
//! draws one digit on an emulated Cortex-M7 (QEMU `mps2-an500`, `thumbv7em-none-eabihf`) or Cortex-M55 (QEMU
//! `mps3-an547`, `thumbv8m.main-none-eabihf`), with no heap and no std.
//!
//! The blob stays in flash (`include_bytes!`, 16-byte aligned, parsed in place); one `static` arena holds the model's
//! activations plus the sampler's state. The firmware runs the blob's default sampler (DDIM over its explicit
//! timesteps) for the class and seed in `golden.rs`, prints a line per step, the digit as ASCII art and its budgets
//! (arena, measured stack, timer-based instruction counts), writes the raw f32 image to a host file through
//! semihosting, and compares the sample with the host engine's (`host-gen`, generic kernels) bit for bit. It exits
//! through semihosting: status 0 on `PASS`, 1 on any failure. Before sampling it feeds `Model::parse` malformed
//! blobs (truncated, bad magic, corrupted bytes, misaligned, …; see [`malformed`]) and checks that each comes back
//! as the expected typed error. Build and run: `scripts/firmware.sh`.
//!
//! Cargo features (the figures come from the one function [`run`] in every build; only [`out`]'s transport and the
//! exit differ):
//! * default: output and exit through semihosting (QEMU, or a debugger on a board);
//! * `defmt`: for real boards, every line goes out through defmt over RTT (`defmt-rtt`; read it with e.g.
//!   `probe-rs run`), no semihosting at all (no image file, the run ends on a breakpoint); link with defmt's
//!   script: `cargo rustc --release --bin ember-firmware --features defmt -- -C link-arg=-Tdefmt.x`;
//! * `panic-check`: a link-time proof that nothing the firmware runs (blob parsing including the malformed blobs,
//!   the self-test, sampling, the checks) can panic: the output is compiled out and the panic handler calls
//!   `ember_firmware_reachable_panic`, a function defined nowhere, so the build links only if the optimizer
//!   removed every panic path. It still runs under QEMU and exits with status 0 on PASS.
#![no_std]
#![no_main]

#[cfg(all(feature = "defmt", feature = "panic-check"))]
compile_error!("features `defmt` and `panic-check` exclude each other");

use core::panic::PanicInfo;
use core::ptr::{addr_of, addr_of_mut, read_volatile, write_volatile};

use cortex_m_rt::entry;
/// `defmt`: the global logger (RTT channel 0).
#[cfg(feature = "defmt")]
use defmt_rtt as _;
use ember_core::sampler::driver::{arena_bytes, Control, Init, Progress, Sampler, StepView};
use ember_core::{Aligned, Error, Model};

/// Prints one line through [`out::line`] (the build's transport).
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::out::line(format_args!($($arg)*))
    };
}

/// Written by `quantize-tool convert --emit-rust` (regenerated and diffed by scripts/firmware.sh).
#[allow(dead_code)]
mod arena;
mod common;
/// Written by `host-gen` (the committed `src/golden.rs`, or `EMBER_FW_GOLDEN`; see build.rs).
#[allow(dead_code)]
mod golden {
    include!(concat!(env!("OUT_DIR"), "/golden.rs"));
}

use arena::{
    STUDENT_4_INT8_ARENA_BYTES as MODEL_ARENA_BYTES, STUDENT_4_INT8_BLOB_BYTES as BLOB_BYTES,
};

const BLOB_LEN: usize = include_bytes!("../../models/mnist-student/student-4-int8.ember").len();
const _: () = assert!(
    BLOB_LEN == BLOB_BYTES,
    "the blob's size differs from arena.rs: regenerate it"
);

/// The model, in flash (.rodata; on the AN547 the QSPI flash), 16-byte aligned so it is read in place.
#[cfg_attr(board_an547, link_section = ".model")]
static BLOB: Aligned<BLOB_LEN> = Aligned(*include_bytes!(
    "../../models/mnist-student/student-4-int8.ember"
));

/// The one arena (.bss): the model's memory plan (from the converter) plus the sampler's state (from host-gen);
/// checked at boot against `sampler::driver::arena_bytes`.
const ARENA_LEN: usize = MODEL_ARENA_BYTES + golden::SAMPLER_STATE_BYTES;
static mut ARENA: Aligned<ARENA_LEN> = Aligned([0; ARENA_LEN]);

/// Host file for the raw little-endian f32 image (set at build time; relative paths are QEMU's working directory).
#[cfg(not(feature = "defmt"))]
const IMAGE_PATH: &str = concat!(env!("EMBER_FW_IMAGE"), "\0");

#[entry]
fn main() -> ! {
    let stack = stack::paint();
    out::exit(run(stack).is_ok())
}

/// The whole demo; every figure is printed here, whatever the transport.
fn run(painted: usize) -> Result<(), ()> {
    let digit = golden::DIGIT;
    say!(
        "ember firmware: {}, blob {} B in flash, arena {} B static (model {} + sampler {})",
        if cfg!(board_an547) {
            "Cortex-M55 (mps3-an547)"
        } else {
            "Cortex-M7 (mps2-an500)"
        },
        BLOB_LEN,
        ARENA_LEN,
        MODEL_ARENA_BYTES,
        golden::SAMPLER_STATE_BYTES
    );
    malformed::check(&BLOB.0)?;
    let model = Model::parse(&BLOB.0).map_err(|e| say!("FAIL: Model::parse: {:?}", e))?;
    let info = *model.info();
    let cfg = common::sampler_config();
    let need = arena_bytes(&model, &cfg).map_err(|e| say!("FAIL: arena_bytes: {:?}", e))?;
    say!(
        "model: {} ops, {} MACs/forward, arena {} B (converter {} B); sampler arena {} B (static {} B)",
        model.n_ops(),
        info.macs(),
        model.arena_bytes(),
        MODEL_ARENA_BYTES,
        need,
        ARENA_LEN
    );
    if model.arena_bytes() != MODEL_ARENA_BYTES || need > ARENA_LEN {
        say!("FAIL: the static arena does not match the blob (regenerate arena.rs / golden.rs)");
        return Err(());
    }
    if info.output_len() != golden::SAMPLE_LEN {
        say!(
            "FAIL: sample has {} values, golden.rs {}",
            info.output_len(),
            golden::SAMPLE_LEN
        );
        return Err(());
    }

    let clock = timer::calibrate();
    say!(
        "timer: {}, {}.{:02} instructions per tick (instruction counts are exact only under QEMU -icount shift=0)",
        timer::NAME,
        clock.instr / clock.ticks,
        clock.instr % clock.ticks * 100 / clock.ticks
    );

    // SAFETY: `run` is called once, from `main`, with no interrupts in use: this is the only reference to ARENA.
    let arena: &mut [u8] = unsafe { &mut (*addr_of_mut!(ARENA)).0 };
    // Boot self-test: the blob's recorded input through the kernels this core samples with (the Cortex-M tiers are
    // bit-exact, `KernelTable::bit_exact`) must give the recorded output hash.
    if model.self_test_arena_bytes() > arena.len() {
        say!(
            "FAIL: self-test needs {} B of arena",
            model.self_test_arena_bytes()
        );
        return Err(());
    }
    let t_st = timer::now();
    match model.self_test(arena) {
        Ok(()) => say!(
            "SELF-TEST PASS (record {:?}; {} instructions)",
            model.self_test_record(),
            clock.instructions(timer::now() - t_st)
        ),
        Err(e) => {
            say!("SELF-TEST FAIL: {}", e);
            return Err(());
        }
    }
    let cond = common::conditioning(digit);
    let t_new = timer::now();
    let mut s = Sampler::new(
        &model,
        &mut arena[..need],
        cfg,
        cond,
        Init::Seed(golden::SEED),
    )
    .map_err(|e| say!("FAIL: Sampler::new: {:?}", e))?;
    let t_start = timer::now();
    say!(
        "sampling digit {} seed {}: {} steps DDIM, timesteps {:?} ({} instructions of setup)",
        digit,
        golden::SEED,
        s.total_steps(),
        s.timesteps(),
        clock.instructions(t_start - t_new)
    );
    let mut last = timer::now(); // after the print above
    let mut per_step_max = 0u64;
    let mut total = 0u64;
    let progress = s
        .run(&mut |v: &StepView<'_>| {
            let now = timer::now();
            let instr = clock.instructions(now - last);
            per_step_max = per_step_max.max(instr);
            total += instr;
            say!(
                "step {}/{}: t = {}, {} instructions",
                v.index + 1,
                v.total,
                v.timestep,
                instr
            );
            last = timer::now(); // the next step's count leaves this print out
            Control::Continue
        })
        .map_err(|e| say!("FAIL: Sampler::run: {:?}", e))?;
    let total_instr = total; // sum over the steps, the progress prints left out
    if progress != Progress::Done {
        say!("FAIL: sampler stopped early: {:?}", progress);
        return Err(());
    }
    let steps = u64::from(s.total_steps().max(1));
    say!(
        "INSTRUCTIONS total {} per-unet-eval {} ({} MACs each, max step {})",
        total_instr,
        total_instr / steps,
        info.macs(),
        per_step_max
    );

    let sample = s.sample();
    let side = (info.width as usize).max(1);
    say!(
        "digit {} ({}x{}, ramp \" .:-=+*#%@\" over [-1, 1]):",
        digit,
        info.height,
        info.width
    );
    let mut line = [0u8; 128];
    for row in sample.chunks(side) {
        let text = common::ascii_row(row, &mut line);
        say!("|{}|", core::str::from_utf8(text).unwrap_or("?"));
    }
    #[cfg(not(feature = "defmt"))]
    match host_file::write_f32(IMAGE_PATH, sample) {
        Ok(()) => say!(
            "wrote {} ({} B, raw f32 little-endian)",
            env!("EMBER_FW_IMAGE"),
            4 * sample.len()
        ),
        Err(()) => say!(
            "warning: could not write {} through semihosting",
            env!("EMBER_FW_IMAGE")
        ),
    }

    let fnv = common::fnv1a_bits(sample);
    let n_values = sample.len();
    let mut mismatches = 0usize;
    let mut max_abs = 0.0f32;
    for (&d, &h) in sample.iter().zip(golden::EXPECTED_BITS.iter()) {
        if d.to_bits() != h {
            mismatches += 1;
            let a = (d - f32::from_bits(h)).abs();
            max_abs = if a > max_abs || a.is_nan() {
                a
            } else {
                max_abs
            };
        }
    }
    // Per-op-kind profile of one U-Net evaluation: the first step again, observed op by op. Time spent in the
    // observer itself is left out; what remains between ops (the sampler's step math) is not counted.
    let mut kinds: [(&str, u64, u32); 16] = [("", 0, 0); 16];
    {
        let mut p = Sampler::new(
            &model,
            &mut arena[..need],
            cfg,
            common::conditioning(digit),
            Init::Seed(golden::SEED),
        )
        .map_err(|e| say!("FAIL: Sampler::new (profile): {:?}", e))?;
        let mut last = timer::now();
        let mut prev_op = u32::MAX;
        let mut observe = |_t: f32, op: u32, _b: u32, _v: ember_core::BufView<'_>| {
            let now = timer::now();
            if op != u32::MAX {
                let name = model.op(op).map(|o| o.name()).unwrap_or("?");
                if let Some(k) = kinds.iter_mut().find(|k| k.0 == name || k.0.is_empty()) {
                    k.0 = name;
                    k.1 += now - last;
                    k.2 += u32::from(op != prev_op);
                }
                prev_op = op;
            }
            last = timer::now();
        };
        p.run_observed(&mut |_| Control::Cancel, &mut observe)
            .map_err(|e| say!("FAIL: Sampler::run_observed: {:?}", e))?;
    }
    let ticks: u64 = kinds.iter().map(|k| k.1).sum();
    for k in kinds.iter().filter(|k| !k.0.is_empty()) {
        let share = k.1 * 1000 / ticks.max(1);
        say!(
            "OPKIND {} {} instructions ({}.{} %), {} ops",
            k.0,
            clock.instructions(k.1),
            share / 10,
            share % 10,
            k.2
        );
    }

    let used = stack::used();
    say!(
        "STACK used {} B of {} B (high-water mark; {} B painted)",
        used,
        stack::size(),
        painted
    );
    say!("ARENA {} B (static), sampler needs {} B", ARENA_LEN, need);
    if used + 64 >= stack::size() {
        say!("FAIL: the stack reached the end of RAM (.bss): overflow");
        return Err(());
    }
    say!(
        "device fnv 0x{:08x}, host fnv 0x{:08x}",
        fnv,
        golden::EXPECTED_FNV
    );
    if mismatches == 0 && fnv == golden::EXPECTED_FNV {
        say!("PASS digit {}: bit-identical to the host engine", digit);
        Ok(())
    } else {
        say!(
            "FAIL digit {}: {} of {} values differ from the host engine (max abs diff {})",
            digit,
            mismatches,
            n_values,
            max_abs
        );
        Err(())
    }
}

/// Stack high-water mark: paint the free stack (between the end of .bss and the current stack pointer) with a
/// pattern at boot, later find the lowest word that changed.
mod stack {
    use super::*;

    const PATTERN: u32 = 0xDEAD_BEEF;

    extern "C" {
        /// End of .bss/.uninit (cortex-m-rt's link.x): the stack's lower limit.
        static _stack_end: u32;
        /// Initial stack pointer (top of RAM).
        static _stack_start: u32;
    }

    fn bounds() -> (usize, usize) {
        // SAFETY: only the symbols' addresses are taken (needs no `unsafe` on newer compilers).
        #[allow(unused_unsafe)]
        unsafe {
            (
                (addr_of!(_stack_end) as usize + 3) & !3,
                addr_of!(_stack_start) as usize,
            )
        }
    }

    /// Bytes between the end of .bss and the top of RAM.
    pub fn size() -> usize {
        let (lo, hi) = bounds();
        hi - lo
    }

    /// Paint from the stack's limit up to just below the current stack pointer; returns the bytes painted.
    #[inline(never)]
    pub fn paint() -> usize {
        let (lo, _) = bounds();
        let sp = cortex_m::register::msp::read() as usize;
        let hi = (sp - 256) & !3;
        let mut p = lo;
        while p < hi {
            // SAFETY: [lo, hi) is free stack below the live frames (no interrupts in use).
            unsafe { write_volatile(p as *mut u32, PATTERN) };
            p += 4;
        }
        hi - lo
    }

    /// Bytes of stack used so far (from the top of RAM down to the lowest overwritten word).
    pub fn used() -> usize {
        let (lo, hi) = bounds();
        let mut p = lo;
        // SAFETY: reads of RAM between the end of .bss and the top of RAM.
        while p < hi && unsafe { read_volatile(p as *const u32) } == PATTERN {
            p += 4;
        }
        hi - p
    }
}

/// Instruction counts from a hardware timer. Under `-icount shift=0` QEMU's virtual clock advances 1 ns per
/// instruction, so a timer's ticks convert exactly to instructions executed; the ratio is calibrated at boot with a
/// loop of known length. Without `-icount` the counts follow the host's real time and mean nothing.
mod timer;

/// Host files through semihosting (SYS_OPEN / SYS_WRITE / SYS_CLOSE).
#[cfg(not(feature = "defmt"))]
mod host_file {
    use cortex_m_semihosting::{nr, syscall};

    /// Write `data` as raw little-endian f32 to `path` (NUL-terminated) on the host.
    pub fn write_f32(path: &str, data: &[f32]) -> Result<(), ()> {
        let name = path.as_bytes();
        // SAFETY: semihosting OPEN with a NUL-terminated name and its length without the NUL.
        let fd = unsafe {
            syscall!(
                OPEN,
                name.as_ptr(),
                nr::open::W_TRUNC_BINARY,
                name.len() - 1
            )
        } as isize;
        if fd < 0 {
            return Err(());
        }
        let mut buf = [0u8; 256];
        let mut ok = true;
        for chunk in data.chunks(buf.len() / 4) {
            for (b, v) in buf.chunks_exact_mut(4).zip(chunk) {
                b.copy_from_slice(&v.to_le_bytes());
            }
            let len = 4 * chunk.len();
            // SAFETY: semihosting WRITE of `len` initialized bytes; returns the bytes NOT written.
            ok &= unsafe { syscall!(WRITE, fd as usize, buf.as_ptr(), len) } == 0;
        }
        // SAFETY: semihosting CLOSE of the handle opened above.
        ok &= unsafe { syscall!(CLOSE, fd as usize) } == 0;
        if ok {
            Ok(())
        } else {
            Err(())
        }
    }
}

/// Malformed blobs on the device: each must come back from `Model::parse` as the expected typed error (never a
/// panic, never `Ok`). The blob is 1.18 MB in flash, so the truncations are sub-slices of it and the corrupted
/// headers are small copies of its first [`COPY`] bytes (header + section table) in RAM, their `total_len` set to
/// the copy's length and (where the case needs it) their CRC recomputed so that parsing gets past the checksum.
/// Prints `MALFORMED <case> -> <error>`; scripts/firmware.sh checks the list.
mod malformed {
    use super::*;
    use ember_core::format::crc32;

    /// Bytes copied to RAM: the 64-byte header and the section table (10 entries of 16 bytes) and more.
    const COPY: usize = 256;
    /// The corrupted copies, 16-byte aligned, with 16 spare bytes for the misaligned case.
    static mut BUF: Aligned<{ COPY + 16 }> = Aligned([0; COPY + 16]);

    /// Name of an error's variant (what firmware.sh compares).
    pub fn kind(e: &Error) -> &'static str {
        match e {
            Error::BadMagic => "BadMagic",
            Error::UnsupportedVersion { .. } => "UnsupportedVersion",
            Error::Truncated { .. } => "Truncated",
            Error::ChecksumMismatch { .. } => "ChecksumMismatch",
            Error::BlobMisaligned => "BlobMisaligned",
            Error::BadSection(_) => "BadSection",
            Error::MissingSection(_) => "MissingSection",
            Error::BadTensor { .. } => "BadTensor",
            Error::BadBuffer { .. } => "BadBuffer",
            Error::BadOp { .. } => "BadOp",
            Error::BadModel { .. } => "BadModel",
            _ => "other",
        }
    }

    fn put_u32(b: &mut [u8], at: usize, v: u32) {
        if let Some(d) = b.get_mut(at..at + 4) {
            d.copy_from_slice(&v.to_le_bytes());
        }
    }

    fn flip(b: &mut [u8], at: usize, mask: u8) {
        if let Some(x) = b.get_mut(at) {
            *x ^= mask;
        }
    }

    /// What happens to the header's CRC.
    #[derive(Clone, Copy, PartialEq)]
    enum Crc {
        /// Left as stored (it no longer matches).
        Stored,
        /// Recomputed after the edit (parsing gets past the checksum).
        Fixed,
        /// Recomputed before the edit (the edit is a corruption the checksum must catch).
        FixedBeforeEdit,
    }

    /// Copy the blob's first COPY bytes to `b`, make them a blob of COPY bytes, and apply `edit` (before or after
    /// recomputing the CRC, per `crc`).
    fn corrupt(blob: &[u8], b: &mut [u8], edit: fn(&mut [u8]), crc: Crc) {
        if let (Some(d), Some(s)) = (b.get_mut(..COPY), blob.get(..COPY)) {
            d.copy_from_slice(s);
        }
        put_u32(b, 8, COPY as u32);
        if crc != Crc::FixedBeforeEdit {
            edit(b);
        }
        if crc != Crc::Stored {
            let c = crc32(b.get(16..COPY).unwrap_or(&[]));
            put_u32(b, 12, c);
        }
        if crc == Crc::FixedBeforeEdit {
            edit(b);
        }
    }

    /// One case: parse `bytes`, print the outcome, and check the error kind.
    fn case(name: &str, bytes: &[u8], want: &str) -> bool {
        match Model::parse(bytes) {
            Ok(_) => {
                say!("MALFORMED {} -> Ok (FAIL: expected {})", name, want);
                false
            }
            Err(e) => {
                let ok = kind(&e) == want;
                say!(
                    "MALFORMED {} -> {:?}{}",
                    name,
                    e,
                    if ok { "" } else { " (FAIL: wrong kind)" }
                );
                ok
            }
        }
    }

    /// Runs every case; `Err` if any gave no error or the wrong kind.
    pub fn check(blob: &[u8]) -> Result<(), ()> {
        let n = blob.len();
        let mut ok = true;
        // Truncations (sub-slices of the blob in flash).
        for (name, len) in [
            ("empty", 0),
            ("cut-at-63", 63),
            ("header-only", 64),
            ("cut-at-1000", 1000),
            ("cut-at-half", n / 2),
            ("cut-last-byte", n.saturating_sub(1)),
        ] {
            ok &= case(name, blob.get(..len).unwrap_or(&[]), "Truncated");
        }
        // SAFETY: called once from `run`, before the arena is used; the only reference to BUF.
        let buf: &mut [u8] = unsafe { &mut (*addr_of_mut!(BUF)).0 };
        // Corrupted headers (RAM copies): (case, edit, CRC, offset of the copy from 16-byte alignment, kind).
        let cases: [(&str, fn(&mut [u8]), Crc, usize, &str); 7] = [
            ("bad-magic", |b| flip(b, 0, 0x20), Crc::Fixed, 0, "BadMagic"),
            (
                "version-2",
                |b| put_u32(b, 4, 2),
                Crc::Fixed,
                0,
                "UnsupportedVersion",
            ),
            ("total-len-cut", |_| {}, Crc::Stored, 0, "ChecksumMismatch"),
            (
                "flipped-bit",
                |b| flip(b, 100, 1),
                Crc::FixedBeforeEdit,
                0,
                "ChecksumMismatch",
            ),
            ("misaligned", |_| {}, Crc::Fixed, 4, "BlobMisaligned"),
            ("sections-past-end", |_| {}, Crc::Fixed, 0, "BadSection"),
            (
                "section-count-65",
                |b| put_u32(b, 20, 65),
                Crc::Fixed,
                0,
                "BadSection",
            ),
        ];
        for (name, edit, crc, shift, want) in cases {
            let (head, b) = buf.split_at_mut(shift.min(16));
            head.fill(0);
            corrupt(blob, b, edit, crc);
            ok &= case(name, b.get(..COPY).unwrap_or(&[]), want);
        }
        if ok {
            say!("MALFORMED all cases rejected with the expected error");
            Ok(())
        } else {
            say!("FAIL: a malformed blob was not rejected as expected");
            Err(())
        }
    }
}

/// The one place output leaves the device. [`run`] formats every figure with `core::fmt` into a line buffer here;
/// the build's transport sends it: semihosting (default), defmt over RTT (`defmt`: `defmt::println!("{=str}")`,
/// formatted on the device so the figures are the very same text), or nothing (`panic-check`).
mod out {
    // `panic-check` prints nothing, so the line buffer goes unused there.
    #![cfg_attr(feature = "panic-check", allow(dead_code))]

    use core::fmt::{self, Write};

    const LEN: usize = 256;

    /// One line of text, cut at [`LEN`] bytes.
    struct Line {
        buf: [u8; LEN],
        len: usize,
    }

    impl Write for Line {
        fn write_str(&mut self, s: &str) -> fmt::Result {
            for &b in s.as_bytes() {
                if let Some(slot) = self.buf.get_mut(self.len) {
                    *slot = b;
                    self.len += 1;
                }
            }
            Ok(())
        }
    }

    impl Line {
        fn format(args: fmt::Arguments<'_>) -> Self {
            let mut l = Line {
                buf: [0; LEN],
                len: 0,
            };
            let _ = l.write_fmt(args);
            l
        }

        /// The text; a cut inside a UTF-8 sequence drops its start.
        fn as_str(&self) -> &str {
            let b = self.buf.get(..self.len).unwrap_or(&[]);
            match core::str::from_utf8(b) {
                Ok(s) => s,
                Err(e) => {
                    core::str::from_utf8(b.get(..e.valid_up_to()).unwrap_or(&[])).unwrap_or("")
                }
            }
        }
    }

    /// Print one line.
    #[cfg(not(any(feature = "defmt", feature = "panic-check")))]
    pub fn line(args: fmt::Arguments<'_>) {
        let mut l = Line::format(args);
        let _ = l.write_str("\n");
        cortex_m_semihosting::export::hstdout_str(l.as_str());
    }

    /// Print one line.
    #[cfg(feature = "defmt")]
    pub fn line(args: fmt::Arguments<'_>) {
        let l = Line::format(args);
        defmt::println!("{=str}", l.as_str());
    }

    /// Print nothing: `panic-check` leaves `core::fmt` (and its panic paths) out of the binary.
    #[cfg(feature = "panic-check")]
    #[inline(always)]
    pub fn line(_: fmt::Arguments<'_>) {}

    /// End the run: status 0 on success.
    #[cfg(not(feature = "defmt"))]
    pub fn exit(ok: bool) -> ! {
        use cortex_m_semihosting::debug;
        debug::exit(if ok {
            debug::EXIT_SUCCESS
        } else {
            debug::EXIT_FAILURE
        });
        #[allow(clippy::empty_loop)]
        loop {}
    }

    /// End the run: a breakpoint (`probe-rs run` stops there; the last line said PASS or FAIL).
    #[cfg(feature = "defmt")]
    pub fn exit(_ok: bool) -> ! {
        loop {
            cortex_m::asm::bkpt();
        }
    }
}

#[cfg(not(feature = "panic-check"))]
#[panic_handler]
fn panic(info: &PanicInfo) -> ! {
    if let Some(l) = info.location() {
        say!("FAIL: panic at {}:{}", l.file(), l.line());
    } else {
        say!("FAIL: panic");
    }
    out::exit(false)
}

/// `panic-check`: any panic path the optimizer could not remove references this undefined function, and the link
/// fails with "undefined reference to `ember_firmware_reachable_panic'".
#[cfg(feature = "panic-check")]
#[panic_handler]
fn panic(_: &PanicInfo) -> ! {
    extern "C" {
        fn ember_firmware_reachable_panic() -> !;
    }
    // SAFETY: never executed: the function does not exist, so this build links only if nothing calls it.
    unsafe { ember_firmware_reachable_panic() }
}
