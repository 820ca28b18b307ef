"""Generator metrics beyond FID -- KID, precision/recall and Inception Score -- computed by torch-fidelity's own
functions on rectok's features (the FID stays rectok's float64 :func:`rectok_core.metrics.fid.frechet_distance`).

torch-fidelity's convention is ``input1`` = generated, ``input2`` = real; rectok's functions take keyword-only
``real=`` / ``fake=`` so the order cannot be mixed up, and pass them to torch-fidelity in its order.
"""
from __future__ import annotations

import logging

import numpy as np
import torch
from torch_fidelity.metric_isc import KEY_METRIC_ISC_MEAN, KEY_METRIC_ISC_STD, isc_features_to_metric
from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD, kid_features_to_metric
from torch_fidelity.metric_prc import KEY_METRIC_PRECISION, KEY_METRIC_RECALL, prc_features_to_metric

from rectok_core.errors import RectokError
from rectok_core.metrics.fid import _as_features
from rectok_core.utils.distributed import resolve_device

logger = logging.getLogger(__name__)


def _pair(real: np.ndarray | torch.Tensor, fake: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    r, f = _as_features("real", real), _as_features("fake", fake)
    if r.shape[1] != f.shape[1]:
        raise RectokError(f"feature dimensions differ: real {r.shape[1]} vs fake {f.shape[1]}")
    return r, f


def kid(*, real: np.ndarray | torch.Tensor, fake: np.ndarray | torch.Tensor, subsets: int = 100,
        subset_size: int = 1000, degree: int = 3, coef0: float = 1.0, gamma: float | None = None,
        seed: int = 2020) -> tuple[float, float]:
    """Kernel Inception Distance (mean, std over ``subsets``) by torch-fidelity's ``kid_features_to_metric``:
    unbiased MMD² with the kernel ``(gamma <x, y> + coef0)^degree`` (``gamma = 1/d`` by default) over random
    subsets drawn without replacement, generated first; computed in float64.

    ``subset_size`` is reduced to the smaller set size when a set is smaller (logged).
    """
    r, f = _pair(real, fake)
    size = min(subset_size, len(r), len(f))
    if size < 2:
        raise RectokError("KID needs at least 2 samples per set")
    if size < subset_size:
        logger.info("KID subset size reduced from %d to %d (number of samples)", subset_size, size)
    out = kid_features_to_metric(torch.from_numpy(f.astype(np.float64)), torch.from_numpy(r.astype(np.float64)),
                                 kid_subsets=subsets, kid_subset_size=size, kid_kernel="poly",
                                 kid_kernel_poly_degree=degree, kid_kernel_poly_gamma=gamma,
                                 kid_kernel_poly_coef0=coef0, rng_seed=seed, verbose=False)
    return float(out[KEY_METRIC_KID_MEAN]), float(out[KEY_METRIC_KID_STD])


def precision_recall(*, real: np.ndarray | torch.Tensor, fake: np.ndarray | torch.Tensor, k: int = 3,
                     batch_size: int = 1024, device: str | torch.device | None = None) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019) by torch-fidelity's ``prc_features_to_metric``:
    precision = fraction of ``fake`` inside some real sample's k-NN ball, recall = fraction of ``real`` inside
    some generated sample's ball. Distances in float32 with ``torch.cdist`` on ``device`` (default: CUDA when
    available), ``batch_size`` rows at a time (torch-fidelity's ``save_cpu_ram`` path: no N×N matrix)."""
    r, f = _pair(real, fake)
    if min(len(r), len(f)) <= k:
        raise RectokError(f"precision/recall with k={k} needs more than {k} samples per set")
    dev = torch.device(device) if device is not None else resolve_device("auto")
    out = prc_features_to_metric(torch.from_numpy(np.ascontiguousarray(f)).to(dev, torch.float32),
                                 torch.from_numpy(np.ascontiguousarray(r)).to(dev, torch.float32),
                                 prc_neighborhood=k, prc_batch_size=batch_size, save_cpu_ram=True, verbose=False)
    return float(out[KEY_METRIC_PRECISION]), float(out[KEY_METRIC_RECALL])


def inception_score(logits: np.ndarray | torch.Tensor, splits: int = 10, seed: int = 2020) -> tuple[float, float]:
    """Inception Score (mean, std over ``splits``) from (N, 1008) logits by torch-fidelity's
    ``isc_features_to_metric`` (shuffled with ``seed``, float64).

    Use :meth:`InceptionFeatures.forward_with_logits` logits; the fid-helper conversion has none.
    """
    lg = _as_features("logits", logits).astype(np.float64)
    if lg.shape[0] < splits:
        raise RectokError(f"Inception Score with {splits} splits needs at least {splits} images, got {lg.shape[0]}")
    out = isc_features_to_metric(torch.from_numpy(lg), splits=splits, shuffle=True, rng_seed=seed)
    return float(out[KEY_METRIC_ISC_MEAN]), float(out[KEY_METRIC_ISC_STD])
