#!/usr/bin/env python3
"""Golden end-to-end sampling runs: held-out diffusers pipeline folders and the samples diffusers makes from them.

For each case in ``CASES`` a random-weight ``UNet2DModel`` and a deterministic diffusers scheduler are saved as a
diffusers pipeline folder (what ``quantize-tool convert`` reads), and the scheduler loop is run in f32 with the
U-Net in the loop, written out explicitly below (``sample_loop``) instead of going through a diffusers pipeline
class, so it is plain what ember has to reproduce. Written to ``tests/golden/pipelines/<case>/``:

    unet/config.json, unet/diffusion_pytorch_model.safetensors   UNet2DModel.save_pretrained (f32); class-guided
                                        cases re-save the weights with metadata ``ember.null_class``
    scheduler/scheduler_config.json     the scheduler's save_pretrained
    init_noise.safetensors  sample      f32 [1,C,H,W]  x_T as the loop starts it: randn (seeded generator), times
                                        scheduler.init_noise_sigma (read after set_timesteps)
    expected.safetensors    sample      f32 [1,C,H,W]  the loop's final sample (no conversion to pixels)
                            timesteps   f32 [n]        scheduler.timesteps (len == n is asserted)
                            sigmas      f32 [n+1]      the scheduler's sigma table (Euler, DPM-Solver only)
                            x_k         f32            sample entering step k (before scale_model_input)
                            xin_k       f32            scale_model_input(x_k, t_k) (before any concatenation)
                            model_k     f32            the (guided) model output fed to scheduler.step
                            x0_k        f32            pred_original_sample (DDIM, Euler); for DPM-Solver++ the
                                                       converted model output (its x0 prediction) it stores
                            cond        f32 [1,Cc,H,W] concat-conditioning cases: the channels concatenated
                            class_labels i64 [1]       class-conditional cases: the label

``expected.safetensors`` metadata: ``case``, ``mode`` (uncond / cfg / concat), ``scheduler`` (class name),
``scheduler_config`` (JSON; non-finite floats as strings), ``unet_config`` (the constructor kwargs),
``num_inference_steps``, ``seed``, and where they apply ``eta``, ``guidance_scale``, ``class_label``,
``null_class``; plus the generator and library versions.

Also ``tests/golden/pipelines/steps.safetensors``: single-step goldens of diffusers' ``RePaintScheduler.step``
(inpainting), keys ``repaint_{j}_*`` (see ``repaint_steps``).

    .venv/bin/python tests/golden/pipelines.py              # rewrites tests/golden/pipelines/
    .venv/bin/python tests/golden/pipelines.py --out DIR    # elsewhere; --list names the cases, --only picks some

Deterministic (seeded per case, sorted safetensors headers): two runs with the same versions on the same machine
write byte-identical files.
"""
import argparse
import json
import math
import os
import platform
import sys

import numpy as np
import safetensors
import torch
import torch.nn.functional as F
import diffusers
import diffusers.schedulers.scheduling_repaint as scheduling_repaint
from diffusers import (DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler, RePaintScheduler,
                       UNet2DModel)
from diffusers.utils import logging as diffusers_logging
from safetensors.torch import load_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from golden_util import perturb as perturb_weights_of, save_sorted  # noqa: E402

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pipelines")

# Small U-Nets (together < 1 M parameters, so the folder stays a few MB).
UNET_16_32_ATTN = dict(block_out_channels=(16, 32), down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                       up_block_types=("AttnUpBlock2D", "UpBlock2D"), layers_per_block=1, norm_num_groups=8,
                       attention_head_dim=8)
UNET_8_16 = dict(block_out_channels=(8, 16), down_block_types=("DownBlock2D", "DownBlock2D"),
                 up_block_types=("UpBlock2D", "UpBlock2D"), layers_per_block=1, norm_num_groups=4,
                 attention_head_dim=8)

