"""Shared by the golden-data scripts: safetensors files with reproducible bytes, and random-weight U-Nets whose
every parameter matters."""
import json
import struct

import torch

from safetensors.torch import save as st_save


def save_sorted(tensors, path, metadata):
    """``safetensors.torch.save`` with a reproducible header: the library writes ``__metadata__`` in hash-map order
    (different on every run), so re-emit the header with sorted metadata keys and tensors in data order."""
    raw = st_save({k: v.contiguous() for k, v in tensors.items()}, metadata=metadata)
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    meta = header.pop("__metadata__")
    ordered = {"__metadata__": dict(sorted(meta.items()))}
    ordered.update(sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]))
    h = json.dumps(ordered, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + raw[8 + n:])


def perturb(model, gen):
    """Make every parameter matter: norm scales != 1, norm shifts and biases != 0, class tables random. Conv / linear
    weights keep diffusers' (random, non-zero) default init."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=gen))
            elif "norm" in name and name.endswith("bias"):
                p.copy_(0.2 * torch.randn(p.shape, generator=gen))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
            elif name == "class_embedding.weight":
                p.copy_(torch.randn(p.shape, generator=gen))
