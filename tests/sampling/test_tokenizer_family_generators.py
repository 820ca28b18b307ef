"""The generator pipeline on a tokenizer of another family (FAMILY:SOURCE): cache-latents, train-dit (the DiT's
latent shape follows the tokenizer, its latents normalised the family's own way), sample (decoding with the DiT's
recorded tokenizer and normalisation), and export → ``Generator.from_pretrained`` → ``sample``."""
from __future__ import annotations

import shutil
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

MAR_SCALE = 0.2325  # mar-kl16's published normalisation z * 0.2325 (official models/autoencoder.py)


def test_cache_latents_train_dit_sample_and_export_on_a_family_tokenizer(tmp_path, monkeypatch):
    from rectok_core.checkpoints import families

    monkeypatch.setattr(families, "DEFAULT_IMAGE_SIZE", 64)  # the commands' family image size (256) made small
    data = make_image_folder(tmp_path / "data", classes=2, per_class=4, size=64)
    tok_file = ldm_file("mar-kl16", tmp_path)
    spec = f"mar-kl16:{tok_file}"  # 16x down-sampling, 16 channels, at 64 px: 16x4x4
    r = runner.invoke(app, ["cache-latents", spec, "--data", str(data), "--out", str(tmp_path / "cache"),
                            "--device", "cpu", "--workers", "0", "--batch-size", "4"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["train-dit", "--preset", "tiny", "--tokenizer", spec, "--data", str(data),
                            "--cache-latents", str(tmp_path / "cache"), "--steps", "2", "--batch-size", "4",
                            "--log-every", "1", "--ckpt-every", "2", "--image-every", "1000", "--device", "cpu",
                            "--workers", "0", "--out", str(tmp_path / "dit")])
    assert r.exit_code == 0, r.output
    ckpt = tmp_path / "dit" / "checkpoints" / "latest.pt"
    dit = load_dit(ckpt)
    assert dit.tokenizer["path"].startswith("mar-kl16:/") and dit.tokenizer["grid"] == [4, 4]
    assert dit.model.config.in_channels == 16 and dit.model.config.input_size == 4 and dit.tokenizer["image_size"] == 64
    # the default --latent-norm family: the official global scale, stored with the DiT (no data statistics)
    assert dit.stats.kind == "family" and dit.stats.mean.shape == (16,) and not dit.stats.mean.any()
    assert torch.allclose(1 / dit.stats.std, torch.full((16,), MAR_SCALE, dtype=torch.float64), rtol=1e-12)
    r = runner.invoke(app, ["sample", str(ckpt), "-n", "2", "--steps", "2", "--device", "cpu",
                            "--out", str(tmp_path / "samples")])
    assert r.exit_code == 0, r.output
    pngs = sorted((tmp_path / "samples" / "samples").glob("*.png"))
    assert [p.name for p in pngs] == ["000000.png", "000001.png"]
    with Image.open(pngs[0]) as im:  # decoded by the family's decoder at its image size
        assert im.size == (64, 64)

    # export (the tokenizer file shipped beside the DiT, named FAMILY:FILE relative to the folder) → from_pretrained
    r = runner.invoke(app, ["export", str(ckpt), "--out", str(tmp_path / "export"),
                            "--tokenizer-ref", "mar-kl16:kl16.ckpt"])
    assert r.exit_code == 0, r.output
    shutil.copy(tok_file, tmp_path / "export" / "kl16.ckpt")
    tok_file.unlink()  # the recorded path is gone: the folder's own copy must be the one found (same sha256)
    from rectok_core import Generator, api

    monkeypatch.undo()  # back to 256: the DiT's recorded image size must be the one used
    seen = []
    decode = api.decode_latents

    def spy(tokenizer, stats, z, precision):
        img = decode(tokenizer, stats, z, precision)
        seen.append((stats, z, tokenizer, img))
        return img

    monkeypatch.setattr(api, "decode_latents", spy)
    gen = Generator.from_pretrained(str(tmp_path / "export"), device="cpu")
    assert gen.tokenizer_meta["family"] == "mar-kl16" and gen.image_size == 64
    imgs = gen.sample([0, 1], steps=2, output="float")
    assert imgs.shape == (2, 3, 64, 64) and torch.isfinite(imgs).all()
    stats, z, tokenizer, img = seen[0]
    assert stats.kind == "family" and torch.equal(stats.std, dit.stats.std)
    with torch.no_grad():  # sampling decodes z / 0.2325 (the family's denormalisation) with the family's decoder
        ref = tokenizer.decode_latents(z.float() / MAR_SCALE).clamp(-1, 1)
    assert torch.allclose(img, ref, atol=1e-5) and torch.allclose(imgs, ref.add(1).div(2), atol=1e-5)
