"""Each family's sampler with fixed noise equals the official sampler's output (tests/data/generators, recorded
from the official RecTok code at ee87aaf): SiT and LightningDiT through ``rectok sample``'s own path
and defaults (``--time-shift auto --interval auto``: the family's official grid and guidance interval, LightningDiT
guided where t >= 0.1; Euler); DiT through rectok's ancestral sampler (diffusers'
DDPMScheduler on the official respacing) and its ε-channel CFG, with the official per-step noise injected."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from diffusers.schedulers import scheduling_ddpm

from rectok_core.errors import RectokError
from rectok_core.flow.diffusion import respaced_timesteps, sample_ddpm
from rectok_core.flow.transport import time_grid
from rectok_core.models.generators import GENERATORS
from rectok_core.sampling import generate
from rectok_core.sampling.config import SampleConfig, resolve_sampler
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


@pytest.mark.parametrize("family", ["sit", "lightningdit"])
def test_velocity_families_default_sampling_equals_official(family, monkeypatch):
    """``rectok sample``'s defaults resolved for the family (as ``folder.sampling_of`` does), then its
    ``build_velocity`` + ``generate_latents`` with the recorded initial noise, reproduce the official sampler."""
    model, v = official_model(family)
    z, y = v["sample_z"], v["sample_y"]
    fam, c = GENERATORS[family], model.config
    shape = (c.in_channels, c.input_size, c.input_size)
    monkeypatch.setattr(generate, "initial_noise", lambda indices, seed, shape: z[indices])
    for key, scale in (("sample", 1.0), ("sample_cfg", 1.5)):
        cfg = SampleConfig(n=2, steps=len(v["sample_grid"]), cfg="cfg" if scale != 1 else "none", scale=scale)
        cfg.validate()
        shift, interval = cfg.resolved(fam.sampling, shape, fam.prediction)
        torch.testing.assert_close(time_grid(cfg.steps, shift), v["sample_grid"], rtol=1e-6, atol=1e-6)
        velocity = build_velocity(model, cfg.cfg, cfg.scale, model.null_class, None, interval)
        out = generate.generate_latents(velocity, torch.arange(2), y, cfg.seed, shape, cfg.steps,
                                        resolve_sampler(fam.prediction, cfg.sampler), torch.device("cpu"), "fp32",
                                        shift)
        torch.testing.assert_close(out, v[key], rtol=1e-5, atol=1e-5, msg=f"{family} {key}")


def test_family_sampling_defaults_and_overrides():
    """auto = the family's official grid and interval (DiT^DH: today's resolution-shifted grid, guided everywhere);
    explicit values win; a DiT (diffusion) refuses a time grid."""
    shape = (16, 8, 8)
    auto = SampleConfig()
    assert auto.resolved(GENERATORS["dit-dh"].sampling, shape, "velocity") == (0.5, (0.0, 1.0))
    assert auto.resolved(GENERATORS["sit"].sampling, shape, "velocity") == (1.0, (0.0, 1.0))
    assert auto.resolved(GENERATORS["lightningdit"].sampling, shape, "velocity") == (1 / 0.3, (0.1, 1.0))
    assert auto.resolved(GENERATORS["dit"].sampling, shape, "epsilon") == (None, (0.0, 1.0))
    given = SampleConfig(time_shift="2", interval="0.2,0.9")
    assert given.resolved(GENERATORS["lightningdit"].sampling, shape, "velocity") == (2.0, (0.2, 0.9))
    with pytest.raises(RectokError, match="--time-shift 2: a DiT"):
        given.resolved(GENERATORS["dit"].sampling, shape, "epsilon")
    for bad in ("0", "-1", "nan", "x"):
        with pytest.raises(RectokError, match="--time-shift"):
            SampleConfig(time_shift=bad).validate()


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
