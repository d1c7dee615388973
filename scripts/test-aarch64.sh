#!/usr/bin/env bash
# The aarch64 kernel tiers (NEON, dotprod) against the generic kernels, under QEMU user mode:
#   (1) `-cpu max` (has FEAT_DotProd): every kernel of the `neon` and `dotprod` tiers must pass
#       (int8 bit-exact, f32 within tolerance);
#   (2) `-cpu cortex-a53` (ARMv8.0, no dotprod): `neon` must pass and `dotprod` must report SKIPPED;
#   (3) the cross-built `ember generate` on the int8 student under both CPUs: the same bytes as on the x86 host.
# Cross-builds kernels-simd/tests/tiers.rs with Debian's rustc (-Zbuild-std, std feature for runtime detection) and
# installs the apt packages it needs when missing (scripts/cross-tools.sh). Fails on any mismatch.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
step() { printf '\n==> %s\n' "$*"; }
die() { printf 'test-aarch64: FAIL: %s\n' "$*" >&2; exit 1; }

# shellcheck source=cross-tools.sh
source "$ROOT/scripts/cross-tools.sh"
TARGET_DIR="${AARCH64_TARGET_DIR:-$ROOT/target/aarch64}"
SYSROOT=/usr/aarch64-linux-gnu
command -v aarch64-linux-gnu-gcc >/dev/null || die "aarch64-linux-gnu-gcc not found"
command -v qemu-aarch64 >/dev/null || die "qemu-aarch64 not found"

# run_tiers CPU: build (once) and run the tier test under `qemu-aarch64 -cpu CPU`; prints and returns its output.
run_tiers() {
    (cd "$ROOT" && \
        CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc \
        CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L $SYSROOT -cpu $1" \
        xcargo test -p ember-kernels --features std --test tiers --release \
            --target aarch64-unknown-linux-gnu -Zbuild-std --target-dir "$TARGET_DIR" 2>&1)
}

# check OUT TIER WANT: every line of TIER says WANT ("ok" or "SKIPPED"), and there are at least 5 of them. A kernel
# the tier does not have (the packed-weight convolutions: no aarch64 family yet) says "n/a: ..." and is not counted.
check() {
    local n bad
    n=$(grep -c "^tier $2 " <<<"$1" || true)
    bad=$(grep "^tier $2 " <<<"$1" | grep -v " n/a: " | grep -vc " $3" || true)
    [ "$n" -ge 5 ] || die "expected at least 5 kernel lines for tier $2, got $n"
    [ "$bad" -eq 0 ] || die "tier $2: $bad kernel(s) not $3"
}

step "(1) tiers under qemu-aarch64 -cpu max (NEON + dotprod)"
out=$(run_tiers max) || { printf '%s\n' "$out"; die "tier test failed under -cpu max"; }
printf '%s\n' "$out" | grep -E "^tier |FAILED|error" || true
check "$out" neon ok
check "$out" dotprod ok

step "(2) tiers under qemu-aarch64 -cpu cortex-a53 (NEON only: dotprod must be SKIPPED)"
out=$(run_tiers cortex-a53) || { printf '%s\n' "$out"; die "tier test failed under -cpu cortex-a53"; }
printf '%s\n' "$out" | grep -E "^tier |FAILED|error" || true
check "$out" neon ok
check "$out" dotprod SKIPPED

step "(3) end to end: the cross-built ember generate, int8 student, under -cpu cortex-a53 (neon) and -cpu max (dotprod)"
# The host runner packs the blob at load for the tier's families (aarch64-neon-wino8 on the A53: the integer
# Winograd kernel; aarch64-neon with dotprod), so the whole 4-step sampling goes through the packed kernels; int8
# kernels are exact, so the samples must be the x86 host's, byte for byte (the output file has no timestamps).
(cd "$ROOT" && CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc \
    xcargo build -q -p ember-cli --release --target aarch64-unknown-linux-gnu -Zbuild-std --target-dir "$TARGET_DIR") \
    || die "cross build of ember failed"
(cd "$ROOT" && cargo build -q -p ember-cli --release) || die "host build of ember failed"
E2E="$(mktemp -d)"
trap 'rm -rf "$E2E"' EXIT
MODEL="$ROOT/models/mnist-student/student-4-int8.ember"
"$ROOT/target/release/ember" generate --model "$MODEL" --classes 3,8 --per-class 1 -o "$E2E/host.safetensors" \
    >/dev/null || die "host ember generate failed"
for cpu in cortex-a53 max; do
    qemu-aarch64 -L "$SYSROOT" -cpu "$cpu" "$TARGET_DIR/aarch64-unknown-linux-gnu/release/ember" generate \
        --model "$MODEL" --classes 3,8 --per-class 1 -o "$E2E/$cpu.safetensors" | tail -1 \
        || die "ember generate under -cpu $cpu failed"
    cmp "$E2E/host.safetensors" "$E2E/$cpu.safetensors" || die "-cpu $cpu: samples differ from the x86 host's"
    echo "-cpu $cpu: samples byte-identical to the x86 host's"
done

step "aarch64 tiers: OK"
