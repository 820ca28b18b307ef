"""--recipe: the defaults train what the official code trains (docs/recipe.md); --recipe rectok sets rectok's choices."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from rectok_core.checkpoints import load_tokenizer, open_checkpoint
from rectok_core.config import build_config, dumps, flat_fields, get_path
from rectok_core.errors import RectokError
from rectok_core.training.config import (
    FINETUNE_PRESETS,
    RECTOK_RECIPE,
    TOKENIZER_PRESETS,
    FinetuneConfig,
    TokenizerTrainConfig,
)
from rectok_core.training.inherit import resolve_run
from rectok_core.training.rundir import read_metrics
from rectok_core.training.tokenizer import train_tokenizer

#: The official stage-1 settings (run_train_tokenizer.sh and main_reconstruction.py at ee87aaf), as docs/recipe.md
#: states them, under rectok's option names.
OFFICIAL_STAGE1 = {
    # model (recipe §1): rectok_BB = ViT-B encoder and pixel decoder, a tiny semantic decoder
    "image_size": 256,            # §1.1 input 256×256
    "patch_size": 16,             # §1.1 patch 16 → 16×16 tokens
    "width": 768,                 # §1.1 base
    "depth": 12,                  # §1.1 base
    "heads": 12,                  # §1.1 base
    "dim": 128,                   # §1.1 token_channels = 128
    "sem_decoder": "transformer",  # §1.7
    "sem_width": 192,             # §1.1 tiny, §1.7
    "sem_depth": 3,               # §1.1 tiny, §1.7
    "sem_heads": 4,               # §1.1 tiny, §1.7
    "rope": "official",           # §1.2 concatenated, non-orthogonal frequencies
    "teacher_dim": 1024,          # §1.7 out = Linear(192, 1024), DINOv3-L's width
    # teacher and distillation (§1.5, §1.6, §1.8, §1.9)
    "teacher": "dinov3",          # §1.8 DINOv3 ViT-L/16
    "teacher_resize": "official",  # §1.8 256 → 224 → 256 round trip
    "t_schedule": "shift",        # §1.6
    "gamma": 1.0,                 # §1.6
    "sem_input": "noisy",         # §1.6 x_t feeds both decoders
    "sem_target": "rec+align",    # §1.9
    "mask_min": -0.1,             # §1.5 U(−0.1, 0.4)
    "mask_max": 0.4,              # §1.5
    # losses (§2)
    "perceptual": "lpips+convnext",  # §2 (LPIPS + 0.1·ConvNeXt-S logit MSE) / 1.1
    "rec_weight": 1.0,            # §2
    "perceptual_weight": 1.0,     # §2
    "kl_weight": 1e-6,            # §2
    "sem_weight": 1.0,            # §2
    "gan_weight": 0.1,            # §0 #1, §2: 0.1 effective
    "disc_start": 0.5,            # §3.1 discriminator from epoch 100 of 200
    "disc_norm": "batch",         # §2 plain BatchNorm
    # optimisation (§3.1)
    "batch_size": 64,             # §3.1 64 per GPU
    "grad_accum": 1,              # §3.1 default 1
    "epochs": 200.0,              # §3.1
    "steps": 0,                   # §3.1 the length is in epochs
    "seed": 1,                    # §3.1 seed 1 + rank
    "blr": 1e-4,                  # §3.1 blr 1e-4 × global batch / 256
    "lr": 0.0,                    # §3.1 no absolute lr: from blr
    "lr_scale_accum": False,      # §3.1, §11.15: the official lr does not scale with accumulation
    "min_lr": 0.0,                # §3.1
    "warmup": 0.25,               # §3.1 int(0.25 · 200) = 50 epochs
    "weight_decay": 1e-4,         # §3.1
    "beta1": 0.9,                 # §3.1
    "beta2": 0.95,                # §3.1
    "grad_clip": 3.0,             # §3.1
    "ema": 0.999,                 # §3.1
    "precision": "auto",          # §3.1 bf16 autocast: auto = bf16 on CUDA
}

#: Fields with no official counterpart that could change the trained model: where data, weights and outputs live,
#: how the run is logged and executed, and the recipe/preset names themselves.
NOT_RECIPE = {"preset", "recipe", "data", "out", "resume", "workers", "device", "compile", "log_every", "ckpt_every",
              "keep_every", "image_every", "strict_data", "log", "teacher_weights", "teacher_init", "lpips_vgg",
              "convnext_weights", "perceptual_init", "milestones", "init", "resume_from", "eval_every",
              "eval_images"}


def _paths(cls: type) -> dict:
    """Every leaf field name → its path, CLI-hidden ones (teacher_dim) included."""
    out = {}

    def walk(c, prefix):
        for f in dataclasses.fields(c):
            sub = f.metadata.get("section")
            if sub is not None:
                walk(sub, prefix + (f.name,))
            else:
                out[f.name] = prefix + (f.name,)

    walk(cls, ())
    return out


def test_default_tokenizer_config_equals_the_official_script_field_by_field():
    # what `rectok train-tokenizer --dim 128 --teacher dinov3 --data DIR` resolves (the CLI's resolve_run)
    cfg = resolve_run(TokenizerTrainConfig, TOKENIZER_PRESETS, {"dim": 128, "teacher": "dinov3", "data": "imagenet"},
                      "tokenizer")
    paths = _paths(TokenizerTrainConfig)
    assert set(paths) == set(OFFICIAL_STAGE1) | NOT_RECIPE  # a new option must be classified here
    got = {name: get_path(cfg, paths[name]) for name in OFFICIAL_STAGE1}
    assert got == OFFICIAL_STAGE1
    assert cfg.recipe == "official" and '"recipe": "official"' in dumps(cfg)  # named in the saved config


def test_default_decoder_finetune_config_is_the_official_stage2():
    cfg = build_config(FinetuneConfig, FINETUNE_PRESETS, "base", {})
    assert cfg.recipe == "official" and cfg.init == "official"  # §3.2, §3.3: live ← model, EMA ← model_ema
    assert (cfg.loss.perceptual, cfg.loss.rec_weight, cfg.loss.perceptual_weight) == ("lpips+convnext", 1.0, 1.0)  # §2
    assert (cfg.loss.gan_weight, cfg.loss.disc_start, cfg.loss.disc_norm) == (0.1, 0.0, "batch")  # §3.2 GAN from 0
    assert (cfg.run.epochs, cfg.run.batch_size, cfg.run.grad_accum) == (100.0, 64, 1)  # §3.2
    assert (cfg.optim.blr, cfg.optim.warmup, cfg.optim.min_lr, cfg.optim.lr_scale_accum) == (5e-5, 0.05, 0.0, False)
    assert (cfg.optim.ema, cfg.optim.grad_clip, cfg.optim.weight_decay) == (0.999, 3.0, 1e-4)  # §3.1 "as stage 1"
    loss = cfg.loss.as_tokenizer_loss()  # §3.2: no flow noise, masking, KL or semantic loss
    assert (loss.gamma, loss.mask_max, loss.kl_weight, loss.sem_weight, loss.teacher) == (0.0, 0.0, 0.0, 0.0, "none")


def test_recipe_rectok_sets_each_rectok_choice_and_flags_still_win():
    official = build_config(TokenizerTrainConfig, TOKENIZER_PRESETS, "base", {})
    rectok = build_config(TokenizerTrainConfig, TOKENIZER_PRESETS, "base", {"recipe": "rectok"})
    flat = flat_fields(TokenizerTrainConfig)
    changed = {n for n, (path, _) in flat.items() if get_path(official, path) != get_path(rectok, path)}
    expected = {k for part in RECTOK_RECIPE["tokenizer"].values() for k in part} | {"recipe"}
    assert changed == expected == {"recipe", "rope", "perceptual", "teacher_resize", "lr_scale_accum"}
    assert (rectok.model.rope, rectok.loss.perceptual, rectok.loss.teacher_resize) == ("rotation", "lpips", "native")
    # each choice is also one flag: an explicit flag wins over the recipe
    mixed = build_config(TokenizerTrainConfig, TOKENIZER_PRESETS, "base", {"recipe": "rectok", "rope": "official"})
    assert mixed.model.rope == "official" and mixed.loss.perceptual == "lpips"
    ft = build_config(FinetuneConfig, FINETUNE_PRESETS, "base", {"recipe": "rectok"})
    assert (ft.recipe, ft.init, ft.loss.perceptual, ft.optim.lr_scale_accum) == ("rectok", "ema", "lpips", True)
    # a preset's cheaper settings apply on top of either recipe (the CPU presets: no ConvNeXt weights offline)
    for recipe in ("official", "rectok"):
        tiny = build_config(TokenizerTrainConfig, TOKENIZER_PRESETS, "tiny", {"recipe": recipe})
        assert tiny.recipe == recipe and tiny.loss.perceptual == "none" and tiny.loss.teacher_resize == "native"
        assert tiny.model.rope == ("official" if recipe == "official" else "rotation")
    with pytest.raises(RectokError, match="--recipe 'paper'"):
        build_config(TokenizerTrainConfig, TOKENIZER_PRESETS, "base", {"recipe": "paper"})


def test_official_teacher_resize_is_refused_for_teachers_without_the_round_trip():
    with pytest.raises(RectokError, match="add --teacher-resize native for --teacher inception"):
        build_config(TokenizerTrainConfig, TOKENIZER_PRESETS, "base", {"teacher": "inception"})
    ok = build_config(TokenizerTrainConfig, TOKENIZER_PRESETS, "base", {"teacher": "inception",
                                                                         "teacher_resize": "native"})
    assert ok.loss.teacher_resize == "native"


@pytest.mark.parametrize("scale", [False, True])
def test_learning_rate_ignores_grad_accum_unless_asked(tmp_path, scale):
    """Official: lr = blr × batch × processes / 256 (recipe §11.15); --lr-scale-accum also multiplies by it."""
    cfg = build_config(TokenizerTrainConfig, TOKENIZER_PRESETS, "tiny",
                       dict(teacher="none", steps=1, batch_size=4, grad_accum=2, blr=2.56e-2, device="cpu",
                            out=str(tmp_path / "run"), lr_scale_accum=scale))
    train_tokenizer(cfg)
    start = next(m for m in read_metrics(tmp_path / "run") if m.get("event") == "start")
    assert start["global_batch"] == 8
    assert start["lr"] == pytest.approx(2.56e-2 * 4 * (2 if scale else 1) / 256)


@pytest.fixture(scope="module")
def stage1(tmp_path_factory):
    """A tiny stage-1 checkpoint whose raw and EMA weights differ (EMA 0.99 over 20 steps)."""
    out = tmp_path_factory.mktemp("stage1") / "run"
    cfg = build_config(TokenizerTrainConfig, TOKENIZER_PRESETS, "tiny",
                       dict(teacher="none", steps=20, batch_size=8, device="cpu", out=str(out), log_every=10))
    return train_tokenizer(cfg)


def _finetune(stage1, out, **flags):
    from rectok_core.training.tokenizer import finetune_decoder

    cfg = build_config(FinetuneConfig, FINETUNE_PRESETS, "tiny",
                       dict(steps=1, batch_size=8, device="cpu", out=str(out), **flags))
    cfg.tokenizer = str(stage1)
    return open_checkpoint(finetune_decoder(cfg), "tokenizer")


def test_finetune_starts_as_the_official_run(stage1, tmp_path):
    """Default (--init official, recipe §3.2–3.3): live ← stage-1 model, EMA ← stage-1 EMA, the frozen encoder of both
    is the raw stage-1 encoder; the EMA decoder continues from the stage-1 EMA decoder."""
    s1 = open_checkpoint(stage1, "tokenizer")
    enc = [k for k in s1["model"] if k.startswith("encoder.")]
    assert any(not torch.equal(s1["model"][k], s1["ema"][k]) for k in enc)  # the two weight sets really differ
    ft = _finetune(stage1, tmp_path / "official")
    assert ft["config"]["init"] == "official" and ft["config"]["recipe"] == "official"
    for weights in ("model", "ema"):
        for k in enc:
            assert torch.equal(ft[weights][k], s1["model"][k]), (weights, k)
    d = 1 - ft["config"]["optim"]["ema"]  # one step: EMA = lerp(stage-1 EMA, updated live, 1 − decay)
    dec = [k for k in ft["ema"] if k.startswith("decoder.")]
    for k in dec:
        torch.testing.assert_close(ft["ema"][k], s1["ema"][k] + d * (ft["model"][k] - s1["ema"][k]), rtol=0, atol=1e-6)
    assert any(not torch.equal(ft["ema"][k], ft["model"][k]) for k in dec)
    # the loaded tokenizer (EMA weights, what downstream commands use) encodes with the raw stage-1 encoder
    model, _ = load_tokenizer(tmp_path / "official" / "checkpoints" / "latest.pt")
    raw = {k.removeprefix("encoder."): v for k, v in s1["model"].items() if k.startswith("encoder.")}
    assert all(torch.equal(v, raw[k]) for k, v in model.encoder.state_dict().items())
    # rectok's choice (--init ema, part of --recipe rectok): both weight sets start from the stage-1 EMA
    ft_ema = _finetune(stage1, tmp_path / "ema", recipe="rectok")
    assert ft_ema["config"]["init"] == "ema"
    for weights in ("model", "ema"):
        assert all(torch.equal(ft_ema[weights][k], s1["ema"][k]) for k in enc)


def test_default_perceptual_loss_is_the_official_one_and_random_init_is_explicit(monkeypatch, tmp_path):
    from rectok_core.errors import WeightsNotFound
    from rectok_core.training.config import TokenizerLossConfig
    from rectok_core.training.tokenizer import build_perceptual

    monkeypatch.setenv("RECTOK_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty hub cache: no weights anywhere
    with pytest.raises(WeightsNotFound) as e:  # real weights by default: one line naming the option
        build_perceptual(TokenizerLossConfig(), torch.device("cpu"))
    assert "\n" not in str(e.value) and "--lpips-vgg" in str(e.value)
    loss = build_perceptual(TokenizerLossConfig(perceptual_init="random"), torch.device("cpu"))
    assert loss.kind == "lpips+convnext" and (loss.w_lpips, loss.w_convnext) == (1.0, 0.1) and loss.real is False
