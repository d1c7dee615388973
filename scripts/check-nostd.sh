#!/usr/bin/env bash
# Proves that ember's runtime is really bare-metal:
#   (a) ember-core and ember-kernels build alone as libraries for thumbv7em-none-eabihf with only `core` in the
#       sysroot (-Zbuild-std=core, no alloc/std): any use of alloc or std is a build error;
#   (d) ember-core also builds for thumbv8m.main-none-eabihf (Cortex-M33/M55);
#   (b) a tiny U-Net blob is compiled on the host (ci/nostd/host-gen), the ci/nostd firmware (cortex-m-rt, static
#       arena, no allocator) runs one forward pass under QEMU (Cortex-M7, mps2-an500) and compares its output with
#       the host engine's, bit for bit; then runs every sampler (DDPM + Langevin corrector, DDIM η 0.5, Euler,
#       Euler ancestral, DPM-Solver++ 2M, consistency; 2 guided steps each) in exactly the arena that
#       `sampler::driver::arena_bytes` reports, and compares each final sample with the host's, bit for bit;
#   (c) the firmware ELF links no allocator symbol; its section sizes are printed.
# Uses Debian's rustc/cargo (rustc-web, with the standard library's source) for the cross builds and installs the
# apt packages it needs when they are missing. See docs/BARE_METAL.md.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
NOSTD="$ROOT/ci/nostd"
QEMU_TIMEOUT="${QEMU_TIMEOUT:-120}"
step() { printf '\n==> %s\n' "$*"; }
die() { printf 'check-nostd: FAIL: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------- tools
# shellcheck source=cross-tools.sh
source "$ROOT/scripts/cross-tools.sh"
LIBCHECK_DIR="$NOSTD/target/libcheck"

# ---------------------------------------------------------------- (a) libraries, thumbv7em, core only
step "(a) ember-core + ember-kernels as libraries for thumbv7em-none-eabihf, -Zbuild-std=core (no alloc, no std)"
(cd "$ROOT" && RUSTFLAGS="-C target-cpu=cortex-m7" xcargo build --release \
    --target thumbv7em-none-eabihf -Zbuild-std=core \
    -p ember-core -p ember-kernels --target-dir "$LIBCHECK_DIR") \
    || die "ember-core/ember-kernels do not build for thumbv7em-none-eabihf with core only"

# ---------------------------------------------------------------- (d) ember-core, thumbv8m.main
step "(d) ember-core for thumbv8m.main-none-eabihf (Cortex-M33/M55), -Zbuild-std=core"
(cd "$ROOT" && RUSTFLAGS="-C target-cpu=cortex-m33" xcargo build --release \
    --target thumbv8m.main-none-eabihf -Zbuild-std=core \
    -p ember-core --target-dir "$LIBCHECK_DIR") \
    || die "ember-core does not build for thumbv8m.main-none-eabihf"

# ---------------------------------------------------------------- (b) blob, firmware, QEMU
step "(b) host-gen: tiny U-Net blob + expected output (host engine)"
(cd "$NOSTD/host-gen" && "$HOST_CARGO" run --release --quiet -- "$NOSTD") || die "host-gen failed"

step "(b) firmware ci/nostd for thumbv7em-none-eabihf (cortex-m-rt, static arena, no allocator)"
# ci/nostd/.cargo/config.toml holds the linker flags (arm-none-eabi-ld + cortex-m-rt's link.x) and target-cpu.
(cd "$NOSTD" && xcargo build --release --target thumbv7em-none-eabihf -Zbuild-std=core) \
    || die "firmware build failed"
ELF="$NOSTD/target/thumbv7em-none-eabihf/release/ember-nostd-smoke"
[ -f "$ELF" ] || die "no ELF at $ELF"

step "(b) QEMU mps2-an500 (Cortex-M7), timeout ${QEMU_TIMEOUT}s"
LOG="$NOSTD/target/qemu.log"
set +e
timeout "$QEMU_TIMEOUT" qemu-system-arm -M mps2-an500 -cpu cortex-m7 -nographic \
    -semihosting-config enable=on,target=native -kernel "$ELF" </dev/null 2>&1 | tee "$LOG"
rc=${PIPESTATUS[0]}
set -e
[ "$rc" -eq 0 ] || die "firmware exited with status $rc under QEMU (124 = timeout)"
grep -q '^PASS' "$LOG" || die "firmware exited 0 but printed no PASS line"

# ---------------------------------------------------------------- (c) link check
step "(c) link check: no allocator in the ELF"
if arm-none-eabi-nm "$ELF" | grep -E '__rust_alloc|__rg_alloc|__rdl_alloc|__rust_alloc_error_handler|__rust_dealloc|__rust_realloc|__rg_oom|__rdl_oom'; then
    die "allocator symbols linked into $ELF"
fi
echo "no allocator symbols (__rust_alloc, __rg_alloc, __rdl_alloc, __rust_alloc_error_handler, ...)"
echo
arm-none-eabi-size -A "$ELF" | awk 'NR<=2 || $1 ~ /^\.(vector_table|text|rodata|data|bss|uninit)$/'
arm-none-eabi-size -B "$ELF"

printf '\ncheck-nostd: OK\n'
