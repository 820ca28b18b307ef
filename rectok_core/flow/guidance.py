"""Guided velocities: conditional, classifier-free guidance and AutoGuidance."""
from __future__ import annotations

import torch

from rectok_core.flow.transport import VelocityFn, _per_sample


def _in_interval(t: torch.Tensor, interval: tuple[float, float]) -> torch.Tensor:
    lo, hi = interval
    return (t >= lo) & (t <= hi)


def _check_interval(interval: tuple[float, float]) -> None:
    lo, hi = interval
    if not 0.0 <= lo <= hi <= 1.0:
        raise ValueError(f"a guidance interval must satisfy 0 <= lo <= hi <= 1, got {interval}")


def conditional_velocity(model: VelocityFn) -> VelocityFn:
    """No guidance: the model's conditional velocity (one forward per evaluation)."""

    def velocity(x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return model(x, t, y)

    return velocity


def cfg_velocity(model: VelocityFn, scale: float, null_class: int,
                 interval: tuple[float, float] = (0.0, 1.0)) -> VelocityFn:
    """Classifier-free guidance ``v_u + w·(v_c − v_u)`` on all channels, where ``t ∈ [lo, hi]`` (inclusive);
    the conditional velocity ``v_c`` elsewhere.

    Conditional and unconditional (label ``null_class``) halves go through ONE forward pass of a doubled batch.
    ``scale = 1`` reproduces the conditional velocity up to float rounding (at twice the cost).
    """
    _check_interval(interval)

    def velocity(x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        null = torch.full_like(y, null_class)
        out = model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, null]))
        v_cond, v_uncond = out.chunk(2, dim=0)
        guided = v_uncond + scale * (v_cond - v_uncond)
        return torch.where(_per_sample(_in_interval(t, interval), guided), guided, v_cond)

    return velocity


def autoguidance_velocity(model: VelocityFn, guide: VelocityFn, scale: float,
                          interval: tuple[float, float] = (0.0, 1.0)) -> VelocityFn:
    """AutoGuidance ``v_guide + w·(v_main − v_guide)`` where ``t ∈ [lo, hi]`` (inclusive), ``v_main`` elsewhere.

    Both models get the same (class) labels; each evaluation costs one forward of each model, also outside the
    interval (the choice is made per sample without host synchronisation). ``scale = 1`` gives ``v_main``.
    """
    _check_interval(interval)

    def velocity(x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        v_main = model(x, t, y)
        v_guide = guide(x, t, y)
        guided = v_guide + scale * (v_main - v_guide)
        return torch.where(_per_sample(_in_interval(t, interval), guided), guided, v_main)

    return velocity