# name -> dict(unet kwargs, scheduler class + kwargs, n steps, mode, step kwargs, guidance, label, null class).
# mode: "uncond" (out = unet(xin, t)), "cfg" (two batch-1 passes, conditional first, out_u + s*(out_c - out_u)),
# "concat" (unet(cat([xin, cond], 1), t), cond a smooth seeded image).
CASES = {
    # DDPM-style checkpoint sampled with DDIM: linear betas, leading spacing + steps_offset 1, eta 0.
    "ddim_eps_leading": dict(
        unet=dict(sample_size=16, in_channels=1, out_channels=1, **UNET_16_32_ATTN),
        sched=(DDIMScheduler, dict(beta_schedule="linear", prediction_type="epsilon", clip_sample=False,
                                   timestep_spacing="leading", steps_offset=1, set_alpha_to_one=False)),
        n=10, mode="uncond", step=dict(eta=0.0)),
    # Class-guided cosine v-prediction with DDIM trailing (first step at t = 999, alpha_bar ~ 2e-9).
    "ddim_v_cfg_cosine": dict(
        unet=dict(sample_size=16, in_channels=1, out_channels=1, num_class_embeds=4, **UNET_8_16),
        sched=(DDIMScheduler, dict(beta_schedule="squaredcos_cap_v2", prediction_type="v_prediction",
                                   clip_sample=False, timestep_spacing="trailing")),
        n=8, mode="cfg", step=dict(eta=0.0), guidance=3.0, label=1, null=3),
    # Euler with SD betas and linspace spacing: fractional timesteps (832.5, ...) reach the U-Net as f32.
    "euler_eps_linspace": dict(
        unet=dict(sample_size=8, in_channels=2, out_channels=2, block_out_channels=(16, 16),
                  down_block_types=("AttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "AttnUpBlock2D"),
                  layers_per_block=1, norm_num_groups=8, attention_head_dim=8),
        sched=(EulerDiscreteScheduler, dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                                            prediction_type="epsilon", timestep_spacing="linspace")),
        n=7, mode="uncond", step={}),
    # Euler, cosine v-prediction, trailing: sigma_max ~ 2e4, so x_T is ~ 1e4 in magnitude.
    "euler_v_trailing_cfg": dict(
        unet=dict(sample_size=8, in_channels=1, out_channels=1, num_class_embeds=6, block_out_channels=(8, 16),
                  down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
                  layers_per_block=1, norm_num_groups=4, attention_head_dim=8),
        sched=(EulerDiscreteScheduler, dict(beta_schedule="squaredcos_cap_v2", prediction_type="v_prediction",
                                            timestep_spacing="trailing")),
        n=6, mode="cfg", step={}, guidance=2.0, label=2, null=5),
    # DPM-Solver++(2M), linear betas, linspace spacing; the last step is first order (lower_order_final).
    "dpmpp_2m_eps": dict(
        unet=dict(sample_size=16, in_channels=1, out_channels=1, block_out_channels=(12, 24),
                  down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                  layers_per_block=1, norm_num_groups=4, attention_head_dim=8, resnet_time_scale_shift="scale_shift"),
        sched=(DPMSolverMultistepScheduler, dict(algorithm_type="dpmsolver++", solver_order=2,
                                                 beta_schedule="linear")),
        n=12, mode="uncond", step={}),
    # Super-resolution style concat conditioning: channel 1 of the input is a caller-given low-resolution image
    # (upsampled to 16x16); DPM-Solver++(2M), cosine v-prediction, trailing.
    "dpmpp_2m_concat_sr": dict(
        unet=dict(sample_size=16, in_channels=2, out_channels=1, **UNET_16_32_ATTN),
        sched=(DPMSolverMultistepScheduler, dict(algorithm_type="dpmsolver++", solver_order=2,
                                                 prediction_type="v_prediction", beta_schedule="squaredcos_cap_v2",
                                                 timestep_spacing="trailing")),
        n=8, mode="concat", step={}, cond_channels=1),
    # DPM-Solver++(2M) defaults (epsilon), class-guided at scale 4, 11 classes (10 + null).
    "dpmpp_2m_cfg": dict(
        unet=dict(sample_size=16, in_channels=1, out_channels=1, num_class_embeds=11, block_out_channels=(8, 16),
                  down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
                  layers_per_block=1, norm_num_groups=4, attention_head_dim=8),
        sched=(DPMSolverMultistepScheduler, dict(prediction_type="epsilon")),
        n=10, mode="cfg", step={}, guidance=4.0, label=7, null=10),
}

