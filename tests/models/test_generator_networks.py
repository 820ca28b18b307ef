"""SiT, DiT and LightningDiT against the official RecTok code (reference vectors in tests/data/generators/, made by
tools/make_generator_vectors.py from the official classes, commit in each JSON): forward pass, one training-loss
evaluation, parameter counts of the official builders, and the model contract."""
from __future__ import annotations

import importlib
import json
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from family_weights import state_from_manifest

from rectok_core.flow.objectives import diffusion_terms, flow_terms
from rectok_core.models.dit import sincos_pos_embed_2d
from rectok_core.models.generators import GENERATORS, build_generator, parse_model_name

DATA = Path(__file__).resolve().parents[1] / "data" / "generators"
FAMILIES = ("sit", "dit", "lightningdit")
COMMIT = "ee87aaf015d9f758caa54c2a5df01516dc1e5253"


def _load(family: str) -> tuple[dict, dict[str, torch.Tensor]]:
    meta = json.loads((DATA / f"{family}.json").read_text())
    return meta, torch.load(DATA / f"{family}.pt")


def _official_model(family: str, variant: dict) -> torch.nn.Module:
    """The rectok network of ``variant`` holding the official model's weights (through from_official_state)."""
    fam = GENERATORS.get(family)
    module = importlib.import_module(fam.model_class.__module__)
    model = fam.model_class(fam.config_class(**variant["rectok_config"]))
    model.load_state_dict(module.from_official_state(state_from_manifest(variant["manifest"])), strict=True)
    return model.eval()


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


@pytest.mark.parametrize("family", FAMILIES)
def test_forward_equals_official(family: str) -> None:
    meta, v = _load(family)
    assert meta["commit"] == COMMIT
    for variant in meta["variants"]:
        p = variant["prefix"]
        model = _official_model(family, variant)
        with torch.no_grad():
            out = model(v[p + "x"], v[p + "t"], v[p + "y"])
        assert out.shape == v[p + "out"].shape
        assert _rel(out, v[p + "out"]) < 1e-5, (family, p)
        # the official outputs are not trivially zero: the deterministic weights fill every adaLN-Zero layer
        assert v[p + "out"].abs().mean() > 0.1


@pytest.mark.parametrize("family", FAMILIES)
def test_training_loss_equals_official(family: str) -> None:
    """The official model's loss at fixed draws = rectok's objective terms on rectok's network (same weights)."""
    meta, v = _load(family)
    model = _official_model(family, meta["variants"][0])
    with torch.no_grad():
        if family == "dit":
            terms = diffusion_terms(model, v["loss_x1"], v["loss_y"], v["loss_t"], v["loss_x0"])
            torch.testing.assert_close(terms["vb"], v["loss_vb"], rtol=1e-5, atol=1e-7)
            loss = (terms["mse"] + terms["vb"]).mean()
        else:
            terms = flow_terms(model, v["loss_x1"], v["loss_y"], v["loss_t"], v["loss_x0"],
                               cosine=family == "lightningdit")
            if family == "lightningdit":
                torch.testing.assert_close(terms["cos"], v["loss_cos"], rtol=1e-5, atol=1e-7)
            loss = terms["mse"].mean()  # the official forward returns the MSE mean (LightningDiT included)
    torch.testing.assert_close(terms["mse"], v["loss_mse"], rtol=1e-5, atol=1e-7)
    assert abs(float(loss) - float(v["loss"])) <= 1e-5 * abs(float(v["loss"]))


@pytest.mark.parametrize("family", FAMILIES)
def test_config_from_official_state(family: str) -> None:
    meta, _ = _load(family)
    module = importlib.import_module(GENERATORS.get(family).model_class.__module__)
    for variant in meta["variants"]:
        state = state_from_manifest(variant["manifest"])
        kwargs = {"qk_norm": variant["rectok_config"].get("qk_norm", False)} if family == "sit" else {}
        fields = module.config_from_official_state(state, heads=4, **kwargs)
        expected = {k: val for k, val in variant["rectok_config"].items() if k != "class_dropout"}
        assert {k: fields.get(k, False if k in ("qk_norm", "learn_sigma") else None) for k in expected} == expected


