"""Runtime plumbing shared by every layer: the autocast precision, ``torch.compile`` switch, CUDA fast paths and
device synchronisation. Importing this module loads no torch (the CLI reads :data:`PRECISIONS` for its choices)."""
from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA by default; fp32 elsewhere unless asked."""
    import torch

    if resolve_precision(device, precision) == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


#: ``--precision`` values: autocast dtype, ``auto`` = bf16 on CUDA, fp32 on CPU.
PRECISIONS = ("auto", "bf16", "fp32")


def resolve_precision(device: torch.device, precision: str) -> str:
    if precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    return precision


#: The torch.compile backend (``RECTOK_COMPILE_BACKEND=eager`` or ``aot_eager`` to debug or test the wiring).
COMPILE_BACKEND = os.environ.get("RECTOK_COMPILE_BACKEND", "inductor")


def resolve_compile(setting: bool | None, device: torch.device) -> bool:
    """``--compile/--no-compile``; not given (None, "auto") means on for CUDA, off elsewhere."""
    return device.type == "cuda" if setting is None else bool(setting)


def maybe_compile(module, enabled: bool, **kwargs):
    """``torch.compile(module)`` with :data:`COMPILE_BACKEND` when ``enabled``, else ``module`` unchanged."""
    import torch

    return torch.compile(module, backend=COMPILE_BACKEND, **kwargs) if enabled else module


def cuda_fast_paths(device: torch.device) -> None:
    """TF32 matmuls/convolutions and cuDNN autotuning (fixed image sizes) on CUDA, as the official runs."""
    if device.type == "cuda":
        import torch

        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on CPU): for wall-clock timing."""
    if device.type == "cuda":
        import torch

        torch.cuda.synchronize(device)
