"""The generator-family registry over every registered family: names (rectok and official), building, the saved
config round trip, the family's objective, the model contract shared by the trainer and the samplers, and the
one-line errors. Adding a family (one module + one ``declare`` line) is covered here without edits."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from rectok_core.errors import RectokError
from rectok_core.flow import OBJECTIVES
from rectok_core.models.generators import (
    GENERATORS,
    build_generator,
    config_fields,
    family_of_config,
    family_of_model,
    generator_from_config,
    generator_patch_size,
    model_names,
    parse_model_name,
)
from rectok_core.training.dit_config import DiTModelConfig

FAMILIES = GENERATORS.names()


@pytest.mark.parametrize("family", FAMILIES)
def test_names_parse_to_the_family_and_size(family):
    fam = GENERATORS[family]
    assert fam.name == family and fam.description == GENERATORS.description(family)
    assert fam.objective in OBJECTIVES and OBJECTIVES[fam.objective].prediction == fam.prediction
    for size in fam.sizes:
        assert parse_model_name(f"{family}-{size}") == (family, size)
        assert parse_model_name(f"{family}-{size}".upper()) == (family, size)  # rectok names: any case
    for official, size in fam.official.items():
        assert parse_model_name(official) == (family, size) and official in model_names()
    assert "tiny" in fam.sizes  # every family has a CPU size (the end-to-end tests train it)


@pytest.mark.parametrize("family", FAMILIES)
def test_tiny_model_builds_rebuilds_and_keeps_the_contract(family):
    torch.manual_seed(0)
    model = build_generator(f"{family}-tiny", None, in_channels=4, input_size=8, num_classes=5, class_dropout=0.5)
    assert family_of_model(model) == family and family_of_config(model.config) == family
    assert model.num_classes == 5 and model.null_class == 5
    again = generator_from_config(family, dataclasses.asdict(model.config))
    again.load_state_dict(model.state_dict())
    x, t, y = torch.randn(3, 4, 8, 8), torch.tensor([0.2, 0.5, 0.9]), torch.tensor([0, 4, 2])
    if GENERATORS[family].prediction == "epsilon":
        t = t * 999
    model.eval()
    again.eval()
    out = model(x, t, y)
    assert torch.equal(out, again(x, t, y)) and out.shape[0] == 3 and out.shape[2:] == (8, 8)
    drop = model.draw_drop_mask(3, torch.Generator().manual_seed(1))
    assert torch.equal(drop, torch.rand(3, generator=torch.Generator().manual_seed(1)) < 0.5)
    null = torch.full_like(y, 5)
    all_drop = torch.ones(3, dtype=torch.bool)
    assert torch.equal(model(x, t, y, drop_mask=all_drop), model(x, t, null))
    with pytest.raises(ValueError):
        model(torch.randn(1, 4, 6, 6), t[:1], y[:1])
    assert generator_patch_size(family, "tiny") == model.config.patch_size


def test_unknown_names_and_settings_are_one_line():
    with pytest.raises(RectokError, match=r"unknown --model 'sit-xxl'; choose one of dit-dh-s, .*SiT_xl") as e:
        parse_model_name("sit-xxl")
    assert "\n" not in str(e.value)
    with pytest.raises(RectokError, match="unknown --model 'foo'"):
        DiTModelConfig(name="foo").validate()
    with pytest.raises(RectokError, match="has no setting head_width"):
        config_fields("sit", "tiny", 4, 8, 5, 0.1, head_width=3)
    with pytest.raises(RectokError, match="unknown size 'q'"):
        config_fields("sit", "q", 4, 8, 5, 0.1)


def test_without_model_the_preset_dit_dh_is_built():
    """``train-dit`` without ``--model`` builds the DiT^DH of ``--preset`` with the shape options, as before."""
    m = DiTModelConfig(size="tiny", width=32, heads=2)
    assert m.generator() == ("dit-dh", "tiny", m.shape()) and m.label().startswith("DiT^DH")
    assert DiTModelConfig(name="DiTDDT_xl").generator() == ("dit-dh", "xl", {})
    assert DiTModelConfig(name="LightningDiT_xl").label() == "lightningdit-xl"


def test_dit_dh_shape_options_with_another_model_are_an_error_not_ignored():
    DiTModelConfig(name="sit-tiny", size="S").validate()  # the preset's own shape: nothing was given
    with pytest.raises(RectokError, match=r"^--width, --heads, --head-depth shape the DiT\^DH of --preset, not --model sit-t"):
        DiTModelConfig(name="sit-tiny", size="S", width=128, heads=4, head_depth=3).validate()


def test_rectok_generators_lists_every_family_its_models_and_official_names():
    from typer.testing import CliRunner

    from rectok_cli.main import app
    from rectok_core.models.generators import GENERATORS, generator_table

    rows = {row["family"]: row for row in generator_table()}
    assert set(rows) == set(GENERATORS.names())
    r = CliRunner().invoke(app, ["generators"], env={"COLUMNS": "400"})
    assert r.exit_code == 0, r.output
    for family in GENERATORS.values():
        assert family.name in r.output and family.objective in r.output
        for size in family.sizes:  # every model name train-dit --model takes, and every official alias
            assert family.model_name(size) in rows[family.name]["models"]
        for alias in family.official:
            assert alias in rows[family.name]["official"]
        if family.prediction == "epsilon":
            assert "ddpm" in rows[family.name]["sampling"]
