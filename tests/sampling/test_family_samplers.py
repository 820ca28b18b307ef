"""Each family's sampler with fixed noise equals the official sampler's output (tests/data/generators, recorded
from the official RecTok code at ee87aaf): SiT and LightningDiT through rectok's Euler solver and CFG (with
LightningDiT's guidance interval t >= 0.1) on the official grids; DiT through rectok's ancestral sampler (diffusers'
DDPMScheduler on the official respacing) and its ε-channel CFG, with the official per-step noise injected."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from diffusers.schedulers import scheduling_ddpm

from rectok_core.flow.diffusion import respaced_timesteps, sample_ddpm
from rectok_core.flow.solvers import sample_ode
from rectok_core.flow.transport import time_grid
from rectok_core.models.generators import GENERATORS
from rectok_core.sampling.generate import build_velocity

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "models"))
from family_weights import state_from_manifest  # noqa: E402

DATA = Path(__file__).resolve().parents[1] / "data" / "generators"
pytestmark = pytest.mark.usefixtures("one_thread")


def official_model(family: str):
    meta = json.loads((DATA / f"{family}.json").read_text())
    variant = meta["variants"][0]
    fam = GENERATORS[family]
    model = fam.model_class(fam.config_class(**variant["rectok_config"]))
    module = sys.modules[fam.model_class.__module__]
    model.load_state_dict(module.from_official_state(state_from_manifest(variant["manifest"])))
    return model.eval(), torch.load(DATA / f"{family}.pt")


@pytest.mark.parametrize("family,interval", [("sit", (0.0, 1.0)), ("lightningdit", (0.1, 1.0))])
def test_velocity_families_euler_and_cfg_equal_official(family, interval):
    model, v = official_model(family)
    z, y, grid = v["sample_z"], v["sample_y"], v["sample_grid"]
    for key, scale in (("sample", 1.0), ("sample_cfg", 1.5)):
        velocity = build_velocity(model, "cfg" if scale != 1 else "none", scale, model.null_class, None, interval)
        out = sample_ode(velocity, z, y, grid, "euler")
        torch.testing.assert_close(out, v[key], rtol=1e-5, atol=1e-5, msg=f"{family} {key}")


def test_lightningdit_release_grid_is_rectoks_shifted_grid():
    """The official LightningDiT grid (timestep_shift 0.3) is rectok's ``time_grid`` at shift 1/0.3."""
    _, v = official_model("lightningdit")
    torch.testing.assert_close(time_grid(5, 1 / 0.3), v["sample_grid"], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("key,scale", [("sample", 1.0), ("sample_cfg", 1.5)])
def test_dit_ancestral_sampler_and_cfg_equal_official(key, scale, monkeypatch):
    model, v = official_model("dit")
    assert respaced_timesteps(1000, 5) == sorted(v["sample_timesteps"].tolist(), reverse=True)
    noise = list(v[f"{key}_noise"][:, :2])  # per step (t = 999 first); with CFG the cond half's rows

    def recorded(shape, generator=None, device=None, dtype=None, **kw):
        assert isinstance(generator, list) and len(generator) == shape[0]  # one generator per sample
        return noise.pop(0).to(dtype=dtype)

    monkeypatch.setattr(scheduling_ddpm, "randn_tensor", recorded)
    eps = build_velocity(model, "cfg" if scale != 1 else "none", scale, model.null_class, None, (0.0, 1.0),
                         "epsilon", 4)
    out = sample_ddpm(eps, v["sample_z"], v["sample_y"], 5, [torch.Generator(), torch.Generator()])
    assert len(noise) == 1  # no noise at the last step (t = 0), as the official mask
    torch.testing.assert_close(out, v[key], rtol=1e-5, atol=1e-5)
