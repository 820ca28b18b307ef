"""Generative metrics on InceptionV3 features: FID, KID, precision/recall, Inception Score; statistics files.

FID (recipe §11.8) is computed in float64 without a general matrix square root: with rank-revealing
factorizations ``S1 = F1 F1^T`` and ``S2 = F2 F2^T`` (pivoted Cholesky), ``Tr sqrtm(S1 S2)`` is the sum of the
singular values of ``F2^T F1``. This agrees with ``scipy.linalg.sqrtm`` to ~1e-14 on well-conditioned
covariances and stays exact for singular ones (N < 2048 images), where ``sqrtm`` needs the ADM / pytorch-fid
``eps * I`` offset and drifts by ~1e-5. A covariance that is not positive semi-definite beyond rounding (its
square root would be imaginary) or any NaN / inf is a :class:`RectokError`, never a number.

Statistics files are ``.npz`` with ``mu`` (d,) and ``sigma`` (d, d) -- the keys of ADM's reference batches and of
torch-fidelity's ``fid_statistics_file`` -- plus an optional JSON ``meta`` string.
"""
from __future__ import annotations

import json
import logging
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import scipy.linalg.lapack
import torch

from rectok_core.errors import RectokError
from rectok_core.utils.files import atomic_open

logger = logging.getLogger(__name__)


# A covariance with a negative eigenvalue below -PSD_RTOL * (largest variance) is not PSD: its square root has
# an imaginary part above sqrt(PSD_RTOL) = 1e-3 of the scale -- pytorch-fid's tolerance, made scale-free.
PSD_RTOL = 1e-6


SYMMETRY_RTOL = 1e-6


def _as_features(name: str, x: np.ndarray | torch.Tensor) -> np.ndarray:
    """(N, d) finite features as a numpy array in their own dtype (callers pick the precision)."""
    f = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if f.ndim != 2:
        raise RectokError(f"{name} must be (N, d), got shape {f.shape}")
    if not np.isfinite(f).all():
        raise RectokError(f"{name} contains NaN or inf")
    return f


def _as_mean(name: str, mu: np.ndarray) -> np.ndarray:
    m = np.asarray(mu, dtype=np.float64)
    if m.ndim != 1:
        raise RectokError(f"{name} must be a vector, got shape {m.shape}")
    if not np.isfinite(m).all():
        raise RectokError(f"{name} contains NaN or inf")
    return m


def _as_covariance(name: str, sigma: np.ndarray, dim: int) -> np.ndarray:
    s = np.asarray(sigma, dtype=np.float64)
    if s.shape != (dim, dim):
        raise RectokError(f"{name} has shape {s.shape}, expected ({dim}, {dim})")
    if not np.isfinite(s).all():
        raise RectokError(f"{name} contains NaN or inf")
    scale = max(float(np.abs(s).max()), np.finfo(np.float64).tiny)
    if float(np.abs(s - s.T).max()) > SYMMETRY_RTOL * scale:
        raise RectokError(f"{name} is not symmetric: not a covariance matrix")
    return (s + s.T) / 2


