"""One name per concept and the card's commands as typed: ``--vfm`` is ``--teacher``, probe-flow takes the
checkpoint's data, ``sample`` finds the newest DiT run, guidance flags that would do nothing are refused."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rectok_cli.main import app
from rectok_core.config import build_config, flat_fields
from rectok_core.training.config import TOKENIZER_PRESETS, TokenizerTrainConfig
from rectok_core.training.rundir import newest_run_checkpoint

runner = CliRunner()


def test_vfm_is_an_alias_of_teacher(tmp_path):
    out = tmp_path / "run"
    r = runner.invoke(app, ["train-tokenizer", "--preset", "tiny", "--vfm", "none", "--steps", "2", "--batch-size",
                            "4", "--out", str(out), "--log-every", "1", "--ckpt-every", "2", "--image-every", "2"])
    assert r.exit_code == 0, r.output
    saved = json.loads((out / "config.json").read_text())
    assert saved["loss"]["teacher"] == "none"
    assert not [k for section in saved.values() if isinstance(section, dict) for k in section if "vfm" in k]


def test_every_option_has_one_name():
    names = list(flat_fields(TokenizerTrainConfig))
    assert "teacher" in names and "vfm" not in names
    cfg = build_config(TokenizerTrainConfig, TOKENIZER_PRESETS, "tiny", {"teacher": "none"})
    assert cfg.loss.teacher == "none"


def _fake_run(root: Path, name: str, dit: bool, mtime: float) -> Path:
    run = root / name
    (run / "checkpoints").mkdir(parents=True)
    cfg = {"model": {}, "run": {}, **({"latents": {}} if dit else {"loss": {}})}
    (run / "config.json").write_text(json.dumps(cfg))
    latest = run / "checkpoints" / "latest.pt"
    latest.write_bytes(b"x")
    os.utime(latest, (mtime, mtime))
    return latest


def test_newest_dit_run_is_found_by_kind_and_time(tmp_path):
    old = _fake_run(tmp_path, "dit-a", True, 1000)
    new = _fake_run(tmp_path, "dit-b", True, 2000)
    _fake_run(tmp_path, "tok", False, 3000)
    assert newest_run_checkpoint("dit", tmp_path) == new != old
    assert newest_run_checkpoint("tokenizer", tmp_path).parent.parent.name == "tok"
    with pytest.raises(Exception, match="no dit run with a checkpoint under"):
        newest_run_checkpoint("dit", tmp_path / "empty")


@pytest.mark.parametrize("args, message", [
    (["--cfg", "autoguidance", "-n", "50000"], "--cfg autoguidance needs --guide"),
    (["-n", "4"], "no dit run with a checkpoint under runs/"),
    (["-n", "4", "--scale", "2.0"], "--scale 2.0 needs guidance"),
    (["-n", "4", "--guide", "g.pt"], "--guide is only used by --cfg autoguidance"),
])
def test_sample_as_typed_without_a_checkpoint(tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    r = runner.invoke(app, ["sample", *args])
    assert r.exit_code == 1
    assert message in r.output and "Traceback" not in r.output
    assert not (tmp_path / "samples").exists()
