"""How long ``rectok sample`` will take, said before it starts (the defaults, 50,000 samples × 150 steps, take days
on a CPU).

The DiT (and guide) evaluations per sample are counted by running the solver and guidance once on stand-in models.
When one velocity evaluation of a batch is cheap (under :data:`PROBE_SECONDS` by its FLOPs), it is timed on this
device (after a warm-up call, which also compiles) and the estimate is that time × evaluations × batches. Otherwise
the estimate is a lower bound: the FLOPs of the run (counted on the meta device) at a matmul rate measured now.
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from typing import Any

import torch

from rectok_core.flow.noise import timestep_shift
from rectok_core.flow.solvers import sample_ode
from rectok_core.flow.transport import time_grid
from rectok_core.models.generators import family_of_config, generator_from_config
from rectok_core.utils.runtime import autocast, synchronize

#: A velocity evaluation of one batch predicted (by FLOPs) to take longer than this is not timed.
PROBE_SECONDS = 2.0


@dataclass
class Estimate:
    seconds: float
    samples: int
    main_evals: int                 # DiT rows evaluated per sample (guidance doubles them)
    guide_evals: int                # guide rows per sample (AutoGuidance)
    flops_per_sample: float
    rate: float                     # measured matmul FLOP/s
    call_seconds: float | None = None  # measured time of one velocity evaluation of a batch
    batch: int = 1

    def line(self, steps: int, device: torch.device, total: int | None = None, processes: int = 1) -> str:
        """The first line ``rectok sample`` prints: ``total`` samples over ``processes`` (this one does
        :attr:`samples` of them)."""
        guide = f" + {self.guide_evals} guide" if self.guide_evals else ""
        where = f"{processes} processes on {device.type}" if processes > 1 else str(device)
        head = (f"estimated time: {'about' if self.call_seconds is not None else 'at least'} "
                f"{duration(self.seconds)} for {total or self.samples:,} samples × {steps} steps on {where}")
        if self.call_seconds is not None:
            how = (f"one velocity evaluation of a batch of {self.batch} took {self.call_seconds:.3g} s here; "
                   f"{self.main_evals} DiT{guide} evaluations per sample")
        else:
            how = (f"{self.main_evals} DiT{guide} evaluations per sample, {self.flops_per_sample / 1e9:,.1f} GFLOPs, "
                   f"at this device's measured matmul rate of {self.rate / 1e9:,.0f} GFLOP/s")
        return f"{head} ({how}; -n and --steps set the amount)"


def duration(seconds: float) -> str:
    """``42 s``, ``3 min 20 s``, ``5 h 07 min``, ``12 d 4 h``."""
    s = int(round(seconds))
    if s < 60:
        return f"{max(s, 1)} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60:02d} min"
    return f"{s // 86400:,} d {s % 86400 // 3600} h"


def evaluations(velocity_factory, shape: tuple[int, int, int], steps: int, sampler: str) -> tuple[int, int, int]:
    """(main rows, guide rows, velocity calls) per sample of ``velocity_factory(main, guide)`` under the solver and
    grid of a real run, counted with stand-in models that return zeros."""
    rows = {"main": 0, "guide": 0, "calls": 0}

    def stand_in(name: str):
        def velocity(x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            rows[name] += x.shape[0]
            return torch.zeros_like(x)
        return velocity

    grid = time_grid(steps, timestep_shift(shape[1], shape[2], shape[0]), torch.device("cpu"))
    velocity = velocity_factory(stand_in("main"), stand_in("guide"))

    def counted(x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        rows["calls"] += 1
        return velocity(x, t, y)

    sample_ode(counted, torch.zeros(1, *shape), torch.zeros(1, dtype=torch.long), grid, sampler)
    return rows["main"], rows["guide"], rows["calls"]


def forward_flops(config: Any) -> float:
    """FLOPs of one forward pass for one sample of the generator of ``config`` (any family's config dataclass:
    matmuls, convolutions, attention), counted on meta."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        model = generator_from_config(family_of_config(config), dataclasses.asdict(config)).eval()
        x = torch.zeros(1, config.in_channels, config.input_size, config.input_size)
        t, y = torch.zeros(1), torch.zeros(1, dtype=torch.long)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x, t, y)
    return float(counter.get_total_flops())


def matmul_rate(device: torch.device, precision: str) -> float:
    """FLOP/s of an n×n matmul on ``device`` (best of a few; bf16 for bf16 runs, else fp32)."""
    n = 4096 if device.type == "cuda" else 512
    dtype = torch.bfloat16 if precision == "bf16" and device.type == "cuda" else torch.float32
    a = torch.randn(n, n, device=device, dtype=dtype)
    best = float("inf")
    for _ in range(4):  # the first round warms up
        synchronize(device)
        start = time.perf_counter()
        a @ a
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return 2 * n ** 3 / max(best, 1e-9)


def time_call(velocity, batch: int, shape: tuple[int, int, int], device: torch.device, precision: str) -> float:
    """Seconds of one ``velocity`` evaluation of ``batch`` samples (the second of two: the first warms up)."""
    x = torch.zeros(batch, *shape, device=device)
    t = torch.full((batch,), 0.5, device=device)
    y = torch.zeros(batch, dtype=torch.long, device=device)
    with torch.no_grad(), autocast(device, precision):
        for _ in range(2):
            synchronize(device)
            start = time.perf_counter()
            velocity(x, t, y)
            synchronize(device)
    return time.perf_counter() - start


def estimate(velocity_factory, velocity, main: Any, guide: Any | None, samples: int, batch: int,
             steps: int, sampler: str, device: torch.device, precision: str, min_rows: int = 16) -> Estimate:
    """The time of generating ``samples`` samples in batches of ``batch`` on ``device`` (one process's share)."""
    shape = (main.in_channels, main.input_size, main.input_size)
    m, g, calls = evaluations(velocity_factory, shape, steps, sampler)
    per_sample = m * forward_flops(main) + (g * forward_flops(guide) if g and guide is not None else 0.0)
    rate = matmul_rate(device, precision)
    b = max(1, min(batch, samples))
    est = Estimate(samples * per_sample / rate, samples, m, g, per_sample, rate, batch=b)
    if per_sample / calls * max(b, min_rows) / rate < PROBE_SECONDS:
        est.call_seconds = time_call(velocity, b, shape, device, precision)
        est.seconds = math.ceil(samples / b) * calls * est.call_seconds
    return est
