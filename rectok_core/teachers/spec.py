"""A teacher's registry entry (:class:`TeacherSpec`) and the option vocabularies, without torch: the registry and
the CLI's ``--teacher`` help read them; the networks live in :mod:`rectok_core.teachers.base`."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

IMAGENET_MEAN = (0.485, 0.456, 0.406)


IMAGENET_STD = (0.229, 0.224, 0.225)


#: What a builder gets: ``(spec, weights or None, (rows, cols), image_size, resize, pretrained)`` → a Teacher
#: (:class:`rectok_core.teachers.base.Teacher`; typed ``Any`` here: that module imports this one).
TeacherBuilder = Callable[["TeacherSpec", "str | None", "tuple[int, int]", int, str, str], Any]


@dataclass(frozen=True)
class TeacherSpec:
    """One registry entry: everything known about a teacher without building it.

    ``name`` (the ``--teacher`` value), ``dim`` (feature width; 0 only for ``none``), ``description`` (one line
    for the CLI help), ``mean``/``std`` (per-channel input normalisation of ``[0, 1]`` images the network was
    trained with), ``builder`` (``None`` only for ``none``), ``random_init`` (whether ``--teacher-init random``
    is supported). The timm ViT teachers also fill ``arch`` (timm architecture), ``tag`` (pretrained tag on the
    hub), ``patch`` (patch side in px), ``family`` and ``example_file`` (a typical weights file, for messages).
    """

    name: str
    dim: int
    description: str = ""
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    builder: TeacherBuilder | None = field(default=None, compare=False, repr=False)
    random_init: bool = True
    family: str = ""
    arch: str = ""
    tag: str = ""
    patch: int = 0
    example_file: str = ""


#: Output size of the Hugging Face DINOv3 image processor used by the official code (its default config).
OFFICIAL_PROCESSOR_SIZE = 224


RESIZE_MODES = ("native", "official")


PRETRAINED_MODES = ("auto", "pretrained", "random")
