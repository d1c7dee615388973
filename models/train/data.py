"""MNIST loading for ember's reference models.

Source: the real MNIST *test* set (10 000 digits) in IDX format, gzip-compressed:
``t10k-images-idx3-ubyte.gz`` and ``t10k-labels-idx1-ubyte.gz``.

Fixed split (never changes, never shuffled):

* ``train``: the FIRST 8000 digits (indices 0..7999) -- the only digits any model is trained on;
* ``heldout``: the LAST 2000 digits (indices 8000..9999) -- evaluation only (classifier accuracy, FID reference);
* ``all``: all 10 000.

Images are padded from 28x28 to 32x32 (2 px of zeros on every side; zero is the MNIST background) and scaled
from bytes 0..255 to float32 in [-1, 1] (``x / 127.5 - 1``, so the padding is exactly -1).

The data folder is, in order: the ``root`` argument, else ``$EMBER_MNIST``, else ``<repo>/../shared/data/mnist``,
else ``<repo>/shared/data/mnist``, else ``<repo>/models/data/mnist``.
"""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[2]
IMAGES_FILE = "t10k-images-idx3-ubyte.gz"
LABELS_FILE = "t10k-labels-idx1-ubyte.gz"
N_TOTAL = 10000
N_TRAIN = 8000
SPLITS = {"train": (0, N_TRAIN), "heldout": (N_TRAIN, N_TOTAL), "all": (0, N_TOTAL)}
PAD = 2
SIZE = 28 + 2 * PAD


def default_roots() -> list[Path]:
    out = []
    env = os.environ.get("EMBER_MNIST")
    if env:
        out.append(Path(env))
    out += [
        REPO_ROOT.parent / "shared" / "data" / "mnist",
        REPO_ROOT / "shared" / "data" / "mnist",
        REPO_ROOT / "models" / "data" / "mnist",
    ]
    return out


def find_root(root: str | os.PathLike | None = None) -> Path:
    cands = [Path(root)] if root is not None else default_roots()
    for c in cands:
        if (c / IMAGES_FILE).is_file() and (c / LABELS_FILE).is_file():
            return c
    tried = "\n  ".join(str(c) for c in cands)
    raise FileNotFoundError(
        f"MNIST files {IMAGES_FILE} and {LABELS_FILE} not found. Looked in:\n  {tried}\n"
        "Pass --data DIR or set EMBER_MNIST=DIR (the folder holding the two .gz files)."
    )


def _read_idx(path: Path, magic: int, ndim: int) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 + 4 * ndim:
        raise ValueError(f"{path}: truncated IDX header")
    (m,) = struct.unpack(">i", raw[:4])
    if m != magic:
        raise ValueError(f"{path}: IDX magic number {m}, expected {magic}")
    dims = struct.unpack(">" + "i" * ndim, raw[4 : 4 + 4 * ndim])
    n = int(np.prod(dims))
    body = raw[4 + 4 * ndim :]
    if len(body) != n:
        raise ValueError(f"{path}: {len(body)} data bytes, header says {dims} = {n}")
    return np.frombuffer(body, dtype=np.uint8).reshape(dims)


def load_raw(root: str | os.PathLike | None = None) -> tuple[np.ndarray, np.ndarray]:
    """All 10 000 digits as (uint8 [10000, 28, 28], uint8 [10000])."""
    r = find_root(root)
    images = _read_idx(r / IMAGES_FILE, 2051, 3)
    labels = _read_idx(r / LABELS_FILE, 2049, 1)
    if images.shape != (N_TOTAL, 28, 28) or labels.shape != (N_TOTAL,):
        raise ValueError(f"{r}: expected the 10 000-digit MNIST test set, got {images.shape} / {labels.shape}")
    if labels.max() > 9:
        raise ValueError(f"{r}: label {labels.max()} out of range")
    return images, labels


def load_mnist(root: str | os.PathLike | None = None, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """(images float32 [N, 1, 32, 32] in [-1, 1], labels int64 [N]) for ``split`` in train / heldout / all."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {sorted(SPLITS)}, got {split!r}")
    lo, hi = SPLITS[split]
    images, labels = load_raw(root)
    x = np.zeros((hi - lo, 1, SIZE, SIZE), dtype=np.float32)
    x[:, 0, PAD : PAD + 28, PAD : PAD + 28] = images[lo:hi]
    x = x / np.float32(127.5) - np.float32(1.0)
    return x.astype(np.float32), labels[lo:hi].astype(np.int64)


if __name__ == "__main__":
    import sys

    for s in ("train", "heldout"):
        x, y = load_mnist(sys.argv[1] if len(sys.argv) > 1 else None, s)
        print(s, x.shape, x.dtype, float(x.min()), float(x.max()), y.shape, np.bincount(y, minlength=10).tolist())
