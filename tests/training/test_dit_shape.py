"""DiT^DH shape options (trunk and head width, depth, heads): defaults, validation, saved shape, the README table."""
from __future__ import annotations

import re

import pytest
import torch
from conftest import ROOT

from rectok_core.config import build_config, from_dict, resume_config, to_dict
from rectok_core.errors import RectokError
from rectok_core.models.config import DIT_PRESETS
from rectok_core.models.dit import build_dit
from rectok_core.training.dit_config import DIT_SHAPE, DIT_TRAIN_PRESETS, DiTTrainConfig, dit_shape

pytestmark = pytest.mark.usefixtures("one_thread")


def cfg_of(preset: str, **flags):
    return build_config(DiTTrainConfig, DIT_TRAIN_PRESETS, preset, {"tokenizer": "tok.pt", **flags})


def test_shape_defaults_to_the_preset_and_flags_change_it():
    assert cfg_of("S").model.shape() == dict(width=384, depth=12, heads=6, head_width=2048, head_depth=2,
                                             head_heads=16)
    for name in DIT_PRESETS:
        assert cfg_of(name).model.shape() == dit_shape(name)
        assert cfg_of(name).model.label() == f"DiT^DH-{name}"
    m = cfg_of("tiny", width=32, heads=2, head_width=48, head_heads=3).model
    assert m.shape() == dict(width=32, depth=2, heads=2, head_width=48, head_depth=1, head_heads=3)
    assert "trunk 32×2" in m.label()


@pytest.mark.parametrize("flags, expected", [
    (dict(width=100, heads=6), "--width 100 with --heads 6"),
    (dict(head_width=96, head_heads=5), "--head-width 96 with --head-heads 5"),
    (dict(width=64, heads=32), "--width 64 with --heads 32"),
    (dict(depth=0), "--depth must be positive"),
    (dict(head_depth=-1), "--head-depth must be positive"),
])
def test_bad_shapes_are_one_line_errors(flags, expected):
    with pytest.raises(RectokError) as e:
        cfg_of("tiny", **flags)
    msg = str(e.value)
    assert expected in msg and "\n" not in msg
    if "with" in expected:  # the suggestion is itself a valid head count
        m = re.search(r"e\.g\. --(head-)?heads (\d+)", msg)
        width = flags.get("width", flags.get("head_width"))
        assert m and width % int(m.group(2)) == 0 and (width // int(m.group(2))) % 4 == 0


def test_saved_config_round_trips_and_old_configs_get_the_preset_shape():
    cfg = cfg_of("tiny", width=32, heads=2)
    again = from_dict(DiTTrainConfig, to_dict(cfg))
    assert again.model.shape() == cfg.model.shape()
    old = to_dict(cfg_of("mini"))
    for k in DIT_SHAPE:  # a config.json written before the shape options existed
        del old["model"][k]
    assert from_dict(DiTTrainConfig, old).model.shape() == dit_shape("mini")
    with pytest.raises(RectokError, match="--width 48 differs from the run being resumed"):
        resume_config(DiTTrainConfig, to_dict(cfg), {"width": 48, "resume": True})


def test_readme_table_matches_the_models():
    """The README's preset table: shapes, trainable parameters and forward GFLOPs per image (C = 128, 16×16, 1000
    classes), recounted on the meta device."""
    from rectok_core.tools.bench import count_flops

    text = (ROOT / "README.md").read_text()
    rows = re.findall(r"^\| (\w+) \| (\d+) × (\d+), (\d+) \| (\d+) × (\d+), (\d+) \| ([\d.]+)M \| ([\d.]+) \|$", text,
                      flags=re.M)
    assert {r[0] for r in rows} == set(DIT_PRESETS)
    for name, *numbers, params, gflops in rows:
        shape = dict(zip(("width", "depth", "heads", "head_width", "head_depth", "head_heads"), map(int, numbers)))
        assert shape == dit_shape(name)
        with torch.device("meta"):
            model = build_dit(name, in_channels=128, input_size=16, num_classes=1000).eval()
            x, t, y = torch.zeros(1, 128, 16, 16), torch.zeros(1), torch.zeros(1, dtype=torch.long)
        n = sum(p.numel() for p in model.parameters() if p.requires_grad)
        assert f"{n / 1e6:.2f}" == params, name
        with torch.no_grad():
            flops = count_flops(lambda m=model, inputs=(x, t, y): m(*inputs))
        assert f"{flops / 1e9:.2f}" == gflops, name


@pytest.mark.slow
def test_a_smaller_guide_trains_saves_its_shape_and_guides(tmp_path):
    """train-dit with shape flags: the checkpoint and config.json record the shape, sampling rebuilds the model, and
    the smaller model serves as the AutoGuidance guide of a tiny DiT."""
    import json

    from rectok_core.api import Generator
    from rectok_core.checkpoints import open_checkpoint
    from rectok_core.training.config import TOKENIZER_PRESETS, TokenizerTrainConfig
    from rectok_core.training.dit import train_dit
    from rectok_core.training.tokenizer import train_tokenizer

    common = dict(steps=2, batch_size=8, workers=0, device="cpu", log_every=1, ckpt_every=2, image_every=1000)
    tok = train_tokenizer(build_config(TokenizerTrainConfig, TOKENIZER_PRESETS, "tiny",
                                       dict(teacher="none", out=str(tmp_path / "tok"), **common)))
    flags = dict(tokenizer=str(tok), stats_dir=str(tmp_path / "stats"), **common)
    main = train_dit(cfg_of("tiny", **{**flags, "out": str(tmp_path / "main")}))
    guide = train_dit(cfg_of("tiny", **{**flags, "out": str(tmp_path / "guide")}, width=32, heads=2, depth=1,
                             head_width=48, head_depth=1, head_heads=3))
    ck = open_checkpoint(guide, "dit")
    assert {k: ck["dit_config"][k] for k in DIT_SHAPE} == dict(width=32, depth=1, heads=2, head_width=48,
                                                               head_depth=1, head_heads=3)
    saved = json.loads((tmp_path / "guide" / "config.json").read_text())
    assert saved["model"]["width"] == 32 and saved["model"]["head_heads"] == 3
    gen = Generator.from_pretrained(main, guide=guide, device="cpu")
    assert gen.guide.model.config.width == 32 and gen.dit.model.config.width == 64
    small = sum(p.numel() for p in gen.guide.model.parameters())
    assert small < sum(p.numel() for p in gen.dit.model.parameters())
    images = gen.sample([0, 1], steps=3, cfg="autoguidance", scale=1.5, seed=0)
    assert images.shape == (2, 32, 32, 3)
