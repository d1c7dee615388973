#!/usr/bin/env python3
"""Evaluate exported MNIST generators with models/eval/classifier.py: generate --per-class samples of every
digit from fixed noise, then report
  * accuracy: fraction of samples the classifier labels as the digit they were conditioned on;
  * FID: Frechet distance of the classifier's 128-d features between the samples and the 2000 held-out digits
    (NOT comparable to Inception FIDs); the line "real train split" is the floor: 2000 train digits vs held-out.

A folder whose safetensors metadata has `ember.timesteps` (a distilled student) is sampled with exactly those
timesteps and no CFG; any other folder (the teacher) with DDIM --teacher-steps and CFG scale --guidance.

    python models/train/evaluate.py models/mnist-teacher models/mnist-student/steps-{4,2,1} --out eval.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "eval"))
import common as C  # noqa: E402
from classifier import features, load_classifier, predict  # noqa: E402
from data import load_mnist  # noqa: E402
from fid import fid  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folders", nargs="+", type=Path)
    p.add_argument("--classifier", type=Path, default=HERE.parent / "eval" / "classifier.safetensors")
    p.add_argument("--per-class", type=int, default=200)
    p.add_argument("--guidance", type=float, default=2.0, help="CFG scale for non-distilled folders")
    p.add_argument("--teacher-steps", type=int, default=50, help="DDIM steps for non-distilled folders")
    p.add_argument("--seed", type=int, default=4321)
    p.add_argument("--batch", type=int, default=1000)
    p.add_argument("--data", default=None)
    p.add_argument("--device", default="auto")
    p.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = p.parse_args(argv)

    from diffusers import UNet2DModel
    from diffusers.utils import logging as dlog

    dlog.set_verbosity_error()  # the extra config key ember_null_class is reported as 'ignored'
    from safetensors import safe_open

    dev = C.pick_device(args.device)
    C.setup_torch(dev, args.seed)
    clf = load_classifier(args.classifier, dev)
    x_ho, y_ho = load_mnist(args.data, "heldout")
    x_tr, _ = load_mnist(args.data, "train")
    f_ho = features(clf, x_ho)
    rng = np.random.default_rng(0)
    floor = fid(features(clf, x_tr[rng.choice(len(x_tr), len(x_ho), replace=False)]), f_ho)
    ho_acc = (predict(clf, x_ho) == torch.from_numpy(y_ho)).float().mean().item()
    ac = C.alphas_cumprod(dev)
    g = torch.Generator(device="cpu").manual_seed(args.seed)
    noise = torch.randn(10 * args.per_class, 1, 32, 32, generator=g).to(dev)
    labels = torch.arange(10).repeat_interleave(args.per_class).to(dev)

    results = {"classifier": str(args.classifier), "per_class": args.per_class, "seed": args.seed,
               "real_train_split": {"fid": floor}, "heldout_classifier_accuracy": ho_acc, "models": {}}
    print(f"{'model':40s} {'steps':>5s} {'cfg':>5s} {'acc':>7s} {'FID':>8s} {'sec':>6s}")
    print(f"{'real train split (floor)':40s} {'':>5s} {'':>5s} {ho_acc:7.4f} {floor:8.3f}")
    for d in args.folders:
        st = d / "unet" / "diffusion_pytorch_model.safetensors"
        with safe_open(str(st), "pt") as f:
            md = f.metadata() or {}
        unet = UNet2DModel.from_pretrained(str(d / "unet")).to(dev).eval()
        if "ember.timesteps" in md:
            ts = [int(t) for t in md["ember.timesteps"].split(",")]
            guidance = None
        else:
            ts = C.trailing_timesteps(args.teacher_steps)
            guidance = args.guidance
        t0 = time.perf_counter()
        x = C.ddim_sample(unet, noise, labels, ts, ac, guidance=guidance, batch=args.batch)
        C.sync(dev)
        secs = time.perf_counter() - t0
        acc = (predict(clf, x) == labels.cpu()).float().mean().item()
        fd = fid(features(clf, x), f_ho)
        results["models"][str(d)] = {"timesteps": ts, "guidance": guidance, "accuracy": acc, "fid": fd,
                                     "sample_seconds": round(secs, 2)}
        print(f"{str(d)[-40:]:40s} {len(ts):5d} {guidance or '-':>5} {acc:7.4f} {fd:8.3f} {secs:6.1f}", flush=True)
    if args.out:
        C.write_json(results, args.out)


if __name__ == "__main__":
    main()
