#!/usr/bin/env bash
# The main job for now: convert a committed diffusers checkpoint (a class-conditional UNet2DModel from
# tests/golden) to .ember in f32 and f16, describe it, run one U-Net forward pass with ember, and compare the result
# with diffusers' own output for the same input. (Image generation with the bundled MNIST model replaces this once
# the samplers and reference models land.)
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
CASE=${1:-tests/golden/cond_mnist_like}
OUT=${OUT:-target/demo}
mkdir -p "$OUT"
cargo build --release -q -p quantize-tool -p ember-cli
QT=target/release/quantize-tool
EMBER=target/release/ember
for dtype in f32 f16; do
  echo "== quantize-tool convert $CASE --dtype $dtype"
  $QT convert "$CASE" --dtype $dtype -o "$OUT/model-$dtype.ember"
done
echo "== quantize-tool inspect"
$QT inspect "$OUT/model-f32.ember"
for dtype in f32 f16; do
  echo "== ember forward ($dtype weights) vs diffusers"
  $EMBER forward --model "$OUT/model-$dtype.ember" --inputs "$CASE/io.safetensors" --index 0 -o "$OUT/out-$dtype.safetensors"
  $EMBER compare --output "$OUT/out-$dtype.safetensors" --reference "$CASE/io.safetensors" --reference-tensor out_0
done
echo "== ember bench"
$EMBER bench --model "$OUT/model-f32.ember" --iters 20
