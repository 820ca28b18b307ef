"""Milestone checkpoints (--milestones, --keep-every) and best.pt (the best evaluation by the main metric)."""
import pytest
import torch
from conftest import make_image_folder
from typer.testing import CliRunner

from rectok_cli.main import app
from rectok_core.checkpoints import open_checkpoint
from rectok_core.config import build_config, resume_config
from rectok_core.errors import RectokError
from rectok_core.training import tokenizer as tokenizer_training
from rectok_core.training.config import TOKENIZER_PRESETS, TokenizerTrainConfig
from rectok_core.training.milestones import milestone_steps, parse_milestones
from rectok_core.training.rundir import read_metrics
from rectok_core.training.tokenizer import train_tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")
runner = CliRunner()


def tiny(out, **kw):
    base = dict(out=str(out), batch_size=4, steps=10, log_every=5, ckpt_every=100, image_every=100, teacher="none",
                workers=0, eval_every=0)
    base.update(kw)
    return build_config(TokenizerTrainConfig, TOKENIZER_PRESETS, "tiny", base)


def kept(out):
    return sorted(int(p.stem.split("_")[1]) for p in (out / "checkpoints").glob("step_*.pt"))


def test_milestone_specs():
    assert milestone_steps("10%", 10, 5) == set(range(1, 11))
    assert milestone_steps("10%", 25, 5) == {round(k * 25 / 10) for k in range(1, 11)}
    assert milestone_steps("25%", 100, 7) == {25, 50, 75, 100}
    assert milestone_steps("1000,5000,9000", 6000, 10) == {1000, 5000}  # past the end: dropped
    assert milestone_steps("20ep,40ep,0.5ep", 1000, 10) == {200, 400, 5}
    assert milestone_steps("none", 100, 10, keep_every=30) == {30, 60, 90}
    assert milestone_steps("50%,7", 20, 10, keep_every=0) == {7, 10, 20}
    assert parse_milestones("NONE") == []
    for bad in ("10x", "0%", "150%", "-5", "ep"):
        with pytest.raises(RectokError, match="--milestones"):
            parse_milestones(bad)
    r = runner.invoke(app, ["train-tokenizer", "--preset", "tiny", "--milestones", "every 5", "--out", "/nonexistent"])
    assert r.exit_code == 1 and "--milestones 'every 5'" in r.output and "Traceback" not in r.output


def test_milestones_at_tenths_of_a_run_and_on_request(tmp_path):
    train_tokenizer(tiny(tmp_path / "tenths", steps=20))
    out = tmp_path / "tenths"
    assert kept(out) == [2, 4, 6, 8, 10, 12, 14, 16, 18, 20]
    latest = open_checkpoint(out / "checkpoints" / "latest.pt")
    last = open_checkpoint(out / "checkpoints" / "step_0000020.pt")
    assert all(torch.equal(v, last["model"][k]) for k, v in latest["model"].items())
    assert open_checkpoint(out / "checkpoints" / "step_0000006.pt")["step"] == 6
    assert latest["best"] is None  # no evaluation: no best

    # explicit steps and epochs (16 images, batch 4: 4 steps per epoch), plus --keep-every
    data = make_image_folder(tmp_path / "data", classes=2, per_class=8, size=32)
    train_tokenizer(tiny(tmp_path / "req", data=str(data), steps=12, milestones="3,2ep", keep_every=5))
    assert kept(tmp_path / "req") == [3, 5, 8, 10]
    train_tokenizer(tiny(tmp_path / "none", steps=4, milestones="none"))
    assert kept(tmp_path / "none") == []


def test_no_milestone_of_a_non_finite_state(tmp_path, monkeypatch):
    from rectok_core.losses import tokenizer as losses

    real, calls = losses.mse01, {"n": 0}

    def poisoned(recon, img):
        calls["n"] += 1
        return real(recon, img) * (float("nan") if calls["n"] > 4 else 1.0)

    monkeypatch.setattr(losses, "mse01", poisoned)
    with pytest.raises(RectokError, match="non-finite loss"):
        train_tokenizer(tiny(tmp_path / "run", steps=8))
    assert kept(tmp_path / "run") == [1, 2, 3, 4]
    for s in (1, 2, 3, 4):
        ck = open_checkpoint(tmp_path / "run" / "checkpoints" / f"step_{s:07d}.pt")
        assert all(torch.isfinite(v).all() for v in ck["model"].values())


def test_best_checkpoint_follows_the_main_metric_and_survives_resume(tmp_path, monkeypatch):
    """A scripted evaluator (the real loop, saves and logging around it): rFID 5, 3, 4 at steps 2, 4, 6 → best.pt
    of step 4; resumed to step 10 with 3.5 at step 8 (not better than the restored 3) and 2 at step 10."""
    scripted = {2: 5.0, 4: 3.0, 6: 4.0, 8: 3.5, 10: 2.0}

    def evaluator(*args, **kwargs):
        return lambda step: {"rfid/ema": scripted[step], "rfid/raw": 9.0, "psnr/ema": 20.0 + step}

    monkeypatch.setattr(tokenizer_training, "TokenizerEvaluator", evaluator)
    data = make_image_folder(tmp_path / "data" / "train", classes=2, per_class=8, size=32)
    make_image_folder(tmp_path / "data" / "val", classes=2, per_class=2, size=32, seed=1)
    out = tmp_path / "run"
    train_tokenizer(tiny(out, data=str(data.parent), steps=6, eval_every=2, milestones="none"))
    best = open_checkpoint(out / "best.pt")
    assert best["step"] == 4 and best["best"] == {"metric": "rfid/ema", "value": 3.0, "step": 4}
    step4 = [r for r in read_metrics(out) if r.get("event") == "best"]
    assert [r["step"] for r in step4] == [2, 4] and step4[-1]["best"]["value"] == 3.0
    latest = open_checkpoint(out / "checkpoints" / "latest.pt")
    assert latest["step"] == 6 and latest["best"] == best["best"]  # the best so far, recorded in every checkpoint

    train_tokenizer(resume_config(TokenizerTrainConfig, latest["config"], {"resume": True, "steps": 10}))
    events = [r for r in read_metrics(out) if r.get("event") == "best"]
    assert [r["step"] for r in events] == [2, 4, 10]  # 3.5 at step 8 did not beat the restored 3.0
    best = open_checkpoint(out / "best.pt")
    assert best["step"] == 10 and best["best"] == {"metric": "rfid/ema", "value": 2.0, "step": 10}
    evals = {r["step"]: r["rfid/ema"] for r in read_metrics(out) if r.get("event") == "eval"}
    assert min(evals, key=evals.get) == best["step"]  # best.pt is the best recorded metric
