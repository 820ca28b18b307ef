"""Transport: time sampling, flow-matching loss, sampling grid, guidance, batch-free noise (ODE solvers:
test_solvers.py)."""
from __future__ import annotations

import math

import pytest
import torch

from rectok_core.flow.guidance import (
    autoguidance_velocity,
    cfg_velocity,
    conditional_velocity,
)
from rectok_core.flow.noise import shift_time
from rectok_core.flow.solvers import sample_ode
from rectok_core.flow.transport import (
    flow_matching_loss,
    initial_noise,
    labels_for,
    sample_train_time,
    time_grid,
)
from rectok_core.models.dit import build_dit

S = 2 * math.sqrt(2)  # the recipe's shift for 16×16×128 latents


class Recorder:
    """Stand-in velocity model: returns ``fn(x, t, y)`` and records every call."""

    def __init__(self, fn):
        self.fn = fn
        self.calls: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self.drop_masks: list[torch.Tensor | None] = []

    def __call__(self, x, t, y, drop_mask=None):
        self.calls.append((x.clone(), t.clone(), y.clone()))
        self.drop_masks.append(drop_mask)
        return self.fn(x, t, y)


def _label_model(weight: float) -> Recorder:
    """Velocity ``weight·(1 + y)`` everywhere: distinct values per label, independent of x and t."""
    return Recorder(lambda x, t, y: weight * (1 + y.float()).view(-1, 1, 1, 1).expand_as(x))


# ---------------------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------------------
def test_sample_t_range_distribution_and_determinism() -> None:
    t = sample_train_time(200_000, S, torch.Generator().manual_seed(0))
    assert t.dtype == torch.float32 and t.shape == (200_000,)
    assert (t > 0).all() and (t <= 1).all()
    # sigma = 1 - t has the shifted distribution: median s/(1+s) ≈ 0.739 (recipe §1.6)
    assert abs((1 - t).median().item() - S / (1 + S)) < 0.005
    torch.testing.assert_close(t[:10], sample_train_time(10, S, torch.Generator().manual_seed(0)))
    with pytest.raises(ValueError):
        sample_train_time(4, 0.0)


def test_flow_matching_loss_zero_model() -> None:
    gen = torch.Generator().manual_seed(5)
    x1 = torch.randn(6, 4, 3, 3, generator=gen)
    y = torch.arange(6)
    model = Recorder(lambda x, t, y: torch.zeros_like(x))
    loss, per_sample = flow_matching_loss(model, x1, y, torch.Generator().manual_seed(7), S)

    # replay the documented draw order: times first, then noise
    replay = torch.Generator().manual_seed(7)
    t = 1 - shift_time(torch.rand(6, generator=replay), S)
    x0 = torch.randn(x1.shape, generator=replay)
    expected = (x1 - x0).pow(2).mean(dim=(1, 2, 3))
    torch.testing.assert_close(per_sample, expected)
    torch.testing.assert_close(loss, expected.mean())
    assert loss.dtype == torch.float32 and loss.dim() == 0

    x_t, t_seen, y_seen = model.calls[0]
    torch.testing.assert_close(t_seen, t)
    torch.testing.assert_close(x_t, t.view(-1, 1, 1, 1) * x1 + (1 - t.view(-1, 1, 1, 1)) * x0)
    assert torch.equal(y_seen, y)


def test_flow_matching_loss_oracle_and_drop_mask() -> None:
    x1 = torch.randn(5, 2, 4, 4)
    # the exact velocity x1 - x0 recovered from x_t: (x1 - x_t) / (1 - t)
    oracle = Recorder(lambda x, t, y: (x1 - x) / (1 - t.view(-1, 1, 1, 1)))
    mask = torch.tensor([True, False, False, True, False])
    loss, _ = flow_matching_loss(oracle, x1, torch.zeros(5, dtype=torch.long),
                                 torch.Generator().manual_seed(1), S, drop_mask=mask)
    assert loss.item() < 1e-8
    assert oracle.drop_masks[0] is mask


# ---------------------------------------------------------------------------------------------------------
# Grid
# ---------------------------------------------------------------------------------------------------------
def test_time_grid() -> None:
    grid = time_grid(150, S)
    assert grid.shape == (150,) and grid.dtype == torch.float32
    assert grid[0].item() == 0.0 and grid[-1].item() == 1.0
    assert (grid.diff() > 0).all()
    assert grid.diff()[0] < grid.diff()[-1]  # denser at the noise end
    # N = 3: t_1 = 1 - shift(1/2) = 1/(1+s)
    assert time_grid(3, S)[1].item() == pytest.approx(1 / (1 + S), abs=1e-7)
    torch.testing.assert_close(time_grid(5, 1.0), torch.linspace(0, 1, 5))
    with pytest.raises(ValueError):
        time_grid(1, S)