def test_lightningdit_drops_official_rope_tables() -> None:
    meta, _ = _load("lightningdit")
    module = importlib.import_module("rectok_core.models.generators.lightningdit")
    state = state_from_manifest(meta["variants"][0]["manifest"])
    state.update({"rope.freqs_cos": torch.ones(64, 16), "rope.freqs_sin": torch.zeros(64, 16)})
    assert set(module.from_official_state(state)) == set(state) - {"rope.freqs_cos", "rope.freqs_sin"}
    assert module.config_from_official_state(state)["heads"] == 4  # 64 wide / 16 channels per head


@pytest.mark.parametrize("family", FAMILIES)
def test_parameter_counts_equal_official_builders(family: str) -> None:
    meta, _ = _load(family)
    fam = GENERATORS.get(family)
    assert set(fam.official) == set(meta["official_counts"])
    for name, counts in meta["official_counts"].items():
        assert parse_model_name(name) == (family, fam.official[name])
        with torch.device("meta"):
            model = build_generator(name, None, in_channels=16, input_size=16, num_classes=1000)
        params = list(model.parameters())
        assert sum(p.numel() for p in params) == counts["params"], name
        assert sum(p.numel() for p in params if p.requires_grad) == counts["trainable"], name


@pytest.mark.parametrize("family", FAMILIES)
def test_every_registered_size_builds(family: str) -> None:
    fam = GENERATORS.get(family)
    assert {"tiny", "b", "l", "xl"} <= set(fam.sizes)
    for size in fam.sizes:
        with torch.device("meta"):
            model = build_generator(family, size, in_channels=32, input_size=16, num_classes=1000)
        assert model.config.width == fam.sizes[size]["width"] and len(model.transformer.blocks) == model.config.depth
        assert fam.config_class(**asdict(model.config)) == model.config
        assert fam.model_name(size) == f"{family}-{size}" and parse_model_name(f"{family}-{size}") == (family, size)


@pytest.mark.parametrize("family", FAMILIES)
def test_fresh_model_is_official_init_and_keeps_the_contract(family: str) -> None:
    torch.manual_seed(0)
    model = build_generator(family, "tiny", in_channels=4, input_size=8, num_classes=10, class_dropout=0.5)
    cfg = model.config
    assert sum(p.numel() for p in model.parameters()) < 100_000
    torch.testing.assert_close(model.pos_embed[0], sincos_pos_embed_2d(cfg.width, 8))
    assert model.pos_embed.requires_grad == (family == "lightningdit")
    assert model.transformer.blocks[0].attn.qkv.bias.abs().sum() == 0
    x, y = torch.randn(3, 4, 8, 8), torch.tensor([1, 2, 10])
    t = torch.tensor([0.2, 0.5, 0.9]) if family != "dit" else torch.tensor([3.0, 400.0, 999.0])
    out = model.eval()(x, t, y)
    assert out.shape == (3, 8 if family == "dit" else 4, 8, 8) and out.abs().max() == 0  # adaLN-Zero
    # non-zero weights: eval never drops labels, drop_mask forces the null label, training drops by class_dropout
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.2) if p.dim() > 1 else torch.nn.init.normal_(p, std=0.1)
    with torch.no_grad():
        cond, null = model(x, t, y), model(x, t, torch.full_like(y, 10))
        masked = model(x, t, y, drop_mask=torch.tensor([True, False, False]))
        torch.testing.assert_close(masked[0], null[0])
        torch.testing.assert_close(masked[1:], cond[1:])
        assert not torch.allclose(cond[0], null[0])
        torch.testing.assert_close(model(x, t[1], y)[1], cond[1])  # a scalar t is broadcast
        model.train()
        torch.manual_seed(5)
        dropped = model(x, t, y)
        torch.manual_seed(5)
        drop = torch.rand(3) < 0.5
        torch.testing.assert_close(dropped, model.eval()(x, t, y, drop_mask=drop))
    with pytest.raises(ValueError, match="expects latents of shape"):
        model(torch.randn(1, 4, 16, 16), t[:1], y[:1])
