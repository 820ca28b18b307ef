"""train-tokenizer end to end on CPU: run directory contents, exact resume, 2-process gloo DDP, bad input."""
import json
import shutil
import subprocess

import pytest
import torch
from conftest import PYTHON, ROOT, cli_env, free_port, make_image_folder
from typer.testing import CliRunner

from rectok_cli.main import app
from rectok_core.checkpoints import open_checkpoint
from rectok_core.config import build_config, resume_config
from rectok_core.training.config import TOKENIZER_PRESETS, TokenizerTrainConfig
from rectok_core.training.rundir import read_metrics
from rectok_core.training.tokenizer import train_tokenizer
from rectok_core.utils.images import grid_captions

runner = CliRunner()


def tiny_cfg(out, data="digits", **kw):
    base = dict(data=str(data), out=str(out), batch_size=8, steps=6, log_every=1, ckpt_every=3, keep_every=3,
                image_every=3, teacher="none", workers=0)
    base.update(kw)
    return build_config(TokenizerTrainConfig, TOKENIZER_PRESETS, "tiny", base)


def test_cli_run_leaves_checkpoint_config_metrics_and_image(tmp_path):
    out = tmp_path / "run"
    r = runner.invoke(app, ["train-tokenizer", "--preset", "tiny", "--teacher", "none", "--steps", "8",
                            "--batch-size", "8", "--out", str(out), "--log-every", "4", "--disc-start", "0.5",
                            "--gan-weight", "0.1"])
    assert r.exit_code == 0, r.output
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model"]["dim"] == 16 and cfg["run"]["steps"] == 8 and cfg["loss"]["teacher"] == "none"
    rows = [m for m in read_metrics(out) if "loss" in m]
    assert [m["step"] for m in rows] == [4, 8]
    assert rows[0]["gan_on"] is False and rows[1]["gan_on"] is True and "disc" in rows[1] and "gan" in rows[1]
    caps = grid_captions(out / "images" / "recon_0000008.png")
    assert caps["rows"] == ["original", "reconstruction (raw model)", "reconstruction (EMA)"]
    assert caps["title"].startswith("step 8: ")
    ck = open_checkpoint(out / "checkpoints" / "latest.pt", "tokenizer")
    assert ck["step"] == 8 and ck["config"] == cfg
    assert {"model", "ema", "opt", "disc", "opt_d", "rng"} <= set(ck)


def test_resume_continues_exactly(tmp_path):
    """6 steps straight == 3 steps, stop, resume, 3 more (crossing epoch boundaries of a 24-image folder)."""
    data = make_image_folder(tmp_path / "data", classes=3, per_class=8, size=40)
    kw = dict(mask_max=0.4, disc_start=0.3, gan_weight=0.1, teacher="dinov3-s", teacher_init="random", image_size=32)
    straight = tiny_cfg(tmp_path / "a", data, **kw)
    train_tokenizer(straight)
    # the same run, "killed" after step 3: keep only its step-3 checkpoint, then resume
    part = tiny_cfg(tmp_path / "b", data, **kw)
    train_tokenizer(part)
    b_ckpts = tmp_path / "b" / "checkpoints"
    shutil.copy(b_ckpts / "step_0000003.pt", b_ckpts / "latest.pt")
    saved = open_checkpoint(b_ckpts / "latest.pt", "tokenizer")
    assert saved["step"] == 3
    resumed = resume_config(TokenizerTrainConfig, saved["config"], {"resume": True})
    train_tokenizer(resumed)
    a = open_checkpoint(tmp_path / "a" / "checkpoints" / "latest.pt")
    b = open_checkpoint(b_ckpts / "latest.pt")
    assert a["step"] == b["step"] == 6
    for part_name in ("model", "ema", "disc"):
        for k, v in a[part_name].items():
            assert torch.allclose(v, b[part_name][k], rtol=1e-5, atol=1e-6), (part_name, k)
    events = [m.get("event") for m in read_metrics(tmp_path / "b")]
    assert "resume" in events


