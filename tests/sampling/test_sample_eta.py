"""``rectok sample`` says how long it will take before it starts (evaluations counted, one batch step timed, or a
FLOPs lower bound when even one step is expensive). The CLI line: tests/interop/test_api_pretrained.py."""
from __future__ import annotations

import pytest
import torch

from rectok_core.flow.solvers import SOLVERS
from rectok_core.models.config import DIT_PRESETS, DiTConfig
from rectok_core.sampling.eta import duration, estimate, evaluations
from rectok_core.sampling.generate import build_velocity

pytestmark = pytest.mark.usefixtures("one_thread")

SHAPE = (16, 8, 8)


def factory(method: str, scale: float = 1.5, interval=(0.0, 1.0)):
    return lambda m, g: build_velocity(m, method, scale, 10, g, interval)


def test_duration_formats():
    assert [duration(s) for s in (0.2, 42, 200, 5 * 3600 + 7 * 60, 12 * 86400 + 4 * 3600)] == \
        ["1 s", "42 s", "3 min 20 s", "5 h 07 min", "12 d 4 h"]


def test_evaluations_follow_solver_and_guidance():
    assert evaluations(factory("none"), SHAPE, 150, "euler") == (149, 0, 149)
    assert evaluations(factory("cfg"), SHAPE, 150, "euler") == (298, 0, 149)  # one doubled batch per call
    assert evaluations(factory("cfg", scale=1.0), SHAPE, 150, "euler") == (149, 0, 149)  # scale 1: no guidance
    assert evaluations(factory("autoguidance"), SHAPE, 10, "euler") == (9, 9, 9)
    if "heun" in SOLVERS:
        main, _, calls = evaluations(factory("none"), SHAPE, 10, "heun")
        assert main == calls and 9 < calls <= 18


def test_cheap_runs_are_timed_and_expensive_ones_are_a_flops_bound():
    cfg = DiTConfig(**DIT_PRESETS["tiny"], in_channels=16, input_size=8, num_classes=10)
    calls = []

    def velocity(x, t, y):
        calls.append(x.shape[0])
        return x

    est = estimate(factory("none"), velocity, cfg, None, 100, 32, 11, "euler", torch.device("cpu"), "fp32")
    assert est.call_seconds is not None and calls == [32, 32]  # a warm-up call, then the timed one
    assert est.seconds == pytest.approx(4 * 10 * est.call_seconds)  # 4 batches × 10 evaluations
    assert est.line(11, torch.device("cpu")).startswith("estimated time: about ")

    xl = DiTConfig(**DIT_PRESETS["XL"])  # one batch of 256 at 321 GFLOPs a sample: far too slow to time on a CPU
    big = estimate(factory("autoguidance"), velocity, xl, DiTConfig(**DIT_PRESETS["S"]), 50_000, 256, 150, "euler",
                   torch.device("cpu"), "fp32")
    assert big.call_seconds is None and len(calls) == 2
    assert big.flops_per_sample == pytest.approx(149 * (321.44e9 + 95.47e9), rel=1e-3)
    assert big.seconds == pytest.approx(50_000 * big.flops_per_sample / big.rate)
    assert big.line(150, torch.device("cpu")).startswith("estimated time: at least ")
