"""Frozen vision foundation models whose features the semantic decoder learns to predict.

The registry: one line per teacher below (name, the family module that registers it, its ``--teacher`` help).
Names and help need no torch; ``build_teacher``, ``teacher_dim`` and ``TEACHERS[name]`` import the family module
on first use. Adding a teacher = one family module calling ``register_teacher`` + one line here.
"""
from rectok_core.teachers.registry import (
    NO_TEACHER,
    TEACHERS,
    available_teachers,
    build_teacher,
    register_teacher,
    teacher_dim,
    teacher_help,
    teacher_spec,
)

_DINO, _INCEPTION, _SIGLIP = "rectok_core.teachers.dino", "rectok_core.teachers.inception", "rectok_core.teachers.siglip"
TEACHERS.declare("dinov3", _DINO, "DINOv3 ViT-L/16 (LVD-1689M), the official RecTok teacher")
TEACHERS.declare("dinov3-s", _DINO, "DINOv3 ViT-S/16 (LVD-1689M)")
TEACHERS.declare("dinov3-b", _DINO, "DINOv3 ViT-B/16 (LVD-1689M)")
TEACHERS.declare("dinov3-l", _DINO, "DINOv3 ViT-L/16 (LVD-1689M)")
TEACHERS.declare("dinov2", _DINO, "DINOv2 ViT-L/14 (LVD-142M, no registers)")
TEACHERS.declare("dinov2-s", _DINO, "DINOv2 ViT-S/14 (LVD-142M, no registers)")
TEACHERS.declare("dinov2-b", _DINO, "DINOv2 ViT-B/14 (LVD-142M, no registers)")
TEACHERS.declare("dinov2-l", _DINO, "DINOv2 ViT-L/14 (LVD-142M, no registers)")
TEACHERS.declare("inception", _INCEPTION,
                 "FID InceptionV3 Mixed_6e features, an offline stand-in (results must say so)")
TEACHERS.declare("inception-s", _INCEPTION,
                 "FID InceptionV3 Mixed_5d features: ~7x cheaper, lower-level (CPU demos)")
TEACHERS.declare("siglip-b", _SIGLIP, "SigLIP ViT-B/16 (WebLI, 224 px)")
TEACHERS.declare("siglip2-b", _SIGLIP, "SigLIP 2 ViT-B/16 (WebLI, 224 px)")

__all__ = ["NO_TEACHER", "TEACHERS", "available_teachers", "build_teacher", "register_teacher", "teacher_dim",
           "teacher_help", "teacher_spec"]
