"""ODE solvers: every registered solver converges at its order on a linear ODE with a closed-form solution, is
exact for a constant velocity, and makes the documented number of velocity calls; the sampling choices are the
registry's."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rectok_core.flow.solvers import SOLVERS, register_solver, sample_ode
from rectok_core.flow.transport import time_grid

S = 2 * math.sqrt(2)  # the recipe's shift for 16×16×128 latents
A, B = -1.7, 0.8  # dx/dt = A·x + B


class Recorder:
    def __init__(self, fn):
        self.fn, self.ts = fn, []

    def __call__(self, x, t, y):
        assert t.shape == (x.shape[0],) and t.dtype == torch.float32 and x.dtype == torch.float32
        self.ts.append(t[0].item())
        return self.fn(x, t, y)


def _linear_exact(x0: torch.Tensor, t0: float, t1: float) -> torch.Tensor:
    """x(t1) for dx/dt = A·x + B: x = (x0 + B/A)·e^{A(t1 − t0)} − B/A."""
    return (x0.double() + B / A) * math.exp(A * (t1 - t0)) - B / A


@pytest.mark.parametrize("name", list(SOLVERS))
def test_global_error_shrinks_at_the_solver_order(name):
    """Halving every step of the recipe's shifted grid divides the error by 2^order: the order fitted from three
    grid sizes (16, 32, 64 intervals) matches the registered one."""
    solver = SOLVERS[name]
    x0 = torch.linspace(-2.0, 2.0, 6).view(3, 2)
    y = torch.zeros(3, dtype=torch.long)
    steps = np.array([16, 32, 64])
    errors = []
    for n in steps:
        out = sample_ode(lambda x, t, y: A * x + B, x0, y, time_grid(int(n) + 1, S), name)
        errors.append((out.double() - _linear_exact(x0, 0.0, 1.0)).abs().max().item())
    slope = np.polyfit(np.log(1.0 / steps), np.log(errors), 1)[0]
    assert slope == pytest.approx(solver.order, abs=0.15), (name, errors)
    ratios = [errors[i] / errors[i + 1] for i in range(2)]
    assert all(r == pytest.approx(2 ** solver.order, rel=0.2) for r in ratios), (name, ratios)


def test_registered_orders():
    assert SOLVERS["euler"].order == 1 and SOLVERS["heun"].order == 2 and SOLVERS["ab2"].order == 2
    assert list(SOLVERS)[0] == "euler"  # the default sampler (recipe §4.6)


@pytest.mark.parametrize("name", list(SOLVERS))
def test_constant_velocity_is_exact_and_call_count(name):
    c = torch.randn(3, 2, 2, 2)
    x0 = torch.randn(3, 2, 2, 2)
    grid = time_grid(10, S)
    rec = Recorder(lambda x, t, y: c.expand_as(x))
    out = sample_ode(rec, x0, torch.zeros(3, dtype=torch.long), grid, name)
    torch.testing.assert_close(out, x0 + c, atol=1e-6, rtol=0)
    assert len(rec.ts) == SOLVERS[name].calls(10) == SOLVERS[name].calls_per_step * 9
    assert rec.ts[0] == 0.0 and set(rec.ts) <= set(grid.tolist())


def test_call_counts_documented():
    assert {n: s.calls(150) for n, s in SOLVERS.items()} == {"euler": 149, "heun": 298, "ab2": 149}


def test_second_order_solvers_on_linear_time_velocity():
    """dx/dt = t on the grid (0, 0.25, 1): Heun's trapezoid is exact (0.5); Euler gives 0 + 0.75·0.25; AB2 starts
    with that Euler step (0) and then integrates the linear velocity exactly from the two last values on the
    non-uniform grid: 0.5 − 0.25²/2 = 0.46875."""
    v = lambda x, t, y: t.view(-1, 1).expand_as(x)  # noqa: E731
    x0, y, grid = torch.zeros(2, 3), torch.zeros(2, dtype=torch.long), torch.tensor([0.0, 0.25, 1.0])
    torch.testing.assert_close(sample_ode(v, x0, y, grid, "heun"), torch.full((2, 3), 0.5))
    torch.testing.assert_close(sample_ode(v, x0, y, grid, "euler"), torch.full((2, 3), 0.1875))
    torch.testing.assert_close(sample_ode(v, x0, y, grid, "ab2"), torch.full((2, 3), 0.46875))


def test_unknown_and_duplicate_solvers():
    v = lambda x, t, y: x  # noqa: E731
    with pytest.raises(ValueError, match="unknown ODE method 'rk4'; choose one of euler, heun, ab2"):
        sample_ode(v, torch.zeros(1, 2), torch.zeros(1, dtype=torch.long), time_grid(3, S), "rk4")
    with pytest.raises(ValueError, match="at least 2 points"):
        sample_ode(v, torch.zeros(1, 2), torch.zeros(1, dtype=torch.long), torch.zeros(1), "euler")
    with pytest.raises(ValueError, match="twice"):
        register_solver("euler", order=1)(lambda *a: None)


def test_every_declared_solver_is_registered_by_its_module():
    """Each declaration line in ``rectok_core/flow/__init__.py`` is registered, with the declared help; the names
    and the help need no torch."""
    import subprocess
    import sys

    code = ("import sys; from rectok_core.flow import SOLVERS; h = SOLVERS.help('x'); "
            "print(','.join(SOLVERS), 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == [",".join(SOLVERS), "False"]
    for name in SOLVERS:
        assert SOLVERS[name].name == name and SOLVERS[name].description == SOLVERS.description(name) != ""


def test_sampler_choices_come_from_the_registry():
    from rectok_core.sampling.folder import SampleConfig
    from rectok_core.sampling.generate import SAMPLERS

    f = SampleConfig.__dataclass_fields__["sampler"]
    assert SAMPLERS == (*SOLVERS, "ddpm") == f.metadata["choices"]  # + the diffusion family's own sampler
    assert all(f"{n} = " in f.metadata["help"] for n in SAMPLERS)
