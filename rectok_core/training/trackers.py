"""The ``--log`` tracker names and their check, without numpy or torch (the configs validate ``--log`` with it; the
trackers themselves are in :mod:`rectok_core.training.logging`)."""
from __future__ import annotations

import importlib.util

from rectok_core.errors import RectokError

#: ``--log`` trackers; ``jsonl`` is always on.
TRACKERS = ("jsonl", "tensorboard", "wandb")


def parse_log_spec(spec: str) -> tuple[str, ...]:
    """``"tensorboard,wandb"`` → ``("jsonl", "tensorboard", "wandb")``; unknown or unavailable trackers are an error."""
    names = [s.strip() for s in (spec or "").split(",") if s.strip()]
    for n in names:
        if n not in TRACKERS:
            raise RectokError(f"--log {spec!r}: unknown tracker {n!r}; choose from {', '.join(TRACKERS)}")
    if "wandb" in names and importlib.util.find_spec("wandb") is None:
        raise RectokError("--log wandb needs the wandb package: pip install rectok[wandb]")
    if "tensorboard" in names and importlib.util.find_spec("tensorboard") is None:
        raise RectokError("--log tensorboard needs the tensorboard package: pip install tensorboard")
    return ("jsonl", *[n for n in TRACKERS[1:] if n in names])
