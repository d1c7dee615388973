#!/usr/bin/env python3
"""Throughput of one teacher training step and of one distillation step (round 1: guided teacher, 2 x CFG
forwards on 2B images; later rounds: 2 plain forwards), random weights, same code paths as teacher.py / distill.py.

    python models/train/bench.py                 # auto device, batch 256, 20 timed iterations
    python models/train/bench.py --iters 5       # CPU

Prints it/s and the projected wall time of a run (--teacher-steps, --round-steps, --rounds).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common as C  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--device", default="auto")
    p.add_argument("--bf16", action="store_true")
    p.add_argument("--cuda-graph", choices=["auto", "on", "off"], default="auto")
    p.add_argument("--teacher-steps", type=int, default=30000)
    p.add_argument("--round-steps", type=int, default=4000)
    p.add_argument("--rounds", type=int, default=6)
    args = p.parse_args(argv)
    dev = C.pick_device(args.device)
    C.setup_torch(dev, 0)
    graph = C.use_cuda_graph(args.cuda_graph, dev)
    B = args.batch
    ac = C.alphas_cumprod(dev)
    teacher = C.make_unet().to(dev).eval().requires_grad_(False)
    x0 = torch.randn(B, 1, 32, 32, device=dev).clamp(-1, 1)
    c = torch.randint(0, 10, (B,), device=dev)
    z = torch.randn(B, 1, 32, 32, device=dev)
    t = torch.randint(0, 1000, (B,), device=dev)
    tm = (t - 10).clamp(min=0)

    def setup():
        unet = C.make_unet().to(dev).train()
        opt = C.make_train_optimizer(unet, 1e-4, 0.0, dev, graph)
        return unet, opt

    def make(kind):
        unet, opt = setup()
        ema = C.EMA(unet, 0.999)

        def loss_fn():
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=args.bf16):
                if kind == "teacher":
                    tgt = x0
                else:
                    with torch.no_grad():
                        g = 2.0 if kind == "cfg" else None
                        v1 = C.model_v(teacher, z, t, c, g).float()
                        tgt = C.model_v(teacher, z - 0.01 * v1, tm, c, g).float()
                pred = unet(z, t, class_labels=c).sample
            return F.mse_loss(pred.float(), tgt)

        step = C.TrainStep(unet, opt, loss_fn, 1.0, graph)

        def it():
            z.add_(0)  # stands in for the in-place input refresh
            step()
            if kind == "teacher":
                ema.update(unet)
        return it, step.graph is not None

    res = {}
    for name, kind in [("teacher", "teacher"), ("distill round 1 (CFG)", "cfg"), ("distill later rounds", "plain")]:
        fn, graphed = make(kind)
        for _ in range(args.warmup):
            fn()
        C.sync(dev)
        t0 = time.perf_counter()
        for _ in range(args.iters):
            fn()
        C.sync(dev)
        ips = args.iters / (time.perf_counter() - t0)
        res[name] = ips
        print(f"{name:24s} batch {B} {'graph' if graphed else 'eager'}: {ips:8.3f} it/s  ({1000 / ips:8.1f} ms/it)",
              flush=True)
    te = args.teacher_steps / res["teacher"]
    di = args.round_steps / res["distill round 1 (CFG)"] + \
        (args.rounds - 1) * args.round_steps / res["distill later rounds"]
    print(f"projected on {dev}: teacher {args.teacher_steps} steps {te:.0f}s; distill {args.rounds} rounds x "
          f"{args.round_steps} steps {di:.0f}s; total {te + di:.0f}s (+ start-up, validation and export)", flush=True)


if __name__ == "__main__":
    main()
