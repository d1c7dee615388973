#!/usr/bin/env python3
"""Train ember's class-conditional MNIST teacher: a diffusers UNet2DModel (~1.1 M parameters) with
v-prediction on the cosine (squaredcos_cap_v2) schedule and classifier-free-guidance label dropout.

    python models/train/teacher.py --out models/mnist-teacher            # full run (GPU)
    python models/train/teacher.py --steps 20 --out /tmp/smoke-teacher   # CPU smoke test

Output (OUT = --out):
    OUT/unet/config.json, OUT/unet/diffusion_pytorch_model.safetensors   EMA weights, float32, with metadata
    OUT/scheduler/scheduler_config.json                                  DDIMScheduler, same schedule
    OUT/samples.png                                                      10x10 grid, row = digit, DDIM 50, CFG
    OUT/train_log.json                                                   losses, settings, timings
    OUT/checkpoints/step-XXXXXXX.pt                                      resumable state (--resume)
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common as C  # noqa: E402
from data import load_mnist  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=30000, help="total optimizer steps")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--warmup", type=int, default=500, help="linear LR warmup steps (capped at steps/5)")
    p.add_argument("--lr-schedule", choices=["cosine", "constant"], default="cosine",
                   help="after warmup: cosine decay to 0, or constant")
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--grad-clip", type=float, default=1.0, help="max grad norm (0: off)")
    p.add_argument("--ema-decay", type=float, default=0.999)
    p.add_argument("--label-dropout", type=float, default=0.1, help="P(label -> null class %d)" % C.NULL_CLASS)
    p.add_argument("--out", type=Path, default=C.Path(__file__).resolve().parents[1] / "mnist-teacher")
    p.add_argument("--data", default=None, help="MNIST folder (default: $EMBER_MNIST or ../shared/data/mnist)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="continue from the latest OUT/checkpoints/step-*.pt")
    p.add_argument("--ckpt-every", type=int, default=2000)
    p.add_argument("--keep-ckpts", type=int, default=2)
    p.add_argument("--log-every", type=int, default=100)
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:1, ...")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast for the forward pass (off by default)")
    p.add_argument("--cuda-graph", choices=["auto", "on", "off"], default="auto",
                   help="capture the training step in a CUDA graph (auto: on for CUDA devices)")
    p.add_argument("--time-limit", type=float, default=0,
                   help="seconds of training (this invocation) after which to checkpoint, export and stop "
                        "early (0: none). The export then says stopped_early; --resume continues.")
    p.add_argument("--guidance", type=float, default=2.0, help="CFG scale s of the sample grid")
    p.add_argument("--sample-steps", type=int, default=50, help="DDIM steps of the sample grid")
    return p.parse_args(argv)


def latest_checkpoint(d: Path) -> Path | None:
    cks = sorted(d.glob("step-*.pt"))
    return cks[-1] if cks else None


def main(argv=None):
    args = parse_args(argv)
    dev = C.pick_device(args.device)
    C.setup_torch(dev, args.seed)
    out: Path = args.out
    ck_dir = out / "checkpoints"
    ck_dir.mkdir(parents=True, exist_ok=True)

    x_np, y_np = load_mnist(args.data, "train")
    x_all = torch.from_numpy(x_np).to(dev)
    y_all = torch.from_numpy(y_np).to(dev)
    n_data = x_all.shape[0]

    unet = C.make_unet().to(dev)
    n_params = C.count_params(unet)
    print(f"teacher UNet2DModel: {n_params:,} parameters; device {dev}; train digits {n_data}", flush=True)
    graph = C.use_cuda_graph(args.cuda_graph, dev)
    opt = C.make_train_optimizer(unet, args.lr, args.weight_decay, dev, graph)
    ema = C.EMA(unet, args.ema_decay)
    ac = C.alphas_cumprod(dev)
    gen = torch.Generator(device=dev)
    gen.manual_seed(args.seed)
    warmup = min(args.warmup, max(1, args.steps // 5))

    step, losses, train_seconds = 0, [], 0.0
    if args.resume:
        ck = latest_checkpoint(ck_dir)
        if ck is None:
            print(f"--resume: no checkpoint in {ck_dir}, starting from scratch", flush=True)
        else:
            sd = torch.load(ck, map_location=dev, weights_only=False)
            unet.load_state_dict(sd["model"])
            C.load_optimizer_state(opt, sd["opt"], dev)
            ema.load_state_dict(sd["ema"])
            gen.set_state(sd["gen"].cpu())
            step, losses, train_seconds = sd["step"], sd["losses"], sd["train_seconds"]
            print(f"resumed from {ck} at step {step}", flush=True)

    def save_ckpt():
        C.atomic_save({"step": step, "model": unet.state_dict(), "opt": opt.state_dict(), "ema": ema.state_dict(),
                       "gen": gen.get_state(), "losses": losses, "train_seconds": train_seconds,
                       "args": {k: str(v) for k, v in vars(args).items()}}, ck_dir / f"step-{step:07d}.pt")
        for old in sorted(ck_dir.glob("step-*.pt"))[: -args.keep_ckpts]:
            old.unlink()

    unet.train()
    B = args.batch

    def sample_batch():
        """A fresh random batch (all randomness from `gen`): noisy input z, timestep t, label y, target v."""
        idx = torch.randint(0, n_data, (B,), device=dev, generator=gen)
        x0, y = x_all[idx], y_all[idx]
        drop = torch.rand(B, device=dev, generator=gen) < args.label_dropout
        y = torch.where(drop, torch.full_like(y, C.NULL_CLASS), y)
        t = torch.randint(0, C.NUM_TRAIN_TIMESTEPS, (B,), device=dev, generator=gen)
        eps = torch.randn(x0.shape, device=dev, generator=gen)
        a = C.bcast(ac[t])
        sa, sb = a.sqrt(), (1 - a).sqrt()
        return [sa * x0 + sb * eps, t, y, sa * eps - sb * x0]

    # the step reads these tensors; each iteration refreshes them in place (required by CUDA-graph replay)
    static = [torch.zeros(B, 1, 32, 32, device=dev), torch.zeros(B, dtype=torch.long, device=dev),
              torch.zeros(B, dtype=torch.long, device=dev), torch.zeros(B, 1, 32, 32, device=dev)]

    def loss_fn():
        z, t, y, v = static
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=args.bf16):
            pred = unet(z, t, class_labels=y).sample
        return F.mse_loss(pred.float(), v)

    train_step = C.TrainStep(unet, opt, loss_fn, args.grad_clip, graph)
    print(f"training step: {'CUDA graph' if train_step.graph is not None else 'eager'}", flush=True)
    loss_acc = torch.zeros((), device=dev)
    n_acc = 0
    clock = C.Timer()
    last_t, last_step = 0.0, step
    stopped_early = False
    while step < args.steps:
        for dst, src in zip(static, sample_batch()):
            dst.copy_(src)
        C.set_lr(opt, C.lr_at(step, args.steps, args.lr, warmup, args.lr_schedule))
        loss = train_step()
        ema.update(unet)
        loss_acc += loss.detach()
        n_acc += 1
        step += 1

        if step % args.log_every == 0 or step == args.steps:
            l = (loss_acc / n_acc).item()  # the only host sync of the loop
            now = clock()
            ips = (step - last_step) / max(1e-9, now - last_t)
            last_t, last_step = now, step
            losses.append([step, l])
            print(f"step {step:7d}/{args.steps}  loss {l:.5f}  lr {C.get_lr(opt):.2e}  "
                  f"{ips:7.2f} it/s  elapsed {train_seconds + now:7.1f}s", flush=True)
            loss_acc.zero_()
            n_acc = 0
        if step % args.ckpt_every == 0 and step < args.steps:
            save_ckpt()
        if args.time_limit > 0 and clock() > args.time_limit and step < args.steps:
            print(f"time limit {args.time_limit:.0f}s reached at step {step}: checkpointing and exporting",
                  flush=True)
            stopped_early = True
            break
    C.sync(dev)
    train_seconds += clock()
    save_ckpt()

    # ---- export the EMA weights
    export = copy.deepcopy(unet)
    ema.copy_to(export)
    export.eval()
    summary = {
        "model": "ember MNIST teacher", "params": n_params, "steps": step, "target_steps": args.steps,
        "stopped_early": stopped_early, "batch": B, "lr": args.lr, "warmup": warmup,
        "lr_schedule": args.lr_schedule, "ema_decay": args.ema_decay, "label_dropout": args.label_dropout,
        "null_class": C.NULL_CLASS, "seed": args.seed, "bf16": args.bf16, "prediction": "v_prediction",
        "schedule": "squaredcos_cap_v2", "data": "MNIST t10k digits 0..7999 (train split), 32x32, [-1,1]",
        "train_seconds": round(train_seconds, 1), "device": str(dev),
        "final_loss": losses[-1][1] if losses else None,
    }
    C.export_pipeline(
        export, out,
        metadata={"ember.null_class": str(C.NULL_CLASS), "ember.train": json.dumps(summary, sort_keys=True)},
        extra_unet_config={"ember_null_class": C.NULL_CLASS},
    )
    noise, labels = C.grid_inputs(dev)
    ts = C.trailing_timesteps(args.sample_steps)
    samples = C.ddim_sample(export, noise, labels, ts, ac, guidance=args.guidance, autocast=args.bf16)
    C.save_grid(samples, out / "samples.png")
    C.write_json({"summary": summary, "losses": losses, "sample_grid": {
        "file": "samples.png", "rows": "digits 0..9", "ddim_steps": args.sample_steps,
        "guidance": args.guidance, "noise_seed": 1234}}, out / "train_log.json")
    print(f"exported EMA teacher to {out} ({step} steps, {train_seconds:.1f}s of training"
          f"{', STOPPED EARLY' if stopped_early else ''})", flush=True)


if __name__ == "__main__":
    main()
