"""User-facing errors: the CLI prints their message as one line and exits non-zero."""
from __future__ import annotations

import logging
import re

logger = logging.getLogger(__name__)


class RectokError(Exception):
    """A problem with the user's input or environment, explained in one line (no traceback)."""


class WeightsNotFound(RectokError):
    """Pretrained weights are needed but neither a local file nor the network can supply them."""


class CheckpointError(RectokError):
    """A checkpoint is missing, corrupt, of the wrong kind or of the wrong shape."""


class DataError(RectokError):
    """A dataset is empty, unreadable or inconsistent."""


class Stopped(RectokError):
    """A run stopped at a safe point on a signal (SIGTERM, Ctrl-C); ``exit_code`` is 128 + the signal number."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


class OutOfMemory(RectokError):
    """An allocation failed (host or GPU memory): what to change, in one line."""


_OOM_TEXT = ("DefaultCPUAllocator: can't allocate memory", "CUDA out of memory", "out of memory",
             "not enough memory")


def out_of_memory(exc: BaseException) -> OutOfMemory | None:
    """The one-line :class:`OutOfMemory` for an allocation failure (``torch.OutOfMemoryError`` on CUDA, the CPU
    allocator's ``RuntimeError``, ``MemoryError``), or None when ``exc`` is something else."""
    text = str(exc)
    name = type(exc).__name__
    if not (isinstance(exc, MemoryError) or name == "OutOfMemoryError"
            or (isinstance(exc, RuntimeError) and any(t in text for t in _OOM_TEXT))):
        return None
    gpu = name == "OutOfMemoryError" or "CUDA" in text or "HIP" in text
    m = re.search(r"[Tt]ried to allocate ([0-9.]+ ?[KMGT]i?B)", text) or re.search(
        r"allocate memory: you tried to allocate (\d+) bytes", text)
    size = m.group(1) if m else ""
    if size.isdigit():
        b = int(size)
        size = f"{b / 2**30:.2f} GiB" if b >= 2**30 else f"{b / 2**20:.1f} MiB"
    what = f" (an allocation of {size} failed)" if size else ""
    return OutOfMemory(f"out of {'GPU' if gpu else 'host (CPU)'} memory{what}: lower --batch-size (training: keep the "
                       f"global batch with --grad-accum N), use --precision bf16{'' if gpu else ' on a GPU'}, or a "
                       f"smaller --preset or model size")


def _one_line(exc: BaseException) -> str:
    """The message of ``exc`` collapsed to one line (user-facing errors are one line)."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__

