#!/usr/bin/env python3
"""ember vs PyTorch vs ONNX Runtime: one U-Net forward pass, batch 1, one thread each.

For every architecture in benches/configs/ this script

1. builds the diffusers ``UNet2DModel`` from the config JSON with seeded random weights and saves it
   (``save_pretrained(..., safe_serialization=True)``) to a temporary folder;
2. converts that folder with ``quantize-tool convert`` and reads ``quantize-tool inspect`` (arena bytes and the
   liveness lower bound);
3. checks numerically, on one seeded input, that ``ember forward`` matches PyTorch (max |ember - torch| / max |torch|)
   so that the timings below compare the same network;
4. times ``ember bench --json`` on that blob and on a copy with the convolution weights packed offline for the
   AVX-512 tier (``quantize-tool pack --family x86_64-avx512``; its 3x3 layers then run as Winograd F(2x2, 3x3), so
   its output is checked against PyTorch too), PyTorch (``torch.set_num_threads(1)``, ``no_grad``) and ONNX Runtime (opset 17,
   one intra-op and one inter-op thread, all graph optimizations), with the same warm-up and iteration counts, and
   reports medians. Every ember run gets ``--no-prepack``, so the unpacked columns time the canonical weights; without
   it the host runner packs them for this CPU at load, and runs as fast as the packed columns.

Usage (from the repository root, with the virtual environment of benches/requirements.txt):

    python benches/compare.py --iters 10 --json-out bench.json
    python benches/compare.py --models mnist32 --iters 50

The ember binaries are taken from ``$CARGO_TARGET_DIR/release`` (default ``target/release``) and built with
``cargo build --release -p quantize-tool -p ember-cli`` when missing.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

# One thread everywhere, before numpy / torch / onnxruntime load their thread pools.
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
CONFIGS = REPO / "benches" / "configs"
WARMUP = 2  # `ember bench` always runs 2 warm-up passes; torch and ORT get the same.
ROUNDS = 5  # timings are taken in this many interleaved rounds (see `interleaved`)
TIMESTEP = 500.0
INT8 = True  # --no-int8 turns the int8 rows off


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------------- ember binaries


def target_dir() -> Path:
    env = os.environ.get("CARGO_TARGET_DIR")
    if env:
        p = Path(env)
        return p if p.is_absolute() else REPO / p
    return REPO / "target"


def ember_binaries(build: bool) -> tuple[Path, Path]:
    rel = target_dir() / "release"
    qt, ember = rel / "quantize-tool", rel / "ember"
    if build or not (qt.is_file() and ember.is_file()):
        log(f"building ember binaries into {rel} ...")
        subprocess.run(
            ["cargo", "build", "--release", "-p", "quantize-tool", "-p", "ember-cli"], cwd=REPO, check=True
        )
    return qt, ember


def run(cmd: list[str | Path]) -> str:
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed ({r.returncode}):\n{r.stdout}{r.stderr}")
    return r.stdout


def inspect_blob(qt: Path, blob: Path) -> dict:
    text = run([qt, "inspect", blob])
    m = re.search(r"arena bytes\s+(\d+) \(liveness lower bound (\d+)", text)
    p = re.search(r"parameters\s+(\d+)", text)
    macs = re.search(r"MACs / forward\s+(\d+)", text)
    if not (m and p and macs):
        raise RuntimeError(f"could not read `quantize-tool inspect` output:\n{text}")
    return {
        "arena_bytes": int(m.group(1)),
        "liveness_lower_bound": int(m.group(2)),
        "params": int(p.group(1)),
        "macs": int(macs.group(1)),
        "blob_bytes": blob.stat().st_size,
    }


# ------------------------------------------------------------------------------------------------- the torch model


def load_config(name: str) -> dict:
    path = CONFIGS / f"{name}.json"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in CONFIGS.glob("*.json")))
        raise SystemExit(f"unknown model `{name}` (no {path}); known: {known}")
    return json.loads(path.read_text())


def build_unet(cfg: dict, seed: int):
    """UNet2DModel from the config, every parameter re-drawn from a seeded generator.

    Uniform in +-1/sqrt(fan_in) like PyTorch's default init, and norm scales 1 + 0.1 u, norm shifts random too, so
    that no layer is an identity and the parity check exercises every tensor.
    """
    from diffusers import UNet2DModel

    model = UNet2DModel.from_config(cfg)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            u = torch.rand(p.shape, generator=g, dtype=torch.float32) * 2 - 1
            if "norm" in name and name.endswith(".weight"):
                p.copy_(1 + 0.1 * u)
            else:
                fan_in = max(1, math.prod(p.shape[1:])) if p.dim() > 1 else max(1, p.shape[0])
                p.copy_(u / math.sqrt(fan_in))
    return model.eval()


class Wrapper(torch.nn.Module):
    """(sample, timestep) -> sample, the signature exported to ONNX."""

    def __init__(self, unet):
        super().__init__()
        self.unet = unet

    def forward(self, sample, timestep):
        return self.unet(sample, timestep, return_dict=False)[0]


def time_fn(fn, iters: int) -> dict:
    for _ in range(WARMUP):
        fn()
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return {"median_ms": statistics.median(times), "min_ms": min(times), "iters": iters}


def interleaved(timers: dict, iters: int, rounds: int) -> dict:
    """Time every runtime in `rounds` alternating rounds of `iters / rounds` passes each (every round with its own
    warm-up), so a slow spell of a shared machine hits all of them instead of one. Per runtime: the median of the
    round medians, the minimum over all passes, and the round medians."""
    per = max(1, iters // rounds)
    got = {k: [] for k in timers}
    for _ in range(rounds):
        for k, f in timers.items():
            got[k].append(f(per))
    out = {}
    for k, rs in got.items():
        out[k] = {**rs[0], "median_ms": statistics.median(r["median_ms"] for r in rs),
                  "min_ms": min(r["min_ms"] for r in rs), "iters": per * rounds,
                  "round_medians_ms": [round(r["median_ms"], 4) for r in rs]}
    return out


def ember_timer(ember: Path, blob: Path):
    # --no-prepack: time the blob exactly as it is (the host runner would otherwise pack a canonical blob's weights
    # for this CPU at load, which makes the "ember" columns the same as the "packed" ones).
    return lambda n: json.loads(run([ember, "bench", "--model", blob, "--iters", str(n), "--json", "--no-prepack"]))


# ----------------------------------------------------------------------------------------------------- one model


def compare(name: str, qt: Path, ember: Path, iters: int, seed: int, work: Path) -> dict:
    import onnxruntime as ort
    from safetensors.numpy import load_file, save_file

    cfg = load_config(name)
    d = work / name
    d.mkdir(parents=True, exist_ok=True)
    log(f"[{name}] building diffusers UNet2DModel (seed {seed}) ...")
    unet = build_unet(cfg, seed)
    unet.save_pretrained(d / "unet", safe_serialization=True)

    blob = d / f"{name}.ember"
    log(f"[{name}] quantize-tool convert ...")
    run([qt, "convert", d / "unet", "-o", blob])
    info = inspect_blob(qt, blob)

    # One seeded input, shared by the parity checks and the torch / ORT timings.
    c, s = cfg["in_channels"], cfg["sample_size"]
    rng = np.random.default_rng(seed + 1)
    sample = rng.standard_normal((1, c, s, s), dtype=np.float32)
    timestep = np.array([TIMESTEP], dtype=np.float32)
    x, t = torch.from_numpy(sample), torch.from_numpy(timestep)

    with torch.no_grad():
        ref = unet(x, t, return_dict=False)[0].numpy()
    save_file({"sample": sample, "timestep": timestep}, str(d / "inputs.safetensors"))
    run([ember, "forward", "--model", blob, "--inputs", d / "inputs.safetensors", "-o", d / "out.safetensors",
         "--no-prepack"])
    got = load_file(str(d / "out.safetensors"))["sample"]
    scale = float(np.abs(ref).max())
    ember_err = float(np.abs(got - ref).max()) / scale
    log(f"[{name}] ember vs torch: max abs err / max |torch| = {ember_err:.2e}")

    log(f"[{name}] exporting ONNX (opset 17) ...")
    onnx_path = d / f"{name}.onnx"
    with warnings.catch_warnings():  # TracerWarnings about diffusers' shape asserts
        warnings.simplefilter("ignore")
        torch.onnx.export(
            Wrapper(unet),
            (x, t),
            str(onnx_path),
            input_names=["sample", "timestep"],
            output_names=["out"],
            opset_version=17,
            dynamo=False,
        )
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
    feeds = {"sample": sample, "timestep": timestep}
    ort_out = sess.run(None, feeds)[0]
    ort_err = float(np.abs(ort_out - ref).max()) / scale
    log(f"[{name}] ORT vs torch:   max abs err / max |torch| = {ort_err:.2e}")

    # The same blob with the convolution weights packed offline for the AVX-512 tier (PACKED section). Its 3x3 layers
    # run as Winograd F(2x2, 3x3) there, so its output is checked against torch too.
    blobp = d / f"{name}-packed.ember"
    run([qt, "pack", blob, "-o", blobp, "--family", "x86_64-avx512"])
    run([ember, "forward", "--model", blobp, "--inputs", d / "inputs.safetensors", "-o", d / "outp.safetensors"])
    gotp = load_file(str(d / "outp.safetensors"))["sample"]
    ember_packed_err = float(np.abs(gotp - ref).max()) / scale
    log(f"[{name}] ember (packed) vs torch: max abs err / max |torch| = {ember_packed_err:.2e}")
    log(f"[{name}] timing ember, ember (packed), torch, ORT: {ROUNDS} interleaved rounds, {iters} passes each ...")
    with torch.no_grad():
        T = interleaved({
            "ember": ember_timer(ember, blob),
            "ember_packed": ember_timer(ember, blobp),
            "torch": lambda n: time_fn(lambda: unet(x, t, return_dict=False), n),
            "ort": lambda n: time_fn(lambda: sess.run(None, feeds), n),
        }, iters, ROUNDS)
    eb, ebp, tt, ot = T["ember"], T["ember_packed"], T["torch"], T["ort"]
    for k, v in T.items():
        log(f"[{name}] {k} median {v['median_ms']:.2f} ms (rounds {v['round_medians_ms']}), min {v['min_ms']:.2f}")

    int8 = compare_int8(name, qt, ember, iters, seed, d, onnx_path, feeds, ref, scale) if INT8 else {}

    return {
        **int8,
        "model": name,
        "config": cfg,
        **info,
        "ember": {"median_ms": eb["median_ms"], "min_ms": eb["min_ms"], "iters": eb["iters"], "kernels": eb["kernels"],
                  "round_medians_ms": eb["round_medians_ms"]},
        "ember_packed": {"median_ms": ebp["median_ms"], "min_ms": ebp["min_ms"], "blob_bytes": blobp.stat().st_size,
                         "round_medians_ms": ebp["round_medians_ms"]},
        "ember_packed_over_ort": ebp["median_ms"] / ot["median_ms"],
        "torch": tt,
        "ort": ot,
        "ember_over_torch": eb["median_ms"] / tt["median_ms"],
        "ember_over_ort": eb["median_ms"] / ot["median_ms"],
        "ember_gmacs_per_s": info["macs"] / (eb["median_ms"] * 1e-3) / 1e9,
        "ember_rel_err_vs_torch": ember_err,
        "ember_packed_rel_err_vs_torch": ember_packed_err,
        "ort_rel_err_vs_torch": ort_err,
    }


class _Reader:
    """Calibration feeds for ONNX Runtime's static quantization: seeded N(0, 1) samples at spread timesteps."""

    def __init__(self, shape, seed: int, n: int = 8):
        rng = np.random.default_rng(seed + 7)
        self.feeds = iter(
            [
                {
                    "sample": rng.standard_normal(shape, dtype=np.float32),
                    "timestep": np.array([t], dtype=np.float32),
                }
                for t in np.linspace(999, 0, n)
            ]
        )

    def get_next(self):
        return next(self.feeds, None)


