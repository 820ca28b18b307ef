"""Image transforms: the ADM center crop and PIL → tensor conversion."""
from __future__ import annotations

import logging

import numpy as np
import torch
from PIL import Image

logger = logging.getLogger(__name__)


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


def _to_tensor(img: Image.Image) -> torch.Tensor:
    """RGB PIL image → float tensor (3, H, W) in [-1, 1], bit-identical to ``ToTensor`` + ``Normalize(.5, .5)``."""
    arr = np.asarray(img, dtype=np.uint8)
    tensor = torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255.0)
    return tensor.sub_(0.5).div_(0.5)

