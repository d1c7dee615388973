#!/usr/bin/env bash
# Rebuild the committed .ember blobs of the MNIST reference models from their diffusers folders.
#   bash models/convert.sh            # every blob
#   bash models/convert.sh int8       # only the int8 students (calibration + mixed-precision search, ~15 s each)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p quantize-tool
Q=./target/release/quantize-tool
S=models/mnist-student
T=models/mnist-teacher
if [ "${1:-all}" != int8 ]; then
  $Q convert $T -o $T/teacher.ember
  $Q convert $T --dtype f16 -o $T/teacher-f16.ember
  $Q convert $S/steps-4 -o $S/student-4.ember
  for n in 4 2 1; do $Q convert $S/steps-$n --dtype f16 -o $S/student-$n-f16.ember; done
fi
# int8: 32 calibration samples through the student's own sampler and timesteps, 99.99th percentile clipping,
# the search keeps layers in float until the final sample is within 30 dB PSNR of f32 (4 seeds); a boot self-test
# record (Model::self_test) is written into the blob.
for n in 4 2 1; do
  $Q convert $S/steps-$n --dtype int8 --calibrate 32 --self-test -o $S/student-$n-int8.ember
done
