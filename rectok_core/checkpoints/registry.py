"""The model kinds a checkpoint can hold. Each kind is one module of this package registering itself with
:func:`register_kind` (its name, how errors describe it, and the loader that builds its model), plus one import
line in ``rectok_core/checkpoints/__init__.py``."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rectok_core.errors import CheckpointError
from rectok_core.utils.registry import Registry


@dataclass(frozen=True)
class ModelKind:
    """A registered checkpoint kind: ``name`` (the checkpoint's ``kind`` field), ``description`` (for errors) and
    ``load(spec, **options)`` returning the built model (what the kind's module documents)."""

    name: str
    description: str
    load: Callable[..., Any]


#: The registered kinds (the shared :class:`~rectok_core.utils.registry.Registry` shape).
KINDS: Registry[ModelKind] = Registry("checkpoint kind")


def register_kind(name: str, description: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator registering ``load`` as the builder of checkpoints of kind ``name``; a second ``name`` is an error."""

    def add(load: Callable[..., Any]) -> Callable[..., Any]:
        KINDS.add(name, ModelKind(name, description, load), description)
        return load

    return add


def describe(kind: object) -> str:
    """How errors name a checkpoint of ``kind`` ("a RecTok tokenizer (…)"), or its repr when unknown."""
    return KINDS.description(kind) if isinstance(kind, str) and kind in KINDS else repr(kind)


def kind_mismatch(where: str | Path, got: object, wanted: str) -> CheckpointError:
    """The one-line error for a checkpoint of kind ``got`` where ``wanted`` is needed."""
    return CheckpointError(f"{where} holds {describe(got)}, but {describe(wanted)} is needed here")
