#!/usr/bin/env python3
"""Golden data for ember's parity tests, made by diffusers itself.

For each case: a random-weight diffusers ``UNet2DModel`` saved with ``save_pretrained`` (config.json +
diffusion_pytorch_model.safetensors, f32), optionally a scheduler_config.json, and ``io.safetensors`` holding, for
k = 0..K-1: ``sample_k`` f32 [1,C,H,W], ``timestep_k`` f32 [1], ``class_labels_k`` i64 [1] (class-conditional cases),
``out_k`` = diffusers' output in f32, and ``out_f16w_k`` = the output of the same model with every parameter rounded
to f16 and back (math still f32): the exact reference for ember's f16-weight blobs. The metadata records the versions.

    .venv/bin/python tests/golden/generate.py             # the committed cases
    .venv/bin/python tests/golden/generate.py --cifar10   # google/ddpm-cifar10-32 architecture (not committed)
    .venv/bin/python tests/golden/generate.py --list      # case names; --out DIR writes elsewhere
"""
import argparse
import json
import os
import platform
import sys

import numpy as np
import safetensors
import torch
import diffusers
from diffusers import DDPMScheduler, DDIMScheduler, UNet2DModel

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from golden_util import perturb as perturb_weights_of, save_sorted  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))

# Each case: (constructor kwargs, timesteps, timestep dtype, class labels or None, scheduler or None).
CASES = {
    # 1 channel, 16x16, plain + attention blocks, heads = 2, layers 1, timesteps fed as i64.
    "tiny_uncond_1ch": (
        dict(sample_size=16, in_channels=1, out_channels=1, block_out_channels=(8, 16),
             down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
             layers_per_block=1, norm_num_groups=4, attention_head_dim=8),
        [0, 37, 999], "i64", None, None),
    # Class-conditional MNIST-like: 11 classes (10 digits + null), 2 layers, 3 blocks, heads 2, DDPM scheduler.
    "cond_mnist_like": (
        dict(sample_size=16, in_channels=1, out_channels=1, block_out_channels=(8, 16, 16),
             down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
             up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
             layers_per_block=2, norm_num_groups=4, attention_head_dim=8, num_class_embeds=11),
        [0, 500, 999], "i64", [3, 10, 7], "ddpm"),
    # scale_shift time conditioning with resnet up/down (avg-pool + nearest inside resnets), mid attention without
    # group norm (diffusers drops it for scale_shift), 3 channels, one head.
    "scale_shift_resnet_updown": (
        dict(sample_size=16, in_channels=3, out_channels=3, block_out_channels=(8, 16, 16),
             down_block_types=("ResnetDownsampleBlock2D", "AttnDownBlock2D", "DownBlock2D"),
             up_block_types=("UpBlock2D", "AttnUpBlock2D", "ResnetUpsampleBlock2D"),
             layers_per_block=1, norm_num_groups=4, attention_head_dim=None,
             resnet_time_scale_shift="scale_shift", downsample_type="resnet", upsample_type="resnet"),
        [1, 250.5, 999], "f32", None, None),
    # center_input_sample, flip_sin_to_cos False with freq_shift 1, downsample_padding 0, no mid attention,
    # mid_block_scale_factor sqrt(2), 8x8, 3 channels.
    "center_noflip_pad0": (
        dict(sample_size=8, in_channels=3, out_channels=3, block_out_channels=(8, 16, 16),
             down_block_types=("DownBlock2D", "DownBlock2D", "DownBlock2D"),
             up_block_types=("UpBlock2D", "UpBlock2D", "UpBlock2D"),
             layers_per_block=2, norm_num_groups=4, center_input_sample=True, flip_sin_to_cos=False,
             freq_shift=1, downsample_padding=0, add_attention=False, mid_block_scale_factor=1.41421356,
             norm_eps=1e-6),
        [0, 37.5, 999], "f32", None, None),
    # Learned variance (out = 2 x in), 24x24, explicit time_embedding_dim, cosine v-prediction scheduler.
    "learned_var_24px": (
        dict(sample_size=24, in_channels=1, out_channels=2, block_out_channels=(16, 32),
             down_block_types=("AttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "AttnUpBlock2D"),
             layers_per_block=1, norm_num_groups=8, attention_head_dim=8, time_embedding_dim=48),
        [5, 640, 999], "i64", None, "cosine_v"),
    # Non-square 16x24, attn_norm_num_groups set, scale_shift, attention head dim 4 (heads 8), DDIM scheduler.
    "nonsquare_attn_groups": (
        dict(sample_size=(16, 24), in_channels=3, out_channels=3, block_out_channels=(16, 32),
             down_block_types=("AttnDownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "AttnUpBlock2D"),
             layers_per_block=1, norm_num_groups=4, attn_norm_num_groups=2, attention_head_dim=4,
             resnet_time_scale_shift="scale_shift", downsample_type="conv", upsample_type="conv"),
        [0, 123, 999], "f32", None, "ddim"),
    # class_embed_type "timestep" (labels through the sinusoidal projection + MLP), 32x32, 3 blocks, resnet
    # down/up in the attention blocks.
    "timestep_class_embed_32px": (
        dict(sample_size=32, in_channels=1, out_channels=1, block_out_channels=(8, 16, 16),
             down_block_types=("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
             up_block_types=("AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
             layers_per_block=1, norm_num_groups=4, attention_head_dim=8, class_embed_type="timestep",
             downsample_type="resnet", upsample_type="resnet"),
        [0, 999, 421], "i64", [4, 9, 0], None),
    # Second class-table case: 3 channels, 8x8, resnet down/up blocks (default time shift), 2 layers per block,
    # attention head dim 4 (heads 4 in the mid block), K = 4 fractional f32 timesteps.
    "class_cond_resnet_blocks_8px": (
        dict(sample_size=8, in_channels=3, out_channels=3, block_out_channels=(8, 16),
             down_block_types=("ResnetDownsampleBlock2D", "AttnDownBlock2D"),
             up_block_types=("AttnUpBlock2D", "ResnetUpsampleBlock2D"),
             layers_per_block=2, norm_num_groups=4, attention_head_dim=4, num_class_embeds=11),
        [0, 37.5, 999, 500.25], "f32", [0, 10, 5, 3], None),
    # Regression: no mid block, so the first up layer concatenates the last down output with itself (ember's
    # validator once rejected that op as aliasing).
    "no_mid_block": (
        dict(sample_size=16, in_channels=1, out_channels=1, block_out_channels=(8, 16),
             down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
             layers_per_block=1, norm_num_groups=4, mid_block_type=None),
        [0, 421, 999], "i64", None, None),
    # A single block (no down/upsampling), 3 layers per block, 24 channels with attention_head_dim 16 (one head of
    # 16 channels: inner dim != channels), 2 channels in and out.
    "single_block_inner_dim": (
        dict(sample_size=8, in_channels=2, out_channels=2, block_out_channels=(24,),
             down_block_types=("AttnDownBlock2D",), up_block_types=("AttnUpBlock2D",),
             layers_per_block=3, norm_num_groups=8, attention_head_dim=16),
        [3, 999], "f32", None, None),
}

CIFAR10 = dict(sample_size=32, in_channels=3, out_channels=3, block_out_channels=(128, 256, 256, 256),
               down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
               up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
               layers_per_block=2, attention_head_dim=None, downsample_padding=0, flip_sin_to_cos=False,
               freq_shift=1, norm_eps=1e-6, norm_num_groups=32, center_input_sample=False, mid_block_scale_factor=1)


def versions():
    return {
        "generator": "tests/golden/generate.py",
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "safetensors": safetensors.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def scheduler(kind):
    if kind == "ddpm":
        return DDPMScheduler()
    if kind == "cosine_v":
        return DDPMScheduler(beta_schedule="squaredcos_cap_v2", prediction_type="v_prediction",
                             variance_type="learned_range", clip_sample=False)
    if kind == "ddim":
        return DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                             timestep_spacing="trailing", clip_sample=False)
    raise ValueError(kind)


def make_case(name, kwargs, timesteps, tdtype, labels, sched, out_root, seed, perturb_weights=True, f16=True):
    folder = os.path.join(out_root, name)
    os.makedirs(folder, exist_ok=True)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = UNet2DModel(**kwargs).eval().float()
    if perturb_weights:
        perturb_weights_of(model, gen)
    model.save_pretrained(folder, safe_serialization=True)
    with safetensors.safe_open(os.path.join(folder, "diffusion_pytorch_model.safetensors"), "pt") as f:
        assert all(f.get_slice(k).get_dtype() == "F32" for k in f.keys()), "weights must be saved as f32"
    if sched is not None:
        scheduler(sched).save_pretrained(folder)
    nparams = sum(p.numel() for p in model.parameters())
    f16_model = None
    if f16:
        f16_model = UNet2DModel(**kwargs).eval().float()
        f16_model.load_state_dict({k: v.half().float() for k, v in model.state_dict().items()})
    size = kwargs["sample_size"]
    h, w = (size, size) if isinstance(size, int) else size
    tensors = {}
    mag = 0.0
    for k, t in enumerate(timesteps):
        x = torch.randn(1, kwargs["in_channels"], h, w, generator=gen)
        tt = torch.tensor([t], dtype=torch.int64 if tdtype == "i64" else torch.float32)
        args = {}
        if labels is not None:
            args["class_labels"] = torch.tensor([labels[k]], dtype=torch.int64)
            tensors[f"class_labels_{k}"] = args["class_labels"]
        with torch.no_grad():
            out = model(x, tt, **args).sample
            tensors[f"out_{k}"] = out.contiguous()
            if f16_model is not None:
                tensors[f"out_f16w_{k}"] = f16_model(x, tt, **args).sample.contiguous()
        tensors[f"sample_{k}"] = x.contiguous()
        tensors[f"timestep_{k}"] = torch.tensor([float(t)], dtype=torch.float32)
        mag = max(mag, float(out.abs().max()))
    meta = versions()
    meta.update(case=name, seed=str(seed), K=str(len(timesteps)), timestep_dtype=tdtype,
                config=json.dumps(kwargs, default=list))
    save_sorted(tensors, os.path.join(folder, "io.safetensors"), meta)
    print(f"{name:<30} {nparams:>12,} params  max|out| {mag:.3f}")
    return nparams


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=HERE, help="output folder (default: tests/golden)")
    ap.add_argument("--cifar10", action="store_true", help="write ddpm-cifar10-32 (random weights) instead")
    ap.add_argument("--list", action="store_true", help="list the case names")
    ap.add_argument("--only", nargs="*", help="generate only these cases")
    args = ap.parse_args()
    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    if args.list:
        print("\n".join(CASES))
        return
    if args.cifar10:
        n = make_case("ddpm-cifar10-32", CIFAR10, [10, 999], "i64", None, "ddpm", args.out, seed=10,
                      perturb_weights=False, f16=False)
        assert 35.6e6 < n < 35.8e6, f"ddpm-cifar10-32 should have ~35.7 M parameters, got {n}"
        return
    for i, (name, (kwargs, ts, tdtype, labels, sched)) in enumerate(CASES.items()):
        if args.only and name not in args.only:
            continue
        make_case(name, kwargs, ts, tdtype, labels, sched, args.out, seed=1000 + i)


if __name__ == "__main__":
    sys.exit(main())