# RePaint single steps: (t, eta, clip_sample). N = 1000, linear betas, set_timesteps(20, 1, 1) -> t = 950, ..., 0.
REPAINT_STEPS = 20
REPAINT = [(950, 0.0, True), (500, 0.5, False), (0, 0.5, True)]
REPAINT_SHAPE = (1, 2, 8, 8)


def versions(meta=None):
    v = {
        "generator": "tests/golden/pipelines.py",
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "safetensors": safetensors.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }
    v.update(meta or {})
    return v


def perturb(model, gen):
    """``golden_util.perturb``, then check no parameter is left constant."""
    perturb_weights_of(model, gen)
    for name, p in model.named_parameters():
        assert p.numel() == 1 or float(p.std()) > 0, f"{name} is constant after perturbation"


def config_json(sched):
    """The scheduler's config as strict JSON (``-inf`` etc. as strings), keys sorted, without diffusers' private
    keys (``_use_default_values`` is a set, listed in a different order on every run)."""
    cfg = {k: (str(v) if isinstance(v, float) and not math.isfinite(v) else v) for k, v in dict(sched.config).items()
           if not k.startswith("_")}
    cfg["_class_name"] = type(sched).__name__
    return json.dumps(cfg, sort_keys=True, default=str, allow_nan=False)


def smooth_image(gen, channels, size, low=4):
    """A seeded smooth image in [-1, 1]: uniform random at low x low, bilinearly upsampled to size x size."""
    lo = torch.rand(1, channels, low, low, generator=gen) * 2 - 1
    return F.interpolate(lo, size=(size, size), mode="bilinear", align_corners=False)


@torch.no_grad()
def sample_loop(unet, sched, c, init_noise, cond=None):
    """The scheduler loop (DDIMPipeline / the standard class-guided loop, written out). Returns the final sample
    and the per-step tensors."""
    mode, s, n = c["mode"], c.get("guidance"), c["n"]
    rec = {}
    x = init_noise
    for k, t in enumerate(sched.timesteps):
        xin = sched.scale_model_input(x, t)
        rec[f"x_{k}"], rec[f"xin_{k}"] = x.clone(), xin.clone()
        if mode == "concat":
            xin = torch.cat([xin, cond], dim=1)
        if mode == "cfg":
            out_c = unet(xin, t, class_labels=torch.tensor([c["label"]], dtype=torch.int64)).sample
            out_u = unet(xin, t, class_labels=torch.tensor([c["null"]], dtype=torch.int64)).sample
            out = out_u + s * (out_c - out_u)
        elif "label" in c:
            out = unet(xin, t, class_labels=torch.tensor([c["label"]], dtype=torch.int64)).sample
        else:
            out = unet(xin, t).sample
        res = sched.step(out, t, x, **c["step"])
        rec[f"model_{k}"] = out.clone()
        if getattr(res, "pred_original_sample", None) is not None:
            rec[f"x0_{k}"] = res.pred_original_sample.clone()
        elif isinstance(sched, DPMSolverMultistepScheduler):
            rec[f"x0_{k}"] = sched.model_outputs[-1].clone()  # dpmsolver++: convert_model_output = x0 prediction
        x = res.prev_sample
        assert torch.isfinite(x).all(), f"non-finite sample after step {k}"
    assert all(f"x0_{k}" in rec for k in range(n)), "every step should give an x0"
    return x, rec


