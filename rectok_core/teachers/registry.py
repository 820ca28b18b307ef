"""The teacher registry: every name ``--teacher`` accepts, its feature width, normalisation and builder.

``rectok_core/teachers/__init__.py`` declares every teacher in one line (name, family module, description), so
the names and the ``--teacher`` help are known without importing torch; the family module (``dino.py``,
``inception.py``, ...) is imported when one of its teachers is first looked up, and calls
:func:`register_teacher` for its entries. Adding a teacher = one family module + one declaration line there.
The special entry ``none`` (no teacher: no semantic decoder, no distillation) is registered here.
"""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from rectok_core.errors import RectokError
from rectok_core.teachers.spec import PRETRAINED_MODES, RESIZE_MODES, TeacherSpec
from rectok_core.utils.registry import Registry

if TYPE_CHECKING:
    from rectok_core.teachers.base import Teacher

#: The name meaning "no teacher".
NO_TEACHER = "none"

#: The teachers by name, in registration order (``none`` first, then the declarations of ``__init__``).
TEACHERS: Registry[TeacherSpec] = Registry("teacher", option="--teacher")


def register_teacher(spec: TeacherSpec) -> TeacherSpec:
    """Add ``spec`` to the registry (returns the entry). Names are unique; every teacher but ``none`` has a builder
    and a positive feature width. A declared teacher's spec may leave ``description`` empty: the declaration's is
    used."""
    if spec.name != NO_TEACHER and (spec.builder is None or spec.dim <= 0):
        raise ValueError(f"teacher {spec.name!r} needs a builder and a positive dim")
    if len(spec.mean) != 3 or len(spec.std) != 3 or min(spec.std) <= 0:
        raise ValueError(f"teacher {spec.name!r}: mean/std must be 3 values, std positive")
    if not spec.description and spec.name in TEACHERS:
        spec = dataclasses.replace(spec, description=TEACHERS.description(spec.name))
    return TEACHERS.add(spec.name, spec, spec.description)


def available_teachers(include_none: bool = True) -> tuple[str, ...]:
    """The registered teacher names in registration order, ``none`` last (left out with ``include_none=False``):
    the ``--teacher`` choices."""
    names = tuple(n for n in TEACHERS.names() if n != NO_TEACHER)
    return names + (NO_TEACHER,) if include_none else names


def teacher_help(lead: str, include_none: bool = True) -> str:
    """A ``--teacher`` help text built from the registry: ``lead``, then every name with its description."""
    return TEACHERS.help(lead, available_teachers(include_none))


def teacher_spec(name: str) -> TeacherSpec:
    """The registry entry ``name``; a one-line :class:`RectokError` naming the choices when unknown."""
    return TEACHERS.get(name)


def teacher_dim(name: str) -> int:
    """Feature width of teacher ``name`` without building it (0 for ``"none"``)."""
    return teacher_spec(name).dim


def build_teacher(name: str, weights: str | None, grid: tuple[int, int], image_size: int,
                  resize: str = "native", pretrained: str = "auto") -> Teacher | None:
    """Build the frozen teacher ``name`` (a registered name) for a ``grid = (rows, cols)`` tokenizer grid and
    ``image_size``-pixel square inputs; ``None`` for ``"none"``.

    ``weights``: local weights file or folder (``--teacher-weights``); ``None``/``""`` = hub cache, then the hub.
    ``resize``: ``"native"`` or ``"official"`` (see ``rectok_core.teachers.base``). ``pretrained``: ``"auto"``
    (alias ``"pretrained"``) loads real weights or raises :class:`WeightsNotFound`; ``"random"`` = random init
    (loud warning, ``teacher.real is False``), for the teachers that support it.
    """
    spec = teacher_spec(name)
    if resize not in RESIZE_MODES:
        raise RectokError(f"unknown --teacher-resize {resize!r}; choose one of {', '.join(RESIZE_MODES)}")
    if pretrained not in PRETRAINED_MODES:
        raise RectokError(f"unknown --teacher-init {pretrained!r}; choose one of auto, pretrained, random")
    if len(grid) != 2 or min(int(grid[0]), int(grid[1])) < 1 or int(image_size) < 1:
        raise RectokError(f"teacher needs a positive grid and image size, got grid={grid}, image_size={image_size}")
    if spec.builder is None:
        return None
    if pretrained == "random" and not spec.random_init:
        raise RectokError(f"--teacher-init random is not available for --teacher {name}: use its real weights")
    return spec.builder(spec, weights or None, (int(grid[0]), int(grid[1])), int(image_size), resize, pretrained)


register_teacher(TeacherSpec(NO_TEACHER, 0, "no teacher: no semantic decoder, no distillation"))
