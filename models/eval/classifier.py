#!/usr/bin/env python3
"""Small MNIST CNN used to evaluate ember's generators: class accuracy of conditional samples, and 128-d
penultimate features for a Frechet distance (models/eval/fid.py).

Trained on the 8000 train-split digits only (models/train/data.py: the FIRST 8000 of the MNIST t10k set),
accuracy reported on the 2000 held-out digits (the LAST 2000). Input: [N, 1, 32, 32] in [-1, 1] (28x28 padded
by 2 px), exactly the generators' output format.

Architecture ("ember-mnist-cnn-v1"):
    conv 1->32 3x3 pad 1, ReLU, maxpool 2      32x32 -> 16x16
    conv 32->64 3x3 pad 1, ReLU, maxpool 2     16x16 -> 8x8
    flatten 4096 -> fc 128, ReLU               = features()  (penultimate layer, 128-d)
    dropout 0.3 (training only) -> fc 10       = logits, predict() = argmax

    python models/eval/classifier.py                      # train, writes classifier.safetensors + .json
    python models/eval/classifier.py --epochs 1 --out /tmp/cls.safetensors   # smoke
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "train"))
from data import load_mnist  # noqa: E402

ARCH = "ember-mnist-cnn-v1"
FEATURE_DIM = 128


class MnistCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.fc1 = nn.Linear(64 * 8 * 8, FEATURE_DIM)
        self.drop = nn.Dropout(0.3)
        self.fc2 = nn.Linear(FEATURE_DIM, 10)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return F.relu(self.fc1(x.flatten(1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.drop(self.features(x)))


def _device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _as_tensor(x, dev) -> torch.Tensor:
    if not torch.is_tensor(x):
        x = torch.from_numpy(np.asarray(x, dtype=np.float32))
    x = x.float()
    if x.ndim == 3:
        x = x[:, None]
    if x.shape[1:] != (1, 32, 32):
        raise ValueError(f"expected [N, 1, 32, 32] images in [-1, 1], got {tuple(x.shape)}")
    return x.to(dev)


@torch.no_grad()
def features(model: MnistCNN, x, batch: int = 1000) -> torch.Tensor:
    """Penultimate (128-d, post-ReLU) features of images [N, 1, 32, 32] in [-1, 1]; returns a CPU float tensor."""
    model.eval()
    dev = _device_of(model)
    x = _as_tensor(x, dev)
    return torch.cat([model.features(x[i : i + batch]).float().cpu() for i in range(0, x.shape[0], batch)])


@torch.no_grad()
def logits(model: MnistCNN, x, batch: int = 1000) -> torch.Tensor:
    model.eval()
    dev = _device_of(model)
    x = _as_tensor(x, dev)
    return torch.cat([model(x[i : i + batch]).float().cpu() for i in range(0, x.shape[0], batch)])


def predict(model: MnistCNN, x, batch: int = 1000) -> torch.Tensor:
    """Predicted digit (int64 CPU tensor [N]) of images [N, 1, 32, 32] in [-1, 1]."""
    return logits(model, x, batch).argmax(1)


def load_classifier(path=HERE / "classifier.safetensors", device: str | torch.device = "cpu") -> MnistCNN:
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path)
    with safe_open(str(path), "pt") as f:
        md = f.metadata() or {}
    if md.get("ember.arch", ARCH) != ARCH:
        raise ValueError(f"{path}: architecture {md.get('ember.arch')!r}, this code builds {ARCH!r}")
    m = MnistCNN()
    m.load_state_dict(load_file(str(path)))
    return m.to(device).eval()


def _shift(x: torch.Tensor, gen: torch.Generator, max_shift: int) -> torch.Tensor:
    """Random integer translation by up to max_shift px (background -1 fills)."""
    if max_shift <= 0:
        return x
    n = x.shape[0]
    p = max_shift
    xp = F.pad(x, (p, p, p, p), value=-1.0)
    dx = torch.randint(0, 2 * p + 1, (n,), device=x.device, generator=gen)
    dy = torch.randint(0, 2 * p + 1, (n,), device=x.device, generator=gen)
    ar = torch.arange(32, device=x.device)
    rows = (dy[:, None] + ar[None])[:, :, None]  # [n, 32, 1]
    cols = (dx[:, None] + ar[None])[:, None, :]  # [n, 1, 32]
    return xp[:, 0][torch.arange(n, device=x.device)[:, None, None], rows, cols][:, None]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=HERE / "classifier.safetensors")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--shift", type=int, default=2, help="random translation augmentation, px (0: off)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", default=None)
    p.add_argument("--device", default="auto")
    args = p.parse_args(argv)

    dev = torch.device(args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    xtr, ytr = (torch.from_numpy(a).to(dev) for a in load_mnist(args.data, "train"))
    xte, yte = (torch.from_numpy(a) for a in load_mnist(args.data, "heldout"))
    model = MnistCNN().to(dev)
    n_params = sum(q.numel() for q in model.parameters())
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    steps_per_epoch = (xtr.shape[0] + args.batch - 1) // args.batch
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.epochs * steps_per_epoch)
    gen = torch.Generator(device=dev)
    gen.manual_seed(args.seed)
    t0 = time.perf_counter()
    print(f"classifier {ARCH}: {n_params:,} parameters, device {dev}, train {xtr.shape[0]}, held-out {xte.shape[0]}",
          flush=True)
    for ep in range(args.epochs):
        model.train()
        perm = torch.randperm(xtr.shape[0], device=dev, generator=gen)
        tot = torch.zeros((), device=dev)
        for i in range(0, xtr.shape[0], args.batch):
            idx = perm[i : i + args.batch]
            xb = _shift(xtr[idx], gen, args.shift)
            loss = F.cross_entropy(model(xb), ytr[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            tot += loss.detach() * idx.shape[0]
        acc = (predict(model, xte) == yte).float().mean().item()
        print(f"epoch {ep + 1:3d}/{args.epochs}  train loss {tot.item() / xtr.shape[0]:.4f}  held-out acc {acc:.4f}"
              f"  {time.perf_counter() - t0:.1f}s", flush=True)

    model.eval()
    pred = predict(model, xte)
    acc = (pred == yte).float().mean().item()
    per_class = [((pred == yte) & (yte == c)).sum().item() / max(1, (yte == c).sum().item()) for c in range(10)]
    info = {
        "arch": ARCH, "feature_dim": FEATURE_DIM, "params": n_params,
        "layers": "conv1 1->32 3x3 p1, relu, maxpool2; conv2 32->64 3x3 p1, relu, maxpool2; fc1 4096->128, relu "
                  "(features); dropout 0.3; fc2 128->10",
        "input": "[N,1,32,32] in [-1,1], MNIST 28x28 padded 2 px",
        "train": "MNIST t10k digits 0..7999", "heldout": "MNIST t10k digits 8000..9999",
        "heldout_accuracy": acc, "heldout_per_class_accuracy": per_class,
        "epochs": args.epochs, "batch": args.batch, "lr": args.lr, "optimizer": "Adam + OneCycleLR",
        "augment_shift_px": args.shift, "seed": args.seed, "device": str(dev),
        "train_seconds": round(time.perf_counter() - t0, 1),
    }
    from safetensors.torch import save_file

    args.out.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().float().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(args.out), metadata={"format": "pt", "ember.arch": ARCH, "ember.info": json.dumps(info)})
    js = args.out.with_suffix(".json")
    js.write_text(json.dumps(info, indent=2) + "\n")
    print(f"held-out accuracy {acc:.4f} ({round(acc * xte.shape[0])}/{xte.shape[0]}); wrote {args.out} and {js}",
          flush=True)
    if acc < 0.98:
        print("WARNING: held-out accuracy below 0.98", flush=True)


if __name__ == "__main__":
    main()
