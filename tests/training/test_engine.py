"""Training-engine pieces: schedules, optimizer groups, EMA, checkpoints, configuration."""
import math

import pytest
import torch
import torch.nn as nn

from rectok_core.checkpoints import open_checkpoint
from rectok_core.config import build_config, from_dict, resume_config, to_dict
from rectok_core.errors import CheckpointError, RectokError
from rectok_core.models.tokenizer import RecTok
from rectok_core.training.config import TOKENIZER_PRESETS, TokenizerTrainConfig
from rectok_core.training.engine import (
    EMA,
    FiniteGuard,
    StepRandom,
    hold_then_linear,
    param_groups,
    warmup_cosine,
)
from rectok_core.utils import checkpoint


def test_warmup_cosine_hand_values():
    assert warmup_cosine(0, 100, 10, 1.0) == 0.0
    assert warmup_cosine(5, 100, 10, 1.0) == pytest.approx(0.5)
    assert warmup_cosine(10, 100, 10, 1.0) == pytest.approx(1.0)
    assert warmup_cosine(55, 100, 10, 1.0) == pytest.approx(0.5)  # half-way through the cosine
    assert warmup_cosine(100, 100, 10, 1.0, 0.1) == pytest.approx(0.1)


def test_hold_then_linear():
    assert hold_then_linear(40, 40, 800, 2e-4, 2e-5) == 2e-4
    assert hold_then_linear(420, 40, 800, 2e-4, 2e-5) == pytest.approx(1.1e-4)
    assert hold_then_linear(900, 40, 800, 2e-4, 2e-5) == 2e-5


def test_no_decay_rule_follows_official_names():
    m = RecTok(build_config(TokenizerTrainConfig, TOKENIZER_PRESETS, "tiny", {}).model)
    decay, no_decay = param_groups(m, 1e-4)
    names = {id(p): n for n, p in m.named_parameters()}
    nd = {names[id(p)] for p in no_decay["params"]}
    d = {names[id(p)] for p in decay["params"]}
    assert "encoder.patch_embed.weight" in nd  # 'embed' in the name
    assert "encoder.pos_embed" in nd and "decoder.mask_token" in nd
    assert "encoder.blocks.0.attn.qkv.weight" in d and "encoder.latent_head.weight" in d
    assert all("bias" not in n for n in d)
    assert decay["weight_decay"] == 1e-4 and no_decay["weight_decay"] == 0.0


def test_ema_averages_trainable_and_copies_frozen_exactly():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 3))
    m[0].requires_grad_(False)
    ema = EMA(m, 0.9)
    before = ema.module[1].weight.clone()
    with torch.no_grad():
        m[1].weight.add_(1.0)
    ema.update(m)
    assert torch.allclose(ema.module[1].weight, before + 0.1)
    assert torch.equal(ema.module[0].weight, m[0].weight)


def test_step_random_is_a_function_of_step():
    r = StepRandom(3, 0, torch.device("cpu"))
    a = torch.rand(4, generator=r.at(7).device)
    torch.rand(100, generator=r.at(8).device)
    b = torch.rand(4, generator=r.at(7).device)
    assert torch.equal(a, b)
    assert not torch.equal(a, torch.rand(4, generator=StepRandom(3, 1, torch.device("cpu")).at(7).device))


def test_finite_guard_stops_and_names_the_term():
    g = FiniteGuard(torch.device("cpu"))
    g.observe(3, {"rec": torch.tensor(1.0)})
    g.check(3)
    g.saved("ck", 3)
    g.observe(4, {"rec": torch.tensor(1.0), "sem": torch.tensor(float("nan"))})
    with pytest.raises(RectokError, match=r"non-finite loss \(sem\) at step 4.*ck \(step 3\)"):
        g.check(4)


def test_atomic_save_and_kind_check(tmp_path):
    p = tmp_path / "c.pt"
    checkpoint.save_atomic({"format": "rectok", "kind": "dit", "x": torch.ones(2)}, p)
    assert list(tmp_path.iterdir()) == [p]  # no temp file left behind
    assert open_checkpoint(p, "dit")["x"].tolist() == [1.0, 1.0]
    with pytest.raises(CheckpointError, match="holds a generator.*RecTok tokenizer.*is needed"):
        open_checkpoint(p, "tokenizer")
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        open_checkpoint(tmp_path / "bad.pt")
    torch.save({"state_dict": {}}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not a rectok checkpoint"):
        open_checkpoint(tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not found"):
        open_checkpoint(tmp_path / "missing.pt")


def test_strict_state_loading_reports_shapes():
    a, b = nn.Linear(3, 4), nn.Linear(3, 5)
    with pytest.raises(CheckpointError, match=r"shape mismatch: weight \(5, 3\) vs \(4, 3\)"):
        checkpoint.load_state_strict(a, b.state_dict(), "w")


def test_rng_state_roundtrip():
    st = checkpoint.rng_state()
    a = (torch.rand(3), __import__("random").random(), __import__("numpy").random.rand())
    checkpoint.set_rng_state(st)
    b = (torch.rand(3), __import__("random").random(), __import__("numpy").random.rand())
    assert torch.equal(a[0], b[0]) and a[1:] == b[1:]


def test_config_presets_overrides_and_validation():
    cfg = build_config(TokenizerTrainConfig, TOKENIZER_PRESETS, "tiny", {"dim": 8, "teacher": "none"})
    assert (cfg.model.dim, cfg.model.width, cfg.loss.teacher, cfg.preset) == (8, 64, "none", "tiny")
    base = build_config(TokenizerTrainConfig, TOKENIZER_PRESETS, "base", {})
    assert (base.model.dim, base.loss.gan_weight, base.optim.ema, base.loss.mask_min) == (128, 0.1, 0.999, -0.1)
    assert from_dict(TokenizerTrainConfig, to_dict(cfg)) == cfg
    with pytest.raises(RectokError, match="--dim must be positive"):
        build_config(TokenizerTrainConfig, TOKENIZER_PRESETS, "tiny", {"dim": 0})
    with pytest.raises(RectokError, match="--sem-input 'x'"):
        build_config(TokenizerTrainConfig, TOKENIZER_PRESETS, "tiny", {"sem_input": "x"})
    with pytest.raises(RectokError, match="unknown preset"):
        build_config(TokenizerTrainConfig, TOKENIZER_PRESETS, "huge", {})
    with pytest.raises(RectokError, match="not a multiple"):
        build_config(TokenizerTrainConfig, TOKENIZER_PRESETS, "tiny", {"image_size": 30})


def test_resume_config_rejects_changed_model_flags():
    saved = to_dict(build_config(TokenizerTrainConfig, TOKENIZER_PRESETS, "tiny", {}))
    cfg = resume_config(TokenizerTrainConfig, saved, {"steps": 500, "dim": 16, "resume": True})
    assert cfg.run.steps == 500 and cfg.run.resume
    with pytest.raises(RectokError, match="--dim 32 differs from the run being resumed"):
        resume_config(TokenizerTrainConfig, saved, {"dim": 32})


def test_lr_scaling_rule_documented():
    # lr = blr × global batch / 256: 1e-4 × 1024 / 256 = 4e-4 (the official stage-1 value)
    assert math.isclose(1e-4 * 1024 / 256, 4e-4)
