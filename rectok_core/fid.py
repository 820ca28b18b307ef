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

import contextlib
import hashlib
import json
import logging
import os
import tempfile
import zipfile
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.linalg.lapack
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from rectok_core.errors import DataError, RectokError
from rectok_core.inception import InceptionFeatures, default_device

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
# A covariance with a negative eigenvalue below -PSD_RTOL * (largest variance) is not PSD: its square root has
# an imaginary part above sqrt(PSD_RTOL) = 1e-3 of the scale -- pytorch-fid's tolerance, made scale-free.
PSD_RTOL = 1e-6
SYMMETRY_RTOL = 1e-6


# --------------------------------------------------------------------------------------------------------------
# Frechet distance


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


# --------------------------------------------------------------------------------------------------------------
# Statistics files


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file (for metric manifests: which reference statistics were used)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


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
    fd, tmp = tempfile.mkstemp(prefix=dst.name + ".", suffix=".tmp", dir=dst.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.chmod(tmp, 0o644)
        os.replace(tmp, dst)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return dst


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
    """``(mu, sigma)`` float64 from an .npz with ``mu``/``sigma`` keys (rectok, ADM, torch-fidelity files)."""
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


# --------------------------------------------------------------------------------------------------------------
# Reference statistics from an image folder


def list_images(folder: str | os.PathLike[str]) -> list[Path]:
    """PNG / JPEG files under ``folder`` (recursive, any case of extension), sorted by path."""
    root = Path(folder)
    if not root.is_dir():
        raise DataError(f"image folder not found: {root}")
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())


def first_per_folder(files: list[Path], n: int) -> list[Path]:
    """The first ``n`` of ``files`` (sorted) in each parent folder, in the original order."""
    if n < 1:
        raise DataError(f"images per class must be positive, got {n}")
    seen: dict[Path, int] = {}
    kept = []
    for f in files:
        seen[f.parent] = seen.get(f.parent, 0) + 1
        if seen[f.parent] <= n:
            kept.append(f)
    return kept


def center_crop_adm(image: Image.Image, image_size: int) -> np.ndarray:
    """ADM / guided-diffusion center crop: BOX-halve while >= 2x, BICUBIC-resize the short side, crop (H, W, 3)."""
    while min(*image.size) >= 2 * image_size:
        image = image.resize(tuple(x // 2 for x in image.size), resample=Image.BOX)
    scale = image_size / min(*image.size)
    image = image.resize(tuple(round(x * scale) for x in image.size), resample=Image.BICUBIC)
    arr = np.asarray(image)
    top = (arr.shape[0] - image_size) // 2
    left = (arr.shape[1] - image_size) // 2
    return arr[top : top + image_size, left : left + image_size]


class ImageFiles(Dataset):
    """(index, (3,H,W) uint8 tensor or None when the file cannot be decoded, error text)."""

    def __init__(self, files: list[Path], image_size: int | None):
        self.files = files
        self.image_size = image_size

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor | None, str]:
        try:
            with Image.open(self.files[i]) as im:
                rgb = im.convert("RGB")
            arr = center_crop_adm(rgb, self.image_size) if self.image_size else np.asarray(rgb)
        except (OSError, ValueError, Image.DecompressionBombError) as e:
            return i, None, f"{type(e).__name__}: {e}"
        return i, torch.from_numpy(np.array(arr)).permute(2, 0, 1), ""  # copy: PIL arrays are read-only


def _collate(items: list[tuple[int, torch.Tensor | None, str]]) -> list[tuple[int, torch.Tensor | None, str]]:
    return items


@dataclass(frozen=True)
class FolderStats:
    """Reference statistics of an image folder."""

    mu: np.ndarray
    sigma: np.ndarray
    num_images: int  # images that went into the statistics
    skipped: tuple[str, ...]  # unreadable files (paths), left out


def folder_stats(
    folder: str | os.PathLike[str],
    model: InceptionFeatures,
    batch_size: int = 50,
    device: str | torch.device | None = None,
    n: int | None = None,
    image_size: int | None = None,
    *,
    num_workers: int = 0,
    progress: bool = True,
    per_class: int | None = None,
) -> FolderStats:
    """Inception statistics of the PNG / JPEG images under ``folder`` (recursive, sorted, first ``n``; with
    ``per_class``, first the first ``per_class`` images of each sub-folder — a class-balanced subset of an
    ImageFolder tree).

    ``image_size``: ADM center crop to ``image_size`` (e.g. 256 for ImageNet reference statistics); without it
    images are used at their own size (torch-fidelity resizes each to 299). Unreadable files are logged with
    their path, skipped and listed in :attr:`FolderStats.skipped`.
    """
    files = list_images(folder)
    if per_class is not None:
        files = first_per_folder(files, per_class)
    if n is not None:
        files = files[:n]
    if not files:
        raise DataError(f"no PNG/JPEG images under {folder}")
    device = torch.device(device) if device is not None else default_device()
    model.to(device).eval()
    loader = DataLoader(
        ImageFiles(files, image_size), batch_size=batch_size, num_workers=num_workers, collate_fn=_collate
    )
    feats: list[np.ndarray] = []
    skipped: list[str] = []
    with tqdm(total=len(files), disable=not progress, desc="Inception", unit="img") as bar:
        for items in loader:
            by_shape: dict[tuple[int, ...], list[torch.Tensor]] = defaultdict(list)
            for i, image, error in items:
                if image is None:
                    logger.warning("skipping unreadable image %s (%s)", files[i], error)
                    skipped.append(str(files[i]))
                else:
                    by_shape[tuple(image.shape)].append(image)
            for same_size in by_shape.values():
                feats.append(model(torch.stack(same_size).to(device)).cpu().numpy())
            bar.update(len(items))
    if skipped:
        logger.warning("skipped %d unreadable of %d images under %s", len(skipped), len(files), folder)
    num_images = sum(len(f) for f in feats)
    if num_images < 2:
        raise DataError(f"only {num_images} readable images under {folder}; need at least 2")
    mu, sigma = feature_stats(np.concatenate(feats))
    return FolderStats(mu=mu, sigma=sigma, num_images=num_images, skipped=tuple(skipped))


# --------------------------------------------------------------------------------------------------------------
# KID, precision / recall, Inception Score


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
