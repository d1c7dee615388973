"""Frechet distance between two feature sets (FID when the features are a classifier's penultimate layer;
ember uses models/eval/classifier.py's 128-d MNIST features, so the numbers are NOT comparable to Inception FIDs).

    FD = |mu_a - mu_b|^2 + tr(S_a) + tr(S_b) - 2 tr((S_a S_b)^(1/2))

tr((S_a S_b)^(1/2)) is computed with numpy only, in float64, through the symmetric form: with R = S_a^(1/2)
(eigendecomposition of the symmetric PSD S_a), S_a S_b is similar to R S_b R, which is symmetric PSD, so the
trace is the sum of the square roots of R S_b R's eigenvalues (tiny negative round-off eigenvalues are clipped
to 0). No scipy needed, and unlike scipy.linalg.sqrtm it never returns complex round-off.
"""

from __future__ import annotations

import numpy as np


def _as_np(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"features must be [N, D], got shape {x.shape}")
    return x


def stats(feats) -> tuple[np.ndarray, np.ndarray]:
    """(mean [D], covariance [D, D]) in float64 (unbiased covariance, as pytorch-fid / TF FID)."""
    f = _as_np(feats)
    if f.shape[0] < 2:
        raise ValueError("need at least 2 feature vectors")
    return f.mean(axis=0), np.cov(f, rowvar=False)


def _sqrt_psd(s: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((s + s.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(mu1, s1, mu2, s2) -> float:
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    s1, s2 = np.asarray(s1, np.float64), np.asarray(s2, np.float64)
    r = _sqrt_psd(s1)
    m = r @ s2 @ r
    w = np.linalg.eigvalsh((m + m.T) / 2)
    tr_sqrt = float(np.sqrt(np.clip(w, 0, None)).sum())
    d = mu1 - mu2
    return float(d @ d + np.trace(s1) + np.trace(s2) - 2.0 * tr_sqrt)


def fid(feats_a, feats_b) -> float:
    """Frechet distance between two sets of feature vectors ([N, D] numpy arrays or torch tensors)."""
    return frechet_distance(*stats(feats_a), *stats(feats_b))


if __name__ == "__main__":
    rng = np.random.default_rng(0)
    a = rng.normal(size=(5000, 16))
    b = rng.normal(size=(5000, 16)) * 1.5 + 0.5
    # exact FD of N(0, I) vs N(0.5, 2.25 I) in 16-d: 16*0.25 + 16*(1 + 2.25 - 2*1.5) = 8
    print("same dist:", round(fid(a, rng.normal(size=(5000, 16))), 4), " expected ~0")
    print("shifted/scaled:", round(fid(a, b), 3), " expected ~8")
