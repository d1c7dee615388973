#!/usr/bin/env python3
"""Golden trajectories of diffusers' schedulers, for checking ember's samplers without a U-Net.

For each case a diffusers scheduler is configured and `set_timesteps(n)` called; then, step by step, a recorded
model output (random, seeded) is fed to `scheduler.step`. Every random draw the scheduler makes is intercepted
(`randn_tensor` is patched) and recorded, so ember can replay the exact same noise. Written per case to
tests/golden/samplers/<case>.safetensors:

    timesteps   i64 [n]        the scheduler's timesteps after set_timesteps (rounded), timesteps_f32 as they are
    sigmas      f32 [n+1]      the scheduler's sigma table (Euler, Euler ancestral, DPM-Solver)
    x_k         f32 [1,C,H,W]  sample entering step k (already scaled by scale_model_input where the scheduler has one)
    model_k     f32            model output at step k ([1,2C,H,W] for learned-variance cases)
    noise_k     f32            noise drawn inside step k (absent when none)
    out_k       f32            prev_sample returned by step k
    x0_k        f32            pred_original_sample (when the scheduler returns one)

metadata: versions, scheduler class and config (JSON), n, eta.

    .venv/bin/python tests/golden/samplers.py
"""
import json
import os
import platform

import numpy as np
import safetensors
import torch
import diffusers
from diffusers import (DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, EulerAncestralDiscreteScheduler,
                       EulerDiscreteScheduler, LCMScheduler)
from safetensors.torch import save_file

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "samplers")
SHAPE = (1, 1, 4, 4)

CASES = {
    "ddim_eps_eta0": (DDIMScheduler, dict(clip_sample=False), 10, dict(eta=0.0)),
    "ddim_v_eta05_trailing": (DDIMScheduler, dict(prediction_type="v_prediction", timestep_spacing="trailing",
                                                  clip_sample=False, beta_schedule="squaredcos_cap_v2"), 8,
                              dict(eta=0.5)),
    "ddim_sample_clip": (DDIMScheduler, dict(prediction_type="sample", clip_sample=True, clip_sample_range=1.0), 5,
                         dict(eta=0.0)),
    "ddpm_fixed_small": (DDPMScheduler, dict(clip_sample=True), 10, {}),
    "ddpm_fixed_large_linspace": (DDPMScheduler, dict(variance_type="fixed_large", timestep_spacing="linspace",
                                                      clip_sample=False), 6, {}),
    "ddpm_learned_range_cosine_v": (DDPMScheduler, dict(variance_type="learned_range", beta_schedule="squaredcos_cap_v2",
                                                        prediction_type="v_prediction", clip_sample=False), 8, {}),
    "euler_eps": (EulerDiscreteScheduler, dict(), 10, {}),
    "euler_ancestral_v": (EulerAncestralDiscreteScheduler, dict(prediction_type="v_prediction",
                                                                timestep_spacing="trailing"), 6, {}),
    "dpmpp_2m": (DPMSolverMultistepScheduler, dict(algorithm_type="dpmsolver++", solver_order=2), 10, {}),
    "dpmpp_2m_v_scaled": (DPMSolverMultistepScheduler, dict(algorithm_type="dpmsolver++", solver_order=2,
                                                            prediction_type="v_prediction",
                                                            beta_schedule="scaled_linear", beta_start=0.00085,
                                                            beta_end=0.012), 7, {}),
    "lcm_4": (LCMScheduler, dict(), 4, {}),
}


def run(name, cls, cfg, n, step_kwargs, seed):
    sched = cls(**cfg)
    sched.set_timesteps(n)
    gen = torch.Generator().manual_seed(seed)
    drawn = []
    modules = [m for m in list(__import__("sys").modules.values())
               if getattr(m, "__name__", "").startswith("diffusers.schedulers.scheduling_")]
    originals = {}

    def fake_randn(shape, generator=None, device=None, dtype=None, layout=None, **kw):
        z = torch.randn(tuple(shape), generator=gen, dtype=torch.float32)
        drawn.append(z.clone())
        return z.to(dtype) if dtype is not None else z

    for m in modules:
        if hasattr(m, "randn_tensor"):
            originals[m] = m.randn_tensor
            m.randn_tensor = fake_randn
    try:
        learned = cfg.get("variance_type") in ("learned", "learned_range")
        out_shape = (SHAPE[0], SHAPE[1] * (2 if learned else 1)) + SHAPE[2:]
        x = torch.randn(SHAPE, generator=gen) * float(getattr(sched, "init_noise_sigma", 1.0))
        t = {"timesteps": sched.timesteps.round().to(torch.int64), "timesteps_f32": sched.timesteps.to(torch.float32)}
        if getattr(sched, "sigmas", None) is not None:
            t["sigmas"] = torch.as_tensor(sched.sigmas).to(torch.float32)
        for k, ts in enumerate(sched.timesteps):
            xin = sched.scale_model_input(x, ts)
            model = torch.randn(out_shape, generator=gen)
            before = len(drawn)
            res = sched.step(model, ts, x, **step_kwargs)
            t[f"x_{k}"] = x.clone()
            t[f"xin_{k}"] = xin.clone()
            t[f"model_{k}"] = model
            if len(drawn) > before:
                t[f"noise_{k}"] = torch.cat(drawn[before:], dim=0)
            t[f"out_{k}"] = res.prev_sample.clone()
            if getattr(res, "pred_original_sample", None) is not None:
                t[f"x0_{k}"] = res.pred_original_sample.clone()
            if getattr(res, "denoised", None) is not None:
                t[f"x0_{k}"] = res.denoised.clone()
            x = res.prev_sample
    finally:
        for m, f in originals.items():
            m.randn_tensor = f
    meta = {
        "generator": "tests/golden/samplers.py", "torch": torch.__version__, "diffusers": diffusers.__version__,
        "safetensors": safetensors.__version__, "numpy": np.__version__, "python": platform.python_version(),
        "case": name, "scheduler": cls.__name__, "config": json.dumps({k: (str(v) if isinstance(v, float) and not np.isfinite(v) else v)
                              for k, v in dict(sched.config).items()}, default=str, allow_nan=False),
        "num_inference_steps": str(n), "step_kwargs": json.dumps(step_kwargs), "seed": str(seed),
    }
    t = {k: v.contiguous() for k, v in t.items()}
    save_file(dict(sorted(t.items())), os.path.join(HERE, f"{name}.safetensors"), metadata=meta)
    print(f"{name:<30} {cls.__name__:<34} n={n} steps, {sum(1 for k in t if k.startswith('noise_'))} noisy")


def main():
    os.makedirs(HERE, exist_ok=True)
    for i, (name, (cls, cfg, n, kw)) in enumerate(CASES.items()):
        run(name, cls, cfg, n, kw, seed=2000 + i)


if __name__ == "__main__":
    main()
