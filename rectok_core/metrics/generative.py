"""Generator metrics beyond FID: KID, precision/recall and Inception Score."""
from __future__ import annotations

import logging

import numpy as np
import torch

from rectok_core.errors import RectokError
from rectok_core.metrics.fid import _as_features
from rectok_core.metrics.inception import default_device

logger = logging.getLogger(__name__)


def _mmd2_unbiased(k_xx: np.ndarray, k_xy: np.ndarray, k_yy: np.ndarray) -> float:
    m = k_xx.shape[0]
    sum_xx = k_xx.sum() - np.trace(k_xx)
    sum_yy = k_yy.sum() - np.trace(k_yy)
    return float((sum_xx + sum_yy) / (m * (m - 1)) - 2.0 * k_xy.sum() / (m * m))


def kid(
    features1: np.ndarray | torch.Tensor,
    features2: np.ndarray | torch.Tensor,
    subsets: int = 100,
    subset_size: int = 1000,
    degree: int = 3,
    coef0: float = 1.0,
    gamma: float | None = None,
    seed: int = 2020,
) -> tuple[float, float]:
    """Kernel Inception Distance (mean, std over subsets), as torch-fidelity: unbiased MMD^2 with the kernel
    ``(gamma <x, y> + coef0)^degree``, ``gamma = 1/d`` by default, ``subsets`` random subsets without replacement.

    ``subset_size`` is reduced to the smaller set size when a set is smaller (logged).
    """
    f1, f2 = _as_features("features1", features1), _as_features("features2", features2)
    if f1.shape[1] != f2.shape[1]:
        raise RectokError(f"feature dimensions differ: {f1.shape[1]} vs {f2.shape[1]}")
    size = min(subset_size, len(f1), len(f2))
    if size < 2:
        raise RectokError("KID needs at least 2 samples per set")
    if size < subset_size:
        logger.info("KID subset size reduced from %d to %d (number of samples)", subset_size, size)
    g = 1.0 / f1.shape[1] if gamma is None else gamma
    rng = np.random.RandomState(seed)

    def kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return (a @ b.T * g + coef0) ** degree

    mmds = np.empty(subsets)
    for s in range(subsets):
        x = f1[rng.choice(len(f1), size, replace=False)].astype(np.float64)
        y = f2[rng.choice(len(f2), size, replace=False)].astype(np.float64)
        mmds[s] = _mmd2_unbiased(kernel(x, x), kernel(x, y), kernel(y, y))
    return float(mmds.mean()), float(mmds.std())


def _knn_radii(x: torch.Tensor, k: int, batch_size: int) -> torch.Tensor:
    """Distance of every row of x to its k-th nearest other row (self, at distance 0, is the 1st)."""
    return torch.cat([torch.cdist(chunk, x).kthvalue(k + 1, dim=1).values for chunk in x.split(batch_size)])


def _covered(queries: torch.Tensor, centers: torch.Tensor, radii: torch.Tensor, batch_size: int) -> float:
    """Fraction of queries inside at least one ball (centers, radii)."""
    inside = [(torch.cdist(chunk, centers) <= radii[None, :]).any(dim=1) for chunk in queries.split(batch_size)]
    return float(torch.cat(inside).float().mean().item())


def precision_recall(
    real_feats: np.ndarray | torch.Tensor,
    fake_feats: np.ndarray | torch.Tensor,
    k: int = 3,
    batch_size: int = 1024,
    device: str | torch.device | None = None,
) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019) with k-NN balls in feature space.

    Precision: fraction of generated samples inside some real sample's k-NN ball; recall: fraction of real
    samples inside some generated sample's ball (torch-fidelity's convention). Distances in float32 with
    ``torch.cdist`` on ``device`` (default: CUDA when available), ``batch_size`` rows at a time.
    """
    real = _as_features("real_feats", real_feats)
    fake = _as_features("fake_feats", fake_feats)
    if real.shape[1] != fake.shape[1]:
        raise RectokError(f"feature dimensions differ: {real.shape[1]} vs {fake.shape[1]}")
    if min(len(real), len(fake)) <= k:
        raise RectokError(f"precision/recall with k={k} needs more than {k} samples per set")
    dev = torch.device(device) if device is not None else default_device()
    r = torch.from_numpy(np.ascontiguousarray(real)).to(dev, torch.float32)
    f = torch.from_numpy(np.ascontiguousarray(fake)).to(dev, torch.float32)
    precision = _covered(f, r, _knn_radii(r, k, batch_size), batch_size)
    recall = _covered(r, f, _knn_radii(f, k, batch_size), batch_size)
    return precision, recall


def inception_score(logits: np.ndarray | torch.Tensor, splits: int = 10, seed: int = 2020) -> tuple[float, float]:
    """Inception Score (mean, std over ``splits``) from (N, 1008) logits, as torch-fidelity (shuffled, float64).

    Use :meth:`InceptionFeatures.forward_with_logits` logits; the fid-helper conversion has none.
    """
    lg = _as_features("logits", logits).astype(np.float64)
    n = lg.shape[0]
    if n < splits:
        raise RectokError(f"Inception Score with {splits} splits needs at least {splits} images, got {n}")
    lg = lg[np.random.RandomState(seed).permutation(n)]
    log_p = lg - lg.max(axis=1, keepdims=True)
    log_p = log_p - np.log(np.exp(log_p).sum(axis=1, keepdims=True))
    p = np.exp(log_p)
    scores = []
    for i in range(splits):
        part_p = p[i * n // splits : (i + 1) * n // splits]
        part_log_p = log_p[i * n // splits : (i + 1) * n // splits]
        with np.errstate(divide="ignore", invalid="ignore"):  # classes with p = 0 everywhere contribute 0
            log_q = np.log(part_p.mean(axis=0, keepdims=True))
            kl = np.where(part_p > 0, part_p * (part_log_p - log_q), 0.0)
        scores.append(float(np.exp(kl.sum(axis=1).mean())))
    return float(np.mean(scores)), float(np.std(scores))

