"""Shared pieces of ember's MNIST training scripts: model config, noise schedule, DDIM sampling with
classifier-free guidance, checkpoints, export of diffusers folders with ember metadata, sample grids."""

from __future__ import annotations

import json
import math
import os
import random
import time
from pathlib import Path

import numpy as np
import torch

NUM_TRAIN_TIMESTEPS = 1000
NUM_CLASSES = 10
NULL_CLASS = 10  # class-embedding row used as "no label" for classifier-free guidance

# diffusers UNet2DModel options. Everything not listed is diffusers' default (the converter refuses
# unusual options): act_fn silu, resnet_time_scale_shift "default", no class_embed_type, positional time
# embedding, flip_sin_to_cos true, freq_shift 0, conv down/upsampling, mid block UNetMidBlock2D with attention.
UNET_CONFIG = dict(
    sample_size=32,
    in_channels=1,
    out_channels=1,
    num_class_embeds=NUM_CLASSES + 1,  # digits 0..9 + NULL_CLASS
    block_out_channels=(32, 64, 64),
    layers_per_block=1,
    down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
    norm_num_groups=16,
    attention_head_dim=32,
)

SCHEDULE = dict(
    num_train_timesteps=NUM_TRAIN_TIMESTEPS,
    beta_schedule="squaredcos_cap_v2",
    prediction_type="v_prediction",
    clip_sample=False,
    timestep_spacing="trailing",
)


# ----------------------------------------------------------------------------------------------- setup


