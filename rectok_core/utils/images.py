"""Image tensors to uint8 arrays and captioned image grids on disk.

Every grid a command writes says what it shows: a title bar (what, which step) and a label column (one caption per
row), drawn with PIL's built-in default font (nothing is downloaded). The same captions are stored in the PNG's
text chunks — ``rectok:title`` and ``rectok:rows`` (a JSON list, one string per row) — so scripts and tests can
read them back with :func:`grid_captions`.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont, PngImagePlugin

from rectok_core.utils.files import atomic_open

ROWS_KEY = "rectok:rows"
TITLE_KEY = "rectok:title"
_MARGIN = 6          # pixels around captions
_BG, _FG = (255, 255, 255), (0, 0, 0)


def to_uint8(img: torch.Tensor) -> np.ndarray:
    """Images in [-1, 1] (B, 3, H, W) → uint8 NHWC, rounded (not truncated)."""
    x = ((img.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).numpy()


def _tiles(rows: list[torch.Tensor], pad: int) -> Image.Image:
    arrs = [to_uint8(r) for r in rows]
    n, h, w = arrs[0].shape[0], arrs[0].shape[1], arrs[0].shape[2]
    if any(a.shape != arrs[0].shape for a in arrs):
        raise ValueError(f"grid rows must have the same shape, got {[tuple(r.shape) for r in rows]}")
    canvas = np.full((len(arrs) * (h + pad) + pad, n * (w + pad) + pad, 3), 255, np.uint8)
    for i, a in enumerate(arrs):
        for j in range(n):
            y, x = pad + i * (h + pad), pad + j * (w + pad)
            canvas[y:y + h, x:x + w] = a[j]
    scale = max(1, math.ceil(256 / max(h, 1)) // 2)  # upscale tiny images so the grid is viewable
    im = Image.fromarray(canvas)
    return im.resize((im.width * scale, im.height * scale), Image.NEAREST) if scale > 1 else im


def _text_size(draw: ImageDraw.ImageDraw, text: str, font: ImageFont.ImageFont) -> tuple[int, int]:
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    return int(right - left), int(bottom - top)


def captioned(tiles: Image.Image, n_rows: int, row_labels: list[str] | None, title: str | None) -> Image.Image:
    """``tiles`` (``n_rows`` equal-height rows) with a left column of ``row_labels`` and a ``title`` bar on top."""
    if not row_labels and not title:
        return tiles
    font = ImageFont.load_default()
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    label_w = max((_text_size(probe, s, font)[0] for s in row_labels), default=0) + 2 * _MARGIN \
        if row_labels else 0
    title_w, title_h = _text_size(probe, title, font) if title else (0, 0)
    bar = title_h + 2 * _MARGIN if title else 0
    out = Image.new("RGB", (max(label_w + tiles.width, title_w + 2 * _MARGIN), bar + tiles.height), _BG)
    out.paste(tiles, (label_w, bar))
    draw = ImageDraw.Draw(out)
    if title:
        draw.text((_MARGIN, _MARGIN), title, fill=_FG, font=font)
    row_h = tiles.height / n_rows
    for i, s in enumerate(row_labels or []):
        th = _text_size(draw, s, font)[1]
        draw.text((_MARGIN, bar + int((i + 0.5) * row_h - th / 2)), s, fill=_FG, font=font)
    return out


def class_caption(label: int, classes: list[str] | None = None, width: int = 28) -> str:
    """``"class 3: n01443537"`` (the name shortened to ``width`` characters), or ``"class 3"`` without names."""
    name = classes[label] if classes and 0 <= label < len(classes) else ""
    name = name if len(name) <= width else name[: width - 3] + "..."
    return f"class {label}: {name}" if name else f"class {label}"


def save_grid(rows: list[torch.Tensor], path: str | Path, row_labels: list[str] | None = None,
              title: str | None = None, pad: int = 2) -> Path:
    """Save rows of images in [-1, 1] (each (B, 3, H, W), same shape) as one PNG grid, with one caption per row
    in a left column (``row_labels``) and a ``title`` bar, both also stored as PNG text (:func:`grid_captions`)."""
    if not rows:
        raise ValueError("save_grid needs at least one row")
    if row_labels is not None and len(row_labels) != len(rows):
        raise ValueError(f"{len(row_labels)} row labels for {len(rows)} rows")
    im = captioned(_tiles(rows, pad), len(rows), row_labels, title)
    info = PngImagePlugin.PngInfo()
    if row_labels is not None:
        info.add_text(ROWS_KEY, json.dumps(list(row_labels)))
    if title:
        info.add_text(TITLE_KEY, title)
    path = Path(path)
    with atomic_open(path, "wb") as f:  # never a half-written grid
        im.save(f, format="PNG", pnginfo=info)
    return path


def grid_captions(path: str | Path) -> dict:
    """The captions :func:`save_grid` stored in a grid PNG: ``{"title": str | None, "rows": list[str] | None}``."""
    with Image.open(path) as im:
        text = dict(getattr(im, "text", {}) or {})
    rows = text.get(ROWS_KEY)
    return {"title": text.get(TITLE_KEY), "rows": json.loads(rows) if rows is not None else None}
