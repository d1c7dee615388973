//! ember firmware demo: the int8, guidance-distilled 4-step MNIST student (`models/mnist-student/student-4-int8.ember`)
//! draws one digit on an emulated Cortex-M7 (QEMU `mps2-an500`, `thumbv7em-none-eabihf`) or Cortex-M55 (QEMU
//! `mps3-an547`, `thumbv8m.main-none-eabihf`), with no heap and no std.
//!
//! The blob stays in flash (`include_bytes!`, 16-byte aligned, parsed in place); one `static` arena holds the model's
//! activations plus the sampler's state. The firmware runs the blob's default sampler (DDIM over its explicit
//! timesteps) for the class and seed in `golden.rs`, prints a line per step, the digit as ASCII art and its budgets
//! (arena, measured stack, timer-based instruction counts), writes the raw f32 image to a host file through
//! semihosting, and compares the sample with the host engine's (`host-gen`, generic kernels) bit for bit. It exits
//! through semihosting: status 0 on `PASS`, 1 on any failure. Build and run: `scripts/firmware.sh`.
#![no_std]
#![no_main]

use core::panic::PanicInfo;
use core::ptr::{addr_of, addr_of_mut, read_volatile, write_volatile};

use cortex_m_rt::entry;
use cortex_m_semihosting::{debug, hprintln, syscall};
use ember_core::sampler::driver::{arena_bytes, Control, Init, Progress, Sampler, StepView};
use ember_core::{Aligned, Model};

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
const IMAGE_PATH: &str = concat!(env!("EMBER_FW_IMAGE"), "\0");

#[entry]
fn main() -> ! {
    let stack = stack::paint();
    let code = match run(stack) {
        Ok(()) => debug::EXIT_SUCCESS,
        Err(()) => debug::EXIT_FAILURE,
    };
    debug::exit(code);
    #[allow(clippy::empty_loop)]
    loop {}
}

