"""SigLIP ViT-B/16 teachers through timm; registers ``siglip-b`` (SigLIP, WebLI) and ``siglip2-b`` (SigLIP 2).

Both are timm's ``vit_base_patch16_siglip_224`` (``num_prefix_tokens == 0``: no CLS or register token, every
output token is a patch), with the ``webli`` and ``v2_webli`` pretrained tags. Inputs are normalised with SigLIP's
mean = std = 0.5 (``[0, 1] → [-1, 1]``), not ImageNet's. Weights: ``--teacher-weights FILE`` (timm layout, e.g. the
hub's ``model.safetensors``), else the local hub cache, else the hub when online; random init for tests.
``--teacher-resize official`` is a DINOv3 pipeline and is refused. At ``grid * 16`` px (native) the position
embeddings, trained at 224 px (14×14), are resampled by timm when the weights load.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from rectok_core.errors import RectokError
from rectok_core.teachers.registry import register_teacher
from rectok_core.teachers.spec import TeacherSpec
from rectok_core.teachers.timm_vit import build_timm_teacher

if TYPE_CHECKING:
    from rectok_core.teachers.base import ViTTeacher

SIGLIP_MEAN = SIGLIP_STD = (0.5, 0.5, 0.5)


def _build_siglip(spec: TeacherSpec, weights: str | None, grid: tuple[int, int], image_size: int, resize: str,
                  pretrained: str) -> ViTTeacher:
    if resize != "native":
        raise RectokError(f"--teacher-resize {resize} applies to DINOv3 teachers only, not --teacher {spec.name}")

    return build_timm_teacher(spec, weights, grid, image_size, resize, pretrained)


for _name, _tag in (("siglip-b", "webli"), ("siglip2-b", "v2_webli")):
    register_teacher(TeacherSpec(_name, 768, "", SIGLIP_MEAN, SIGLIP_STD, _build_siglip, family="siglip",
                                 arch="vit_base_patch16_siglip_224", tag=_tag, patch=16,
                                 example_file=f"vit_base_patch16_siglip_224.{_tag}.safetensors"))
