"""User-facing errors: the CLI prints their message as one line and exits non-zero."""
from __future__ import annotations

import logging

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


def _one_line(exc: BaseException) -> str:
    """The message of ``exc`` collapsed to one line (user-facing errors are one line)."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__