def _psd_factor(name: str, sigma: np.ndarray) -> np.ndarray:
    """``F`` (d, r) with ``sigma = F F^T``, ``r`` the numerical rank: pivoted Cholesky (LAPACK ``dpstrf``).

    Pivots below ``d * eps * max(diag)`` count as zero, so rank-deficient covariances (fewer images than
    dimensions) get an exact low-rank factor -- and cost ``O(d^2 r)`` -- instead of sqrt(eps)-sized square
    roots of rounding noise. When the factorization stops early, the remainder ``sigma - F F^T`` must vanish
    up to ``PSD_RTOL`` (its Frobenius norm bounds every negative eigenvalue), else ``sigma`` is not positive
    semi-definite and its square root would be imaginary.
    """
    packed, pivots, rank, info = scipy.linalg.lapack.dpstrf(sigma, lower=1)
    if info < 0:
        raise RectokError(f"LAPACK dpstrf rejected {name} (argument {-info})")
    factor = np.empty((sigma.shape[0], rank))
    factor[pivots - 1] = np.tril(packed)[:, :rank]
    if rank < sigma.shape[0]:
        scale = max(float(np.diag(sigma).max()), 0.0)
        remainder = float(np.linalg.norm(sigma - factor @ factor.T))
        if remainder > PSD_RTOL * scale or (scale == 0.0 and remainder > 0.0):
            raise RectokError(
                f"FID matrix square root has an imaginary component: {name} is not positive semi-definite "
                f"(indefinite part of norm {remainder:.3g}, largest variance {scale:.3g})"
            )
    return factor


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Frechet distance ``||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^1/2)`` between two Gaussians, in float64.

    ``Tr (S1 S2)^1/2`` is the nuclear norm of ``F2^T F1`` for any factors ``S = F F^T`` (singular values of a
    product rather than square roots of eigenvalues of a squared matrix, so no sqrt(eps) noise). Raises
    :class:`RectokError` for mismatched shapes, NaN / inf inputs, non-PSD covariances (imaginary square root)
    and a non-finite result.
    """
    m1, m2 = _as_mean("mu1", mu1), _as_mean("mu2", mu2)
    if m1.shape != m2.shape:
        raise RectokError(
            f"feature dimensions differ: {m1.shape[0]} vs {m2.shape[0]} (statistics of different networks?)"
        )
    s1 = _as_covariance("sigma1", sigma1, m1.shape[0])
    s2 = _as_covariance("sigma2", sigma2, m1.shape[0])
    f1, f2 = _psd_factor("sigma1", s1), _psd_factor("sigma2", s2)
    tr_covmean = float(np.linalg.svd(f2.T @ f1, compute_uv=False).sum()) if f1.size and f2.size else 0.0
    diff = m1 - m2
    fid = float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_covmean)
    if not np.isfinite(fid):
        raise RectokError(f"FID is not finite ({fid})")
    return fid


def feature_stats(features: np.ndarray | torch.Tensor, chunk: int = 8192) -> tuple[np.ndarray, np.ndarray]:
    """Mean (d,) and unbiased covariance (d, d) of (N, d) features in float64 (as ADM / torch-fidelity).

    Accumulated ``chunk`` rows at a time, so 50k x 2048 float32 features need no float64 copy.
    """
    f = _as_features("features", features)
    n = f.shape[0]
    if n < 2:
        raise RectokError(f"need at least 2 feature vectors for a covariance, got {n}")
    mu = f.mean(axis=0, dtype=np.float64)
    scatter = np.zeros((f.shape[1], f.shape[1]))
    for start in range(0, n, chunk):
        centred = f[start : start + chunk].astype(np.float64) - mu
        scatter += centred.T @ centred
    return mu, scatter / (n - 1)


def save_stats(path: str | os.PathLike[str], mu: np.ndarray, sigma: np.ndarray, **meta: Any) -> Path:
    """Write ``mu``/``sigma`` (float64) and JSON-serialisable ``meta`` to ``path`` (an .npz, written atomically).

    The file name is used as given (no ``.npz`` is appended). Returns the path.
    """
    m = _as_mean("mu", mu)
    s = _as_covariance("sigma", sigma, m.shape[0])
    dst = Path(path)
    dst.parent.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {"mu": m, "sigma": s}
    if meta:
        arrays["meta"] = np.array(json.dumps(meta, sort_keys=True))
    with atomic_open(dst, "wb") as f:
        np.savez(f, **arrays)
    return dst


def is_stats_file(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a statistics file :func:`save_stats` wrote (``mu``, ``sigma`` and its ``meta``): the
    only file ``fid-stats --out`` and ``eval --save-stats`` replace without ``--overwrite``."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return isinstance(data, np.lib.npyio.NpzFile) and {"mu", "sigma", "meta"} <= set(data.files)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, AttributeError):
        return False


def _open_stats(path: str | os.PathLike[str]) -> np.lib.npyio.NpzFile:
    p = Path(path)
    if not p.is_file():
        raise RectokError(f"statistics file not found: {p}")
    try:
        data = np.load(p, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise RectokError(f"cannot read statistics file {p}: not an .npz ({type(e).__name__})") from e
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise RectokError(f"{p} holds a single array, not an .npz with 'mu' and 'sigma'")
    return data


def load_stats(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
    """``(mu, sigma)`` float64 from an .npz with ``mu``/``sigma`` keys (rectok, ADM, torch-fidelity files); an
    object (pickled) array is refused, never unpickled."""
    try:
        return _load_stats(path)
    except ValueError as e:
        if "allow_pickle" not in str(e) and "Object arrays" not in str(e):
            raise
        raise RectokError(f"{path} holds pickled object arrays, not numeric 'mu'/'sigma' arrays (refused: "
                          f"unpickling could run code)") from None


def _load_stats(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
    with _open_stats(path) as data:
        if "mu" not in data.files or "sigma" not in data.files:
            found = ", ".join(data.files) or "none"
            raise RectokError(
                f"{path} has no 'mu'/'sigma' arrays (keys: {found}); it is not a statistics file -- compute "
                "statistics from an image folder instead"
            )
        mu = _as_mean(f"{path}: mu", data["mu"])
        sigma = _as_covariance(f"{path}: sigma", data["sigma"], mu.shape[0])
    return mu, sigma


def load_stats_meta(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``meta`` written by :func:`save_stats` (``{}`` for files without it, e.g. ADM's)."""
    with _open_stats(path) as data:
        if "meta" not in data.files:
            return {}
        meta = json.loads(str(data["meta"][()]))
    if not isinstance(meta, dict):
        raise RectokError(f"{path}: 'meta' is not a JSON object")
    return meta

