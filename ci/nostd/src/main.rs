//! ember on bare metal: one U-Net forward pass on an emulated Cortex-M7 (QEMU `mps2-an500`), no heap, no std.
//!
//! The blob (`model.ember`) and `model_const.rs` come from `host-gen`, which also ran the same blob on the same input
//! on the host; this firmware compares its output with the host's bit for bit and exits through semihosting with
//! `EXIT_SUCCESS` (QEMU exit status 0) or `EXIT_FAILURE` (status 1). Build and run: `scripts/check-nostd.sh`.
#![no_std]
#![no_main]

use core::panic::PanicInfo;

use cortex_m_rt::entry;
use cortex_m_semihosting::{debug, hprintln};
use ember_core::{Aligned, Model};

mod input;
#[allow(dead_code)]
mod model_const;

use ember_core::sampler::driver::{arena_bytes, Control, Init, Sampler};
use model_const::{
    ARENA_BYTES, BLOB_BYTES, EXPECTED_BITS, EXPECTED_FNV, EXPECTED_SUM_BITS, INPUT_LEN, MACS, OUTPUT_LEN,
    SAMPLERS, SAMPLER_ARENA_BYTES,
};

/// One arena for the forward check and every sampler run: the larger of the two needs.
const ARENA_LEN: usize = if SAMPLER_ARENA_BYTES > ARENA_BYTES { SAMPLER_ARENA_BYTES } else { ARENA_BYTES };

const BLOB_LEN: usize = include_bytes!("../model.ember").len();

/// The model, in flash (.rodata), 16-byte aligned so it is read in place.
static BLOB: Aligned<BLOB_LEN> = Aligned(*include_bytes!("../model.ember"));

/// The one arena (.bss): the blob's memory plan, or the largest sampler run (model plan + sampler state).
static mut ARENA: Aligned<ARENA_LEN> = Aligned([0; ARENA_LEN]);

/// Relative tolerance used only if the output is not bit-identical to the host's (libm results could in principle
/// differ across targets); the firmware reports which comparison passed.
const REL_TOL: f32 = 1e-5;

#[entry]
fn main() -> ! {
    let code = match run() {
        Ok(()) => debug::EXIT_SUCCESS,
        Err(()) => debug::EXIT_FAILURE,
    };
    debug::exit(code);
    #[allow(clippy::empty_loop)]
    loop {}
}

