#!/usr/bin/env python3
"""Guided progressive distillation of ember's MNIST teacher (Meng et al. 2023, "On Distillation of Guided
Diffusion Models", simplified; the target is the one of Salimans & Ho 2022, "Progressive Distillation").

The student is a UNet2DModel with the teacher's exact config, initialised from the teacher's (EMA) weights. It has
no guidance-scale input: ONE fixed guidance scale s (--guidance, default 2.0, v = v_null + s (v_c - v_null)) is
folded into it during the first round, so the student is always run conditionally and without CFG.

Rounds (default --start-steps 64 --rounds-to 1): 64 -> 32 -> 16 -> 8 -> 4 -> 2 -> 1 student steps.
Round "N steps" trains a student for the N-step grid against a teacher on the 2N-step grid:
  * round 1 (N = 32): teacher = the original teacher WITH classifier-free guidance at scale s;
  * later rounds: teacher = the previous round's student (guidance already folded in, no CFG),
    the student is initialised from that same previous student.
Per training example: x0 and its class c from the train split (no label dropout), an index i of the N-step grid,
z_t = alpha_t x0 + sigma_t eps at t = t_i; the teacher takes two deterministic DDIM steps t_i -> t_mid -> t_{i+1}
on the 2N-step grid (z''); the target x~ is the x0 a single DDIM step t_i -> t_{i+1} would need to land on z'':

    x~ = (z'' - (sigma_s / sigma_t) z_t) / (alpha_s - (sigma_s / sigma_t) alpha_t)     (s = t_{i+1})

and for the last grid point (t_{i+1} = "final", alpha-bar = 1, sigma = 0) x~ = z'' (the teacher's x0 after its
two steps). alpha_t = sqrt(alpha-bar_t), sigma_t = sqrt(1 - alpha-bar_t) from DDPMScheduler's own alphas_cumprod.
Loss (--loss): "v" (default) = MSE between the student's v and the v that yields x~,
(alpha_t z_t - x~) / sigma_t -- an x0-space MSE weighted by 1/sigma^2 = SNR + 1; or "trunc-snr" = x0-space MSE
weighted by max(SNR, 1) (Salimans & Ho's truncated-SNR weighting).

Timestep grids: diffusers' "trailing" spacing on 1000 train steps, t_k = round(1000 - k*1000/n) - 1 (numpy float64,
round half to even), k = 0..n-1, i.e. exactly DDIMScheduler(timestep_spacing="trailing").set_timesteps(n). For
n = 2^j (1..64) 1000/n is exact in binary, so the n-grid is exactly the even-indexed half of the 2n-grid (checked at
run time). A DDIM step always goes from a grid point to the NEXT grid point, the last one to alpha-bar = 1. For the
exported students (n = 4, 2, 1, which divide 1000) that is exactly diffusers' DDIMScheduler
(prev_t = t - 1000 // n, set_alpha_to_one=True). The 64/32/16-step intermediate grids do not divide 1000, and there
diffusers' own DDIM would step to t - 1000 // n instead (off-grid); we never export those.

Output (OUT = --out, default models/mnist-student):
    OUT/steps-4/, OUT/steps-2/, OUT/steps-1/   (--save-steps) each a diffusers folder: unet/ (config.json +
        diffusion_pytorch_model.safetensors with ember metadata), scheduler/scheduler_config.json, samples.png
    OUT/distill_log.json                        per-round losses, validation MSE, timings, timestep grids
    OUT/checkpoints/round-NN.pt                 resumable per-round state (--resume)
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common as C  # noqa: E402
from data import load_mnist  # noqa: E402

MODELS = Path(__file__).resolve().parents[1]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", type=Path, default=MODELS / "mnist-teacher", help="teacher folder (teacher.py)")
    p.add_argument("--out", type=Path, default=MODELS / "mnist-student")
    p.add_argument("--guidance", type=float, default=2.0, help="CFG scale s folded into the student")
    p.add_argument("--start-steps", type=int, default=64, help="teacher DDIM steps of round 1 (a power of 2)")
    p.add_argument("--rounds-to", type=int, default=1, help="distill until the student has this many steps")
    p.add_argument("--steps-per-round", type=int, default=4000)
    p.add_argument("--save-steps", default="4,2,1", help="student step counts exported as OUT/steps-N/")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--warmup", type=int, default=100, help="per-round linear warmup (capped at steps/5)")
    p.add_argument("--lr-schedule", choices=["linear", "cosine", "constant"], default="linear",
                   help="per round, after warmup: decay to 0 (linear/cosine) or constant")
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--grad-clip", type=float, default=1.0)
    p.add_argument("--ema-decay", type=float, default=0.0,
                   help="EMA of student weights (0: off). With EMA the EMA weights become the next teacher.")
    p.add_argument("--loss", choices=["v", "trunc-snr"], default="v")
    p.add_argument("--data", default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="skip finished rounds, continue the unfinished one")
    p.add_argument("--ckpt-every", type=int, default=1000)
    p.add_argument("--log-every", type=int, default=100)
    p.add_argument("--device", default="auto")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast for teacher and student forwards")
    p.add_argument("--cuda-graph", choices=["auto", "on", "off"], default="auto",
                   help="capture the distillation step in a CUDA graph (auto: on for CUDA devices)")
    p.add_argument("--round-time-limit", type=float, default=0,
                   help="seconds of training per round (this invocation) after which the round ends early "
                        "(0: none); recorded in the log")
    p.add_argument("--time-limit", type=float, default=0,
                   help="seconds of training for all rounds of this invocation together (0: none): each round "
                        "gets the remaining "
                        "budget split over the remaining rounds (the guided first round weighted 1.4, it costs "
                        "about 1.35x a later round); a round past its share ends early, recorded in the log")
    p.add_argument("--val-per-class", type=int, default=10,
                   help="validation / sample-grid images per digit (fixed noise, seed 1234)")
    return p.parse_args(argv)


def load_teacher(d: Path, dev):
    from diffusers import UNet2DModel
    from diffusers.utils import logging as dlog

    dlog.set_verbosity_error()  # the extra config key ember_null_class is reported as 'ignored'
    from safetensors import safe_open

    unet_dir = d / "unet"
    st = unet_dir / "diffusion_pytorch_model.safetensors"
    if not st.is_file():
        raise FileNotFoundError(f"{st} not found: train the teacher first (teacher.py --out {d})")
    with safe_open(str(st), "pt") as f:
        md = f.metadata() or {}
    if md.get("ember.null_class", str(C.NULL_CLASS)) != str(C.NULL_CLASS):
        raise ValueError(f"{st}: null class {md.get('ember.null_class')} != {C.NULL_CLASS}")
    m = UNet2DModel.from_pretrained(str(unet_dir)).to(dev)
    want = {k: (list(v) if isinstance(v, tuple) else v) for k, v in C.UNET_CONFIG.items()}
    got = {k: (list(m.config[k]) if isinstance(m.config[k], (tuple, list)) else m.config[k]) for k in want}
    if got != want:
        raise ValueError(f"teacher config {got} differs from the reference {want}")
    m.eval().requires_grad_(False)
    return m, md


def main(argv=None):
    args = parse_args(argv)
    dev = C.pick_device(args.device)
    C.setup_torch(dev, args.seed)
    out: Path = args.out
    ck_dir = out / "checkpoints"
    ck_dir.mkdir(parents=True, exist_ok=True)
    save_steps = {int(s) for s in args.save_steps.split(",") if s.strip()}
    if args.start_steps & (args.start_steps - 1) or args.start_steps < 2:
        raise SystemExit("--start-steps must be a power of two >= 2")

    x_np, y_np = load_mnist(args.data, "train")
    x_all = torch.from_numpy(x_np).to(dev)
    y_all = torch.from_numpy(y_np).to(dev)
    n_data = x_all.shape[0]
    ac = C.alphas_cumprod(dev)

    teacher0, teacher_md = load_teacher(args.teacher, dev)
    print(f"teacher {args.teacher}: {C.count_params(teacher0):,} parameters; device {dev}", flush=True)

    # ---- fixed validation batch: guided teacher, start-steps DDIM, same noise
    noise, labels = C.grid_inputs(dev, per_class=args.val_per_class)
    ref_path = ck_dir / "val_ref.pt"
    teacher_fp = hashlib.sha256(
        (args.teacher / "unet" / "diffusion_pytorch_model.safetensors").read_bytes()).hexdigest()[:16]
    ref_key = {"guidance": args.guidance, "steps": args.start_steps, "n": int(noise.shape[0]),
               "teacher": teacher_fp}
    ref = None
    if args.resume and ref_path.is_file():
        sd = torch.load(ref_path, map_location=dev, weights_only=False)
        if sd["key"] == ref_key:
            ref = sd["ref"]
    if ref is None:
        ref = C.ddim_sample(teacher0, noise, labels, C.trailing_timesteps(args.start_steps), ac,
                            guidance=args.guidance, autocast=args.bf16)
        C.atomic_save({"key": ref_key, "ref": ref}, ref_path)

    graph = C.use_cuda_graph(args.cuda_graph, dev)
    rounds = []
    n = args.start_steps
    while n > max(1, args.rounds_to):
        n //= 2
        rounds.append(n)
    log = {"method": "guided progressive distillation (Meng et al. 2023; Salimans & Ho 2022 target)",
           "guidance": args.guidance, "loss": args.loss, "teacher": str(args.teacher),
           "validation": f"MSE vs guided teacher {args.start_steps}-step DDIM, {noise.shape[0]} fixed samples",
           "args": {k: str(v) for k, v in vars(args).items()}, "rounds": []}
    log_path = out / "distill_log.json"

    prev = teacher0  # the teacher of the current round
    spent_here = 0.0  # seconds of training in this invocation (for --time-limit)
    stale = False  # a round checkpoint did not match this teacher: later ones are not used either
    for r_idx, N in enumerate(rounds):
        first = r_idx == 0
        grid_n = C.trailing_timesteps(N)
        grid_2n = C.trailing_timesteps(2 * N)
        if grid_2n[0::2] != grid_n:
            raise RuntimeError(f"{N}-step grid {grid_n} is not a subset of the {2 * N}-step grid {grid_2n}")
        t_tab = torch.tensor(grid_n, device=dev)
        mid_tab = torch.tensor(grid_2n[1::2], device=dev)
        s_tab = torch.tensor(grid_n[1:] + [-1], device=dev)
        guidance = args.guidance if first else None
        round_file = ck_dir / f"round-{N:02d}.pt"

        student = copy.deepcopy(prev).train().requires_grad_(True)
        opt = C.make_train_optimizer(student, args.lr, args.weight_decay, dev, graph)
        ema = C.EMA(student, args.ema_decay) if args.ema_decay > 0 else None
        gen = torch.Generator(device=dev)
        gen.manual_seed(args.seed * 1000 + N)
        step, losses, secs, done, stopped_early, rinfo = 0, [], 0.0, False, False, {}
        sd = None
        if args.resume and round_file.is_file():
            sd = torch.load(round_file, map_location=dev, weights_only=False)
            key = {"teacher": teacher_fp, "guidance": args.guidance, "start_steps": args.start_steps}
            if stale or sd.get("key") != key:
                print(f"round {N}: {round_file} comes from another teacher / settings (or follows one that "
                      "does): ignoring it, this and later rounds start fresh", flush=True)
                stale, sd = True, None
        if sd is not None:
            student.load_state_dict(sd["model"])
            step, losses, secs, done = sd["step"], sd["losses"], sd["train_seconds"], sd["done"]
            stopped_early, rinfo = sd.get("stopped_early", False), sd.get("info", {})
            if not done:
                C.load_optimizer_state(opt, sd["opt"], dev)
                gen.set_state(sd["gen"].cpu())
                if ema is not None and sd.get("ema") is not None:
                    ema.load_state_dict(sd["ema"])
            print(f"round {N}: resumed from {round_file} at step {step}{' (done)' if done else ''}", flush=True)

        def save_round(final: bool):
            C.atomic_save({"N": N, "key": {"teacher": teacher_fp, "guidance": args.guidance,
                                           "start_steps": args.start_steps},
                           "step": step, "done": final, "model": student.state_dict(),
                           "opt": None if final else opt.state_dict(), "gen": gen.get_state(),
                           "ema": None if (final or ema is None) else ema.state_dict(),
                           "losses": losses, "train_seconds": secs, "stopped_early": stopped_early,
                           "info": rinfo}, round_file)

        total = args.steps_per_round
        warmup = min(args.warmup, max(1, total // 5))
        limit = args.round_time_limit
        if args.time_limit > 0:
            weights = [1.4 if j == 0 else 1.0 for j in range(r_idx, len(rounds))]
            share = max(1e-6, (args.time_limit - spent_here) * weights[0] / sum(weights))
            limit = share if limit <= 0 else min(limit, share)
        if not done:
            student.eval()
            before = torch.mean((C.ddim_sample(student, noise, labels, grid_n, ac, autocast=args.bf16,
                                               guidance=guidance) - ref) ** 2).item()
            student.train()
            if "val_mse_before" not in rinfo:
                rinfo["val_mse_before"] = before
            print(f"round {N}: teacher {'guided s=%g, ' % args.guidance if first else ''}{2 * N} steps -> "
                  f"student {N} steps {grid_n if N <= 8 else ''}; init {N}-step val MSE {before:.5f}", flush=True)
            B = args.batch
            # the step reads these tensors; each iteration refreshes them in place (CUDA-graph replay)
            static = [torch.zeros(B, 1, 32, 32, device=dev)] + \
                [torch.zeros(B, dtype=torch.long, device=dev) for _ in range(4)]

            def loss_fn():
                z, t, tm, ts, c = static
                a_t, a_m, a_s = C.abar_at(ac, t), C.abar_at(ac, tm), C.abar_at(ac, ts)
                with torch.no_grad():
                    # two DDIM steps of the teacher on the 2N grid: t -> t_mid -> s
                    with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=args.bf16):
                        v1 = C.model_v(prev, z, t, c, guidance)
                    z_m, _ = C.ddim_step(z, v1.float(), a_t, a_m)
                    with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=args.bf16):
                        v2 = C.model_v(prev, z_m, tm, c, guidance)
                    z_s, _ = C.ddim_step(z_m, v2.float(), a_m, a_s)
                    # x~: the x0 for which ONE DDIM step t -> s from z lands on z_s (solved in float64)
                    al_t, si_t = a_t.double().sqrt(), (1 - a_t.double()).sqrt()
                    al_s, si_s = a_s.double().sqrt(), (1 - a_s.double()).sqrt()
                    ratio = si_s / si_t
                    x_tgt = (z_s.double() - C.bcast(ratio) * z.double()) / C.bcast(al_s - ratio * al_t)
                with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=args.bf16):
                    v_hat = student(z, t, class_labels=c).sample
                v_hat = v_hat.float()
                if args.loss == "v":
                    v_tgt = ((C.bcast(al_t) * z.double() - x_tgt) / C.bcast(si_t)).float()
                    return torch.mean((v_hat - v_tgt) ** 2)
                x_hat = C.bcast(a_t.sqrt()) * z - C.bcast((1 - a_t).sqrt()) * v_hat
                w = C.bcast(torch.clamp(al_t ** 2 / si_t ** 2, min=1.0)).float()
                return torch.mean(w * (x_hat - x_tgt.float()) ** 2)

            train_step = C.TrainStep(student, opt, loss_fn, args.grad_clip, graph)
            loss_acc = torch.zeros((), device=dev)
            n_acc = 0
            clock = C.Timer()
            last_t, last_step = 0.0, step
            while step < total:
                idx = torch.randint(0, n_data, (B,), device=dev, generator=gen)
                x0, c = x_all[idx], y_all[idx]
                k = torch.randint(0, N, (B,), device=dev, generator=gen)
                eps = torch.randn(x0.shape, device=dev, generator=gen)
                t = t_tab[k]
                a_t = C.abar_at(ac, t)
                z = C.bcast(a_t.sqrt()) * x0 + C.bcast((1 - a_t).sqrt()) * eps
                for dst, src in zip(static, (z, t, mid_tab[k], s_tab[k], c)):
                    dst.copy_(src)
                C.set_lr(opt, C.lr_at(step, total, args.lr, warmup, args.lr_schedule))
                loss = train_step()
                if ema is not None:
                    ema.update(student)
                loss_acc += loss
                n_acc += 1
                step += 1
                if step % args.log_every == 0 or step == total:
                    l = (loss_acc / n_acc).item()
                    now = clock()
                    ips = (step - last_step) / max(1e-9, now - last_t)
                    last_t, last_step = now, step
                    losses.append([step, l])
                    print(f"round {N:2d} step {step:6d}/{total}  loss {l:.5f}  lr {C.get_lr(opt):.2e}"
                          f"  {ips:6.2f} it/s  elapsed {secs + now:6.1f}s", flush=True)
                    loss_acc.zero_()
                    n_acc = 0
                if step % args.ckpt_every == 0 and step < total:
                    secs_saved = secs
                    secs = secs_saved + clock()
                    save_round(False)
                    secs = secs_saved
                if limit > 0 and clock() > limit and step < total:
                    print(f"round {N}: time limit {limit:.0f}s reached at step {step}", flush=True)
                    stopped_early = True
                    break
            C.sync(dev)
            secs += clock()
            spent_here += clock()
            if ema is not None:
                ema.copy_to(student)
            student.eval().requires_grad_(False)
            rinfo["val_mse"] = torch.mean((C.ddim_sample(student, noise, labels, grid_n, ac,
                                                         autocast=args.bf16) - ref) ** 2).item()
            save_round(True)
        student.eval().requires_grad_(False)
        if "val_mse" not in rinfo:
            rinfo["val_mse"] = torch.mean((C.ddim_sample(student, noise, labels, grid_n, ac,
                                                         autocast=args.bf16) - ref) ** 2).item()
        print(f"round {N}: done, {step} steps in {secs:.1f}s{' (STOPPED EARLY)' if stopped_early else ''}; "
              f"{N}-step student vs guided teacher {args.start_steps}-step: val MSE {rinfo['val_mse']:.5f} "
              f"(student init: {rinfo.get('val_mse_before', float('nan')):.5f})", flush=True)
        entry = {"student_steps": N, "teacher_steps": 2 * N, "teacher_cfg": guidance, "timesteps": grid_n,
                 "teacher_timesteps": grid_2n, "steps": step, "target_steps": total, "stopped_early": stopped_early,
                 "train_seconds": round(secs, 1), "val_mse": rinfo["val_mse"],
                 "val_mse_init": rinfo.get("val_mse_before"), "final_loss": losses[-1][1] if losses else None,
                 "losses": losses}
        log["rounds"].append(entry)
        C.write_json(log, log_path)

        if N in save_steps:
            dst = out / f"steps-{N}"
            summary = {k: v for k, v in entry.items() if k != "losses"}
            summary.update({"guidance": args.guidance, "loss": args.loss, "lr": args.lr, "batch": args.batch,
                            "seed": args.seed, "device": str(dev), "start_steps": args.start_steps,
                            "teacher": str(args.teacher)})
            C.export_pipeline(
                student, dst,
                metadata={"ember.null_class": str(C.NULL_CLASS), "ember.timesteps": ",".join(map(str, grid_n)),
                          "ember.guidance_scale": repr(float(args.guidance)),
                          "ember.distilled": "guided-progressive",
                          "ember.train": json.dumps(summary, sort_keys=True)},
                extra_unet_config={"ember_null_class": C.NULL_CLASS},
                extra_scheduler_config={"ember_timesteps": grid_n, "ember_guidance_scale": float(args.guidance),
                                        "ember_distilled": "guided-progressive"},
            )
            samples = C.ddim_sample(student, noise, labels, grid_n, ac, autocast=args.bf16)
            C.save_grid(samples, dst / "samples.png", nrow=args.val_per_class)
            print(f"exported {N}-step student to {dst}", flush=True)
        prev = student

    C.save_grid(ref, out / "teacher_reference.png", nrow=args.val_per_class)
    print("distillation finished: " + ", ".join(f"{e['student_steps']}-step MSE {e['val_mse']:.4f}"
                                                for e in log["rounds"]), flush=True)


if __name__ == "__main__":
    main()
