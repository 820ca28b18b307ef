"""--config FILE (YAML / JSON, a run's config.json) and --print-config: defaults → preset → file → flags."""
import json

import pytest
from typer.testing import CliRunner

from rectok_cli.main import app
from rectok_core.config import file_overrides, resolve
from rectok_core.errors import RectokError
from rectok_core.training.config import TOKENIZER_PRESETS, TokenizerTrainConfig

runner = CliRunner()


def printed(args):
    r = runner.invoke(app, [*args, "--print-config"])
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def test_order_defaults_preset_file_flags(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("preset: tiny\nmodel:\n  dim: 24\nbatch-size: 6\nrun:\n  resume: true\n")
    cfg = resolve(TokenizerTrainConfig, TOKENIZER_PRESETS, {"steps": 7, "dim": None}, f)
    assert cfg.preset == "tiny" and cfg.model.width == 64      # the file's preset
    assert cfg.model.dim == 24 and cfg.run.batch_size == 6     # the file's values, nested or flat
    assert cfg.run.steps == 7 and cfg.run.resume is False      # flags; a saved 'resume' never carries over
    cfg = resolve(TokenizerTrainConfig, TOKENIZER_PRESETS, {"dim": 8, "preset": "small64"}, f)
    assert cfg.model.dim == 8 and cfg.preset == "small64" and cfg.model.width == 256
    with pytest.raises(RectokError, match="unknown key 'model.dims'"):
        file_overrides(TokenizerTrainConfig, {"model": {"dims": 3}})
    with pytest.raises(RectokError, match="unknown key 'colour'"):
        file_overrides(TokenizerTrainConfig, {"colour": "red"})


def test_config_json_of_a_run_reproduces_it_and_flags_override(tmp_path):
    x = tmp_path / "x"
    r = runner.invoke(app, ["train-tokenizer", "--preset", "tiny", "--teacher", "none", "--steps", "2",
                            "--batch-size", "4", "--dim", "8", "--mask-max", "0.2", "--out", str(x)])
    assert r.exit_code == 0, r.output
    saved = json.loads((x / "config.json").read_text())
    y = tmp_path / "y"
    shown = printed(["train-tokenizer", "--config", str(x / "config.json"), "--out", str(y)])
    derived = lambda c: {**c, "model": {k: v for k, v in c["model"].items() if k != "teacher_dim"}}  # noqa: E731
    assert derived(shown) == derived({**saved, "run": {**saved["run"], "out": str(y)}})  # teacher_dim: set at start
    r = runner.invoke(app, ["train-tokenizer", "--config", str(x / "config.json"), "--out", str(y)])
    assert r.exit_code == 0, r.output
    again = json.loads((y / "config.json").read_text())
    assert again["run"].pop("out") == str(y) and saved["run"].pop("out") == str(x)
    assert again == saved
    over = printed(["train-tokenizer", "--config", str(x / "config.json"), "--out", str(y), "--dim", "4",
                    "--preset", "tiny"])
    assert over["model"]["dim"] == 4 and over["loss"]["mask_max"] == 0.2


def test_print_config_exits_without_running(tmp_path):
    cfg = printed(["train-tokenizer", "--preset", "tiny", "--out", str(tmp_path / "never")])
    assert cfg["preset"] == "tiny" and cfg["model"]["image_size"] == 32 and cfg["run"]["log"] == "jsonl"
    assert not (tmp_path / "never").exists()
    r = runner.invoke(app, ["train-tokenizer", "--config", str(tmp_path / "missing.yaml"), "--print-config"])
    assert r.exit_code == 1 and "no such file" in r.output
    bad = tmp_path / "bad.json"
    bad.write_text('{"run": {"batchsize": 3}}')
    r = runner.invoke(app, ["train-tokenizer", "--preset", "tiny", "--config", str(bad), "--print-config"])
    assert r.exit_code == 1 and "unknown key 'run.batchsize'" in r.output


def test_version():
    r = runner.invoke(app, ["--version"])
    assert r.exit_code == 0 and r.stdout.strip() == "rectok 0.1.0"
