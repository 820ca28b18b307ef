"""probe-flow: linear probes along the forward flow on the built-in digits (CPU), the pooling shortcut, the two
classifier back ends, the t = 1 chance check and one-line errors for bad input."""
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
from conftest import make_image_folder
from PIL import Image
from typer.testing import CliRunner

from rectok_cli.main import app
from rectok_core.config import build_config
from rectok_core.flow.noise import noise_latents
from rectok_core.metrics.probe import (
    check_chance,
    fit_linear,
    image_noise,
    pooled_flow_features,
    pooled_noise,
    probe_accuracy,
    probe_along_flow,
    standardize,
)
from rectok_core.metrics.probe_run import ProbeConfig, run_probe
from rectok_core.training.config import TOKENIZER_PRESETS, TokenizerTrainConfig
from rectok_core.training.tokenizer import train_tokenizer
from rectok_core.utils import checkpoint

runner = CliRunner()


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory):
    """Two tiny digits tokenizers with different image sizes and latent widths (a few steps: the probe only
    needs frozen features)."""
    root = tmp_path_factory.mktemp("probe-tokenizers")
    paths = []
    for name, extra in (("tok-a", {}), ("tok-b", dict(image_size=24, dim=8))):
        cfg = build_config(TokenizerTrainConfig, TOKENIZER_PRESETS, "tiny",
                           dict(teacher="none", steps=2, batch_size=8, out=str(root / name), workers=0, log_every=2,
                                ckpt_every=2, image_every=2, gan_weight=0.0, **extra))
        paths.append(str(train_tokenizer(cfg)))
    return paths


