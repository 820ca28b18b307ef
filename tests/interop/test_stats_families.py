"""``rectok latent-stats`` of a tokenizer of another family (FAMILY:SOURCE): per-channel statistics of its
posterior means, what VA-VAE's normalisation (and rectok's for every family) uses."""
from __future__ import annotations

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


def test_latent_stats_of_a_family_tokenizer(tmp_path):
    data = make_image_folder(tmp_path / "data", classes=2, per_class=3, size=48)
    spec = f"sd3-vae:{diffusers_file('sd3-vae', tmp_path)}"
    res = latent_stats(spec, str(data), stats_dir=str(tmp_path / "stats"), device="cpu", batch_size=4, workers=0)
    model, meta = load_any_tokenizer(spec)
    ds = build_dataset(str(data), model.cfg.image_size, split="train")
    x = torch.stack([ds[i]["image"] for i in range(len(ds))])
    with torch.no_grad():
        z = model.latent_grid(model.encode(x).mean).double()
    assert res.stats.mean.shape == (16,) and res.stats.tokenizer_sha256 == meta["sha256"]
    assert torch.allclose(res.stats.mean.cpu(), z.mean(dim=(0, 2, 3)), atol=1e-6)
    assert torch.allclose(res.stats.std.cpu(), z.std(dim=(0, 2, 3), unbiased=False), atol=1e-5)
