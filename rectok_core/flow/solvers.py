"""ODE solvers that integrate a velocity field over a time grid."""
from __future__ import annotations

import torch

from rectok_core.flow.transport import VelocityFn

ODE_METHODS = ("euler", "heun")


@torch.no_grad()
def sample_ode(velocity_fn: VelocityFn, x0: torch.Tensor, y: torch.Tensor, grid: torch.Tensor,
               method: str = "euler") -> torch.Tensor:
    """Integrate ``dx/dt = v(x, t, y)`` from ``grid[0]`` (noise ``x0``) to ``grid[-1]`` (data); returns the end state.

    - ``euler``: N grid points → N − 1 steps, N − 1 velocity evaluations (the recipe's sampler).
    - ``heun``: explicit trapezoid (Heun's 2nd-order method) on every step, including the last one (the velocity
      is defined at t = 1 in flow matching): 2·(N − 1) evaluations.

    The state is kept in fp32 whatever dtype the velocity comes in (e.g. bf16 under autocast).
    """
    if method not in ODE_METHODS:
        raise ValueError(f"unknown ODE method {method!r}; choose one of {ODE_METHODS}")
    if grid.dim() != 1 or grid.numel() < 2:
        raise ValueError(f"the time grid must be 1-D with at least 2 points, got shape {tuple(grid.shape)}")
    x = x0.float()
    grid = grid.to(device=x.device, dtype=torch.float32)
    batch = x.shape[0]
    for k in range(grid.numel() - 1):
        t0, t1 = grid[k].expand(batch), grid[k + 1].expand(batch)
        dt = grid[k + 1] - grid[k]
        v0 = velocity_fn(x, t0, y).float()
        if method == "euler":
            x = x + dt * v0
        else:
            v1 = velocity_fn(x + dt * v0, t1, y).float()
            x = x + dt * 0.5 * (v0 + v1)
    return x

