#!/usr/bin/env bash
# The parity walk-through: convert a committed diffusers checkpoint (a class-conditional UNet2DModel from
# tests/golden) to .ember in f32 and f16, describe it, run one U-Net forward pass with ember, and compare the result
# with diffusers' own output for the same input; then run a whole guided sampling loop with `ember sample` on a
# held-out pipeline folder and compare its final sample with diffusers'. (Image generation with the bundled MNIST
# model replaces this once the reference models land.)
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
PIPE=tests/golden/pipelines/dpmpp_2m_cfg
echo "== ember sample: guided DPM-Solver++ 2M on a held-out diffusers pipeline folder, from diffusers' initial noise"
$QT convert "$PIPE" -o "$OUT/pipeline.ember" | tail -1
$EMBER sample --model "$OUT/pipeline.ember" --scheduler dpmpp-2m --steps 10 --class 7 --guidance-scale 4 \
  --init-noise "$PIPE/init_noise.safetensors" -o "$OUT/sample.safetensors"
$EMBER compare --output "$OUT/sample.safetensors" --reference "$PIPE/expected.safetensors"
echo "== ember bench"
$EMBER bench --model "$OUT/model-f32.ember" --iters 20
