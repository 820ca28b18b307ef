"""What an ADM reference batch holds besides ``mu``/``sigma``: its images and its spatial statistics.

ADM's ``evaluator.py`` reference batches (e.g. ``VIRTUAL_imagenet256_labeled.npz``) store

* ``arr_0`` -- the reference images, uint8 (N, H, W, 3): precision/recall (and KID) are computed against their
  pool3 features, as ADM's evaluator does;
* ``mu_s`` / ``sigma_s`` -- statistics of the spatial features of the TF graph's ``mixed_6/conv`` (first 7
  channels, 17 × 17 × 7 = 2023 dimensions, see :data:`rectok_core.models.inception.SPATIAL_LAYER`): the sFID
  reference (Nash et al. 2021), the Fréchet distance of those features.

Statistics files made by rectok or torch-fidelity have neither; both are then unavailable.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from rectok_core.errors import RectokError
from rectok_core.metrics.fid import _as_covariance, _as_mean, _open_stats
from rectok_core.models.inception import SPATIAL_DIM


@dataclass
class ReferenceBatch:
    images: np.ndarray | None       # uint8 (N, H, W, 3), ``arr_0``
    mu_s: np.ndarray | None         # float64 (2023,)
    sigma_s: np.ndarray | None      # float64 (2023, 2023)


def read_reference_batch(path: str | os.PathLike[str], *, images: bool = True) -> ReferenceBatch:
    """The images (when ``images`` and present) and spatial statistics (when present) of a statistics .npz."""
    with _open_stats(path) as data:
        arr = None
        if images and "arr_0" in data.files:
            arr = data["arr_0"]
            if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[-1] != 3:
                raise RectokError(f"{path}: arr_0 must be uint8 (N, H, W, 3) images, got {arr.dtype} {arr.shape}")
        mu_s = sigma_s = None
        if "mu_s" in data.files and "sigma_s" in data.files:
            mu_s = _as_mean(f"{path}: mu_s", data["mu_s"])
            if mu_s.shape[0] != SPATIAL_DIM:
                raise RectokError(f"{path}: mu_s has {mu_s.shape[0]} dimensions, not sFID's {SPATIAL_DIM} "
                                  f"(mixed_6/conv, 7 channels)")
            sigma_s = _as_covariance(f"{path}: sigma_s", data["sigma_s"], SPATIAL_DIM)
    return ReferenceBatch(images=arr, mu_s=mu_s, sigma_s=sigma_s)
