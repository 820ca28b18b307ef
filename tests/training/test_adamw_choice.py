"""engine.adamw: the implementation chosen per device (fused where PyTorch has it), its override and its record."""
from __future__ import annotations

import copy

import pytest
import torch

from rectok_core.errors import RectokError
from rectok_core.training import engine

CPU = torch.device("cpu")


def test_fused_is_chosen_on_cpu_and_cuda_and_can_be_forced(monkeypatch):
    monkeypatch.delenv("RECTOK_ADAMW", raising=False)
    assert engine.adamw_impl(CPU) == "fused" and engine.adamw_impl(torch.device("cuda")) == "fused"
    p = [torch.nn.Parameter(torch.ones(3))]
    assert engine.optimizer_impl(engine.adamw(p, 1e-3, (0.9, 0.95), CPU)) == "fused"
    for impl in ("foreach", "for-loop", "fused"):
        monkeypatch.setenv("RECTOK_ADAMW", impl)
        opt = engine.adamw(p, 1e-3, (0.9, 0.95), CPU)
        assert engine.optimizer_impl(opt) == impl
        assert opt.defaults["foreach"] is {"foreach": True, "for-loop": False, "fused": None}[impl]
    monkeypatch.setenv("RECTOK_ADAMW", "sgd")
    with pytest.raises(RectokError, match="RECTOK_ADAMW='sgd'"):
        engine.adamw(p, 1e-3, (0.9, 0.95), CPU)


def test_every_implementation_takes_the_same_steps(monkeypatch):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.LayerNorm(16), torch.nn.Linear(16, 4))
    x = torch.randn(5, 8)
    results = {}
    for impl in engine.ADAMW_IMPLS:
        monkeypatch.setenv("RECTOK_ADAMW", impl)
        m = copy.deepcopy(model)
        opt = engine.adamw(engine.param_groups(m, 0.05), 1e-2, (0.9, 0.95), CPU)
        for _ in range(3):
            m(x).pow(2).mean().backward()
            opt.step()
            opt.zero_grad()
        results[impl] = [p.detach().clone() for p in m.parameters()]
    for impl in ("fused", "foreach"):
        for a, b, p0 in zip(results[impl], results["for-loop"], model.parameters()):
            assert not torch.equal(b, p0.detach())  # the parameters moved
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