def make_case(name, c, out_root, seed):
    folder = os.path.join(out_root, name)
    unet_dir, sched_dir = os.path.join(folder, "unet"), os.path.join(folder, "scheduler")
    os.makedirs(unet_dir, exist_ok=True)
    os.makedirs(sched_dir, exist_ok=True)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    kwargs = c["unet"]
    unet = UNet2DModel(**kwargs).eval().float()
    perturb(unet, gen)
    unet.save_pretrained(unet_dir, safe_serialization=True)
    wpath = os.path.join(unet_dir, "diffusion_pytorch_model.safetensors")
    with safetensors.safe_open(wpath, "pt") as f:
        assert all(f.get_slice(k).get_dtype() == "F32" for k in f.keys()), "weights must be saved as f32"
        wmeta = dict(f.metadata() or {})
    if c["mode"] == "cfg":
        assert 0 <= c["null"] < kwargs["num_class_embeds"] and c["label"] != c["null"]
        wmeta["ember.null_class"] = str(c["null"])
        save_sorted(load_file(wpath), wpath, wmeta)
    # Sample with the model as the folder gives it back: same weights, but the in-memory model's outputs can differ
    # in the last bit (~1e-7 relative), and the golden should be what anyone loading the folder reproduces exactly.
    unet = UNet2DModel.from_pretrained(unet_dir).eval()
    assert all(p.dtype == torch.float32 for p in unet.parameters())

    cls, skw = c["sched"]
    sched = cls(**skw)
    sched.save_pretrained(sched_dir)
    sched = cls.from_pretrained(sched_dir)  # what a user of the folder gets
    n = c["n"]
    sched.set_timesteps(n)
    assert len(sched.timesteps) == n, f"{name}: {len(sched.timesteps)} timesteps for n = {n}: {sched.timesteps}"
    assert (sched.timesteps >= 0).all(), f"{name}: negative timestep in {sched.timesteps}"

    size, cin = kwargs["sample_size"], kwargs["out_channels"]
    cond = None
    if c["mode"] == "concat":
        cond = smooth_image(gen, c["cond_channels"], size)
        assert kwargs["in_channels"] == cin + c["cond_channels"]
    else:
        assert kwargs["in_channels"] == cin
    init_noise = torch.randn(1, cin, size, size, generator=gen) * sched.init_noise_sigma
    x, rec = sample_loop(unet, sched, c, init_noise, cond)

    tensors = dict(rec)
    tensors["sample"] = x
    tensors["timesteps"] = sched.timesteps.to(torch.float32)
    if getattr(sched, "sigmas", None) is not None:
        tensors["sigmas"] = torch.as_tensor(sched.sigmas).to(torch.float32)
        assert tensors["sigmas"].numel() == n + 1
    if cond is not None:
        tensors["cond"] = cond
    if "label" in c:
        tensors["class_labels"] = torch.tensor([c["label"]], dtype=torch.int64)
    meta = dict(case=name, mode=c["mode"], scheduler=cls.__name__, scheduler_config=config_json(sched),
                unet_config=json.dumps(kwargs, default=list, sort_keys=True), num_inference_steps=str(n),
                seed=str(seed), init_noise_sigma=repr(float(sched.init_noise_sigma)))
    if "eta" in c["step"]:
        meta["eta"] = repr(c["step"]["eta"])
    if c["mode"] == "cfg":
        meta.update(guidance_scale=repr(c["guidance"]), class_label=str(c["label"]), null_class=str(c["null"]))
    save_sorted(tensors, os.path.join(folder, "expected.safetensors"), versions(meta))
    save_sorted({"sample": init_noise}, os.path.join(folder, "init_noise.safetensors"),
                versions(dict(case=name, seed=str(seed), init_noise_sigma=meta["init_noise_sigma"])))
    nparams = sum(p.numel() for p in unet.parameters())
    ts = ", ".join(f"{float(t):g}" for t in sched.timesteps)
    print(f"{name:<22} {cls.__name__:<28} n={n:<3} {nparams:>8,} params  max|x_T| {float(init_noise.abs().max()):.4g}"
          f"  max|sample| {float(x.abs().max()):.4g}  t: {ts}")