def compare_int8(name, qt, ember, iters, seed, d, onnx_path, feeds, ref, scale) -> dict:
    """ember int8 (calibrated on a short DDIM run of the same random model) vs ORT static int8 (QDQ, per-channel
    weights, calibrated on seeded inputs). Accuracy is reported against the float torch output."""
    import onnxruntime as ort
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from safetensors.numpy import load_file

    (d / "unet" / "scheduler_config.json").write_text(
        json.dumps({"_class_name": "DDIMScheduler", "num_train_timesteps": 1000})
    )
    blob8 = d / f"{name}-int8.ember"
    log(f"[{name}] quantize-tool convert --dtype int8 (calibration: 4 samples, DDIM 4 steps) ...")
    run([qt, "convert", d / "unet", "--dtype", "int8", "--calibrate", "4", "--calib-sampler", "ddim",
         "--calib-steps", "4", "--eval-samples", "1", "--target-psnr", "0", "-o", blob8])
    info8 = inspect_blob(qt, blob8)
    run([ember, "forward", "--model", blob8, "--inputs", d / "inputs.safetensors", "-o", d / "out8.safetensors",
         "--no-prepack"])
    e8_err = float(np.abs(load_file(str(d / "out8.safetensors"))["sample"] - ref).max()) / scale
    blob8p = d / f"{name}-int8-packed.ember"
    run([qt, "pack", blob8, "-o", blob8p, "--family", "x86_64-avx512"])
    info8p = inspect_blob(qt, blob8p)
    log(f"[{name}] ORT static int8 (QDQ, per-channel) ...")
    q_path = d / f"{name}-int8.onnx"
    quantize_static(str(onnx_path), str(q_path), _Reader(feeds["sample"].shape, seed),
                    quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess8 = ort.InferenceSession(str(q_path), so, providers=["CPUExecutionProvider"])
    o8_err = float(np.abs(sess8.run(None, feeds)[0] - ref).max()) / scale
    log(f"[{name}] timing ember int8, ember int8 (packed), ORT int8: {ROUNDS} interleaved rounds ...")
    T = interleaved({
        "ember_int8": ember_timer(ember, blob8),
        "ember_int8_packed": ember_timer(ember, blob8p),
        "ort_int8": lambda n: time_fn(lambda: sess8.run(None, feeds), n),
    }, iters, ROUNDS)
    eb8, eb8p, ot8 = T["ember_int8"], T["ember_int8_packed"], T["ort_int8"]
    for k, v in T.items():
        log(f"[{name}] {k} median {v['median_ms']:.2f} ms (rounds {v['round_medians_ms']}), min {v['min_ms']:.2f}")
    log(f"[{name}] int8 err vs torch: ember {e8_err:.2e}, ORT {o8_err:.2e}")
    return {
        "ember_int8": {"median_ms": eb8["median_ms"], "min_ms": eb8["min_ms"], "kernels": eb8["kernels"],
                       "round_medians_ms": eb8["round_medians_ms"],
                       "blob_bytes": info8["blob_bytes"], "arena_bytes": info8["arena_bytes"],
                       "rel_err_vs_torch": e8_err},
        "ember_int8_packed": {"median_ms": eb8p["median_ms"], "min_ms": eb8p["min_ms"], "kernels": eb8p["kernels"],
                              "blob_bytes": info8p["blob_bytes"], "round_medians_ms": eb8p["round_medians_ms"]},
        "ort_int8": {**ot8, "rel_err_vs_torch": o8_err},
        "ember_int8_over_ort_int8": eb8["median_ms"] / ot8["median_ms"],
        "ember_int8_packed_over_ort_int8": eb8p["median_ms"] / ot8["median_ms"],
    }


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def table_int8(rows: list[dict]) -> str:
    head = ("| model | ember int8 ms (packed weights) | ember int8 ms (per-call packing) | ORT int8 ms | ember/ORT "
            "(packed) | ember/ORT (per call) | ember int8 err | ORT int8 err | ember int8 arena | blob | packed blob |")
    lines = [head, "|" + "---|" * head.count(" | ") + "---|"]
    for r in rows:
        if "ember_int8" not in r:
            continue
        e, p, o = r["ember_int8"], r["ember_int8_packed"], r["ort_int8"]
        lines.append(
            f"| {r['model']} | {p['median_ms']:.2f} | {e['median_ms']:.2f} | {o['median_ms']:.2f} | "
            f"{r['ember_int8_packed_over_ort_int8']:.2f}x | {r['ember_int8_over_ort_int8']:.2f}x | "
            f"{e['rel_err_vs_torch']:.1e} | {o['rel_err_vs_torch']:.1e} | {e['arena_bytes']:,} | {e['blob_bytes']:,} | "
            f"{p['blob_bytes']:,} |"
        )
    return "\n".join(lines)


def table(rows: list[dict]) -> str:
    head = (
        "| model | ember ms (packed weights) | ember ms (per-call packing) | torch ms | ORT ms | ember/torch | "
        "ember/ORT (packed) | ember/ORT (per call) | ember GMAC/s | "
        "arena bytes | liveness lower bound | arena/bound | ember rel err | packed rel err |"
    )
    lines = [head, "|" + "---|" * head.count(" | ") + "---|"]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['ember_packed']['median_ms']:.2f} | {r['ember']['median_ms']:.2f} | "
            f"{r['torch']['median_ms']:.2f} | "
            f"{r['ort']['median_ms']:.2f} | {r['ember_over_torch']:.2f}x | {r['ember_packed_over_ort']:.2f}x | "
            f"{r['ember_over_ort']:.2f}x | "
            f"{r['ember_gmacs_per_s']:.2f} | {r['arena_bytes']:,} | {r['liveness_lower_bound']:,} | "
            f"{r['arena_bytes'] / max(1, r['liveness_lower_bound']):.3f} | {r['ember_rel_err_vs_torch']:.1e} | "
            f"{r['ember_packed_rel_err_vs_torch']:.1e} |"
        )
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--iters", type=int, default=10, help="timed iterations per runtime (after 2 warm-up passes)")
    ap.add_argument(
        "--models",
        default="mnist-student,mnist32,ddpm-cifar10-32",
        help="comma-separated config names from benches/configs/ (default: %(default)s)",
    )
    ap.add_argument("--json-out", type=Path, help="write every measurement and the environment as JSON here")
    ap.add_argument("--seed", type=int, default=0, help="weight and input seed")
    ap.add_argument("--build", action="store_true", help="rebuild the ember binaries even when present")
    ap.add_argument("--keep", type=Path, help="keep the checkpoints, blobs and ONNX files in this folder")
    ap.add_argument("--no-int8", action="store_true", help="skip the int8 rows (ember --dtype int8, ORT static QDQ)")
    ap.add_argument(
        "--max-rel-err", type=float, default=1e-3, help="fail when ember's output differs from torch's by more"
    )
    args = ap.parse_args()

    global INT8
    INT8 = not args.no_int8
    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)
    qt, ember = ember_binaries(args.build)
    names = [m.strip() for m in args.models.split(",") if m.strip()]

    work = args.keep or Path(tempfile.mkdtemp(prefix="ember-compare-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        rows = [compare(n, qt, ember, args.iters, args.seed, work) for n in names]
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)

    import diffusers
    import onnxruntime

    env = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpu": cpu_name(),
        "threads": 1,
        "warmup": WARMUP,
        "iters": args.iters,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "onnxruntime": onnxruntime.__version__,
        "numpy": np.__version__,
    }
    print(
        f"# {env['date']}  {env['cpu']}  1 thread  {WARMUP} warm-up + {args.iters} timed, medians  "
        f"(torch {env['torch']}, onnxruntime {env['onnxruntime']}, ember {rows[0]['ember']['kernels']} kernels)"
    )
    print(table(rows))
    if INT8:
        print()
        print(table_int8(rows))
    if args.json_out:
        args.json_out.write_text(json.dumps({"env": env, "results": rows}, indent=2) + "\n")
        log(f"wrote {args.json_out}")
    bad = [r["model"] for r in rows
           if not max(r["ember_rel_err_vs_torch"], r["ember_packed_rel_err_vs_torch"]) <= args.max_rel_err]
    if bad:
        log(f"error: ember's output differs from torch's by more than {args.max_rel_err:g} for {', '.join(bad)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
