"""Figures: matplotlib with the non-interactive Agg backend, loaded only when a figure is drawn, and one way to write
a figure (atomically, always closed)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from rectok_core.utils.files import atomic_open


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend (imported here, lazily: only the commands that draw pay for it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: str | os.PathLike[str]) -> Path:
    """Write ``fig`` as a PNG at ``path`` (its folder created; never a half-written file) and close it."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_open(path, "wb") as f:
            fig.savefig(f, format="png")
    finally:
        pyplot().close(fig)
    return path
