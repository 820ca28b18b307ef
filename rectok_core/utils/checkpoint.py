"""The ``.pt`` layer: atomic saves, weights-only reads with one-line errors, strict state loading, RNG state.

A checkpoint is a dict ``{"format": "rectok", "version": 1, "kind": KIND, "config": {...}, "model": ...,
"ema": ..., "step": int, ...}``. Kinds, export folders and Hub ids are :mod:`rectok_core.checkpoints`'s (the front
door): it opens any of them and builds the model.
"""
from __future__ import annotations

import random
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rectok_core.config import WEIGHTS  # noqa: F401 - re-exported (defined without torch, for the CLI)
from rectok_core.errors import CheckpointError
from rectok_core.utils.files import atomic_open, file_sha256

FORMAT = "rectok"


VERSION = 1


def save_atomic(obj: Any, path: str | Path) -> None:
    """``torch.save`` to a temporary file in the same folder, fsync, then rename over ``path``."""
    with atomic_open(path, "wb", fsync=True) as f:
        torch.save(obj, f)


def read(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """A rectok ``.pt`` checkpoint (weights-only unpickling), checked for its format header; one-line errors for an
    empty, truncated, corrupt, foreign or code-carrying file. Folders, Hub ids and kind checks are the front
    door's (:func:`rectok_core.checkpoints.open_checkpoint`)."""
    path = Path(path)
    size = 0
    try:
        size = path.stat().st_size
        if size == 0:
            raise CheckpointError(f"cannot read checkpoint {path}: the file is empty (0 bytes; an interrupted copy?)")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pickle-protocol chatter of the weights-only unpickler
            ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except CheckpointError:
        raise
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint not found: {path}") from None
    except Exception as e:  # corrupt, truncated, not a torch file, or unsafe pickle
        raise CheckpointError(f"cannot read checkpoint {path} ({size} bytes): {read_error(e)}") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a rectok checkpoint (no 'format: rectok' header)")
    return ckpt


def read_error(e: BaseException) -> str:
    """One line on why ``torch.load(weights_only=True)`` failed, without PyTorch's advice to retry with
    ``weights_only=False`` (that would run arbitrary code from the file)."""
    text = str(e)
    if "Weights only load failed" in text or type(e).__name__ == "UnpicklingError":
        return "it holds objects other than tensors and plain values (refused: loading them could run code)"
    if "central directory" in text or "zip archive" in text or isinstance(e, EOFError):
        return "the file is truncated or corrupt (not a complete PyTorch file)"
    line = " ".join(re.sub(r"\x1b\[[0-9;]*m", "", text).split())[:200]
    return f"{type(e).__name__}: {line}" if line else type(e).__name__


def state_of(ckpt: dict, weights: str, path: str | Path) -> dict:
    """The ``ema`` or ``raw`` (``model``) weights of a checkpoint; an export folder holds only one of them."""
    slot = "ema" if weights == "ema" else "model"
    if slot not in ckpt:
        other = "raw" if weights == "ema" else "ema"
        raise CheckpointError(f"{path} holds only its {other} weights: use --weights {other}")
    return ckpt[slot]


def identity(ckpt: dict, path: str | Path) -> tuple[str, str]:
    """(local path, sha256) that identify a loaded checkpoint; an export folder keeps its source checkpoint's."""
    ident = ckpt.get("_identity")
    return (ident["path"], ident["sha256"]) if ident else (str(path), file_sha256(path))


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

