//! Instruction counting on the boards: a hardware timer read around the measured code, calibrated against a loop
//! of known length (under QEMU `-icount shift=0` virtual time advances one nanosecond per instruction). Shared by
//! the firmware (`main.rs`) and the kernel tests (`bin/kernels.rs`).
#![allow(dead_code)] // `NAME` is printed by the firmware only, not by the kernel tests.

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
