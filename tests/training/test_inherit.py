"""Commands given a tokenizer checkpoint take its preset, data and image size unless told otherwise, and say so."""
import json

import pytest
from typer.testing import CliRunner

from rectok_cli.main import app
from rectok_core.training.inherit import TokenizerSettings, inherit

runner = CliRunner()


@pytest.fixture(scope="module")
def tiny_tok(tmp_path_factory):
    out = tmp_path_factory.mktemp("inherit") / "tok"
    r = runner.invoke(app, ["train-tokenizer", "--preset", "tiny", "--teacher", "none", "--steps", "2",
                            "--batch-size", "4", "--out", str(out)])
    assert r.exit_code == 0, r.output
    return out / "checkpoints" / "latest.pt"


def test_inherit_fills_only_what_is_not_given(tiny_tok):
    src = TokenizerSettings.of(tiny_tok)
    assert (src.preset, src.data, src.image_size) == ("tiny", "digits", 32)
    ov = {"preset": None, "data": None}
    line = inherit(ov, src, {"base": {}, "tiny": {}})
    assert line == f"using preset tiny, data digits, image size 32 from {tiny_tok}"
    assert ov == {"preset": "tiny", "data": "digits"}
    ov = {"preset": "base", "data": "elsewhere"}
    assert inherit(ov, src, {"base": {}, "tiny": {}}) == f"using image size 32 from {tiny_tok}"
    assert ov == {"preset": "base", "data": "elsewhere"}
    ov = {}
    inherit(ov, src, {"XL": {}, "mini": {}}, preset_for={"small64": "mini"})  # no DiT preset for "tiny" here
    assert "preset" not in ov and ov["data"] == "digits"


@pytest.mark.slow
def test_finetune_decoder_runs_without_preset(tiny_tok, tmp_path):
    out = tmp_path / "ft"
    r = runner.invoke(app, ["finetune-decoder", str(tiny_tok), "--steps", "2", "--batch-size", "4", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert r.output.splitlines()[0] == f"using preset tiny, data digits, image size 32 from {tiny_tok}"
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["preset"] == "tiny" and cfg["loss"]["perceptual"] == "none" and cfg["run"]["data"] == "digits"
    assert "done at step 2" in r.output


def test_train_dit_and_cache_latents_take_the_tokenizers_settings(tiny_tok, tmp_path):
    r = runner.invoke(app, ["train-dit", "--tokenizer", str(tiny_tok), "--print-config"])
    assert r.exit_code == 0, r.output
    cfg = json.loads(r.stdout)
    assert cfg["preset"] == "tiny" and cfg["model"]["size"] == "tiny" and cfg["run"]["data"] == "digits"
    r = runner.invoke(app, ["train-dit", "--tokenizer", str(tiny_tok), "--preset", "S", "--print-config"])
    assert json.loads(r.stdout)["model"]["size"] == "S"
    r = runner.invoke(app, ["cache-latents", str(tiny_tok), "--out", str(tmp_path / "c"), "--print-config"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["data"] == "digits"
    assert f"using data digits, image size 32 from {tiny_tok}" in r.stderr


def test_train_tokenizer_without_preset_or_data_names_the_preset(tmp_path):
    r = runner.invoke(app, ["train-tokenizer", "--dim", "128", "--teacher", "dinov3", "--out", str(tmp_path / "r")])
    assert r.exit_code == 1 and len(r.output.strip().splitlines()) == 1
    assert "--preset tiny" in r.output and "--data" in r.output
    r = runner.invoke(app, ["train-tokenizer", "--data", str(tmp_path), "--print-config"])
    assert r.exit_code == 0 and json.loads(r.stdout)["model"]["image_size"] == 256  # --data given: the base preset


def test_train_dit_resume_looks_in_the_folder_a_new_run_on_the_tokenizer_used(tiny_tok, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no --out: a new run went to the tokenizer's preset folder (runs/tiny-dit)
    r = runner.invoke(app, ["train-dit", "--tokenizer", str(tiny_tok), "--resume"])
    assert r.exit_code == 1 and "no checkpoint to resume from at runs/tiny-dit/checkpoints/latest.pt" in r.output
