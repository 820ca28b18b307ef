"""Checkpoints: atomic writes, strict kind/shape checks, RNG state capture.

A checkpoint is a dict ``{"format": "rectok", "version": 1, "kind": KIND, "config": {...}, "model": ...,
"ema": ..., "step": int, ...}``. ``KIND`` is one of :data:`KINDS`; loading a checkpoint of another kind is a
one-line :class:`CheckpointError` naming what the file actually holds.
"""
from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rectok_core.errors import CheckpointError

FORMAT = "rectok"


VERSION = 1


KINDS = {
    "tokenizer": "a RecTok tokenizer (train-tokenizer / finetune-decoder)",
    "dit": "a DiT^DH generator (train-dit)",
}


def save_atomic(obj: Any, path: str | Path) -> None:
    """``torch.save`` to a temporary file in the same folder, fsync, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load(path: str | Path, kind: str | None = None, map_location: str | torch.device = "cpu") -> dict:
    """Load a rectok checkpoint, checking its format and (optionally) its kind."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # corrupt, truncated, not a torch file, or unsafe pickle
        raise CheckpointError(f"cannot read checkpoint {path}: {type(e).__name__}: {str(e).splitlines()[0][:200]}") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a rectok checkpoint (no 'format: rectok' header)")
    if kind is not None and ckpt.get("kind") != kind:
        got = KINDS.get(ckpt.get("kind"), repr(ckpt.get("kind")))
        raise CheckpointError(f"{path} holds {got}, but {KINDS[kind]} is needed here")
    return ckpt


def describe_mismatch(module: torch.nn.Module, state: dict) -> str | None:
    """One line naming how ``state`` differs from ``module``'s state dict (None when it fits exactly)."""
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own
              if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    parts = []
    if shapes:
        parts.append(f"{len(shapes)} of the wrong shape (shape mismatch: {shapes[0]})")
    if missing:
        parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
    return "; ".join(parts) or None


def load_state_strict(module: torch.nn.Module, state: dict, what: str) -> None:
    """``load_state_dict(strict=True)`` with a one-line error describing the first mismatches."""
    problem = describe_mismatch(module, state)
    if problem:
        raise CheckpointError(f"{what} does not match the model ({problem})")
    module.load_state_dict(state, strict=True)


def rng_state() -> dict:
    np_state = np.random.get_state()
    st = {
        "python": random.getstate(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def set_rng_state(st: dict) -> None:
    random.setstate(_tuplify(st["python"]))
    n = st["numpy"]
    np.random.set_state((n[0], n[1].numpy().astype(np.uint32), *n[2:]))
    torch.set_rng_state(st["torch"])
    if "cuda" in st and torch.cuda.is_available() and len(st["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(st["cuda"])


def _tuplify(x):
    return tuple(_tuplify(v) for v in x) if isinstance(x, (list, tuple)) else x