def test_resume_refuses_changed_flags_and_missing_checkpoint(tmp_path):
    r = runner.invoke(app, ["train-tokenizer", "--preset", "tiny", "--out", str(tmp_path / "none"), "--resume"])
    assert r.exit_code == 1 and "no checkpoint to resume from" in r.output
    out = tmp_path / "run"
    assert runner.invoke(app, ["train-tokenizer", "--preset", "tiny", "--teacher", "none", "--steps", "2",
                               "--batch-size", "4", "--out", str(out)]).exit_code == 0
    r = runner.invoke(app, ["train-tokenizer", "--preset", "tiny", "--out", str(out), "--resume", "--dim", "32"])
    assert r.exit_code == 1 and "--dim 32 differs from the run being resumed" in r.output
    r = runner.invoke(app, ["train-tokenizer", "--preset", "tiny", "--teacher", "none", "--out", str(out)])
    assert r.exit_code == 1 and "already holds a run" in r.output
    r = runner.invoke(app, ["train-tokenizer", "--out", str(out), "--resume", "--steps", "4"])
    assert r.exit_code == 0, r.output
    assert open_checkpoint(out / "checkpoints" / "latest.pt")["step"] == 4


@pytest.mark.slow
def test_two_process_gloo_ddp(tmp_path):
    out = tmp_path / "ddp"
    cmd = [PYTHON, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
           "-m", "rectok_cli.main", "train-tokenizer", "--preset", "tiny", "--teacher", "none", "--steps", "4",
           "--batch-size", "4", "--out", str(out), "--log-every", "2", "--disc-start", "0.5", "--gan-weight", "0.1",
           "--grad-accum", "2", "--device", "cpu"]
    p = subprocess.run(cmd, cwd=ROOT, env=cli_env(), capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    ck = open_checkpoint(out / "checkpoints" / "latest.pt", "tokenizer")
    assert ck["step"] == 4
    start = next(m for m in read_metrics(out) if m.get("event") == "start")
    assert start["world_size"] == 2 and start["global_batch"] == 16


@pytest.mark.parametrize("case", ["empty", "dim0", "unwritable", "nonimage_only", "offline_teacher"])
def test_bad_input_gives_one_line_errors(tmp_path, case):
    args = ["train-tokenizer", "--preset", "tiny", "--steps", "2", "--batch-size", "4", "--teacher", "none",
            "--out", str(tmp_path / "run")]
    expect = {"empty": "no images found", "dim0": "--dim must be positive", "unwritable": "cannot write to --out",
              "nonimage_only": "no images found", "offline_teacher": "--teacher-weights"}[case]
    if case in ("empty", "nonimage_only"):
        d = tmp_path / "data" / "cls"
        d.mkdir(parents=True)
        if case == "nonimage_only":
            (d / "notes.txt").write_text("hello")
        args += ["--data", str(tmp_path / "data")]
    elif case == "dim0":
        args += ["--dim", "0"]
    elif case == "unwritable":
        (tmp_path / "afile").write_text("x")
        args += ["--out", str(tmp_path / "afile" / "run")]
    elif case == "offline_teacher":
        args += ["--teacher", "dinov3"]
    r = runner.invoke(app, args)
    assert r.exit_code == 1, r.output
    assert expect in r.output
    assert "Traceback" not in r.output


def test_corrupt_images_are_skipped_and_counted(tmp_path):
    data = make_image_folder(tmp_path / "data", classes=2, per_class=6, size=32)
    (data / "class0" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    (data / "class1" / "text.png").write_text("not an image")
    cfg = tiny_cfg(tmp_path / "run", data, steps=8, batch_size=7, log_every=8)
    train_tokenizer(cfg)
    last = [m for m in read_metrics(tmp_path / "run") if "loss" in m][-1]
    assert last["bad_images"] >= 2
    r = runner.invoke(app, ["train-tokenizer", "--preset", "tiny", "--teacher", "none", "--steps", "8",
                            "--batch-size", "7", "--data", str(data), "--out", str(tmp_path / "strict"),
                            "--strict-data"])
    assert r.exit_code == 1 and ("broken.jpg" in r.output or "text.png" in r.output)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    from rectok_core.losses import tokenizer as losses

    real = losses.mse01
    calls = {"n": 0}

    def poisoned(recon, img):
        calls["n"] += 1
        v = real(recon, img)
        return v * float("nan") if calls["n"] > 4 else v

    monkeypatch.setattr(losses, "mse01", poisoned)
    cfg = tiny_cfg(tmp_path / "run", steps=8, ckpt_every=2, keep_every=0)
    with pytest.raises(Exception, match="non-finite loss \\(.*rec.*\\).* at step 5.*latest.pt \\(step 4\\)"):
        train_tokenizer(cfg)
    ck = open_checkpoint(tmp_path / "run" / "checkpoints" / "latest.pt")
    assert ck["step"] == 4
    assert all(torch.isfinite(v).all() for v in ck["model"].values())
