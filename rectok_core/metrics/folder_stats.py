"""Image-folder listing and Inception statistics of a folder (ADM crop and decoding: data.transforms)."""
from __future__ import annotations

import logging
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from rectok_core.data.files import IMAGE_EXTENSIONS  # noqa: F401  (re-exported)
from rectok_core.data.files import list_images as _image_paths
from rectok_core.data.transforms import load_rgb
from rectok_core.errors import DataError
from rectok_core.metrics.fid import feature_stats
from rectok_core.models.inception import InceptionFeatures
from rectok_core.utils.distributed import resolve_device

logger = logging.getLogger(__name__)


def list_images(folder: str | os.PathLike[str]) -> list[Path]:
    """Image files under ``folder`` (any suffix of ``IMAGE_EXTENSIONS``, recursive, hidden ones skipped, each real
    file once), sorted by path: the datasets' lister, :func:`rectok_core.data.files.list_images`."""
    return [Path(p) for p in _image_paths(folder)]


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


class ImageFiles(Dataset):
    """(index, (3,H,W) uint8 tensor or None when the file cannot be decoded, error text)."""

    def __init__(self, files: list[Path], image_size: int | None):
        self.files = files
        self.image_size = image_size

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor | None, str]:
        try:
            arr = np.asarray(load_rgb(self.files[i], self.image_size))  # ADM center crop when image_size
        except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as e:
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
    """Inception statistics of the images under ``folder`` (recursive, sorted, first ``n``; with
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
        raise DataError(f"no images under {folder}")
    device = torch.device(device) if device is not None else resolve_device("auto")
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

