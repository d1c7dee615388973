#!/usr/bin/env bash
# ember reference MNIST models, end to end on one GPU: classifier -> teacher -> guided progressive distillation
# -> evaluation. Usage (from anywhere):
#
#     bash models/train/gpu_job.sh [OUTDIR]        # OUTDIR default: $OUT if set, else models/out
#
# Everything (models, logs, checkpoints) goes under OUTDIR; see models/train/README.md for the layout.
# Re-running the same command resumes: the teacher continues from its latest checkpoint, finished distillation
# rounds are skipped. Step counts / limits are overridable through the environment:
#   TEACHER_STEPS (teacher optimizer steps)       ROUND_STEPS (steps per distillation round, 6 rounds 64->1)
#   TEACHER_TIME_LIMIT, DISTILL_TIME_LIMIT (seconds of training per stage; a safety net so that the job stays
#   inside a 10-minute slot: past it the stage checkpoints, exports and moves on, marking "stopped_early" in its
#   logs -- 0 disables; DISTILL_TIME_LIMIT is shared by the 6 rounds)
#   CLS_EPOCHS, EVAL_PER_CLASS, BATCH, GUIDANCE, SEED, PYTHON (interpreter, default python3),
#   EMBER_MNIST (folder with t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz), EXTRA_TEACHER_ARGS,
#   EXTRA_DISTILL_ARGS.
set -euo pipefail
export PYTHONUNBUFFERED=1

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
OUTDIR="${1:-${OUT:-$ROOT/models/out}}"
PY="${PYTHON:-python3}"
# Measured on one H100 (torch 2.11, CUDA graphs, batch 256): teacher 50 it/s, distillation 23 it/s (round 1,
# guided teacher) and 31 it/s (later rounds); about 20 s (teacher) + 27 s (distillation) of start-up, capture,
# validation and export. Defaults: teacher 10000 steps ~200 s, distillation 6 x 1000 steps ~205 s: ~7.6 min for
# both stages, ~8.5 min for the whole job.
TEACHER_STEPS="${TEACHER_STEPS:-10000}"
ROUND_STEPS="${ROUND_STEPS:-1000}"
TEACHER_TIME_LIMIT="${TEACHER_TIME_LIMIT:-230}"
DISTILL_TIME_LIMIT="${DISTILL_TIME_LIMIT:-230}"
CLS_EPOCHS="${CLS_EPOCHS:-20}"
EVAL_PER_CLASS="${EVAL_PER_CLASS:-200}"
BATCH="${BATCH:-256}"
GUIDANCE="${GUIDANCE:-2.0}"
SEED="${SEED:-0}"

mkdir -p "$OUTDIR"
OUTDIR="$(cd "$OUTDIR" && pwd)"
cd "$ROOT"

# The GPU image has torch but no diffusers: install carried wheels (<repo>/.whl/*.whl, or $WHEELS) if needed.
if ! "$PY" -c "import diffusers" 2>/dev/null; then
  WHEELS="${WHEELS:-$ROOT/.whl}"
  if compgen -G "$WHEELS/*.whl" >/dev/null; then
    echo "diffusers not importable: installing $WHEELS/*.whl into /tmp/ember-site"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/ember-site \
      "$WHEELS"/*.whl
    export PYTHONPATH="/tmp/ember-site${PYTHONPATH:+:$PYTHONPATH}"
  else
    echo "ERROR: diffusers is not importable and no wheels in $WHEELS" >&2
    exit 1
  fi
fi
LOG="$OUTDIR/job.log"
stamp() { date -u +%Y-%m-%dT%H:%M:%SZ; }
t_job=$SECONDS

{
  echo "== ember MNIST GPU job $(stamp)"
  echo "OUTDIR=$OUTDIR TEACHER_STEPS=$TEACHER_STEPS ROUND_STEPS=$ROUND_STEPS TEACHER_TIME_LIMIT=$TEACHER_TIME_LIMIT" \
       "DISTILL_TIME_LIMIT=$DISTILL_TIME_LIMIT CLS_EPOCHS=$CLS_EPOCHS BATCH=$BATCH GUIDANCE=$GUIDANCE SEED=$SEED"
  nvidia-smi -L 2>/dev/null || echo "(no nvidia-smi)"
  "$PY" -c "import sys, torch, diffusers, safetensors, numpy, PIL; print('python', sys.version.split()[0], '| torch', torch.__version__, '| cuda', torch.cuda.is_available(), torch.version.cuda, '| diffusers', diffusers.__version__, '| safetensors', safetensors.__version__, '| numpy', numpy.__version__, '| pillow', PIL.__version__)"
  # fail fast (before any training) if the data is missing
  "$PY" models/train/data.py
} 2>&1 | tee -a "$LOG"

echo "== [1/4] classifier $(stamp)" | tee -a "$LOG"
t0=$SECONDS
"$PY" models/eval/classifier.py --out "$OUTDIR/eval/classifier.safetensors" --epochs "$CLS_EPOCHS" --seed "$SEED" \
  2>&1 | tee "$OUTDIR/classifier.log" | tee -a "$LOG"
echo "classifier: $((SECONDS - t0))s" | tee -a "$LOG"

echo "== [2/4] teacher $(stamp)" | tee -a "$LOG"
t0=$SECONDS
# shellcheck disable=SC2086
"$PY" models/train/teacher.py --out "$OUTDIR/mnist-teacher" --steps "$TEACHER_STEPS" --batch "$BATCH" \
  --seed "$SEED" --guidance "$GUIDANCE" --time-limit "$TEACHER_TIME_LIMIT" --ckpt-every 2000 --log-every 500 \
  --resume ${EXTRA_TEACHER_ARGS:-} 2>&1 | tee -a "$OUTDIR/teacher.log" | tee -a "$LOG"
echo "teacher: $((SECONDS - t0))s" | tee -a "$LOG"

echo "== [3/4] distillation $(stamp)" | tee -a "$LOG"
t0=$SECONDS
# shellcheck disable=SC2086
"$PY" models/train/distill.py --teacher "$OUTDIR/mnist-teacher" --out "$OUTDIR/mnist-student" \
  --steps-per-round "$ROUND_STEPS" --batch "$BATCH" --guidance "$GUIDANCE" --seed "$SEED" \
  --time-limit "$DISTILL_TIME_LIMIT" --ckpt-every 500 --log-every 250 --resume ${EXTRA_DISTILL_ARGS:-} \
  2>&1 | tee -a "$OUTDIR/distill.log" | tee -a "$LOG"
echo "distillation: $((SECONDS - t0))s" | tee -a "$LOG"

echo "== [4/4] evaluation $(stamp)" | tee -a "$LOG"
t0=$SECONDS
"$PY" models/train/evaluate.py "$OUTDIR/mnist-teacher" "$OUTDIR/mnist-student/steps-4" \
  "$OUTDIR/mnist-student/steps-2" "$OUTDIR/mnist-student/steps-1" \
  --classifier "$OUTDIR/eval/classifier.safetensors" --per-class "$EVAL_PER_CLASS" --guidance "$GUIDANCE" \
  --out "$OUTDIR/eval.json" 2>&1 | tee "$OUTDIR/eval.log" | tee -a "$LOG"
echo "evaluation: $((SECONDS - t0))s" | tee -a "$LOG"
echo "== done in $((SECONDS - t_job))s $(stamp); outputs in $OUTDIR" | tee -a "$LOG"
