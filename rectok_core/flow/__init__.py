"""Rectified-flow math: the tokenizer's noise path, the generator's transport, ODE solvers, guidance.

The ODE solver registry (``SOLVERS``, the ``--sampler`` choices): one line per solver below (name, the module that
registers it, its help). Names and help need no torch; ``SOLVERS[name]`` imports the module on first use. Adding a
solver = a function decorated with ``register_solver`` in its module + one line here. Guidance (none, cfg,
autoguidance) is a fixed set, not a registry: see ``rectok_core.flow.guidance``.
"""
from rectok_core.utils.registry import Registry

#: The ODE solvers by name (``euler`` first: the default sampler, recipe §4.6); entries are ``solvers.Solver``.
SOLVERS: Registry = Registry("ODE solver", option="--sampler")
SOLVERS.declare("euler", "rectok_core.flow.solvers", "1st order, N−1 velocity calls for N grid points")
SOLVERS.declare("heun", "rectok_core.flow.solvers", "2nd order trapezoid, 2·(N−1) calls")
SOLVERS.declare("ab2", "rectok_core.flow.solvers", "2nd order Adams–Bashforth (Euler first step), N−1 calls")
