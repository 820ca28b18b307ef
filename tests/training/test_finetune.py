"""finetune-decoder: frozen encoder stays bit-identical, the decoder trains, the result is a plain tokenizer."""
import pytest
import torch
from typer.testing import CliRunner

from rectok_cli.main import app
from rectok_core.checkpoints import load_tokenizer, open_checkpoint
from rectok_core.config import build_config
from rectok_core.training.config import TOKENIZER_PRESETS, TokenizerTrainConfig
from rectok_core.training.rundir import read_metrics
from rectok_core.training.tokenizer import train_tokenizer
from rectok_core.utils import checkpoint

runner = CliRunner()


@pytest.fixture(scope="module")
def stage1(tmp_path_factory):
    out = tmp_path_factory.mktemp("stage1") / "run"
    cfg = build_config(TokenizerTrainConfig, TOKENIZER_PRESETS, "tiny",
                       dict(teacher="dinov3-s", teacher_init="random", steps=30, batch_size=16, out=str(out), log_every=10))
    return train_tokenizer(cfg)


def test_finetune_freezes_encoder_and_trains_decoder(stage1, tmp_path):
    out = tmp_path / "ft"
    r = runner.invoke(app, ["finetune-decoder", str(stage1), "--preset", "tiny", "--steps", "40", "--batch-size", "16",
                            "--out", str(out), "--log-every", "20", "--gan-weight", "0.1"])
    assert r.exit_code == 0, r.output
    s1 = open_checkpoint(stage1, "tokenizer")
    ft = open_checkpoint(out / "checkpoints" / "latest.pt", "tokenizer")
    assert ft["stage"] == "decoder-ft" and ft["config"]["model"]["teacher_dim"] == 0
    assert not any(k.startswith("sem_decoder.") for k in ft["model"]) and ft["disc"] is not None
    for weights in ("model", "ema"):  # official start: both hold the raw stage-1 encoder, never averaged
        for k, v in ft[weights].items():
            if k.startswith("encoder."):
                assert torch.equal(v, s1["model"][k]), (weights, k)
    changed = [k for k, v in ft["model"].items() if k.startswith("decoder.") and not torch.equal(v, s1["model"][k])]
    assert len(changed) > 10
    rows = [m for m in read_metrics(out) if "loss" in m]
    assert all(m["gan_on"] for m in rows) and "gan" in rows[0] and "sem" not in rows[0]
    start = next(m for m in read_metrics(out) if m.get("event") == "start")
    assert start["params_trainable"] < start["params_encoder_decoder"]
    model, meta = load_tokenizer(out / "checkpoints" / "latest.pt")
    assert meta["stage"] == "decoder-ft" and model.sem_decoder is None
    assert model.reconstruct(torch.zeros(1, 3, 32, 32)).shape == (1, 3, 32, 32)


def test_finetune_reconstruction_improves_without_gan(stage1, tmp_path):
    out = tmp_path / "ft"
    r = runner.invoke(app, ["finetune-decoder", str(stage1), "--preset", "tiny", "--steps", "60", "--batch-size", "16",
                            "--out", str(out), "--log-every", "10"])
    assert r.exit_code == 0, r.output
    rec = [m["rec"] for m in read_metrics(out) if "rec" in m]
    assert rec[-1] < rec[0]


def test_finetune_rejects_a_generator_checkpoint(tmp_path):
    bogus = tmp_path / "dit.pt"
    checkpoint.save_atomic({"format": "rectok", "version": 1, "kind": "dit", "config": {}}, bogus)
    r = runner.invoke(app, ["finetune-decoder", str(bogus), "--preset", "tiny", "--out", str(tmp_path / "o")])
    assert r.exit_code == 1 and "holds a generator (train-dit)" in r.output
