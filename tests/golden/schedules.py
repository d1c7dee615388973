#!/usr/bin/env python3
"""Golden noise schedules and timestep spacings for ember's sampler groundwork, made by diffusers itself.

Writes two files to ``tests/golden/schedules/`` (checked by ``tests/tests/schedules.rs``):

``betas.safetensors``
    For each case ``<c>``: ``<c>.betas`` and ``<c>.alphas_cumprod`` (f32 [N]) exactly as ``DDPMScheduler(**kw)``
    holds them; the metadata key ``config.<c>`` is the scheduler's ``to_json_string()`` (what ``quantize-tool``
    reads from ``scheduler_config.json``). ``DDIMScheduler(**kw)`` is checked to hold bit-identical tensors.

``timesteps.safetensors``
    For N = 1000, each spacing / ``steps_offset`` combination ``<s>`` (``leading0``, ``leading1``, ``trailing0``,
    ``trailing1``, ``linspace0``, ``linspace1``) and a few step counts n: ``seq.<s>.n<n>`` (i32), diffusers'
    complete ``scheduler.timesteps``, including the spurious trailing ``-1`` that ``trailing`` appends for some n.
    For every N in ``SWEEP_N`` and every n = 1..N: ``crc.<s>.N<N>`` (u32 [N]), element n-1 the CRC-32 (zlib) of
    diffusers' first n timesteps as little-endian int64, and ``extra.<s>.N<N>`` (i32), the n for which diffusers
    returned n + 1 timesteps (the extra one is always -1; checked here). ``DDIMScheduler`` and ``DDPMScheduler`` are
    checked to give identical timesteps for every combination.

The metadata records the versions and ``torch.backends.cpu.get_cpu_capability()``: torch's ``linspace`` kernel is
fused-multiply-add in its AVX2/AVX-512 builds (every current x86-64 CPU) and rounds twice in the scalar DEFAULT
build, which changes some linear/scaled_linear betas by one ulp; the committed files come from an AVX-512 build.
Regenerate (deterministic, a few seconds) with:

    .venv/bin/python tests/golden/schedules.py            # rewrites tests/golden/schedules/
    .venv/bin/python tests/golden/schedules.py --out DIR  # elsewhere
"""
import argparse
import json
import os
import platform
import sys
import zlib

import numpy as np
import safetensors
import torch
import diffusers
from diffusers import DDIMScheduler, DDPMScheduler

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from golden_util import save_sorted  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))

# name -> DDPMScheduler kwargs. Defaults: N = 1000, linear, beta_start 1e-4, beta_end 0.02.
BETA_CASES = {
    "linear_default": {},
    "linear_N2000": dict(num_train_timesteps=2000),
    "linear_N999_wide": dict(num_train_timesteps=999, beta_start=0.001, beta_end=0.5),
    "linear_sd_values": dict(beta_start=0.00085, beta_end=0.012),
    "linear_decreasing_N50": dict(num_train_timesteps=50, beta_start=0.02, beta_end=0.0001),
    "linear_N1": dict(num_train_timesteps=1),
    "linear_N2": dict(num_train_timesteps=2),
    "linear_N3": dict(num_train_timesteps=3),
    "linear_N10": dict(num_train_timesteps=10),
    "linear_N33": dict(num_train_timesteps=33),
    "scaled_linear_sd": dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012),
    "scaled_linear_default_values": dict(beta_schedule="scaled_linear"),
    "scaled_linear_sd_N2000": dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                                   num_train_timesteps=2000),
    "scaled_linear_N777": dict(beta_schedule="scaled_linear", beta_start=0.0015, beta_end=0.0195,
                               num_train_timesteps=777),
    "scaled_linear_N3": dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                             num_train_timesteps=3),
    "cosine_N1000": dict(beta_schedule="squaredcos_cap_v2"),
    "cosine_N4000": dict(beta_schedule="squaredcos_cap_v2", num_train_timesteps=4000),
    "cosine_N999": dict(beta_schedule="squaredcos_cap_v2", num_train_timesteps=999),
    "cosine_N50": dict(beta_schedule="squaredcos_cap_v2", num_train_timesteps=50),
    "cosine_N1": dict(beta_schedule="squaredcos_cap_v2", num_train_timesteps=1),
    "cosine_N2": dict(beta_schedule="squaredcos_cap_v2", num_train_timesteps=2),
    "cosine_N10": dict(beta_schedule="squaredcos_cap_v2", num_train_timesteps=10),
}

