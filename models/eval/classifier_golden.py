#!/usr/bin/env python3
"""Golden logits of the evaluation classifier (models/eval/classifier.py, `MnistCNN`) for the Rust port in
firmware/host-gen (src/classifier.rs), which checks the digit the firmware draws without Python.

Takes the first held-out MNIST digit (indices 8000..9999, never trained on) of each class 0-9, runs PyTorch's
float32 forward on the CPU and writes firmware/host-gen/classifier-golden.safetensors:

    images  uint8 [10, 28, 28]  the raw MNIST bytes (the Rust test pads and scales them as data.py does)
    labels  uint8 [10]          their true classes
    index   int32 [10]          their indices in the t10k set
    logits  float32 [10, 10]    PyTorch's logits

`cd firmware/host-gen && cargo test --release` compares the Rust forward with these logits (scripts/firmware.sh
runs it). Versions: models/train/requirements.txt (torch 2.15.0, safetensors 0.8.0, numpy 2.4.6).

    .venv/bin/python models/eval/classifier_golden.py            # rewrites the golden file
    .venv/bin/python models/eval/classifier_golden.py --check    # fails if the committed file is stale
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE.parent / "train"))
sys.path.insert(0, str(HERE))
from classifier import load_classifier, logits  # noqa: E402
from data import N_TRAIN, PAD, SIZE, load_raw  # noqa: E402

OUT = REPO / "firmware" / "host-gen" / "classifier-golden.safetensors"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=None, help="MNIST folder (default: data.py's search order)")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--check", action="store_true", help="compare with --out instead of writing it")
    args = ap.parse_args()

    from safetensors.numpy import load_file, save_file

    torch.set_num_threads(1)
    images, labels = load_raw(args.data)
    idx = []
    for c in range(10):
        idx.append(N_TRAIN + int(np.flatnonzero(labels[N_TRAIN:] == c)[0]))
    idx = np.array(idx, dtype=np.int32)
    raw = images[idx]
    # Exactly models/train/data.py's load_mnist: pad 28 -> 32 with zeros, then x / 127.5 - 1 in float32.
    x = np.zeros((len(idx), 1, SIZE, SIZE), dtype=np.float32)
    x[:, 0, PAD : PAD + 28, PAD : PAD + 28] = raw
    x = (x / np.float32(127.5) - np.float32(1.0)).astype(np.float32)
    clf = load_classifier(HERE / "classifier.safetensors")
    lg = logits(clf, x).numpy().astype(np.float32)
    tensors = {
        "images": np.ascontiguousarray(raw, dtype=np.uint8),
        "labels": labels[idx].astype(np.uint8),
        "index": idx,
        "logits": np.ascontiguousarray(lg),
    }
    meta = {"torch": torch.__version__, "source": "models/eval/classifier_golden.py"}
    pred = lg.argmax(1)
    print(f"held-out indices {idx.tolist()}")
    print(f"labels    {labels[idx].tolist()}")
    print(f"predicted {pred.tolist()}")
    if args.check:
        old = load_file(str(args.out))
        same = all(np.array_equal(old[k], v) for k, v in tensors.items() if k != "logits")
        err = float(np.max(np.abs(old["logits"] - lg)) / max(1e-12, float(np.max(np.abs(lg)))))
        print(f"{args.out}: inputs {'equal' if same else 'DIFFER'}, logits max rel diff {err:.2e}")
        return 0 if same and err <= 1e-5 else 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(args.out), metadata=meta)
    print(f"wrote {args.out} ({args.out.stat().st_size} B, torch {torch.__version__})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
