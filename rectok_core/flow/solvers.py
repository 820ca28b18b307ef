"""ODE solvers that integrate a velocity field over a time grid, and their registry (``SOLVERS``).

Every solver integrates ``dx/dt = v(x, t, y)`` over the points of ``grid`` (from ``grid[0]``, noise, to
``grid[-1]``, data, in the transport convention), in fp32 whatever dtype the velocity comes in (e.g. bf16 under
autocast). With ``N`` grid points (``N − 1`` intervals ``h_k = t_{k+1} − t_k``):

=========  =====  ==================  ====================================================================
name       order  velocity calls      update
=========  =====  ==================  ====================================================================
``euler``  1      N − 1               ``x += h_k·v_k`` (the recipe's sampler, recipe §4.6)
``heun``   2      2·(N − 1)           explicit trapezoid on every step, the last one included (the velocity
                                      is defined at t = 1 in flow matching)
``ab2``    2      N − 1               Adams–Bashforth 2 on the non-uniform grid,
                                      ``x += h_k·((1 + r/2)·v_k − (r/2)·v_{k−1})``, ``r = h_k / h_{k−1}``;
                                      the first step is Euler (no history yet)
=========  =====  ==================  ====================================================================

``ab2`` is second order at Euler's cost: it reuses the previous velocity instead of evaluating a second one.
Its single Euler first step adds an ``O(h²)`` local error once, which keeps the global error ``O(h²)``. It is a
linear multistep method, so on stiff or very coarse grids it is less stable than Heun.

Adding a solver: decorate ``fn(velocity_fn, x, y, grid) -> x_end`` (``x`` fp32, ``grid`` fp32 on ``x``'s device)
with :func:`register_solver` and declare it in ``rectok_core/flow/__init__.py`` (one line: name, module, help);
``rectok sample --sampler`` and ``SampleConfig`` pick it up from ``SOLVERS``.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the registry imports no torch: the CLI help lists the solvers
    import torch

    from rectok_core.flow.transport import VelocityFn

from rectok_core.flow import SOLVERS

SolverFn = Callable[["VelocityFn", "torch.Tensor", "torch.Tensor", "torch.Tensor"], "torch.Tensor"]


@dataclass(frozen=True)
class Solver:
    """A registered ODE solver: its integrator, convergence order and velocity calls per grid interval."""

    name: str
    fn: SolverFn
    order: int
    calls_per_step: int
    description: str

    def calls(self, num_points: int) -> int:
        """Velocity evaluations for a grid of ``num_points`` points."""
        return self.calls_per_step * (num_points - 1)


def register_solver(name: str, order: int, calls_per_step: int = 1,
                    description: str = "") -> Callable[[SolverFn], SolverFn]:
    """Decorator registering ``fn(velocity_fn, x, y, grid) -> x_end`` in ``SOLVERS`` as solver ``name`` of
    convergence ``order`` making ``calls_per_step`` velocity calls per grid interval; its ``--sampler`` help is the
    declaration's (``rectok_core/flow/__init__.py``), else ``description``, else the docstring. A name registered
    twice is an error."""
    def deco(fn: SolverFn) -> SolverFn:
        about = SOLVERS.description(name) if name in SOLVERS else description or (fn.__doc__ or "").strip()
        SOLVERS.add(name, Solver(name, fn, int(order), int(calls_per_step), about), about)
        return fn
    return deco


def solver_help(lead: str = "ODE integrator") -> str:
    """A ``--sampler`` help text built from the registry (imports nothing: ``SOLVERS.help`` is the same)."""
    return SOLVERS.help(lead)


def _t(grid: torch.Tensor, k: int, batch: int) -> torch.Tensor:
    return grid[k].expand(batch)


@register_solver("euler", order=1)
def _euler(velocity_fn: VelocityFn, x: torch.Tensor, y: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    for k in range(grid.numel() - 1):
        x = x + (grid[k + 1] - grid[k]) * velocity_fn(x, _t(grid, k, x.shape[0]), y).float()
    return x


@register_solver("heun", order=2, calls_per_step=2)
def _heun(velocity_fn: VelocityFn, x: torch.Tensor, y: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    for k in range(grid.numel() - 1):
        dt = grid[k + 1] - grid[k]
        v0 = velocity_fn(x, _t(grid, k, x.shape[0]), y).float()
        v1 = velocity_fn(x + dt * v0, _t(grid, k + 1, x.shape[0]), y).float()
        x = x + dt * 0.5 * (v0 + v1)
    return x


@register_solver("ab2", order=2)
def _ab2(velocity_fn: VelocityFn, x: torch.Tensor, y: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    v_prev, h_prev = None, None
    for k in range(grid.numel() - 1):
        h = grid[k + 1] - grid[k]
        v = velocity_fn(x, _t(grid, k, x.shape[0]), y).float()
        if v_prev is None:
            x = x + h * v
        else:
            half_r = 0.5 * h / h_prev
            x = x + h * ((1 + half_r) * v - half_r * v_prev)
        v_prev, h_prev = v, h
    return x


def sample_ode(velocity_fn: VelocityFn, x0: torch.Tensor, y: torch.Tensor, grid: torch.Tensor,
               method: str = "euler") -> torch.Tensor:
    """Integrate ``dx/dt = v(x, t, y)`` from ``grid[0]`` (noise ``x0``) to ``grid[-1]`` (data) with the registered
    solver ``method`` (see the module docstring for orders and call counts); returns the end state in fp32."""
    if method not in SOLVERS:
        raise ValueError(f"unknown ODE method {method!r}; choose one of {', '.join(SOLVERS.names())}")
    if grid.dim() != 1 or grid.numel() < 2:
        raise ValueError(f"the time grid must be 1-D with at least 2 points, got shape {tuple(grid.shape)}")
    import torch

    x = x0.float()
    with torch.no_grad():
        return SOLVERS[method].fn(velocity_fn, x, y, grid.to(device=x.device, dtype=torch.float32))
