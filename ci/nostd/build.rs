//! Puts `memory.x` (the mps2-an500 memory map) on the linker search path for cortex-m-rt's `link.x`.
use std::{env, fs, path::PathBuf};

const MEMORY_X: &str = "\
/* ARM MPS2 AN500 (Cortex-M7) as emulated by qemu-system-arm -M mps2-an500. */
MEMORY
{
  FLASH : ORIGIN = 0x00000000, LENGTH = 4M
  RAM   : ORIGIN = 0x20000000, LENGTH = 4M
}
";

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
    fs::write(out.join("memory.x"), MEMORY_X).expect("write memory.x");
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=model.ember");
}
