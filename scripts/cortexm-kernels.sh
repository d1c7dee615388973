#!/usr/bin/env bash
# The Cortex-M kernel tiers of ember-kernels (kernels-simd/src/arm: "dsp" = SMLAD, "mve" = Helium) against the
# generic kernels, bit for bit, under QEMU: firmware/src/bin/kernels.rs built for
#   an500: thumbv7em-none-eabihf, target-cpu=cortex-m7  (qemu-system-arm -M mps2-an500 -cpu cortex-m7)
#   an547: thumbv8m.main-none-eabihf, target-cpu=cortex-m55 (qemu-system-arm -M mps3-an547)
# prints one PASS / FAIL / SKIPPED line per (tier, kernel) and the instructions per MAC of the int8 convolution
# (QEMU -icount shift=0). Fails on any FAIL, on a missing SUMMARY line, or when a tier the board must run did not
# pass (dsp on both boards, mve on the M55).
# Environment: BOARD (an500, an547 or all, the default), QEMU_TIMEOUT (300 s).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
FW="$ROOT/firmware"
BOARD="${BOARD:-all}"
QEMU_TIMEOUT="${QEMU_TIMEOUT:-300}"
TARGET_DIR="$FW/target/kernels"
step() { printf '\n==> %s\n' "$*"; }
die() { printf 'cortexm-kernels: FAIL: %s\n' "$*" >&2; exit 1; }
[[ "$BOARD" =~ ^(an500|an547|all)$ ]] || die "BOARD must be an500, an547 or all (got '$BOARD')"

# shellcheck source=cross-tools.sh
source "$ROOT/scripts/cross-tools.sh"

SUMMARY=()

# board NAME TARGET MUST-PASS QEMU-ARGS...: build the test program, run it, check its report.
board() {
    local name="$1" target="$2" must="$3"
    shift 3
    step "[$name] kernels test program for $target (Debian cargo, -Zbuild-std=core)"
    (cd "$FW" && xcargo build --release --target "$target" -Zbuild-std=core --bin kernels \
        --target-dir "$TARGET_DIR") || die "[$name] build failed"
    local elf="$TARGET_DIR/$target/release/kernels" log="$TARGET_DIR/kernels-$name.log" rc
    [ -f "$elf" ] || die "[$name] no ELF at $elf"

    step "[$name] qemu-system-arm $* -icount shift=0 (timeout ${QEMU_TIMEOUT}s)"
    set +e
    timeout "$QEMU_TIMEOUT" qemu-system-arm "$@" -nographic -semihosting-config enable=on,target=native \
        -icount shift=0 -kernel "$elf" </dev/null 2>&1 | tee "$log"
    rc=${PIPESTATUS[0]}
    set -e
    grep -q '^SUMMARY kernels: ' "$log" || die "[$name] no SUMMARY line (status $rc; 124 = timeout)"
    if grep -q '^FAIL' "$log"; then
        die "[$name] $(grep -c '^FAIL' "$log") kernel check(s) failed"
    fi
    [ "$rc" -eq 0 ] || die "[$name] the test program exited with status $rc"
    local t
    for t in $must; do
        grep -q "^PASS $t " "$log" || die "[$name] tier $t did not pass (it must run on this board)"
    done
    SUMMARY+=("$name: $(grep -E '^(PASS|SKIPPED) ' "$log" | sed 's/:.*//' | paste -sd, | sed 's/,/, /g')")
    SUMMARY+=("$(grep '^BENCH ' "$log" | sed "s/^BENCH /  $name /")")
}

case "$BOARD" in
    an500 | all) board an500 thumbv7em-none-eabihf "dsp" -M mps2-an500 -cpu cortex-m7 ;;&
    an547 | all) board an547 thumbv8m.main-none-eabihf "dsp mve" -M mps3-an547 ;;
    an500) ;;
    *) die "BOARD must be an500, an547 or all (got '$BOARD')" ;;
esac

printf '\n==> summary\n'
printf '%s\n' "${SUMMARY[@]}"
printf '\ncortexm-kernels: OK\n'
