"""Progress bars for long work: one tqdm bar on the main process, counting images (total and ETA)."""
from __future__ import annotations

import sys


def progress(total: int | None, initial: int = 0, desc: str = "", enabled: bool = True, unit: str = "it"):
    """A tqdm bar on the main process (plain periodic lines when not attached to a terminal). Long work over
    images uses ``unit="img"``, ``total`` = the number of images (of all ranks) and updates by batch size."""
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, disable=not enabled, dynamic_ncols=True, unit=unit,
                mininterval=1.0 if sys.stderr.isatty() else 30.0, file=sys.stderr)
