"""Image transforms: decoding any PIL mode to RGB, the ADM center crop and PIL → tensor conversion.

:func:`to_rgb` is the one place where image modes become 8-bit RGB (datasets and FID folders both use it):

* ``RGB`` as is; ``L`` and ``1`` (black/white) replicated to three channels; ``CMYK`` and ``YCbCr`` through PIL;
* 16-bit (``I;16*``) and 32-bit integer ``I`` images are taken as 16-bit data, ``0 … 65535`` → ``0 … 255``
  (``round(v / 257)``); PIL's own ``convert("RGB")`` clips them, turning almost every pixel white;
* ``F`` (float) images are taken as ``[0, 1]`` data;
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
        grey = np.round(np.nan_to_num(np.asarray(img, dtype=np.float64)).clip(0, 1) * 255.0).astype(np.uint8)
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

