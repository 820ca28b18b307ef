"""Image transforms: decoding any PIL mode to RGB, the ADM center crop and PIL → tensor conversion.

:func:`to_rgb` is the one place where image modes become 8-bit RGB (datasets and FID folders both use it):

* ``RGB`` as is; ``L`` and ``1`` (black/white) replicated to three channels; ``CMYK`` and ``YCbCr`` through PIL;
* 16-bit (``I;16*``) and 32-bit integer ``I`` images are taken as 16-bit data, ``0 … 65535`` → ``0 … 255``
  (``round(v / 257)``); PIL's own ``convert("RGB")`` clips them, turning almost every pixel white;
* ``F`` (float) images are taken as ``[0, 1]`` data when their values fit it (up to 2, the excess clipped);
  larger values are read by their range, ``0 … 255`` or ``0 … 65535`` (else the image's own maximum), never
  clipped to white, and a warning says so once per process;
* images with transparency (``RGBA``, ``LA``, ``PA``, ``P`` with a transparent colour) are composited on a
  **white** background: ``out = alpha · colour + (1 − alpha) · 255``. Dropping alpha instead (torchvision's
  loader) shows whatever colour the transparent pixels happen to store, often black.
"""
from __future__ import annotations

import logging
import os

import numpy as np
import torch
from PIL import Image

logger = logging.getLogger(__name__)


#: The largest image (width × height) decoded; larger ones are refused before their pixels are allocated.
MAX_PIXELS: int = Image.MAX_IMAGE_PIXELS or 89_478_485


def check_size(img: Image.Image) -> None:
    """Raise ``ValueError`` for an image whose header claims more than :data:`MAX_PIXELS` pixels (before
    decoding: a tiny corrupt file can claim 100000 × 100000)."""
    width, height = img.size
    if width < 1 or height < 1 or width * height > MAX_PIXELS:
        raise ValueError(f"image is {width}x{height} pixels: refusing sizes beyond {MAX_PIXELS} pixels")


def _over_white(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """float RGB ``(H, W, 3)`` in 0..255 composited on white with ``alpha`` ``(H, W)`` in 0..255 → uint8."""
    a = alpha.astype(np.float32)[..., None] / 255.0
    return np.round(rgb.astype(np.float32) * a + 255.0 * (1.0 - a)).clip(0, 255).astype(np.uint8)


_WARNED: set[float] = set()  # the float ranges already reported (once per process each)


def float_grey(arr: np.ndarray, name: str) -> np.ndarray:
    """Float pixel values as 8-bit grey: ``[0, 1]`` data scaled by 255; values beyond 2 are read as ``0 … 255``,
    ``0 … 65535`` or ``0 … max`` data, with one warning per range, instead of all turning white."""
    arr = np.nan_to_num(arr, nan=0.0, posinf=0.0, neginf=0.0)
    hi = float(arr.max()) if arr.size else 0.0
    top = 1.0 if hi <= 2.0 else 255.0 if hi <= 255.0 else 65535.0 if hi <= 65535.0 else hi
    if hi > 1.0 and top not in _WARNED:
        _WARNED.add(top)
        how = "values above 1 clipped to white" if top == 1.0 else f"read as 0 … {top:g} data"
        logger.warning("%s holds float pixels up to %g (not 0 … 1): %s (said once)", name, hi, how)
    return np.round(arr.clip(0, top) / top * 255.0).astype(np.uint8)


def to_rgb(img: Image.Image) -> Image.Image:
    """``img`` (any PIL mode) as an 8-bit RGB image (rules in the module docs). Raises ``ValueError`` for an
    oversized image (:func:`check_size`) and the usual PIL errors for a corrupt one."""
    check_size(img)
    mode = img.mode
    if mode == "RGB" and "transparency" not in img.info:
        return img.convert("RGB")
    if mode.startswith("I"):  # I;16, I;16B, I;16L, I;16N, I
        arr = np.asarray(img).astype(np.float64)
        grey = np.round(arr.clip(0, 65535) / 257.0).astype(np.uint8)
        return Image.fromarray(np.repeat(grey[..., None], 3, axis=-1))
    if mode == "F":
        grey = float_grey(np.asarray(img, dtype=np.float64), getattr(img, "filename", "") or "a float image")
        return Image.fromarray(np.repeat(grey[..., None], 3, axis=-1))
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    elif mode == "PA":
        img = img.convert("RGBA")
    elif "transparency" in img.info and mode in ("1", "L", "RGB"):
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "La", "RGBa"):
        rgba = np.asarray(img.convert("RGBA"))
        return Image.fromarray(_over_white(rgba[..., :3], rgba[..., 3]))
    return img.convert("RGB")


def center_crop_arr(img: Image.Image, size: int) -> Image.Image:
    """ADM center crop: halve with BOX while the short side is ≥ ``2*size``, BICUBIC-resize the short side to
    ``size``, then cut the central ``size × size`` square (recipe §6)."""
    if size < 1:
        raise ValueError(f"crop size must be positive, got {size}")
    while min(img.size) >= 2 * size:
        img = img.resize(tuple(x // 2 for x in img.size), resample=Image.BOX)
    scale = size / min(img.size)
    img = img.resize(tuple(round(x * scale) for x in img.size), resample=Image.BICUBIC)
    left = (img.size[0] - size) // 2
    top = (img.size[1] - size) // 2
    return img.crop((left, top, left + size, top + size))


def load_rgb(path: str | os.PathLike[str], size: int | None = None) -> Image.Image:
    """The image file at ``path`` decoded to RGB (:func:`to_rgb`), ADM-center-cropped to ``size`` when given."""
    with Image.open(path) as img:
        rgb = to_rgb(img)
    return center_crop_arr(rgb, size) if size else rgb


def _to_tensor(img: Image.Image) -> torch.Tensor:
    """RGB PIL image → float tensor (3, H, W) in [-1, 1], bit-identical to ``ToTensor`` + ``Normalize(.5, .5)``."""
    arr = np.asarray(img, dtype=np.uint8)
    tensor = torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255.0)
    return tensor.sub_(0.5).div_(0.5)