fn run(painted: usize) -> Result<(), ()> {
    let digit = golden::DIGIT;
    hprintln!(
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
    let model = Model::parse(&BLOB.0).map_err(|e| hprintln!("FAIL: Model::parse: {:?}", e))?;
    let info = *model.info();
    let cfg = common::sampler_config();
    let need = arena_bytes(&model, &cfg).map_err(|e| hprintln!("FAIL: arena_bytes: {:?}", e))?;
    hprintln!(
        "model: {} ops, {} MACs/forward, arena {} B (converter {} B); sampler arena {} B (static {} B)",
        model.n_ops(),
        info.macs(),
        model.arena_bytes(),
        MODEL_ARENA_BYTES,
        need,
        ARENA_LEN
    );
    if model.arena_bytes() != MODEL_ARENA_BYTES || need > ARENA_LEN {
        hprintln!(
            "FAIL: the static arena does not match the blob (regenerate arena.rs / golden.rs)"
        );
        return Err(());
    }
    if info.output_len() != golden::SAMPLE_LEN {
        hprintln!(
            "FAIL: sample has {} values, golden.rs {}",
            info.output_len(),
            golden::SAMPLE_LEN
        );
        return Err(());
    }

    let clock = timer::calibrate();
    hprintln!(
        "timer: {}, {}.{:02} instructions per tick (instruction counts are exact only under QEMU -icount shift=0)",
        timer::NAME,
        clock.instr / clock.ticks,
        clock.instr % clock.ticks * 100 / clock.ticks
    );

    // SAFETY: `run` is called once, from `main`, with no interrupts in use: this is the only reference to ARENA.
    let arena: &mut [u8] = unsafe { &mut (*addr_of_mut!(ARENA)).0 };
    // Boot self-test: the blob's recorded input through the generic kernels must give the recorded output hash.
    if model.self_test_arena_bytes() > arena.len() {
        hprintln!(
            "FAIL: self-test needs {} B of arena",
            model.self_test_arena_bytes()
        );
        return Err(());
    }
    let t_st = timer::now();
    match model.self_test(arena) {
        Ok(()) => hprintln!(
            "SELF-TEST PASS (record {:?}; {} instructions)",
            model.self_test_record(),
            clock.instructions(timer::now() - t_st)
        ),
        Err(e) => {
            hprintln!("SELF-TEST FAIL: {}", e);
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
    .map_err(|e| hprintln!("FAIL: Sampler::new: {:?}", e))?;
    let t_start = timer::now();
    hprintln!(
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
            hprintln!(
                "step {}/{}: t = {}, {} instructions",
                v.index + 1,
                v.total,
                v.timestep,
                instr
            );
            last = timer::now(); // the next step's count leaves this print out
            Control::Continue
        })
        .map_err(|e| hprintln!("FAIL: Sampler::run: {:?}", e))?;
    let total_instr = total; // sum over the steps, the progress prints left out
    if progress != Progress::Done {
        hprintln!("FAIL: sampler stopped early: {:?}", progress);
        return Err(());
    }
    let steps = u64::from(s.total_steps().max(1));
    hprintln!(
        "INSTRUCTIONS total {} per-unet-eval {} ({} MACs each, max step {})",
        total_instr,
        total_instr / steps,
        info.macs(),
        per_step_max
    );

    let sample = s.sample();
    let side = (info.width as usize).max(1);
    hprintln!(
        "digit {} ({}x{}, ramp \" .:-=+*#%@\" over [-1, 1]):",
        digit,
        info.height,
        info.width
    );
    let mut line = [0u8; 128];
    for row in sample.chunks(side) {
        let text = common::ascii_row(row, &mut line);
        hprintln!("|{}|", core::str::from_utf8(text).unwrap_or("?"));
    }
    match host_file::write_f32(IMAGE_PATH, sample) {
        Ok(()) => hprintln!(
            "wrote {} ({} B, raw f32 little-endian)",
            env!("EMBER_FW_IMAGE"),
            4 * sample.len()
        ),
        Err(()) => hprintln!(
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
        .map_err(|e| hprintln!("FAIL: Sampler::new (profile): {:?}", e))?;
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
            .map_err(|e| hprintln!("FAIL: Sampler::run_observed: {:?}", e))?;
    }
    let ticks: u64 = kinds.iter().map(|k| k.1).sum();
    for k in kinds.iter().filter(|k| !k.0.is_empty()) {
        let share = k.1 * 1000 / ticks.max(1);
        hprintln!(
            "OPKIND {} {} instructions ({}.{} %), {} ops",
            k.0,
            clock.instructions(k.1),
            share / 10,
            share % 10,
            k.2
        );
    }

    let used = stack::used();
    hprintln!(
        "STACK used {} B of {} B (high-water mark; {} B painted)",
        used,
        stack::size(),
        painted
    );
    hprintln!("ARENA {} B (static), sampler needs {} B", ARENA_LEN, need);
    if used + 64 >= stack::size() {
        hprintln!("FAIL: the stack reached the end of RAM (.bss): overflow");
        return Err(());
    }
    hprintln!(
        "device fnv 0x{:08x}, host fnv 0x{:08x}",
        fnv,
        golden::EXPECTED_FNV
    );
    if mismatches == 0 && fnv == golden::EXPECTED_FNV {
        hprintln!("PASS digit {}: bit-identical to the host engine", digit);
        Ok(())
    } else {
        hprintln!(
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
mod timer {
    /// Instructions per timer ticks, as a ratio.
    #[derive(Clone, Copy)]
    pub struct Clock {
        pub instr: u64,
        pub ticks: u64,
    }

    impl Clock {
        pub fn instructions(&self, ticks: u64) -> u64 {
            (ticks * self.instr + self.ticks / 2) / self.ticks.max(1)
        }
    }

    /// `n` iterations of a two-instruction loop (`subs`, `bne`).
    #[inline(never)]
    fn spin(n: u32) {
        // SAFETY: register-only loop.
        unsafe {
            core::arch::asm!("2:", "subs {n}, {n}, #1", "bne 2b", n = inout(reg) n => _, options(nomem, nostack));
        }
    }

    /// Starts the timer and measures its instructions per tick: the difference between two loops of known length
    /// cancels the measuring overhead.
    pub fn calibrate() -> Clock {
        start();
        const N: u32 = 1 << 22;
        let t0 = now();
        spin(N);
        let t1 = now();
        spin(2 * N);
        let t2 = now();
        // 2 * N extra instructions over the extra ticks, rounded to 1/64 instruction per tick (the boards' clocks
        // give 40 (25 MHz) and 31.25 (32 MHz) instructions per tick; the tick granularity blurs the raw ratio).
        let ticks = ((t2 - t1) - (t1 - t0)).max(1);
        Clock {
            instr: (2 * u64::from(N) * 64 + ticks / 2) / ticks,
            ticks: 64,
        }
    }

    /// CMSDK APB timer 0 of the MPS2 board (0x4000_0000): a 32-bit down-counter on the 25 MHz APB clock (40
    /// instructions per tick under -icount shift=0); it does not wrap within a run (171 s of virtual time).
    #[cfg(not(board_an547))]
    mod hw {
        use core::ptr::{read_volatile, write_volatile};

        pub const NAME: &str = "CMSDK APB timer 0";
        const BASE: usize = 0x4000_0000;
        const CTRL: *mut u32 = BASE as *mut u32;
        const VALUE: *mut u32 = (BASE + 4) as *mut u32;
        const RELOAD: *mut u32 = (BASE + 8) as *mut u32;

        pub fn start() {
            // SAFETY: MMIO registers of the CMSDK timer, which nothing else uses.
            unsafe {
                write_volatile(CTRL, 0);
                write_volatile(RELOAD, u32::MAX);
                write_volatile(VALUE, u32::MAX);
                write_volatile(CTRL, 1);
            }
        }

        /// Ticks since `start`.
        pub fn now() -> u64 {
            // SAFETY: read of an MMIO register.
            u64::from(u32::MAX - unsafe { read_volatile(VALUE) })
        }
    }

    /// SysTick on the core clock (24 bits), extended by counting its wraps in the SysTick exception.
    #[cfg(board_an547)]
    mod hw {
        use core::sync::atomic::{AtomicU32, Ordering};
        use cortex_m::peripheral::syst::SystClkSource;
        use cortex_m::peripheral::{SCB, SYST};
        use cortex_m_rt::exception;

        pub const NAME: &str = "SysTick (core clock) + wrap count";
        const RELOAD: u32 = 0x00FF_FFFF;
        static WRAPS: AtomicU32 = AtomicU32::new(0);

        #[exception]
        fn SysTick() {
            WRAPS.fetch_add(1, Ordering::Relaxed);
        }

        pub fn start() {
            // SAFETY: SysTick is used by nothing else; `steal` avoids threading `Peripherals` through.
            let mut p = unsafe { cortex_m::Peripherals::steal() };
            p.SYST.set_clock_source(SystClkSource::Core);
            p.SYST.set_reload(RELOAD);
            p.SYST.clear_current();
            p.SYST.enable_interrupt();
            p.SYST.enable_counter();
            // The counter holds 0 until its first reload: wait for it, so that `now` starts from 0.
            while SYST::get_current() == 0 {}
        }

        /// Ticks since `start`. A wrap whose exception is still pending counts when the value was read after it
        /// (the counter restarted near RELOAD); QEMU takes the exception only at the next block boundary.
        pub fn now() -> u64 {
            loop {
                let w = WRAPS.load(Ordering::SeqCst);
                let v = SYST::get_current();
                let pending = SCB::is_pendst_pending();
                if WRAPS.load(Ordering::SeqCst) == w {
                    let w = w + u32::from(pending && v > RELOAD / 2);
                    return u64::from(w) * u64::from(RELOAD + 1) + u64::from(RELOAD - v);
                }
            }
        }
    }

    pub use hw::{now, start, NAME};
}

/// Host files through semihosting (SYS_OPEN / SYS_WRITE / SYS_CLOSE).
mod host_file {
    use super::*;
    use cortex_m_semihosting::nr;

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

#[panic_handler]
fn panic(info: &PanicInfo) -> ! {
    if let Some(l) = info.location() {
        hprintln!("FAIL: panic at {}:{}", l.file(), l.line());
    } else {
        hprintln!("FAIL: panic");
    }
    debug::exit(debug::EXIT_FAILURE);
    #[allow(clippy::empty_loop)]
    loop {}
}