fn run() -> Result<(), ()> {
    if BLOB_LEN != BLOB_BYTES {
        hprintln!("FAIL: model.ember is {} B but model_const.rs says {} B (regenerate both)", BLOB_LEN, BLOB_BYTES);
        return Err(());
    }
    // SAFETY: `run` is called once, from `main`, with interrupts unused: this is the only reference to ARENA.
    let arena: &mut [u8] = unsafe { &mut (*core::ptr::addr_of_mut!(ARENA)).0 };

    let model = Model::parse(&BLOB.0).map_err(|e| hprintln!("FAIL: Model::parse: {:?}", e))?;
    let info = *model.info();
    hprintln!(
        "ember no_std smoke: blob {} B, {} ops, arena {} B (static), {} MACs",
        BLOB_LEN,
        model.n_ops(),
        model.arena_bytes(),
        MACS
    );
    if info.input_len() != INPUT_LEN || info.output_len() != OUTPUT_LEN {
        hprintln!("FAIL: blob shapes differ from model_const.rs");
        return Err(());
    }
    let mut sample = [0.0f32; INPUT_LEN];
    input::fill(&mut sample);
    let mut out = [0.0f32; OUTPUT_LEN];

    let mut session = model.bind(&mut *arena).map_err(|e| hprintln!("FAIL: Model::bind: {:?}", e))?;
    session
        .forward(&sample, input::TIMESTEP, Some(input::LABEL), &mut out)
        .map_err(|e| hprintln!("FAIL: Session::forward: {:?}", e))?;

    let (sum, fnv) = (input::sum(&out), input::fnv1a_bits(&out));
    hprintln!("device: sum {} (0x{:08x}) fnv 0x{:08x}", sum, sum.to_bits(), fnv);
    hprintln!("device: out[0..4] = {} {} {} {}", out[0], out[1], out[2], out[3]);
    hprintln!(
        "host:   sum {} (0x{:08x}) fnv 0x{:08x}",
        f32::from_bits(EXPECTED_SUM_BITS),
        EXPECTED_SUM_BITS,
        EXPECTED_FNV
    );

    let mut mismatches = 0usize;
    let mut max_abs = 0.0f32;
    let mut max_rel = 0.0f32;
    for (&d, &h) in out.iter().zip(EXPECTED_BITS.iter()) {
        let h = f32::from_bits(h);
        if d.to_bits() != h.to_bits() {
            mismatches += 1;
        }
        let abs = if d.is_finite() { (d - h).abs() } else { f32::INFINITY };
        max_abs = if abs > max_abs { abs } else { max_abs };
        let rel = abs / if h.abs() > 1.0 { h.abs() } else { 1.0 };
        max_rel = if rel > max_rel { rel } else { max_rel };
    }
    drop(session);
    if mismatches == 0 && fnv == EXPECTED_FNV && sum.to_bits() == EXPECTED_SUM_BITS {
        hprintln!("PASS: device output is bit-identical to the host engine ({} values)", OUTPUT_LEN);
        samplers(&model, arena)
    } else if max_rel <= REL_TOL {
        hprintln!(
            "PASS (tolerance): {} of {} values differ from the host in their bits; max abs diff {}, max rel diff {} <= {}",
            mismatches,
            OUTPUT_LEN,
            max_abs,
            max_rel,
            REL_TOL
        );
        Ok(())
    } else {
        hprintln!(
            "FAIL: {} of {} values differ from the host; max abs diff {}, max rel diff {} > {}",
            mismatches,
            OUTPUT_LEN,
            max_abs,
            max_rel,
            REL_TOL
        );
        Err(())
    }
}

/// Every sampler (2 guided steps each) in exactly the arena `arena_bytes` reports; the final sample must be
/// bit-identical to the host's.
fn samplers(model: &Model<'_>, arena: &mut [u8]) -> Result<(), ()> {
    let mut failed = false;
    for (i, &(host_need, host_fnv)) in SAMPLERS.iter().enumerate() {
        let cfg = input::sampler_config(i);
        let need = arena_bytes(model, &cfg).map_err(|e| hprintln!("FAIL: arena_bytes: {:?}", e))?;
        let mut s = Sampler::new(model, &mut arena[..need], cfg, input::conditioning(), Init::Seed(input::SEED))
            .map_err(|e| hprintln!("FAIL: Sampler::new {:?}: {:?}", cfg.method, e))?;
        let mut steps = 0u32;
        s.run(&mut |_| {
            steps += 1;
            Control::Continue
        })
        .map_err(|e| hprintln!("FAIL: Sampler::run {:?}: {:?}", cfg.method, e))?;
        let fnv = input::fnv1a_bits(s.sample());
        let ok = fnv == host_fnv && need == host_need;
        failed |= !ok;
        hprintln!(
            "{} sampler {:?}: {} steps, arena {} B (host {} B), sample fnv 0x{:08x} (host 0x{:08x})",
            if ok { "PASS" } else { "FAIL" },
            cfg.method,
            steps,
            need,
            host_need,
            fnv,
            host_fnv
        );
    }
    if failed {
        Err(())
    } else {
        Ok(())
    }
}

/// No formatting here (keeps `PanicInfo`'s `Display` machinery out of the image): report failure and stop.
#[panic_handler]
fn panic(_: &PanicInfo) -> ! {
    debug::exit(debug::EXIT_FAILURE);
    #[allow(clippy::empty_loop)]
    loop {}
}
