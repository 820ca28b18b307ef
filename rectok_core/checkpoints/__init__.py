"""The front door for checkpoints and models: every command and the API open what a user names here.

A name is a rectok ``.pt`` checkpoint, an export folder (``rectok export``) or a Hugging Face Hub id of one
(``owner/name[@revision]``). :func:`open_checkpoint` gives its checkpoint dict, checked for the kind asked;
:func:`load_model` also tells its kind and builds the model with that kind's registered loader.

Layers: this package sits above ``models`` and ``data`` and below ``training``, ``metrics`` and ``sampling``.
A new kind is one module here calling :func:`register_kind` and one import line below.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from rectok_core.checkpoints import dit, tokenizer  # noqa: F401  (registers the kinds, one line each)
from rectok_core.checkpoints.dit import LoadedDiT, load_dit, load_matching_tokenizer
from rectok_core.checkpoints.families import is_family_spec, load_any_tokenizer  # noqa: F401  (FAMILY:SOURCE)
from rectok_core.checkpoints.folder import read_export, read_export_config
from rectok_core.checkpoints.open import open_checkpoint
from rectok_core.checkpoints.registry import KINDS, ModelKind, describe, register_kind
from rectok_core.checkpoints.resolve import HUB_ID, looks_like_hub_id, resolve
from rectok_core.checkpoints.tokenizer import load_tokenizer
from rectok_core.errors import CheckpointError

__all__ = ["HUB_ID", "KINDS", "LoadedDiT", "ModelKind", "describe", "kind_of", "load_dit", "load_matching_tokenizer",
           "load_model", "load_tokenizer", "looks_like_hub_id", "open_checkpoint", "read_export",
           "read_export_config", "register_kind", "resolve"]


def kind_of(spec: str | Path) -> str:
    """The registered kind of the checkpoint ``spec`` names; a one-line error for an unknown one."""
    kind = open_checkpoint(spec).get("kind")
    if kind not in KINDS:
        raise CheckpointError(f"{spec} holds {kind!r}, which is none of the known kinds ({', '.join(KINDS)})")
    return kind


def load_model(spec: str | Path, kind: str | None = None, **options: Any) -> Any:
    """The model of ``spec`` built by its kind's loader (``kind`` checks it; ``options`` go to the loader, e.g.
    ``use_ema``/``device`` for a tokenizer, ``weights``/``device`` for a DiT)."""
    return KINDS[kind or kind_of(spec)].load(spec, **options)
