"""Image tensors to uint8 arrays and image grids on disk."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def to_uint8(img: torch.Tensor) -> np.ndarray:
    """Images in [-1, 1] (B, 3, H, W) → uint8 NHWC, rounded (not truncated)."""
    x = ((img.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).numpy()


def save_grid(rows: list[torch.Tensor], path: str | Path, pad: int = 2) -> None:
    """Save rows of images in [-1, 1] (each (B, 3, H, W), same shape) as one PNG grid."""
    arrs = [to_uint8(r) for r in rows]
    n, h, w = arrs[0].shape[0], arrs[0].shape[1], arrs[0].shape[2]
    canvas = np.full((len(arrs) * (h + pad) + pad, n * (w + pad) + pad, 3), 255, np.uint8)
    for i, a in enumerate(arrs):
        for j in range(n):
            y, x = pad + i * (h + pad), pad + j * (w + pad)
            canvas[y:y + h, x:x + w] = a[j]
    scale = max(1, math.ceil(256 / max(h, 1)) // 2)  # upscale tiny images so the grid is viewable
    im = Image.fromarray(canvas)
    if scale > 1:
        im = im.resize((im.width * scale, im.height * scale), Image.NEAREST)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    im.save(path)

