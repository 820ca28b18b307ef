"""User-facing errors: the CLI prints their message as one line and exits non-zero."""


class RectokError(Exception):
    """A problem with the user's input or environment, explained in one line (no traceback)."""


class WeightsNotFound(RectokError):
    """Pretrained weights are needed but neither a local file nor the network can supply them."""


class CheckpointError(RectokError):
    """A checkpoint is missing, corrupt, of the wrong kind or of the wrong shape."""


class DataError(RectokError):
    """A dataset is empty, unreadable or inconsistent."""
