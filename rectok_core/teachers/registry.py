"""The teacher registry: every name ``--teacher`` accepts, its feature width and builder."""
from __future__ import annotations

import logging

from rectok_core.errors import RectokError
from rectok_core.teachers.base import (
    PRETRAINED_MODES,
    RESIZE_MODES,
    Teacher,
    TeacherSpec,
)
from rectok_core.teachers.dino import _build_vit
from rectok_core.teachers.inception import (
    INCEPTION_DIM,
    INCEPTION_S_DIM,
    _build_inception,
)

logger = logging.getLogger(__name__)




def _dinov3(name: str, size: str, dim: int, desc: str) -> TeacherSpec:
    return TeacherSpec(name, "vit", dim, "dinov3", f"vit_{size}_patch16_dinov3", "lvd1689m", 16,
                       f"dinov3_vit{size[0]}16.safetensors", desc)


def _dinov2(name: str, size: str, dim: int, desc: str) -> TeacherSpec:
    return TeacherSpec(name, "vit", dim, "dinov2", f"vit_{size}_patch14_dinov2", "lvd142m", 14,
                       f"dinov2_vit{size[0]}14_pretrain.pth", desc)


TEACHERS: dict[str, TeacherSpec] = {
    "dinov3": _dinov3("dinov3", "large", 1024, "DINOv3 ViT-L/16 (LVD-1689M), the official RecTok teacher"),
    "dinov3-s": _dinov3("dinov3-s", "small", 384, "DINOv3 ViT-S/16 (LVD-1689M)"),
    "dinov3-b": _dinov3("dinov3-b", "base", 768, "DINOv3 ViT-B/16 (LVD-1689M)"),
    "dinov3-l": _dinov3("dinov3-l", "large", 1024, "DINOv3 ViT-L/16 (LVD-1689M)"),
    "dinov2": _dinov2("dinov2", "large", 1024, "DINOv2 ViT-L/14 (LVD-142M, no registers)"),
    "dinov2-s": _dinov2("dinov2-s", "small", 384, "DINOv2 ViT-S/14 (LVD-142M, no registers)"),
    "dinov2-b": _dinov2("dinov2-b", "base", 768, "DINOv2 ViT-B/14 (LVD-142M, no registers)"),
    "dinov2-l": _dinov2("dinov2-l", "large", 1024, "DINOv2 ViT-L/14 (LVD-142M, no registers)"),
    "inception": TeacherSpec("inception", "inception", INCEPTION_DIM, "inception", example_file="pt_inception.pth",
                             description="FID InceptionV3 Mixed_6e features, an offline stand-in (results must "
                                         "say so)"),
    "inception-s": TeacherSpec("inception-s", "inception", INCEPTION_S_DIM, "inception",
                               example_file="pt_inception.pth",
                               description="FID InceptionV3 Mixed_5d features: ~7x cheaper, lower-level (CPU demos)"),
    "none": TeacherSpec("none", "none", 0, description="no teacher: no semantic decoder, no distillation"),
}


def _spec(name: str) -> TeacherSpec:
    try:
        return TEACHERS[name]
    except KeyError:
        raise RectokError(f"unknown --vfm {name!r}; choose one of {', '.join(TEACHERS)}") from None


def teacher_dim(name: str) -> int:
    """Feature width of teacher ``name`` without building it (0 for ``"none"``)."""
    return _spec(name).dim


def build_teacher(name: str, weights: str | None, grid: tuple[int, int], image_size: int,
                  resize: str = "native", pretrained: str = "auto") -> Teacher | None:
    """Build the frozen teacher ``name`` (a ``TEACHERS`` key) for a ``grid = (rows, cols)`` tokenizer grid and
    ``image_size``-pixel square inputs; ``None`` for ``"none"``.

    ``weights``: local weights file or folder (``--vfm-weights``); ``None``/``""`` = hub cache, then the hub.
    ``resize``: ``"native"`` or ``"official"`` (see the module docstring). ``pretrained``: ``"auto"`` (alias
    ``"pretrained"``) loads real weights or raises :class:`WeightsNotFound`; ``"random"`` = random init (loud
    warning, ``teacher.real is False``).
    """
    spec = _spec(name)
    if resize not in RESIZE_MODES:
        raise RectokError(f"unknown --vfm-resize {resize!r}; choose one of {', '.join(RESIZE_MODES)}")
    if pretrained not in PRETRAINED_MODES:
        raise RectokError(f"unknown --vfm-init {pretrained!r}; choose one of auto, pretrained, random")
    if len(grid) != 2 or min(int(grid[0]), int(grid[1])) < 1 or int(image_size) < 1:
        raise RectokError(f"teacher needs a positive grid and image size, got grid={grid}, image_size={image_size}")
    grid = (int(grid[0]), int(grid[1]))
    if spec.kind == "none":
        return None
    if spec.kind == "inception":
        return _build_inception(spec, weights, grid, int(image_size), resize, pretrained)
    return _build_vit(spec, weights or None, grid, int(image_size), resize, pretrained)