# (name, timestep_spacing, steps_offset)
SPACINGS = [(f"{s}{o}", s, o) for s in ("leading", "trailing", "linspace") for o in (0, 1)]
SEQ_N = [1, 2, 3, 4, 7, 10, 50, 61, 100, 1000]  # explicit sequences for N = 1000 (61: trailing appends -1)
SWEEP_N = [1, 2, 3, 7, 15, 17, 100, 999, 1000, 1024]  # every n = 1..N, as CRC-32s


def versions():
    return {
        "generator": "tests/golden/schedules.py",
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "safetensors": safetensors.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }


def same_bits(a, b):
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a.view(torch.int32), b.view(torch.int32))


def betas_file(path):
    tensors, meta = {}, versions()
    for name, kw in BETA_CASES.items():
        ddpm, ddim = DDPMScheduler(**kw), DDIMScheduler(**kw)
        for attr in ("betas", "alphas_cumprod"):
            a, b = getattr(ddpm, attr), getattr(ddim, attr)
            assert a.dtype == torch.float32, f"{name}.{attr} is {a.dtype}"
            assert same_bits(a, b), f"{name}: DDPMScheduler and DDIMScheduler {attr} differ"
            tensors[f"{name}.{attr}"] = a.contiguous()
        meta[f"config.{name}"] = ddpm.to_json_string()
    meta["ddpm_equals_ddim"] = "true"
    save_sorted(tensors, path, meta)
    return sum(t.numel() * 4 for t in tensors.values())


def timesteps(cls, n_train, spacing, offset, n):
    s = cls(num_train_timesteps=n_train, timestep_spacing=spacing, steps_offset=offset)
    s.set_timesteps(n)
    return s.timesteps.numpy()


def diffusers_timesteps(n_train, spacing, offset, n):
    a = timesteps(DDPMScheduler, n_train, spacing, offset, n)
    b = timesteps(DDIMScheduler, n_train, spacing, offset, n)
    assert a.dtype == np.int64 and np.array_equal(a, b), (n_train, spacing, offset, n, a, b)
    # The only deviation from n timesteps diffusers has: a spurious trailing -1 (np.arange's length rounding).
    assert len(a) == n or (len(a) == n + 1 and a[-1] == -1 and spacing == "trailing"), (n_train, spacing, n, a)
    return a


def timesteps_file(path):
    tensors, meta = {}, versions()
    for name, spacing, offset in SPACINGS:
        for n in SEQ_N:
            ts = diffusers_timesteps(1000, spacing, offset, n)
            tensors[f"seq.{name}.n{n}"] = torch.from_numpy(ts.astype(np.int32))
        for n_train in SWEEP_N:
            crcs, extra = [], []
            for n in range(1, n_train + 1):
                ts = diffusers_timesteps(n_train, spacing, offset, n)
                if len(ts) != n:
                    extra.append(n)
                crcs.append(zlib.crc32(ts[:n].astype("<i8").tobytes()))
            tensors[f"crc.{name}.N{n_train}"] = torch.tensor(np.array(crcs, dtype=np.uint32))
            tensors[f"extra.{name}.N{n_train}"] = torch.tensor(extra, dtype=torch.int32).reshape(-1)
    meta["ddpm_equals_ddim"] = "true"
    meta["seq_n"] = json.dumps(SEQ_N)
    meta["sweep_n"] = json.dumps(SWEEP_N)
    meta["spacings"] = json.dumps(SPACINGS)
    save_sorted(tensors, path, meta)
    return sum(t.numel() * t.element_size() for t in tensors.values())


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(HERE, "schedules"), help="output folder")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    nb = betas_file(os.path.join(args.out, "betas.safetensors"))
    nt = timesteps_file(os.path.join(args.out, "timesteps.safetensors"))
    print(f"betas.safetensors: {len(BETA_CASES)} schedules, {nb} data bytes; timesteps.safetensors: {nt} data bytes"
          f" (cpu capability {torch.backends.cpu.get_cpu_capability()})")


if __name__ == "__main__":
    sys.exit(main())
