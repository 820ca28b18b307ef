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
    return _meta_sizes(build)[0]


def _meta_sizes(build: Callable[[], nn.Module]) -> tuple[int, int]:
    """(parameters, activation values per token) of ``build()`` on the meta device. The second counts the output
    of every trainable linear layer, which the next operation keeps for the backward pass (a transformer keeps
    each layer's input too, and more in norms, GELUs and attention: this is a lower bound, so that the check never
    refuses a run that fits, e.g. under bf16 autocast)."""
    with torch.device("meta"):
        model = build()
    per_token = sum(m.out_features for m in model.modules() if isinstance(m, nn.Linear)
                    and any(p.requires_grad for p in m.parameters()))
    return sum(p.numel() for p in model.parameters()), per_token


def activation_bytes(build: Callable[[], nn.Module], batch: int, tokens: int) -> int:
    """An estimate (a lower bound) of the activation memory of one training micro-batch of ``batch`` samples of
    ``tokens`` tokens each: every linear layer's output, in fp32."""
    return _meta_sizes(build)[1] * batch * tokens * 4


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


def check_fits(what: str, build: Callable[[], nn.Module], device: torch.device, copies: int = TRAIN_COPIES,
               batch: int = 0, tokens: int = 0) -> int:
    """Refuse a model whose ``copies`` fp32 copies of its parameters plus the activations of one micro-batch
    (``batch`` samples of ``tokens`` tokens; :func:`activation_bytes`, a lower bound) exceed the free memory of
    ``device``, with one line on what to change. Passing is necessary, not sufficient: an allocation can still
    fail, and is then one line too (:func:`rectok_core.errors.out_of_memory`). Returns the parameter count."""
    n, per_token = _meta_sizes(build)
    weights = n * 4 * copies
    acts = per_token * batch * tokens * 4
    need, free = weights + acts, available_bytes(device)
    if free is not None and need > free:
        gib = 2 ** 30
        act_text = f" + activations of a micro-batch of {batch}: {acts / gib:.1f} GiB" if acts else ""
        fix = ("lower --batch-size (keep the global batch with --grad-accum N), use --precision bf16, or choose a "
               "smaller size or preset" if acts > weights else "choose a smaller size or preset")
        raise RectokError(f"{what} needs at least {need / gib:.1f} GiB to train ({n / 1e6:.1f} M parameters: "
                          f"weights, gradients, AdamW moments, EMA {weights / gib:.1f} GiB{act_text}) but {device} "
                          f"has {free / gib:.1f} GiB free: {fix}")
    return n
