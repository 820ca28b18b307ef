"""A run trained in one folder with a relative ``--data`` (train/ and test/, no val/), then used from another folder:
saved paths are absolute, ``eval`` and ``probe-flow`` take the test/ split (said on the first line), ``--val-data``
alone keeps the inherited training data, and ``finetune-decoder --print-config`` shows the checkpoint's model."""
import json
import logging
import os

import pytest
from conftest import make_image_folder
from typer.testing import CliRunner

from rectok_cli.main import app

runner = CliRunner()
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    a = tmp_path_factory.mktemp("A")
    for split, n in (("train", 6), ("test", 2)):
        make_image_folder(a / "ds" / split, classes=3, per_class=n, size=32, seed=len(split))
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(a)
        r = runner.invoke(app, ["train-tokenizer", "--preset", "tiny", "--teacher", "none", "--steps", "2",
                                "--batch-size", "6", "--data", "ds", "--out", "run"])
    assert r.exit_code == 0, r.output
    return a


def first_line(output: str) -> str:
    return output.strip().splitlines()[0]


def test_saved_paths_are_absolute_and_training_says_what_it_read(trained, tmp_path, monkeypatch, caplog):
    saved = json.loads((trained / "run" / "config.json").read_text())
    assert saved["run"]["data"] == str(trained / "ds")
    monkeypatch.chdir(trained)
    caplog.set_level(logging.INFO)
    r = runner.invoke(app, ["train-tokenizer", "--preset", "tiny", "--teacher", "none", "--steps", "1",
                            "--batch-size", "6", "--data", "ds", "--out", str(tmp_path / "again")])
    assert r.exit_code == 0, r.output
    assert f"data: 18 images, 3 classes, from {trained / 'ds' / 'train'}" in caplog.messages


def test_eval_from_another_folder_uses_the_test_split(trained, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ckpt = str(trained / "run" / "checkpoints" / "latest.pt")
    r = runner.invoke(app, ["eval", ckpt, "--print-config"])
    assert r.exit_code == 0, r.output
    assert first_line(r.output) == (f"using data {trained / 'ds'}, image size 32 from {ckpt}; evaluating its test/ "
                                    f"split ({trained / 'ds'} has no val/)")
    cfg = json.loads(r.stdout[r.stdout.index("{"):])
    assert cfg["data"] == str(trained / "ds") and cfg["split"] == "test"
    r = runner.invoke(app, ["eval", ckpt, "--split", "train", "--print-config"])  # a named split is kept
    assert "evaluating its" not in r.output and json.loads(r.stdout[r.stdout.index("{"):])["split"] == "train"


def test_probe_flow_from_another_folder_and_val_data_alone(trained, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ckpt = str(trained / "run" / "checkpoints" / "latest.pt")
    common = ["--t-steps", "2", "--max-iter", "5", "--batch-size", "8", "--workers", "0", "--device", "cpu"]
    r = runner.invoke(app, ["probe-flow", ckpt, "--out", "p1", *common])
    assert r.exit_code == 0, r.output
    assert first_line(r.output).endswith(f"evaluating its test/ split ({trained / 'ds'} has no val/)")
    proto = json.loads((tmp_path / "p1" / "probe.json").read_text())["protocol"]
    assert proto["train"]["data"] == str(trained / "ds") and proto["val"]["data"] == str(trained / "ds" / "test")
    make_image_folder(tmp_path / "heldout", classes=3, per_class=2, size=32, seed=9)
    r = runner.invoke(app, ["probe-flow", ckpt, "--out", "p2", "--val-data", "heldout", *common])
    assert r.exit_code == 0, r.output
    proto = json.loads((tmp_path / "p2" / "probe.json").read_text())["protocol"]
    assert proto["train"]["data"] == str(trained / "ds") and proto["val"]["data"] == str(tmp_path / "heldout")
    assert json.loads((tmp_path / "p2" / "probe.json").read_text())["checkpoints"][0]["n_val"] == 6


def test_finetune_print_config_shows_the_checkpoints_model(trained, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ckpt = trained / "run" / "checkpoints" / "latest.pt"
    r = runner.invoke(app, ["finetune-decoder", os.path.relpath(ckpt, tmp_path), "--print-config"])
    assert r.exit_code == 0, r.output
    cfg = json.loads(r.stdout[r.stdout.index("{"):])
    saved = json.loads((trained / "run" / "config.json").read_text())["model"]
    assert cfg["preset"] == "tiny" and cfg["tokenizer"] == str(ckpt)
    assert cfg["model"] == {**saved, "teacher_dim": 0} and cfg["model"]["image_size"] == 32
