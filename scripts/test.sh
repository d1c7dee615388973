#!/usr/bin/env bash
# The one command that runs every check: formatting, clippy (-D warnings), all tests (parity with the committed
# diffusers goldens, malformed input, CLI end-to-end), the doc build, and the bare-metal proof (ember-core built for
# thumbv7em / thumbv8m with no std and no allocator, plus a forward pass on an emulated Cortex-M7 under QEMU), and the
# firmware demo (the int8 MNIST student generating a digit on emulated Cortex-M7 and Cortex-M55, within budgets).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

step() { printf '\n==== %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all -- --check
step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets -q -- -D warnings
step "cargo test (release)"
cargo test --workspace --release
step "cargo doc"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps -q
step "bare metal: no_std build + QEMU Cortex-M7 run"
scripts/check-nostd.sh
step "aarch64: NEON and dotprod tiers against generic under qemu-aarch64 (-cpu max, -cpu cortex-a53)"
scripts/test-aarch64.sh
step "Cortex-M: dsp and mve tiers against generic under qemu-system-arm (M7, M55)"
scripts/cortexm-kernels.sh
step "firmware: the int8 student draws a digit on emulated Cortex-M7 and Cortex-M55 (bit-identical, budgets)"
BOARD=all scripts/firmware.sh
step "all checks passed"
