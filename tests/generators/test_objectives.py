"""The generator training objectives against the official RecTok code's transport and diffusion losses
(tests/data/generators/objectives.pt, written by tools/make_objective_vectors.py from the official code), plus
their randomness contract (all draws from the step generator)."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from rectok_core.flow.objectives import OBJECTIVES, diffusion_terms, flow_terms
from rectok_core.flow.transport import flow_matching_loss

VECTORS = torch.load(Path(__file__).parents[1] / "data" / "generators" / "objectives.pt")


def toy_model(x, t, y, out_channels):
    """The same fixed function as tools/make_objective_vectors.py."""
    tt = t.float().view(-1, 1, 1, 1)
    base = torch.tanh(0.7 * x + 0.1 * tt) - 0.2 * x.roll(1, dims=2) + 0.05 * (y.float().view(-1, 1, 1, 1) + 1)
    if out_channels == x.shape[1]:
        return base
    return torch.cat([base, torch.tanh(0.5 * x - 0.3 * tt / 1000.0)], dim=1)


class Toy(torch.nn.Module):
    def __init__(self, out_channels: int):
        super().__init__()
        self.out_channels = out_channels

    def forward(self, x, t, y, drop_mask=None):
        return toy_model(x, t, y, self.out_channels)


def _close(a, b):
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shape", ["4x4x8x8", "3x32x4x4"])
def test_flow_terms_equal_official_transport(shape):
    assert VECTORS["commit"] == "ee87aaf015d9f758caa54c2a5df01516dc1e5253"
    for family, cosine in (("sit", False), ("lightningdit", True)):
        v = VECTORS[f"{family}_{shape}"]
        C = v["x1"].shape[1]
        terms = flow_terms(Toy(C), v["x1"], v["y"], v["t"], v["x0"], cosine=cosine)
        _close(terms["mse"], v["mse"])
        if cosine:
            _close(terms["cos"], v["cos"])


@pytest.mark.parametrize("shape", ["4x4x8x8", "3x32x4x4"])
def test_diffusion_terms_equal_official_diffusion(shape):
    v = VECTORS[f"dit_{shape}"]
    C = v["x1"].shape[1]
    terms = diffusion_terms(Toy(2 * C), v["x1"], v["y"], v["t"], v["noise"])
    _close(terms["mse"], v["mse"])
    _close(terms["vb"], v["vb"])
    assert (terms["vb"][v["t"] == 0] > 0).all()  # the decoder NLL branch is exercised


def test_lognorm_objectives_differ_by_the_cosine_term_only():
    x1, y = torch.randn(3, 4, 8, 8), torch.tensor([0, 1, 2])
    _, ps, terms = OBJECTIVES["flow-lognorm"].loss(Toy(4), x1, y, torch.Generator().manual_seed(7))
    _, ps_cos, terms_cos = OBJECTIVES["flow-lognorm-cosine"].loss(Toy(4), x1, y, torch.Generator().manual_seed(7))
    assert set(terms) == {"mse"} and set(terms_cos) == {"mse", "cos"}
    assert torch.equal(terms["mse"], terms_cos["mse"]) and torch.allclose(ps_cos, ps + terms_cos["cos"])
    assert (terms_cos["cos"] > 0).all()


def test_flow_shifted_is_todays_flow_matching_loss():
    x1, y = torch.randn(3, 4, 8, 8), torch.tensor([0, 1, 2])
    model = Toy(4)
    ref, ref_ps = flow_matching_loss(model, x1, y, torch.Generator().manual_seed(5), math.sqrt(8 * 8 * 4 / 4096))
    loss, ps, terms = OBJECTIVES["flow-shifted"].loss(model, x1, y, torch.Generator().manual_seed(5))
    assert torch.equal(loss, ref) and torch.equal(ps, ref_ps) and set(terms) == {"mse"}


def test_hand_computed_time_distributions():
    """t = U(0,1) (SiT), sigmoid(N(0,1)) (LightningDiT), randint(1000) (DiT), each drawn first from the generator."""
    x1, y = torch.randn(2, 4, 4, 4), torch.tensor([0, 1])
    seen = {}

    class Spy(Toy):
        def forward(self, x, t, y, drop_mask=None):
            seen["t"] = t.clone()
            return super().forward(x, t, y)

    for name, draw in (("flow-uniform", lambda g: torch.rand(2, generator=g)),
                       ("flow-lognorm", lambda g: torch.sigmoid(torch.randn(2, generator=g))),
                       ("flow-lognorm-cosine", lambda g: torch.sigmoid(torch.randn(2, generator=g))),
                       ("diffusion", lambda g: torch.randint(0, 1000, (2,), generator=g).float())):
        out = 8 if name == "diffusion" else 4
        OBJECTIVES[name].loss(Spy(out), x1, y, torch.Generator().manual_seed(3))
        _close(seen["t"], draw(torch.Generator().manual_seed(3)))


@pytest.mark.parametrize("name", OBJECTIVES.names())
def test_every_objective_draws_only_from_the_generator(name):
    x1, y = torch.randn(2, 4, 4, 4), torch.tensor([0, 1])
    model = Toy(8 if OBJECTIVES[name].prediction == "epsilon" else 4)
    torch.manual_seed(0)
    a = OBJECTIVES[name].loss(model, x1, y, torch.Generator().manual_seed(1))
    torch.manual_seed(123)
    b = OBJECTIVES[name].loss(model, x1, y, torch.Generator().manual_seed(1))
    c = OBJECTIVES[name].loss(model, x1, y, torch.Generator().manual_seed(2))
    assert torch.equal(a[1], b[1]) and not torch.equal(a[1], c[1])
    assert torch.allclose(a[1], sum(a[2].values()))
