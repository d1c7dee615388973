#!/usr/bin/env bash
# The main job: make digits with the bundled model. Builds the host runner and runs `ember generate` with no flags:
# the guided, progressively distilled 4-step MNIST student built into the binary draws ten of each digit 0-9
# (one U-Net pass per step, guidance folded in) into a PNG grid. Then prints what the model costs on a device.
# (scripts/parity-demo.sh walks through conversion and parity with diffusers instead.)
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
OUT=${OUT:-target/demo}
mkdir -p "$OUT"
cargo build --release -q -p ember-cli -p quantize-tool
echo "== ember generate"
target/release/ember generate -o "$OUT/digits.png"
echo "== the model on a device (quantize-tool inspect)"
target/release/quantize-tool inspect models/mnist-student/student-4.ember | grep -E '^(parameters|MACs|blob|arena|timesteps|distilled|sampler)'
echo
echo "digits: $OUT/digits.png"
