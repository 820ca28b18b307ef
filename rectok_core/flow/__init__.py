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

#: The generator training objectives by name (``train-dit --objective``; each generator family names its default);
#: entries are ``objectives.Objective``.
OBJECTIVES: Registry = Registry("training objective", option="--objective")
OBJECTIVES.declare("flow-shifted", "rectok_core.flow.objectives",
                   "shifted-t flow matching, MSE on the velocity (DiT^DH)")
OBJECTIVES.declare("flow-uniform", "rectok_core.flow.objectives", "uniform-t flow matching, MSE on the velocity (SiT)")
OBJECTIVES.declare("flow-lognorm", "rectok_core.flow.objectives",
                   "log-normal-t flow matching, MSE on the velocity (LightningDiT as the RecTok code trains it)")
OBJECTIVES.declare("flow-lognorm-cosine", "rectok_core.flow.objectives",
                   "log-normal-t flow matching, MSE + cosine loss on the velocity (LightningDiT's own recipe)")
OBJECTIVES.declare("diffusion", "rectok_core.flow.objectives",
                   "Gaussian diffusion (linear β, 1000 steps), MSE on ε + learned-variance VB term (DiT)")
