"""The teacher registry: every name ``--teacher`` accepts, its feature width, normalisation and builder.

Each family module (``dino.py``, ``inception.py``, ...) calls :func:`register_teacher` for its entries at import;
``rectok_core/teachers/__init__.py`` imports every family module, so importing anything from
``rectok_core.teachers`` fills the registry. Adding a teacher = one new family module + its import line there.
The special entry ``none`` (no teacher: no semantic decoder, no distillation) is registered here.
"""
from __future__ import annotations

from rectok_core.errors import RectokError
from rectok_core.teachers.base import PRETRAINED_MODES, RESIZE_MODES, Teacher, TeacherSpec

#: The name meaning "no teacher".
NO_TEACHER = "none"

#: Registered teachers by name, in registration order (``none`` first).
TEACHERS: dict[str, TeacherSpec] = {}


def register_teacher(spec: TeacherSpec) -> TeacherSpec:
    """Add ``spec`` to the registry (returns it). Names are unique; every teacher but ``none`` has a builder and a
    positive feature width."""
    if not spec.name or spec.name != spec.name.strip() or " " in spec.name:
        raise ValueError(f"teacher name must be a non-empty word, got {spec.name!r}")
    if spec.name in TEACHERS:
        raise ValueError(f"teacher {spec.name!r} is registered twice")
    if spec.name != NO_TEACHER and (spec.builder is None or spec.dim <= 0):
        raise ValueError(f"teacher {spec.name!r} needs a builder and a positive dim")
    if len(spec.mean) != 3 or len(spec.std) != 3 or min(spec.std) <= 0:
        raise ValueError(f"teacher {spec.name!r}: mean/std must be 3 values, std positive")
    TEACHERS[spec.name] = spec
    return spec


def available_teachers(include_none: bool = True) -> tuple[str, ...]:
    """The registered teacher names in registration order, ``none`` last (left out with ``include_none=False``):
    the ``--teacher`` choices."""
    names = tuple(n for n in TEACHERS if n != NO_TEACHER)
    return names + (NO_TEACHER,) if include_none else names


def teacher_help(lead: str, include_none: bool = True) -> str:
    """A ``--teacher`` help text built from the registry: ``lead``, then every name with its description."""
    return f"{lead}: " + "; ".join(f"{n} = {TEACHERS[n].description}" for n in available_teachers(include_none))


def teacher_spec(name: str) -> TeacherSpec:
    """The registry entry ``name``; a one-line :class:`RectokError` naming the choices when unknown."""
    try:
        return TEACHERS[name]
    except KeyError:
        raise RectokError(f"unknown --teacher {name!r}; choose one of {', '.join(TEACHERS)}") from None


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
