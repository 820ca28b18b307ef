"""The rectified-flow noise path on tokenizer latents (Flow Semantic Distillation, recipe §1.6).

Tokenizer convention: ``x_t = (1 − t)·z + t·ε`` — **t = 1 is pure noise**. The generator (transport) uses the
mirrored convention ``t_dit = 1 − t`` with the same shifted distribution of the noise level.
"""
from __future__ import annotations

import math

import torch

T_SCHEDULES = ("shift", "uniform", "lognorm")


def timestep_shift(h: int, w: int, c: int) -> float:
    """The dimension-dependent shift ``s = sqrt(h·w·C / 4096)`` (2√2 for a 16×16×128 latent)."""
    if min(h, w, c) <= 0:
        raise ValueError(f"latent shape must be positive, got {h}x{w}x{c}")
    return math.sqrt(h * w * c / 4096)


def shift_time(u: torch.Tensor, s: float) -> torch.Tensor:
    """Map ``u ∈ [0, 1]`` to ``s·u / (1 + (s − 1)·u)``; s > 1 biases toward 1 (the noise end)."""
    return s * u / (1 + (s - 1) * u)


def sample_noise_level(n: int, schedule: str, s: float, generator: torch.Generator | None = None,
             device: torch.device | str = "cpu") -> torch.Tensor:
    """One noise level per sample, in the tokenizer convention (t = 1 is noise; the generator's training time is
    ``rectok_core.flow.transport.sample_train_time``, where t = 1 is data)."""
    if schedule == "shift":
        u = torch.rand(n, generator=generator, device=device)
        return shift_time(u, s)
    if schedule == "uniform":
        return torch.rand(n, generator=generator, device=device)
    if schedule == "lognorm":
        return torch.sigmoid(torch.randn(n, generator=generator, device=device))
    raise ValueError(f"unknown t schedule {schedule!r}; choose one of {T_SCHEDULES}")


def noise_latents(z: torch.Tensor, t: torch.Tensor, eps: torch.Tensor, gamma: float = 1.0) -> torch.Tensor:
    """``x_t = (1 − t)·z + t·γ·ε`` with one t per sample (broadcast over tokens and channels)."""
    t = t.to(z.dtype).view(-1, *([1] * (z.dim() - 1)))
    return (1 - t) * z + t * (gamma * eps)

