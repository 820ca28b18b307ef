"""``rectok latent-stats`` of a tokenizer of another family (FAMILY:SOURCE): by default the family's own
normalisation (sd3-vae: the published global scale/shift, no data pass), with ``--latent-norm data`` per-channel
statistics of its posterior means (what VA-VAE's and l-DeTok's own normalisation is)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from conftest import make_image_folder

from rectok_core.checkpoints import load_any_tokenizer
from rectok_core.data.readers import build_dataset
from rectok_core.interop.stats import latent_stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "models"))
from test_families import diffusers_file  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


def test_latent_stats_of_a_family_tokenizer(tmp_path, monkeypatch):
    from rectok_core.checkpoints import families

    monkeypatch.setattr(families, "DEFAULT_IMAGE_SIZE", 32)  # the commands' family image size (256) made small
    data = make_image_folder(tmp_path / "data", classes=2, per_class=3, size=48)
    spec = f"sd3-vae:{diffusers_file('sd3-vae', tmp_path)}"
    fam = latent_stats(spec, str(data), stats_dir=str(tmp_path / "stats"), device="cpu", batch_size=4, workers=0,
                       out=str(tmp_path / "family.json"))
    saved = json.loads((tmp_path / "family.json").read_text())
    assert fam.stats.kind == saved["kind"] == "family" and saved["images"] == 0
    assert saved["mean"] == [0.0609] * 16 and all(abs(1 / s - 1.5305) < 1e-12 for s in saved["std"])
    from typer.testing import CliRunner

    from rectok_cli.main import app

    r = CliRunner().invoke(app, ["latent-stats", spec, "--data", str(data), "--stats-dir", str(tmp_path / "stats"),
                                 "--device", "cpu", "--workers", "0"], env={"COLUMNS": "240"})
    assert r.exit_code == 0 and "family (z - 0.0609) * 1.5305 (16 channels" in r.output, r.output
    res = latent_stats(spec, str(data), stats_dir=str(tmp_path / "stats"), device="cpu", batch_size=4, workers=0,
                       latent_norm="data")
    assert res.stats.kind == "data" and res.stats.images == 6 and res.path != fam.path
    model, meta = load_any_tokenizer(spec)
    ds = build_dataset(str(data), model.cfg.image_size, split="train")
    x = torch.stack([ds[i]["image"] for i in range(len(ds))])
    with torch.no_grad():
        z = model.latent_grid(model.encode(x).mean).double()
    assert res.stats.mean.shape == (16,) and res.stats.tokenizer_sha256 == meta["sha256"]
    assert torch.allclose(res.stats.mean.cpu(), z.mean(dim=(0, 2, 3)), atol=1e-6)
    assert torch.allclose(res.stats.std.cpu(), z.std(dim=(0, 2, 3), unbiased=False), atol=1e-5)
