"""The generator pipeline on a tokenizer of another family (FAMILY:SOURCE): cache-latents, train-dit (the DiT's
latent shape follows the tokenizer) and sample (decoding with the DiT's recorded tokenizer)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from conftest import make_image_folder
from PIL import Image
from typer.testing import CliRunner

from rectok_cli.main import app
from rectok_core.checkpoints import load_dit

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "models"))
from test_families import ldm_file  # noqa: E402

runner = CliRunner()
pytestmark = pytest.mark.usefixtures("one_thread")


def test_cache_latents_train_dit_and_sample_on_a_family_tokenizer(tmp_path):
    data = make_image_folder(tmp_path / "data", classes=2, per_class=4, size=64)
    spec = f"mar-kl16:{ldm_file('mar-kl16', tmp_path)}"  # 16x down-sampling, 16 channels, at 256 px: 16x16x16
    r = runner.invoke(app, ["cache-latents", spec, "--data", str(data), "--out", str(tmp_path / "cache"),
                            "--device", "cpu", "--workers", "0", "--batch-size", "4"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["train-dit", "--preset", "tiny", "--tokenizer", spec, "--data", str(data),
                            "--cache-latents", str(tmp_path / "cache"), "--steps", "2", "--batch-size", "4",
                            "--log-every", "1", "--ckpt-every", "2", "--image-every", "1000", "--device", "cpu",
                            "--workers", "0", "--out", str(tmp_path / "dit")])
    assert r.exit_code == 0, r.output
    dit = load_dit(tmp_path / "dit" / "checkpoints" / "latest.pt")
    assert dit.tokenizer["path"].startswith("mar-kl16:/") and dit.tokenizer["grid"] == [16, 16]
    assert dit.model.config.in_channels == 16 and dit.model.config.input_size == 16
    r = runner.invoke(app, ["sample", str(tmp_path / "dit" / "checkpoints" / "latest.pt"), "-n", "2", "--steps", "2",
                            "--device", "cpu", "--out", str(tmp_path / "samples")])
    assert r.exit_code == 0, r.output
    pngs = sorted((tmp_path / "samples" / "samples").glob("*.png"))
    assert [p.name for p in pngs] == ["000000.png", "000001.png"]
    with Image.open(pngs[0]) as im:  # decoded by the family's decoder at its image size
        assert im.size == (256, 256)
    assert torch.isfinite(dit.stats.mean).all() and dit.stats.mean.shape == (16,)
