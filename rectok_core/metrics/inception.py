"""Inception features of image collections for the metrics (FID, sFID, IS, KID, precision/recall): batching,
uint8 conversion and one pass of :class:`rectok_core.models.inception.InceptionFeatures` (the network and its
weights live in :mod:`rectok_core.models.inception` and :mod:`rectok_core.models.inception_weights`)."""
from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
import torch

from rectok_core.errors import RectokError
from rectok_core.models.inception import InceptionFeatures
from rectok_core.utils.distributed import resolve_device
from rectok_core.utils.progress import progress as progress_bar


def _image_batches(images: Iterable[object] | torch.Tensor | np.ndarray, batch_size: int) -> Iterator[torch.Tensor]:
    """Normalise the accepted inputs to a stream of (B,3,H,W) tensors (see :func:`extract_features`)."""
    if isinstance(images, (torch.Tensor, np.ndarray)):
        whole = _as_nchw(images)
        yield from whole.split(batch_size)
        return
    for batch in images:
        if isinstance(batch, (tuple, list)):
            batch = batch[0]
        if not isinstance(batch, (torch.Tensor, np.ndarray)):
            raise ValueError(f"expected batches of image tensors, got {type(batch).__name__}")
        yield _as_nchw(batch)


def _as_nchw(x: torch.Tensor | np.ndarray) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(x)) if isinstance(x, np.ndarray) else x
    if t.dim() == 4 and t.shape[1] != 3 and t.shape[-1] == 3:
        t = t.permute(0, 3, 1, 2)  # NHWC (e.g. ADM's arr_0 sample batches)
    return t


def _extract(
    images: Iterable[object] | torch.Tensor | np.ndarray,
    model: InceptionFeatures,
    device: str | torch.device | None,
    progress: bool,
    batch_size: int,
    with_logits: bool,
    with_spatial: bool = False,
    total: int | None = None,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    device = torch.device(device) if device is not None else resolve_device("auto")
    model.to(device).eval()
    out: dict[str, list[np.ndarray]] = {"pool3": [], "logits": [], "spatial": []}
    if total is None and isinstance(images, (torch.Tensor, np.ndarray)):
        total = len(images)
    with progress_bar(total, 0, "Inception", progress, unit="img") as bar:
        for batch in _image_batches(images, batch_size):
            f, lg, sp = model.forward_all(batch.to(device, non_blocking=True), with_logits, with_spatial)
            for key, value in (("pool3", f), ("logits", lg), ("spatial", sp)):
                if value is not None:
                    out[key].append(value.cpu().numpy())
            bar.update(len(batch))
    if not out["pool3"]:
        raise RectokError("no images to extract Inception features from")
    return tuple(np.concatenate(v) if v else None for v in out.values())  # type: ignore[return-value]


def extract_features(images: Iterable[object] | torch.Tensor | np.ndarray, model: InceptionFeatures,
                     device: str | torch.device | None = None, progress: bool = True, **kw) -> np.ndarray:
    """(N, 2048) float32 pool3 features of all images.

    ``images``: an iterable / DataLoader of batches -- (B,3,H,W) tensors (uint8, or float in [0, 1]), numpy
    arrays (NCHW or NHWC) or tuples whose first element is such a batch (``(images, labels)``) -- or one
    (N,3,H,W) / (N,H,W,3) array, processed in chunks of ``batch_size``. ``model`` is moved to ``device``
    (default: CUDA when available). ``kw``: ``batch_size``, ``total`` of :func:`extract_inception_outputs`.
    """
    return extract_inception_outputs(images, model, device, progress, **kw)[0]


def extract_inception_outputs(
    images: Iterable[object] | torch.Tensor | np.ndarray,
    model: InceptionFeatures,
    device: str | torch.device | None = None,
    progress: bool = True,
    *,
    batch_size: int = 50,
    logits: bool = False,
    spatial: bool = False,
    total: int | None = None,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """(N, 2048) pool3 features, (N, 1008) logits (``logits``, needs ``model.has_logits``) and (N,
    :data:`SPATIAL_DIM`) sFID spatial features (``spatial``) of all images, in one pass; ``total``: the number of
    images, for the progress bar."""
    return _extract(images, model, device, progress, batch_size, logits, spatial, total)

