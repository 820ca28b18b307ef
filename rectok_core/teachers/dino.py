"""DINOv2 / DINOv3 ViT teachers through timm; registers ``dinov3``, ``dinov3-s/b/l``, ``dinov2``, ``dinov2-s/b/l``.

Imported the first time a DINO teacher is looked up (``rectok_core/teachers/__init__.py`` declares the names and
help without importing this module).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from rectok_core.errors import RectokError
from rectok_core.teachers.registry import register_teacher
from rectok_core.teachers.spec import IMAGENET_MEAN, IMAGENET_STD, TeacherSpec
from rectok_core.teachers.timm_vit import build_timm_teacher
from rectok_core.teachers.weights import _dinov3_nonzero_qv_bias, _drop_zero_qkv_bias, _hf_dinov3_to_timm, _is_hf_dinov3

if TYPE_CHECKING:
    import torch

    from rectok_core.teachers.base import ViTTeacher


def _prepare_dinov3(spec: TeacherSpec, sd: dict[str, torch.Tensor]) -> tuple[str, dict[str, torch.Tensor]]:
    """Any DINOv3 layout (timm, Meta's release, HF transformers) → timm's, and the architecture it fits."""
    arch = spec.arch
    if _dinov3_nonzero_qv_bias(sd):
        arch = spec.arch + "_qkvb"  # checkpoints with real q/v biases need timm's bias-carrying variant
    else:
        sd = _drop_zero_qkv_bias(sd)
    if _is_hf_dinov3(sd):
        sd = _hf_dinov3_to_timm(sd)
    return arch, sd


def _build_dino(spec: TeacherSpec, weights: str | None, grid: tuple[int, int], image_size: int, resize: str,
                pretrained: str) -> ViTTeacher:
    if resize == "official" and spec.patch != 16:
        raise RectokError(f"--teacher-resize official (the 256→224→256 round trip) exists only for /16 DINOv3 "
                          f"teachers, not --teacher {spec.name}; use --teacher-resize native")

    prepare = _prepare_dinov3 if spec.family == "dinov3" else None
    return build_timm_teacher(spec, weights, grid, image_size, resize, pretrained, prepare)


def _dinov3(name: str, size: str, dim: int) -> TeacherSpec:
    return register_teacher(TeacherSpec(
        name, dim, "", IMAGENET_MEAN, IMAGENET_STD, _build_dino, family="dinov3",
        arch=f"vit_{size}_patch16_dinov3", tag="lvd1689m", patch=16, example_file=f"dinov3_vit{size[0]}16.safetensors"))


def _dinov2(name: str, size: str, dim: int) -> TeacherSpec:
    return register_teacher(TeacherSpec(
        name, dim, "", IMAGENET_MEAN, IMAGENET_STD, _build_dino, family="dinov2",
        arch=f"vit_{size}_patch14_dinov2", tag="lvd142m", patch=14, example_file=f"dinov2_vit{size[0]}14_pretrain.pth"))


_dinov3("dinov3", "large", 1024)
_dinov3("dinov3-s", "small", 384)
_dinov3("dinov3-b", "base", 768)
_dinov3("dinov3-l", "large", 1024)
_dinov2("dinov2", "large", 1024)
_dinov2("dinov2-s", "small", 384)
_dinov2("dinov2-b", "base", 768)
_dinov2("dinov2-l", "large", 1024)
