"""Flow matching for the latent generator: training path and loss, time grids, ODE samplers, guidance (recipe §4.2,
§4.3, §4.6) and batch-independent initial noise (§11.6).

Transport convention: **t = 1 is data**, t = 0 is noise. ``x_t = t·x1 + (1 − t)·x0`` with ``x0 ~ N(0, I)``; the
model predicts the velocity ``u = x1 − x0``. The noise level ``σ = 1 − t`` has the tokenizer's shifted
distribution (``rectok_core.flow``), and sampling integrates from t = 0 to t = 1 on the same shifted grid.

A *velocity function* is any callable ``v(x, t, y)`` with ``x (B, ...)``, ``t (B,)`` and labels ``y (B,)``; a
``DiTDH`` is one, and the guidance wrappers below build others from it.
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Protocol

import torch

from rectok_core.flow.noise import shift_time

VelocityFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


class VelocityModel(Protocol):
    """A trainable velocity model: ``model(x_t, t, y, drop_mask=None) -> v`` (``DiTDH`` satisfies it)."""

    def __call__(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor,
                 drop_mask: torch.Tensor | None = None) -> torch.Tensor: ...


def _check_shift(shift: float) -> None:
    if not shift > 0:
        raise ValueError(f"the time shift must be positive, got {shift}")


def _per_sample(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """View a ``(B,)`` tensor so that it broadcasts over the non-batch dimensions of ``like``."""
    return v.view(-1, *([1] * (like.dim() - 1)))


# ---------------------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------------------
def sample_train_time(n: int, shift: float, generator: torch.Generator | None = None,
             device: torch.device | str | None = None) -> torch.Tensor:
    """``n`` generator training times in (0, 1] (t = 1 is data): ``t = 1 − shift_time(u, shift)``, ``u ~ U(0, 1)``,
    fp32 (the mirror of the tokenizer's ``rectok_core.flow.noise.sample_noise_level``).

    ``u`` is drawn on the generator's device (the default device without one) and moved to ``device``, so a CPU
    generator gives the same times whatever device trains.
    """
    _check_shift(shift)
    gen_device = generator.device if generator is not None else device
    u = torch.rand(n, generator=generator, device=gen_device, dtype=torch.float32)
    t = 1 - shift_time(u, shift)
    return t.to(device) if device is not None else t


def flow_matching_loss(model: VelocityModel, x1: torch.Tensor, y: torch.Tensor,
                       generator: torch.Generator | None, shift: float,
                       drop_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Velocity-matching loss on the linear path: ``(mean loss, per-sample loss)``, both fp32.

    Draws, in this order and from ``generator`` (on its device, then moved to ``x1``'s device), the times
    (``sample_train_time``) and the noise ``x0``; forms ``x_t = t·x1 + (1 − t)·x0`` in fp32 and regresses
    ``model(x_t, t, y, drop_mask=drop_mask)`` onto ``x1 − x0`` with the squared error averaged over every
    non-batch dimension, then over the batch. No loss weighting.
    """
    n = x1.shape[0]
    x1 = x1.float()
    t = sample_train_time(n, shift, generator, x1.device)
    gen_device = generator.device if generator is not None else x1.device
    x0 = torch.randn(x1.shape, generator=generator, device=gen_device, dtype=torch.float32).to(x1.device)
    tb = _per_sample(t, x1)
    x_t = tb * x1 + (1 - tb) * x0
    v = model(x_t, t, y, drop_mask=drop_mask)
    per_sample = (v.float() - (x1 - x0)).pow(2).flatten(1).mean(dim=1)
    return per_sample.mean(), per_sample


# ---------------------------------------------------------------------------------------------------------
# Sampling
# ---------------------------------------------------------------------------------------------------------
def time_grid(num_points: int, shift: float, device: torch.device | str | None = None) -> torch.Tensor:
    """The sampling grid ``t_k = 1 − shift_time(1 − k/(N−1), shift)``, k = 0..N−1 (fp32).

    Increasing from exactly 0 (noise) to exactly 1 (data), denser near the noise end for shift > 1; N points
    give N − 1 ODE steps (the recipe's "150 steps" are 150 points, 149 Euler updates).
    """
    if num_points < 2:
        raise ValueError(f"a time grid needs at least 2 points, got {num_points}")
    _check_shift(shift)
    tau = torch.arange(num_points, dtype=torch.float64) / (num_points - 1)
    grid = 1 - shift_time(1 - tau, shift)
    grid[0], grid[-1] = 0.0, 1.0  # exact endpoints regardless of rounding in shift_time
    return grid.to(device=device, dtype=torch.float32)


def initial_noise(indices: torch.Tensor, seed: int, shape: tuple[int, ...]) -> torch.Tensor:
    """Standard-normal noise ``(len(indices), *shape)`` (fp32, CPU): sample ``i`` depends only on ``(seed, i)``.

    Each sample draws from its own CPU generator seeded with a 63-bit BLAKE2b hash of ``(seed, index)``, so the
    same global sample index gets the same noise whatever the batch size, shard or number of processes
    (recipe §11.6).
    """
    if indices.dim() != 1:
        raise ValueError(f"indices must be 1-D, got shape {tuple(indices.shape)}")
    out = torch.empty((indices.numel(), *shape), dtype=torch.float32)
    gen = torch.Generator(device="cpu")
    for row, index in enumerate(indices.tolist()):
        if index < 0:
            raise ValueError(f"sample indices must be non-negative, got {index}")
        digest = hashlib.blake2b(f"rectok-noise:{seed}:{index}".encode(), digest_size=8).digest()
        gen.manual_seed(int.from_bytes(digest, "little") & ((1 << 63) - 1))
        out[row] = torch.randn(shape, generator=gen, dtype=torch.float32)
    return out


def labels_for(n: int, num_classes: int) -> torch.Tensor:
    """Labels ``[0, 1, …, K−1]`` cycled to length ``n`` (long): exactly n/K per class when K divides n."""
    if num_classes <= 0:
        raise ValueError(f"num_classes must be positive, got {num_classes}")
    return torch.arange(n, dtype=torch.long) % num_classes

