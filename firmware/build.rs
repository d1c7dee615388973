//! Puts `memory.x` on the linker search path for cortex-m-rt's `link.x`, picks the golden file (the committed
//! `src/golden.rs`, or the file named by `EMBER_FW_GOLDEN` for another digit/seed) and the host path the image is
//! written to (`EMBER_FW_IMAGE`, default `digit.f32` relative to QEMU's working directory).
use std::{env, fs, path::PathBuf};

/// Cortex-M7 (`thumbv7em-none-eabihf`, QEMU `mps2-an500`): the budget device, 2 MiB of flash and 512 KiB of SRAM,
/// placed in the two 4 MiB ZBT SSRAMs that QEMU maps at 0x0000_0000 (code) and 0x2000_0000 (data) (`info mtree`:
/// mps.ssram1, mps.ssram23). The stack sits at the top of RAM and grows down towards .bss (the arena); main.rs
/// measures its high-water mark.
const MEMORY_AN500: &str = "\
/* ARM MPS2 AN500 (Cortex-M7) as emulated by qemu-system-arm -M mps2-an500, cut to the firmware's budget. */
MEMORY
{
  FLASH : ORIGIN = 0x00000000, LENGTH = 2M
  RAM   : ORIGIN = 0x20000000, LENGTH = 512K
}
";

/// Cortex-M55 (`thumbv8m.main-none-eabihf`, QEMU `mps3-an547`, SSE-300): vectors and code in the 512 KiB ITCM,
/// the model (section `.model`) in the board's 8 MiB QSPI flash at 0x2800_0000, data in the 512 KiB DTCM.
const MEMORY_AN547: &str = "\
/* ARM MPS3 AN547 (Cortex-M55, SSE-300) as emulated by qemu-system-arm -M mps3-an547. */
MEMORY
{
  FLASH : ORIGIN = 0x00000000, LENGTH = 512K
  QSPI  : ORIGIN = 0x28000000, LENGTH = 8M
  RAM   : ORIGIN = 0x20000000, LENGTH = 512K
}
SECTIONS
{
  .model : ALIGN(16)
  {
    KEEP(*(.model .model.*));
  } > QSPI
} INSERT AFTER .rodata;
";

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
    println!("cargo::rustc-check-cfg=cfg(board_an547)");
    let an547 = env::var("TARGET").is_ok_and(|t| t.starts_with("thumbv8m"));
    if an547 {
        println!("cargo:rustc-cfg=board_an547");
    }
    let memory = if an547 { MEMORY_AN547 } else { MEMORY_AN500 };
    fs::write(out.join("memory.x"), memory).expect("write memory.x");
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rerun-if-changed=build.rs");

    let golden = match env::var_os("EMBER_FW_GOLDEN") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from("src/golden.rs"),
    };
    println!("cargo:rerun-if-env-changed=EMBER_FW_GOLDEN");
    println!("cargo:rerun-if-changed={}", golden.display());
    let text =
        fs::read_to_string(&golden).unwrap_or_else(|e| panic!("read {}: {e}", golden.display()));
    fs::write(out.join("golden.rs"), text).expect("write golden.rs");

    println!("cargo:rerun-if-env-changed=EMBER_FW_IMAGE");
    let image = env::var("EMBER_FW_IMAGE")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "digit.f32".into());
    assert!(!image.contains('\0'), "EMBER_FW_IMAGE contains NUL");
    println!("cargo:rustc-env=EMBER_FW_IMAGE={image}");
}