def pick_device(name: str | None) -> torch.device:
    if name and name != "auto":
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def setup_torch(device: torch.device, seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
        torch.set_float32_matmul_precision("high")


def make_unet():
    from diffusers import UNet2DModel

    return UNet2DModel(**UNET_CONFIG)


def count_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def train_scheduler():
    from diffusers import DDPMScheduler

    return DDPMScheduler(**SCHEDULE)


def ddim_scheduler():
    """The scheduler saved next to every exported model: DDIM, same schedule, final alpha_cumprod = 1."""
    from diffusers import DDIMScheduler

    return DDIMScheduler(**SCHEDULE, set_alpha_to_one=True, steps_offset=0)


def alphas_cumprod(device: torch.device) -> torch.Tensor:
    """alpha-bar for t = 0..999, float32, exactly DDPMScheduler's (cosine schedule, betas capped at 0.999)."""
    return train_scheduler().alphas_cumprod.to(device=device, dtype=torch.float32)


def trailing_timesteps(n: int) -> list[int]:
    """diffusers' trailing spacing on 1000 train steps: t_k = round(1000 - k*1000/n) - 1, k = 0..n-1
    (numpy float64 arange + round-half-even). Checked against DDIMScheduler.set_timesteps(n)."""
    from diffusers import DDIMScheduler

    ts = (np.round(np.arange(NUM_TRAIN_TIMESTEPS, 0, -NUM_TRAIN_TIMESTEPS / n)).astype(np.int64) - 1).tolist()
    s = DDIMScheduler(**SCHEDULE, set_alpha_to_one=True)
    s.set_timesteps(n)
    ref = s.timesteps.tolist()
    if ts != ref or len(ts) != n:
        raise RuntimeError(f"trailing grid mismatch for n={n}: {ts} vs diffusers {ref}")
    return ts


def abar_at(ac: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """alpha-bar at integer timesteps t (tensor); t < 0 means 'past the last step': alpha-bar = 1."""
    tc = t.clamp(min=0)
    a = ac[tc]
    return torch.where(t < 0, torch.ones_like(a), a)


def bcast(v: torch.Tensor) -> torch.Tensor:
    return v.view(-1, 1, 1, 1)


# ----------------------------------------------------------------------------------------------- sampling


def model_v(unet, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor, guidance: float | None) -> torch.Tensor:
    """v prediction; with ``guidance`` s (not None, != 1) classifier-free guidance
    v = v(x, t, null) + s * (v(x, t, c) - v(x, t, null)), both halves in one batch."""
    if guidance is None or guidance == 1.0:
        return unet(x, t, class_labels=labels).sample
    b = x.shape[0]
    null = torch.full_like(labels, NULL_CLASS)
    out = unet(torch.cat([x, x]), torch.cat([t, t]), class_labels=torch.cat([labels, null])).sample
    cond, uncond = out[:b], out[b:]
    return uncond + guidance * (cond - uncond)


def ddim_step(x: torch.Tensor, v: torch.Tensor, a_t: torch.Tensor, a_s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Deterministic DDIM (eta = 0) step from alpha-bar a_t to a_s for a v-prediction: returns (x_s, x0_hat).
    Same formulas as diffusers' DDIMScheduler.step (v_prediction, no clipping, no thresholding)."""
    sa, sb = bcast(a_t.sqrt()), bcast((1 - a_t).sqrt())
    x0 = sa * x - sb * v
    eps = sb * x + sa * v
    return bcast(a_s.sqrt()) * x0 + bcast((1 - a_s).sqrt()) * eps, x0


@torch.no_grad()
def ddim_sample(unet, noise, labels, timesteps: list[int], ac: torch.Tensor, guidance: float | None = None,
                batch: int = 500, autocast: bool = False) -> torch.Tensor:
    """DDIM (eta = 0) over an explicit timestep list; each step goes to the NEXT listed timestep, the last one to
    alpha-bar = 1. For n dividing 1000 and trailing spacing this is exactly diffusers' DDIMScheduler(n)."""
    outs = []
    dev = noise.device
    for i in range(0, noise.shape[0], batch):
        x = noise[i : i + batch].clone()
        y = labels[i : i + batch]
        for k, t in enumerate(timesteps):
            s = timesteps[k + 1] if k + 1 < len(timesteps) else -1
            tt = torch.full((x.shape[0],), t, device=dev, dtype=torch.long)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=autocast):
                v = model_v(unet, x, tt, y, guidance)
            v = v.float()
            x, _ = ddim_step(x, v, abar_at(ac, tt), abar_at(ac, torch.full_like(tt, s)))
        outs.append(x)
    return torch.cat(outs)


def grid_inputs(device: torch.device, seed: int = 1234, per_class: int = 10):
    """Fixed noise + labels for a 10x`per_class` grid (row = digit)."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    noise = torch.randn(NUM_CLASSES * per_class, 1, 32, 32, generator=g).to(device)
    labels = torch.arange(NUM_CLASSES).repeat_interleave(per_class).to(device)
    return noise, labels


def save_grid(x: torch.Tensor, path: Path, nrow: int = 10, scale: int = 2) -> None:
    from PIL import Image

    x = ((x.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()[:, 0]
    n, h, w = x.shape
    rows = math.ceil(n / nrow)
    pad = 2
    canvas = np.full((rows * (h + pad) + pad, nrow * (w + pad) + pad), 64, dtype=np.uint8)
    for i in range(n):
        r, c = divmod(i, nrow)
        canvas[pad + r * (h + pad) : pad + r * (h + pad) + h, pad + c * (w + pad) : pad + c * (w + pad) + w] = x[i]
    img = Image.fromarray(canvas, mode="L")
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    img.save(path)


# ----------------------------------------------------------------------------------------------- training utils


class EMA:
    """EMA of parameters (buffers copied). decay_t = min(decay, (1 + n) / (10 + n)) -- the usual warmup."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.n = 0
        self.shadow = [p.detach().clone().float() for p in model.parameters()]

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.n += 1
        d = min(self.decay, (1 + self.n) / (10 + self.n))
        torch._foreach_lerp_(self.shadow, [p.detach() for p in model.parameters()], 1.0 - d)

    @torch.no_grad()
    def copy_to(self, model: torch.nn.Module) -> None:
        for s, p in zip(self.shadow, model.parameters()):
            p.copy_(s)

    def state_dict(self):
        return {"decay": self.decay, "n": self.n, "shadow": self.shadow}

    def load_state_dict(self, sd):
        self.decay, self.n = sd["decay"], sd["n"]
        for s, v in zip(self.shadow, sd["shadow"]):
            s.copy_(v)


def make_optimizer(model, lr: float, weight_decay: float, device: torch.device):
    kw = dict(lr=lr, betas=(0.9, 0.999), weight_decay=weight_decay, eps=1e-8)
    if device.type == "cuda":
        try:
            return torch.optim.AdamW(model.parameters(), fused=True, **kw)
        except (TypeError, RuntimeError):
            pass
    return torch.optim.AdamW(model.parameters(), **kw)


def lr_at(step: int, total: int, base: float, warmup: int, schedule: str, final_frac: float = 0.0) -> float:
    """Linear warmup over `warmup` steps, then `constant`, `cosine` or `linear` decay to base*final_frac."""
    if warmup > 0 and step < warmup:
        return base * (step + 1) / warmup
    if schedule == "constant":
        return base
    p = min(1.0, (step - warmup) / max(1, total - warmup))
    if schedule == "cosine":
        f = 0.5 * (1 + math.cos(math.pi * p))
    elif schedule == "linear":
        f = 1.0 - p
    else:
        raise ValueError(schedule)
    return base * (final_frac + (1 - final_frac) * f)


def atomic_save(obj, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def write_json(obj, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
    os.replace(tmp, path)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


class Timer:
    def __init__(self):
        self.t0 = time.perf_counter()

    def __call__(self) -> float:
        return time.perf_counter() - self.t0


# ----------------------------------------------------------------------------------------------- export


def export_pipeline(unet, out: Path, metadata: dict[str, str], extra_unet_config: dict | None = None,
                    extra_scheduler_config: dict | None = None) -> None:
    """Write a diffusers pipeline-style folder ``out/unet`` (config.json + diffusion_pytorch_model.safetensors,
    float32) and ``out/scheduler/scheduler_config.json`` (DDIMScheduler). The safetensors file is re-written with
    ``metadata`` (save_pretrained cannot add metadata); extra keys are merged into the JSON configs."""
    from safetensors.torch import load_file, save_file

    out.mkdir(parents=True, exist_ok=True)
    unet_dir = out / "unet"
    unet.save_pretrained(unet_dir, safe_serialization=True)
    st = unet_dir / "diffusion_pytorch_model.safetensors"
    state = load_file(str(st))
    state = {k: v.float().contiguous() for k, v in state.items()}
    md = {"format": "pt"}
    md.update({k: str(v) for k, v in metadata.items()})
    save_file(state, str(st), metadata=md)
    if extra_unet_config:
        cfg_path = unet_dir / "config.json"
        cfg = json.loads(cfg_path.read_text())
        cfg.update(extra_unet_config)
        cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    sched_dir = out / "scheduler"
    ddim_scheduler().save_pretrained(sched_dir)
    if extra_scheduler_config:
        p = sched_dir / "scheduler_config.json"
        cfg = json.loads(p.read_text())
        cfg.update(extra_scheduler_config)
        p.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


# ----------------------------------------------------------------------------------------------- CUDA graphs


def use_cuda_graph(flag: str, device: torch.device) -> bool:
    if flag == "auto":
        return device.type == "cuda"
    if flag == "on" and device.type != "cuda":
        raise SystemExit("--cuda-graph on needs a CUDA device")
    return flag == "on"


def make_train_optimizer(model, lr: float, weight_decay: float, device: torch.device, graph: bool):
    """AdamW; for CUDA-graph capture fused + capturable with a tensor learning rate (set it with set_lr)."""
    if not graph:
        return make_optimizer(model, lr, weight_decay, device)
    return torch.optim.AdamW(model.parameters(), lr=torch.tensor(lr, device=device), betas=(0.9, 0.999),
                             weight_decay=weight_decay, eps=1e-8, fused=True, capturable=True)


def set_lr(opt, lr: float) -> None:
    for g in opt.param_groups:
        if torch.is_tensor(g["lr"]):
            g["lr"].fill_(lr)
        else:
            g["lr"] = lr


def get_lr(opt) -> float:
    lr = opt.param_groups[0]["lr"]
    return float(lr.item()) if torch.is_tensor(lr) else float(lr)


def load_optimizer_state(opt, sd, device: torch.device) -> None:
    """load_state_dict, keeping each group's lr a tensor (graph mode) or a float (eager) as created."""
    kinds = [torch.is_tensor(g["lr"]) for g in opt.param_groups]
    opt.load_state_dict(sd)
    for g, is_t in zip(opt.param_groups, kinds):
        v = float(g["lr"].item()) if torch.is_tensor(g["lr"]) else float(g["lr"])
        g["lr"] = torch.tensor(v, device=device) if is_t else v


class TrainStep:
    """One optimizer step: loss_fn() (reading input tensors the caller refreshes IN PLACE), backward, grad-norm
    clip, optimizer step. With graph=True the whole step is captured once in a CUDA graph and replayed: the
    model is small, so eager PyTorch is bound by Python / kernel-launch overhead, not by the GPU. Capture
    needs a few warm-up steps; their parameter and optimizer-state changes are undone in place afterwards, so
    training (and resuming) is unaffected by them. If capture fails the step silently falls back to eager."""

    def __init__(self, model, opt, loss_fn, grad_clip: float, graph: bool, warmup: int = 3):
        self.model, self.opt, self.loss_fn, self.clip = model, opt, loss_fn, grad_clip
        self.graph = None
        self.static_loss = None
        if graph:
            try:
                self._capture(warmup)
            except Exception as e:  # pragma: no cover - depends on the GPU stack
                print(f"WARNING: CUDA graph capture failed ({type(e).__name__}: {e}); running eagerly", flush=True)
                self.graph = None
                self._restore()

    def _body(self):
        loss = self.loss_fn()
        loss.backward()
        if self.clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip, foreach=True)
        self.opt.step()
        return loss.detach()

    def _snapshot(self):
        params = list(self.model.parameters())
        self._p0 = [p.detach().clone() for p in params]
        self._s0 = {}
        for i, p in enumerate(params):
            if p in self.opt.state:
                self._s0[i] = {k: (v.detach().clone() if torch.is_tensor(v) else v)
                               for k, v in self.opt.state[p].items()}

    @torch.no_grad()
    def _restore(self):
        for i, (p, v) in enumerate(zip(self.model.parameters(), self._p0)):
            p.copy_(v)
            for k, cur in self.opt.state.get(p, {}).items():
                if not torch.is_tensor(cur):
                    continue
                old = self._s0.get(i, {}).get(k)
                if old is None:
                    cur.zero_()
                else:
                    cur.copy_(old)
        self.opt.zero_grad(set_to_none=True)

    def _capture(self, warmup: int):
        self._snapshot()
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            for _ in range(warmup):
                self.opt.zero_grad(set_to_none=True)
                self._body()
        torch.cuda.current_stream().wait_stream(s)
        self.opt.zero_grad(set_to_none=True)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            self.static_loss = self._body()
        self.graph = g
        # undo the warm-up steps (capture itself runs nothing); grads stay as the graph's static buffers
        with torch.no_grad():
            for i, (p, v) in enumerate(zip(self.model.parameters(), self._p0)):
                p.copy_(v)
                for k, cur in self.opt.state.get(p, {}).items():
                    if torch.is_tensor(cur):
                        old = self._s0.get(i, {}).get(k)
                        cur.copy_(old) if old is not None else cur.zero_()
        del self._p0, self._s0

    def __call__(self) -> torch.Tensor:
        if self.graph is not None:
            self.graph.replay()
            return self.static_loss
        self.opt.zero_grad(set_to_none=True)
        return self._body()
