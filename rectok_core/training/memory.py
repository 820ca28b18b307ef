"""A memory estimate checked before a model is allocated: a width or depth too large for the device is a one-line
error, not an allocation failure (or the OOM killer) minutes into start-up."""
from __future__ import annotations

import os
from collections.abc import Callable

import torch
import torch.nn as nn

from rectok_core.errors import RectokError

#: fp32 copies a training step holds per trainable parameter: weights, gradients, AdamW's two moments, the EMA.
TRAIN_COPIES = 5


def count_params(build: Callable[[], nn.Module]) -> int:
    """The parameter count of ``build()``, constructed on the meta device (no memory is allocated)."""
    with torch.device("meta"):
        model = build()
    return sum(p.numel() for p in model.parameters())


def available_bytes(device: torch.device) -> int | None:
    """Free memory on ``device``: CUDA's free bytes, else the host's MemAvailable (None when unknown)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_fits(what: str, build: Callable[[], nn.Module], device: torch.device, copies: int = TRAIN_COPIES) -> int:
    """Refuse a model whose ``copies`` fp32 copies of its parameters alone exceed the free memory of ``device``
    (activations come on top, so passing is necessary, not sufficient). Returns the parameter count."""
    n = count_params(build)
    need, free = n * 4 * copies, available_bytes(device)
    if free is not None and need > free:
        raise RectokError(f"{what} has {n / 1e6:.1f} M parameters: training needs at least {need / 2**30:.1f} GiB "
                          f"(weights, gradients, AdamW moments, EMA) but {device} has {free / 2**30:.1f} GiB free; "
                          f"choose a smaller size")
    return n
