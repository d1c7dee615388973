#!/usr/bin/env python3
"""The quality table of the MNIST reference models, with the images made by ember (not PyTorch).

For every configuration below, `ember generate` (the release binary) samples --per-class digits of each class
0-9 into a .safetensors file (`sample`, `class_labels`); the classifier of models/eval/classifier.py (trained on
the 8000 training digits only) then gives
  * accuracy: the fraction of samples it labels as the class they were conditioned on;
  * FID: the Frechet distance of its 128-d penultimate features between the samples and the 2000 held-out digits
    (not comparable with Inception FIDs). "real train split" is the floor: 2000 training digits vs held-out.
A few configurations are also sampled by PyTorch (diffusers UNet2DModel, DDIM in models/train/common.py) from
other noise, to show the engine preserves quality.

    .venv/bin/python models/eval/table.py                 # ember rows that run in minutes on 2 cores + PyTorch rows
    .venv/bin/python models/eval/table.py --full          # also teacher DDIM 50 and DDPM 1000 (hours on 2 cores)

Every ember row is sampled one class per `ember generate` run (same seeds, same images as one run) and each finished
class is kept in --cache (default target/table-cache/), so an interrupted long row resumes where it stopped.

Writes models/eval/results.json and models/eval/results.md; `--chart` (needs matplotlib) draws
docs/fid_vs_steps.png from results.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT / "models" / "train"))
from classifier import features, load_classifier, predict  # noqa: E402
from data import load_mnist  # noqa: E402
from fid import fid  # noqa: E402

TEACHER = "models/mnist-teacher/teacher.ember"
GUIDE = 2.0
# (name, blob, scheduler, steps, guidance, full-only)
EMBER_ROWS = [
    ("student 4 steps", "models/mnist-student/student-4.ember", None, None, 1.0, False),
    ("student 2 steps", "models/mnist-student/student-2-f16.ember", None, None, 1.0, False),
    ("student 1 step", "models/mnist-student/student-1-f16.ember", None, None, 1.0, False),
    ("student 4 steps int8", "models/mnist-student/student-4-int8.ember", None, None, 1.0, False),
    ("student 2 steps int8", "models/mnist-student/student-2-int8.ember", None, None, 1.0, False),
    ("student 1 step int8", "models/mnist-student/student-1-int8.ember", None, None, 1.0, False),
    ("teacher DDIM 4", TEACHER, "ddim", 4, GUIDE, False),
    ("teacher DDIM 10", TEACHER, "ddim", 10, GUIDE, False),
    ("teacher DPM-Solver++ 10", TEACHER, "dpmpp-2m", 10, GUIDE, False),
    ("teacher DDIM 50", TEACHER, "ddim", 50, GUIDE, True),
    ("teacher DDPM 1000", TEACHER, "ddpm", 1000, GUIDE, True),
]


def ember_samples(bin_path: Path, blob: str, scheduler, steps, guidance: float, per_class: int, seed: int,
                  cache: Path | None = None):
    """Samples `per_class` digits of each class 0-9 through `ember generate`, one class per run: image j of class k
    uses seed + k*per_class + j, exactly what one run over all classes gives (image i uses seed + i). With `cache`,
    every finished class is kept there (keyed by the blob's hash and every sampling argument), so an interrupted
    long run (teacher DDPM 1000 takes hours on 2 cores) resumes where it stopped."""
    import hashlib

    from safetensors.torch import load_file

    key = hashlib.sha256((ROOT / blob).read_bytes()).hexdigest()[:16]
    tag = f"{key}-{scheduler or 'default'}-{steps or 'default'}-g{guidance}-s{seed}-n{per_class}"
    xs, ls, secs, logs = [], [], 0.0, []
    with tempfile.TemporaryDirectory() as d:
        for k in range(10):
            out = (cache / tag / f"class-{k}.safetensors") if cache else Path(d) / f"class-{k}.safetensors"
            meta = out.with_suffix(".json")
            if not (cache and out.exists() and meta.exists()):
                out.parent.mkdir(parents=True, exist_ok=True)
                part = out.with_name(out.stem + ".part.safetensors")
                cmd = [str(bin_path), "generate", "--model", str(ROOT / blob), "--classes", str(k),
                       "--per-class", str(per_class), "--seed", str(seed + k * per_class),
                       "--guidance-scale", str(guidance), "-o", str(part)]
                if scheduler:
                    cmd += ["--scheduler", scheduler]
                if steps:
                    cmd += ["--steps", str(steps)]
                t0 = time.perf_counter()
                r = subprocess.run(cmd, capture_output=True, text=True)
                dt = time.perf_counter() - t0
                if r.returncode != 0:
                    raise SystemExit(f"ember failed: {' '.join(cmd)}\n{r.stderr}")
                part.replace(out)  # only a complete class file ever carries the final name
                meta.write_text(json.dumps({"seconds": dt, "log": r.stderr.strip()}) + "\n")
            m = json.loads(meta.read_text())
            t = load_file(str(out))
            xs.append(t["sample"])
            ls.append(t["class_labels"])
            secs += m["seconds"]
            logs.append(m["log"])
    return torch.cat(xs), torch.cat(ls), secs, "\n".join(logs)


def pytorch_samples(folder: str, steps, guidance, per_class: int, seed: int):
    import common as C
    from diffusers import UNet2DModel
    from diffusers.utils import logging as dlog
    from safetensors import safe_open

    dlog.set_verbosity_error()
    d = ROOT / folder
    with safe_open(str(d / "unet" / "diffusion_pytorch_model.safetensors"), "pt") as f:
        md = f.metadata() or {}
    unet = UNet2DModel.from_pretrained(str(d / "unet")).eval()
    ts = [int(t) for t in md["ember.timesteps"].split(",")] if "ember.timesteps" in md else C.trailing_timesteps(steps)
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(10 * per_class, 1, 32, 32, generator=g)
    labels = torch.arange(10).repeat_interleave(per_class)
    t0 = time.perf_counter()
    x = C.ddim_sample(unet, noise, labels, ts, C.alphas_cumprod(torch.device("cpu")),
                      guidance=None if guidance == 1.0 else guidance, batch=250)
    return x, labels, time.perf_counter() - t0


@torch.no_grad()
def pytorch_long_rows(per_class: int, seed: int, device: str, out: Path, ddpm_steps: int = 1000) -> None:
    """The teacher's long samplers through PyTorch (diffusers' own DDPMScheduler / DDIMScheduler loop, guidance 2,
    two batched halves): DDPM 1000 and DDIM 50. Minutes on a GPU, hours on 2 CPU cores; run where a GPU is."""
    from diffusers import DDIMScheduler, DDPMScheduler, UNet2DModel
    from diffusers.utils import logging as dlog

    dlog.set_verbosity_error()
    dev = torch.device(device)
    folder = ROOT / "models" / "mnist-teacher"
    unet = UNet2DModel.from_pretrained(str(folder / "unet")).to(dev).eval()
    clf = load_classifier(HERE / "classifier.safetensors", dev)
    x_ho, _ = load_mnist(None, "heldout")
    f_ho = features(clf, x_ho)
    labels = torch.arange(10).repeat_interleave(per_class).to(dev)
    null = torch.full_like(labels, 10)
    rows = []
    for name, cls, steps in [("teacher DDPM 1000", DDPMScheduler, ddpm_steps), ("teacher DDIM 50", DDIMScheduler, 50)]:
        sched = cls.from_pretrained(str(folder / "scheduler"))
        sched.set_timesteps(steps)
        g = torch.Generator(device=dev).manual_seed(seed)
        x = torch.randn(10 * per_class, 1, 32, 32, generator=g, device=dev)
        t0 = time.perf_counter()
        for t in sched.timesteps:
            tt = torch.full((2 * x.shape[0],), int(t), device=dev)
            pred = unet(torch.cat([x, x]), tt, class_labels=torch.cat([labels, null])).sample
            c, u = pred.chunk(2)
            x = sched.step(u + GUIDE * (c - u), t, x, generator=g).prev_sample
        x = x.clamp(-1, 1)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        secs = time.perf_counter() - t0
        acc = (predict(clf, x) == labels.cpu()).float().mean().item()
        fd = fid(features(clf, x), f_ho)
        rows.append({"engine": "pytorch", "name": name, "folder": "models/mnist-teacher", "steps": steps,
                     "unet_passes": 2 * steps, "guidance": GUIDE, "accuracy": acc, "fid": fd,
                     "samples": int(x.shape[0]), "seconds": round(secs, 1), "device": str(dev),
                     "torch": torch.__version__})
        print(f"pytorch  {name:26s} {steps:5d} {2 * steps:6d} {acc:7.4f} {fd:8.3f} {secs:8.1f}", flush=True)
    out.write_text(json.dumps(rows, indent=2) + "\n")


def chart(results: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    torch_rows = [r for r in results["rows"] if r["engine"] == "pytorch" and r["name"].startswith("teacher")]
    rows = [r for r in results["rows"] if r["engine"] == "ember"]
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    for label, pick, style in [("student (distilled, 1 pass/step)", lambda r: r["name"].startswith("student"), "o-"),
                               ("teacher DDIM, guidance 2 (2 passes/step)", lambda r: r["name"].startswith("teacher DDIM"), "s-"),
                               ("teacher DPM-Solver++ 2M", lambda r: "DPM-Solver" in r["name"], "^"),
                               ("teacher DDPM", lambda r: "DDPM" in r["name"], "v")]:
        pts = sorted((r["steps"], r["fid"]) for r in rows if pick(r))
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], style, label=label)
    if torch_rows:
        pts = sorted((r["steps"], r["fid"]) for r in torch_rows)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "D", mfc="none", label="teacher through PyTorch (DDIM / DDPM)")
    ax.axhline(results["floor_fid"], color="gray", ls="--", lw=1, label="real digits (floor)")
    ax.set_xscale("log")
    ax.set_xlabel("sampling steps")
    ax.set_ylabel("FID (classifier features, lower is better)")
    ax.set_title("MNIST 32x32: student vs teacher (filled: made by ember)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    print(f"wrote {path}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--per-class", type=int, default=100)
    p.add_argument("--seed", type=int, default=2026)
    p.add_argument("--full", action="store_true", help="also the long teacher runs (DDIM 50, DDPM 1000)")
    p.add_argument("--only", default=None, help="comma-separated row names to run (others kept from results.json)")
    p.add_argument("--no-pytorch", action="store_true")
    p.add_argument("--cache", type=Path, default=ROOT / "target" / "table-cache",
                   help="keep each finished class of every ember row here, so an interrupted run resumes")
    p.add_argument("--chart", action="store_true", help="only draw docs/fid_vs_steps.png from results.json")
    p.add_argument("--ember", type=Path, default=ROOT / "target" / "release" / "ember")
    p.add_argument("--pytorch-long", type=Path, default=None,
                   help="only run the teacher's DDPM 1000 / DDIM 50 through PyTorch (on --device) into this JSON")
    p.add_argument("--merge", type=Path, default=None, help="add the rows of a --pytorch-long JSON to results.json")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args(argv)
    if args.pytorch_long:
        pytorch_long_rows(args.per_class, args.seed, args.device, args.pytorch_long)
        return
    out_json = HERE / "results.json"
    if args.chart:
        chart(json.loads(out_json.read_text()), ROOT / "docs" / "fid_vs_steps.png")
        return
    if not args.ember.exists():
        subprocess.run(["cargo", "build", "--release", "-q", "-p", "ember-cli"], cwd=ROOT, check=True)
    torch.manual_seed(0)
    clf = load_classifier(HERE / "classifier.safetensors")
    x_ho, _ = load_mnist(None, "heldout")
    x_tr, _ = load_mnist(None, "train")
    f_ho = features(clf, x_ho)
    rng = np.random.default_rng(0)
    floor = fid(features(clf, x_tr[rng.choice(len(x_tr), len(x_ho), replace=False)]), f_ho)
    old = json.loads(out_json.read_text()) if out_json.exists() else {"rows": []}
    keep = {(r["engine"], r["name"]): r for r in old["rows"]}
    only = set(args.only.split(",")) if args.only else None

    def score(x, labels):
        x = x.clamp(-1, 1)  # images are [-1, 1]; raw samples overshoot slightly (PNG conversion clamps too)
        acc = (predict(clf, x) == labels.long()).float().mean().item()
        return acc, fid(features(clf, x), f_ho)

    rows = []
    print(f"{'engine':8s} {'configuration':26s} {'steps':>5s} {'passes':>6s} {'acc':>7s} {'FID':>8s} {'sec':>8s}")
    print(f"{'':8s} {'real train split (floor)':26s} {'':>5s} {'':>6s} {'':>7s} {floor:8.3f}")
    for name, blob, sched, steps, guidance, full in EMBER_ROWS:
        n_steps = steps or int(name.split()[1])
        passes = n_steps * (2 if guidance != 1.0 else 1)
        if (full and not args.full) or (only and name not in only):
            if ("ember", name) in keep:
                rows.append(keep[("ember", name)])
            continue
        x, labels, secs, log = ember_samples(args.ember, blob, sched, steps, guidance, args.per_class, args.seed,
                                               args.cache)
        acc, fd = score(x, labels)
        rows.append({"engine": "ember", "name": name, "blob": blob, "scheduler": sched or "blob default (ddim)",
                     "steps": n_steps, "unet_passes": passes, "guidance": guidance, "accuracy": acc, "fid": fd,
                     "samples": int(x.shape[0]), "seconds": round(secs, 1), "log": log})
        print(f"{'ember':8s} {name:26s} {n_steps:5d} {passes:6d} {acc:7.4f} {fd:8.3f} {secs:8.1f}", flush=True)
    if not args.no_pytorch:
        for name, folder, steps, guidance in [("student 4 steps", "models/mnist-student/steps-4", None, 1.0),
                                              ("teacher DDIM 10", "models/mnist-teacher", 10, GUIDE)]:
            if only and name not in only:
                if ("pytorch", name) in keep:
                    rows.append(keep[("pytorch", name)])
                continue
            x, labels, secs = pytorch_samples(folder, steps, guidance, args.per_class, args.seed)
            acc, fd = score(x, labels)
            n_steps = steps or 4
            rows.append({"engine": "pytorch", "name": name, "folder": folder, "steps": n_steps,
                         "unet_passes": n_steps * (2 if guidance != 1.0 else 1), "guidance": guidance,
                         "accuracy": acc, "fid": fd, "samples": int(x.shape[0]), "seconds": round(secs, 1)})
            print(f"{'pytorch':8s} {name:26s} {n_steps:5d} {'':>6s} {acc:7.4f} {fd:8.3f} {secs:8.1f}", flush=True)
    else:
        rows += [r for k, r in keep.items() if k[0] == "pytorch"]
    # Rows measured elsewhere (--pytorch-long on a GPU) are kept, or merged in from --merge.
    extra = json.loads(args.merge.read_text()) if args.merge else []
    names = {(r["engine"], r["name"]) for r in rows}
    for r in extra + [r for k, r in keep.items() if k not in names]:
        if (r["engine"], r["name"]) not in names:
            rows.append(r)
            names.add((r["engine"], r["name"]))
    res = {"generator": "models/eval/table.py", "per_class": args.per_class, "seed": args.seed,
           "floor_fid": floor, "torch": torch.__version__, "rows": rows}
    out_json.write_text(json.dumps(res, indent=2) + "\n")
    md = ["| engine | configuration | steps | U-Net passes / image | class accuracy | FID | seconds for 1000 images (2 cores) |",
          "|---|---|---|---|---|---|---|",
          f"| — | real training digits (floor) | | | | {floor:.2f} | |"]
    for r in rows:
        where = " (H100)" if r.get("device") == "cuda" else ""
        md.append(f"| {r['engine']} | {r['name']} | {r['steps']} | {r['unet_passes']} | {100 * r['accuracy']:.1f} % "
                  f"| {r['fid']:.2f} | {r['seconds']}{where} |")
    (HERE / "results.md").write_text("\n".join(md) + "\n")
    print(f"wrote {out_json} and {HERE / 'results.md'}")


if __name__ == "__main__":
    main()