def repaint_steps(path, seed):
    """Single steps of ``RePaintScheduler.step`` (diffusers 0.42.1, scheduling_repaint.py).

    Noise: step() calls ``randn_tensor(model_output.shape, ...)`` exactly ONCE, unconditionally, before anything
    else is drawn, and uses that one tensor twice: ``variance = std_dev_t * noise`` (added to the unknown part only
    when t > 0 and eta > 0) and ``prev_known_part = sqrt(abar_prev) * original_image + sqrt(1 - abar_prev) *
    noise``. So there is only ``repaint_{j}_noise_0``; this is asserted. (``undo_step`` draws too; not used here.)
    eta and clip_sample are scheduler config, not step arguments, so every j has its own scheduler; prev_t =
    t - N // num_inference_steps, and prev_t < 0 uses final_alpha_cumprod = 1. mask: 1 = known pixel (kept from
    original_image), 0 = inpainted; it is one 0/1 pixel mask repeated over the channels.
    """
    gen = torch.Generator().manual_seed(seed)
    drawn = []

    def fake_randn(shape, generator=None, device=None, dtype=None, layout=None, **kw):
        z = torch.randn(tuple(shape), generator=gen, dtype=torch.float32)
        drawn.append(z.clone())
        return z.to(dtype) if dtype is not None else z

    tensors, meta = {}, {}
    original = scheduling_repaint.randn_tensor
    scheduling_repaint.randn_tensor = fake_randn
    try:
        for j, (t_pick, eta, clip) in enumerate(REPAINT):
            sched = RePaintScheduler(beta_schedule="linear", eta=eta, clip_sample=clip)
            sched.set_timesteps(REPAINT_STEPS, jump_length=1, jump_n_sample=1)
            assert len(sched.timesteps) == REPAINT_STEPS and t_pick in sched.timesteps.tolist()
            t = int(t_pick)
            prev_t = t - sched.config.num_train_timesteps // sched.num_inference_steps
            b, ch, h, w = REPAINT_SHAPE
            x = torch.randn(REPAINT_SHAPE, generator=gen)
            model = torch.randn(REPAINT_SHAPE, generator=gen)
            image = torch.rand(REPAINT_SHAPE, generator=gen) * 2 - 1
            mask = (torch.rand(b, 1, h, w, generator=gen) < 0.5).to(torch.float32).expand(REPAINT_SHAPE).clone()
            before = len(drawn)
            res = sched.step(model, t, x, image, mask)
            assert len(drawn) == before + 1, "RePaintScheduler.step should draw exactly one noise tensor"
            p = f"repaint_{j}_"
            tensors.update({p + "x": x, p + "model": model, p + "image": image, p + "mask": mask,
                            p + "noise_0": drawn[before], p + "out": res.prev_sample,
                            p + "x0": res.pred_original_sample})
            meta.update({p + "t": str(t), p + "prev_t": str(prev_t), p + "eta": repr(eta),
                         p + "clip_sample": str(clip).lower(), p + "scheduler_config": config_json(sched)})
            print(f"repaint_{j}: t={t} prev_t={prev_t} eta={eta} clip={clip} "
                  f"max|out| {float(res.prev_sample.abs().max()):.4g}")
    finally:
        scheduling_repaint.randn_tensor = original
    meta.update(repaint_count=str(len(REPAINT)), repaint_num_inference_steps=str(REPAINT_STEPS),
                repaint_jump_length="1", repaint_jump_n_sample="1", seed=str(seed))
    save_sorted(tensors, path, versions(meta))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=HERE, help="output folder (default: tests/golden/pipelines)")
    ap.add_argument("--list", action="store_true", help="list the case names")
    ap.add_argument("--only", nargs="*", help="generate only these cases (and steps.safetensors if named 'steps')")
    args = ap.parse_args()
    if args.list:
        print("\n".join(list(CASES) + ["steps"]))
        return
    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    torch.use_deterministic_algorithms(True)
    diffusers_logging.set_verbosity_error()  # from_pretrained's "install accelerate" advice
    os.makedirs(args.out, exist_ok=True)
    for i, (name, c) in enumerate(CASES.items()):
        if args.only and name not in args.only:
            continue
        make_case(name, c, args.out, seed=3000 + i)
    if not args.only or "steps" in args.only:
        repaint_steps(os.path.join(args.out, "steps.safetensors"), seed=3100)


if __name__ == "__main__":
    sys.exit(main())