# ---------------------------------------------------------------------------------------------------------
# Guidance
# ---------------------------------------------------------------------------------------------------------
def test_cfg_one_forward_formula_and_scale_one() -> None:
    model = _label_model(1.0)
    x = torch.randn(3, 2, 2, 2)
    t = torch.full((3,), 0.4)
    y = torch.tensor([0, 4, 7])
    v = cfg_velocity(model, 3.0, null_class=10)(x, t, y)
    assert len(model.calls) == 1  # conditional and unconditional in ONE doubled batch
    x_in, t_in, y_in = model.calls[0]
    assert torch.equal(x_in, torch.cat([x, x])) and torch.equal(t_in, torch.cat([t, t]))
    assert torch.equal(y_in, torch.tensor([0, 4, 7, 10, 10, 10]))
    v_c, v_u = (1 + y.float()).view(-1, 1, 1, 1), torch.full((3, 1, 1, 1), 11.0)
    torch.testing.assert_close(v, (v_u + 3.0 * (v_c - v_u)).expand_as(x))

    plain = conditional_velocity(model)(x, t, y)
    torch.testing.assert_close(cfg_velocity(model, 1.0, null_class=10)(x, t, y), plain, atol=1e-6, rtol=0)


def test_cfg_scale_one_matches_dit() -> None:
    torch.manual_seed(0)
    model = build_dit("tiny", in_channels=4, input_size=4, num_classes=5).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.normal_(std=0.05)
    x, t, y = torch.randn(2, 4, 4, 4), torch.tensor([0.2, 0.9]), torch.tensor([1, 3])
    torch.testing.assert_close(cfg_velocity(model, 1.0, model.null_class)(x, t, y), model(x, t, y),
                               atol=1e-6, rtol=1e-5)
    out = sample_ode(cfg_velocity(model, 1.5, model.null_class), x, y, time_grid(4, 2.0))
    assert out.shape == x.shape and torch.isfinite(out).all()


def test_guidance_interval() -> None:
    model = _label_model(1.0)
    x = torch.zeros(4, 1, 1, 1)
    y = torch.tensor([1, 1, 1, 1])
    t = torch.tensor([0.2, 0.5, 0.7, 1.0])
    v = cfg_velocity(model, 2.0, null_class=9, interval=(0.5, 0.7))(x, t, y).flatten()
    guided = 10.0 + 2.0 * (2.0 - 10.0)
    torch.testing.assert_close(v, torch.tensor([2.0, guided, guided, 2.0]))  # inclusive bounds
    with pytest.raises(ValueError):
        cfg_velocity(model, 2.0, 9, interval=(0.8, 0.2))


def test_autoguidance_formula_labels_and_interval() -> None:
    main, guide = _label_model(3.0), _label_model(1.0)
    x = torch.randn(3, 2, 2, 2)
    y = torch.tensor([0, 2, 5])
    t = torch.tensor([0.1, 0.5, 0.9])
    v = autoguidance_velocity(main, guide, 1.29)(x, t, y)
    base = (1 + y.float()).view(-1, 1, 1, 1).expand_as(x)
    torch.testing.assert_close(v, base + 1.29 * (3 * base - base))
    assert torch.equal(main.calls[0][2], y) and torch.equal(guide.calls[0][2], y)  # same labels, no null
    torch.testing.assert_close(autoguidance_velocity(main, guide, 1.0)(x, t, y), 3 * base)
    windowed = autoguidance_velocity(main, guide, 2.0, interval=(0.0, 0.5))(x, t, y)
    torch.testing.assert_close(windowed[:2], (base + 2.0 * 2 * base)[:2])
    torch.testing.assert_close(windowed[2], 3 * base[2])


# ---------------------------------------------------------------------------------------------------------
# Sampling noise and labels
# ---------------------------------------------------------------------------------------------------------
def test_initial_noise_independent_of_batching() -> None:
    shape = (4, 3, 3)
    full = initial_noise(torch.arange(10), seed=0, shape=shape)
    parts = torch.cat([initial_noise(torch.arange(5), 0, shape), initial_noise(torch.arange(5, 10), 0, shape)])
    assert full.shape == (10, *shape) and full.dtype == torch.float32
    assert torch.equal(full, parts)
    assert torch.equal(initial_noise(torch.tensor([7, 3]), 0, shape), full[[7, 3]])
    assert not torch.allclose(full, initial_noise(torch.arange(10), seed=1, shape=shape))
    assert not torch.allclose(full[0], full[1])
    with pytest.raises(ValueError):
        initial_noise(torch.tensor([-1]), 0, shape)


def test_labels_for() -> None:
    labels = labels_for(50, 10)
    assert labels.dtype == torch.long
    assert torch.equal(labels[:12], torch.tensor([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]))
    assert torch.equal(labels.bincount(), torch.full((10,), 5))