def test_two_checkpoints_on_digits_table_json_and_plot(tokenizers, tmp_path):
    out = tmp_path / "probe"
    r = runner.invoke(app, ["probe-flow", *tokenizers, "--data", "digits", "--workers", "0", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "Traceback" not in r.output and "chance check passed for tok-a" in r.output
    assert "chance check passed for tok-b" in r.output and "FAILED" not in r.output
    report = json.loads((out / "probe.json").read_text())
    assert report["format"] == "rectok-probe-flow" and report["chance_check_failed"] is False
    assert report["protocol"]["t_grid"] == pytest.approx([i / 10 for i in range(11)])
    assert report["protocol"]["space"] == "normalized" and report["teacher"] is None
    a, b = report["checkpoints"]
    assert (a["name"], a["dim"], a["image_size"]) == ("tok-a", 16, 32)
    assert (b["name"], b["dim"], b["image_size"]) == ("tok-b", 8, 24)
    for c in (a, b):
        assert c["path"] in [str(Path(p).resolve()) for p in tokenizers] and len(c["sha256"]) == 64
        assert (c["n_train"], c["n_val"], c["num_classes"]) == (1437, 360, 10)
        assert c["chance"]["top1"] == pytest.approx(0.1) and c["chance"]["top5"] == pytest.approx(0.5)
        top1 = {p["t"]: p["top1"] for p in c["results"]}
        assert top1[0.0] > 0.25, c["results"]  # far above chance: 10 %, binomial std 1.6 %
        assert top1[1.0] <= c["chance_check"]["limit"]["top1"] and c["chance_check"]["passed"]
        assert all(p["top5"] is not None for p in c["results"])
        assert len(c["latent_stats"]["mean"]) == len(c["latent_stats"]["std"]) == c["dim"]
    with Image.open(out / "probe.png") as im:
        assert im.format == "PNG" and im.size[0] > 300


def test_pooled_shortcut_is_exact_and_noise_is_keyed_by_image():
    z = torch.randn(5, 64, 16, dtype=torch.float64)
    eps = image_noise(3, "val", [7, 1, 4, 0, 9], (64, 16)).double()
    for t in (0.0, 0.1, 0.37, 0.9, 1.0):
        full = noise_latents(z, torch.full((5,), t, dtype=torch.float64), eps).mean(1)
        assert torch.allclose(pooled_flow_features(z.mean(1), eps.mean(1), t), full, atol=1e-12, rtol=0)
    # ε of an image depends on (seed, split, index) only: not on the batch it is drawn in
    assert torch.equal(image_noise(3, "val", [4], (64, 16))[0], eps[2].float())
    assert torch.equal(pooled_noise(3, "val", [7, 1, 4, 0, 9], (64, 16), chunk=2), eps.float().mean(1))
    assert not torch.equal(image_noise(3, "train", [4], (64, 16)), image_noise(3, "val", [4], (64, 16)))
    assert not torch.equal(image_noise(4, "val", [4], (64, 16)), image_noise(3, "val", [4], (64, 16)))
    assert abs(image_noise(0, "train", range(64), (64, 16)).std().item() - 1) < 0.02


def _blobs(n: int, classes: int, dim: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, dim, generator=torch.Generator().manual_seed(99)) * 1.5
    y = torch.arange(n) % classes
    return centres[y] + torch.randn(n, dim, generator=g), y


def test_torch_and_sklearn_classifiers_agree():
    xtr, ytr = _blobs(300, 4, 6, 0)
    xva, yva = _blobs(200, 4, 6, 1)
    tx, vx = standardize(xtr, xva)
    w_t, b_t = fit_linear(tx, ytr, 4, "torch", 1e-2, 500, torch.device("cpu"))
    w_s, b_s = fit_linear(tx, ytr, 4, "sklearn", 1e-2, 500, torch.device("cpu"))
    # the softmax is invariant to a common shift of the class weights: compare centred parameters
    assert torch.allclose(w_t - w_t.mean(1, keepdim=True), w_s - w_s.mean(1, keepdim=True), atol=2e-3)
    assert torch.allclose(b_t - b_t.mean(), b_s - b_s.mean(), atol=2e-3)
    assert torch.equal((vx @ w_t + b_t).argmax(1), (vx @ w_s + b_s).argmax(1))
    acc_t = probe_accuracy(xtr, ytr, xva, yva, 4, "torch", 1e-2)
    acc_s = probe_accuracy(xtr, ytr, xva, yva, 4, "sklearn", 1e-2)
    assert acc_t == acc_s and acc_t["top5"] is None and acc_t["top1"] > 0.6
    assert probe_accuracy(xtr, ytr, xva, yva, 4, "torch", 1e-2) == acc_t  # deterministic


def test_chance_check_flags_labels_leaking_at_t1(caplog):
    y = torch.arange(360) % 10
    assert check_chance({"top1": 0.11, "top5": 0.52}, y, 10).passed
    failed = check_chance({"top1": 0.30, "top5": 0.52}, y, 10)
    assert not failed.passed and failed.chance["top1"] == pytest.approx(0.1)
    assert 0.1 < failed.limit["top1"] < 0.3
    assert not check_chance({"top1": 0.1, "top5": 0.9}, y, 10).passed  # top-5 is checked too
    # imbalanced val: a majority-class predictor is label-independent and must not trip the check
    y_imb = torch.cat([torch.zeros(200, dtype=torch.long), torch.arange(160) % 10])
    assert check_chance({"top1": 200 / 360 + 16 / 360, "top5": None}, y_imb, 10).passed
    # end to end: "noise" that encodes the label leaks through t = 1
    ytr, yva = torch.arange(200) % 4, torch.arange(80) % 4
    leak_tr = nn.functional.one_hot(ytr, 4).float() + 0.1 * torch.randn(200, 4)
    leak_va = nn.functional.one_hot(yva, 4).float() + 0.1 * torch.randn(80, 4)
    with caplog.at_level(logging.WARNING, logger="rectok_core.metrics"):
        curve = probe_along_flow(torch.randn(200, 4), leak_tr, ytr, torch.randn(80, 4), leak_va, yva, [0.0, 0.5],
                                 4, label="rigged")
    assert not curve.chance_check.passed and curve.chance_check.t == 1.0
    assert [p["t"] for p in curve.points] == [0.0, 0.5]
    assert "CHANCE CHECK FAILED for rigged" in caplog.text


class PixelTeacher(nn.Module):
    """A stand-in teacher: the image at the digits' native 8×8 as one token (a linear probe on pixels)."""

    dim = 3 * 8 * 8
    source = "test pixels"

    def forward(self, x):
        return nn.functional.adaptive_avg_pool2d(x, 8).flatten(1)[:, None, :]


def test_raw_space_custom_grid_and_teacher_line(tokenizers, tmp_path, monkeypatch):
    from rectok_core.metrics import probe_run
    from rectok_core.metrics.probe_report import write_outputs

    seen = {}

    def fake_build_teacher(name, weights, grid, image_size, **kw):
        seen.update(name=name, grid=grid, image_size=image_size)
        return PixelTeacher()

    monkeypatch.setattr(probe_run, "build_teacher", fake_build_teacher)
    cfg = ProbeConfig(data="digits", per_class=40, val_per_class=10, t_grid="0,0.5", space="raw",
                      classifier="sklearn", teacher="pixels", workers=0, out=str(tmp_path))
    report = run_probe(cfg, tokenizers[:1])
    assert seen == {"name": "pixels", "grid": (8, 8), "image_size": 32}
    c = report.checkpoints[0]
    assert (c.n_train, c.n_val, c.space) == (400, 100, "raw")
    assert [p["t"] for p in c.results] == [0.0, 0.5] and c.chance_check.t == 1.0 and c.chance_check.passed
    assert report.teacher.top1 > 0.5 and report.teacher.dim == 192
    json_path, png_path = write_outputs(report, tmp_path)
    data = json.loads(json_path.read_text())
    assert data["teacher"]["name"] == "pixels" and data["protocol"]["classifier"]["kind"] == "sklearn"
    assert png_path.is_file()


@pytest.mark.parametrize("case", ["dit", "unlabelled", "val_class_missing", "per_class_too_big", "no_val_folder",
                                  "bad_grid"])
def test_bad_input_gives_one_line_errors(tokenizers, tmp_path, case):
    args = ["probe-flow", tokenizers[0], "--workers", "0", "--out", str(tmp_path / "out")]
    if case == "dit":
        ck = tmp_path / "dit.pt"
        checkpoint.save_atomic({"format": "rectok", "version": 1, "kind": "dit", "config": {}, "model": {}}, ck)
        args = ["probe-flow", str(ck), "--data", "digits", "--out", str(tmp_path / "out")]
        expect = "holds a generator (train-dit)"
    elif case == "unlabelled":
        for split in ("train", "val"):
            (tmp_path / "flat" / split).mkdir(parents=True)
            for i in range(3):
                Image.fromarray(np.full((16, 16, 3), 40 * i, np.uint8)).save(tmp_path / "flat" / split / f"{i}.png")
        args += ["--data", str(tmp_path / "flat")]
        expect = "is unlabelled: probe-flow needs class labels"
    elif case == "val_class_missing":
        make_image_folder(tmp_path / "d" / "train", classes=2, per_class=3, size=16)
        make_image_folder(tmp_path / "d" / "val", classes=3, per_class=2, size=16)
        args += ["--data", str(tmp_path / "d")]
        expect = "has 1 classes that the train split"
    elif case == "per_class_too_big":
        args += ["--data", "digits", "--per-class", "5000"]
        expect = "--per-class 5000 is more than the train split holds"
    elif case == "no_val_folder":
        make_image_folder(tmp_path / "d" / "train", classes=2, per_class=3, size=16)
        args += ["--data", str(tmp_path / "d")]
        expect = "has no val/ folder"
    else:
        args += ["--data", "digits", "--t-grid", "0,0.5,1.5"]
        expect = "every t must be in [0, 1]"
    r = runner.invoke(app, args)
    assert r.exit_code == 1, r.output
    assert expect in r.output and "Traceback" not in r.output
    assert len([line for line in r.output.splitlines() if line.startswith("error:")]) == 1


def test_probe_flow_without_data_uses_the_checkpoints_data(tokenizers, tmp_path):
    """`rectok probe-flow ckpt.pt` as typed: the tokenizer was trained on digits, so digits' train/val are probed."""
    from typer.testing import CliRunner

    from rectok_cli.main import app

    out = tmp_path / "probe"
    r = CliRunner().invoke(app, ["probe-flow", tokenizers[0], "--workers", "0", "--per-class", "20",
                                 "--val-per-class", "5", "--t-grid", "0,1", "--out", str(out)])
    assert r.exit_code == 0, r.output
    doc = json.loads(next(out.glob("*.json")).read_text())
    assert doc["protocol"]["train"]["data"] == "digits" and doc["protocol"]["val"]["data"] == "digits"
