"""KID, precision/recall and Inception Score through torch-fidelity: the same values as rectok's former numpy /
torch implementations (kept here, as the reference), hand-computed cases and the real/fake argument order."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from rectok_core.errors import RectokError
from rectok_core.metrics.generative import inception_score, kid, precision_recall


def gaussian_features(seed: int, n: int, d: int, shift: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mix = np.eye(d) + 0.3 * rng.normal(size=(d, d)) / np.sqrt(d)
    return rng.normal(size=(n, d)) @ mix + shift


# ---- the reference: rectok's implementations before they were replaced by torch-fidelity's -----------------------
def ref_kid(f1, f2, subsets, subset_size, degree=3, coef0=1.0, seed=2020):
    g, rng = 1.0 / f1.shape[1], np.random.RandomState(seed)
    mmds = np.empty(subsets)
    for s in range(subsets):
        x = f1[rng.choice(len(f1), subset_size, replace=False)].astype(np.float64)
        y = f2[rng.choice(len(f2), subset_size, replace=False)].astype(np.float64)
        kxx, kxy, kyy = ((a @ b.T * g + coef0) ** degree for a, b in ((x, x), (x, y), (y, y)))
        m = len(x)
        mmds[s] = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1)) - 2 * kxy.sum() / m**2
    return float(mmds.mean()), float(mmds.std())


def ref_precision_recall(real, fake, k=3, batch_size=1024):
    r, f = torch.from_numpy(real).float(), torch.from_numpy(fake).float()

    def radii(x):
        return torch.cat([torch.cdist(c, x).kthvalue(k + 1, dim=1).values for c in x.split(batch_size)])

    def covered(q, centers, rad):
        return float(torch.cat([(torch.cdist(c, centers) <= rad[None]).any(1) for c in q.split(batch_size)])
                     .float().mean())

    return covered(f, r, radii(r)), covered(r, f, radii(f))


def ref_inception_score(logits, splits=10, seed=2020):
    lg = logits.astype(np.float64)
    n = len(lg)
    lg = lg[np.random.RandomState(seed).permutation(n)]
    log_p = lg - lg.max(1, keepdims=True)
    log_p = log_p - np.log(np.exp(log_p).sum(1, keepdims=True))
    p, scores = np.exp(log_p), []
    for i in range(splits):
        pp, lp = p[i * n // splits:(i + 1) * n // splits], log_p[i * n // splits:(i + 1) * n // splits]
        scores.append(float(np.exp((pp * (lp - np.log(pp.mean(0, keepdims=True)))).sum(1).mean())))
    return float(np.mean(scores)), float(np.std(scores))


# ---- KID ----------------------------------------------------------------------------------------------------------
def test_kid_equals_the_reference_implementation() -> None:
    real = gaussian_features(6, 120, 32).astype(np.float32)
    fake = gaussian_features(7, 150, 32, shift=0.3).astype(np.float32)
    mean, std = kid(real=real, fake=fake, subsets=10, subset_size=100)
    # torch-fidelity draws the generated subset first (its input1)
    assert (mean, std) == pytest.approx(ref_kid(fake, real, 10, 100), rel=1e-9)
    assert mean > 0
    same = kid(real=real, fake=gaussian_features(11, 150, 32).astype(np.float32), subsets=10, subset_size=100)[0]
    assert abs(same) < mean / 10
    # a subset larger than a set is reduced to the set size (torch-fidelity itself would refuse)
    assert kid(real=real, fake=fake, subsets=3, subset_size=5000) == pytest.approx(ref_kid(fake, real, 3, 120))


def test_kid_needs_keywords_and_matching_dimensions() -> None:
    a = gaussian_features(1, 10, 4)
    with pytest.raises(TypeError):
        kid(a, a)  # type: ignore[misc]
    with pytest.raises(RectokError, match="feature dimensions differ"):
        kid(real=a, fake=gaussian_features(1, 10, 5))
    with pytest.raises(RectokError, match="at least 2"):
        kid(real=a[:1], fake=a)


# ---- precision / recall -------------------------------------------------------------------------------------------
def test_precision_recall_equal_the_reference_implementation() -> None:
    real = gaussian_features(8, 200, 16)
    fake = gaussian_features(9, 150, 16, shift=0.5) * 0.7
    got = precision_recall(real=real, fake=fake, k=3, batch_size=64, device="cpu")
    assert got == ref_precision_recall(real, fake, k=3, batch_size=64)
    assert 0.0 < got[0] < 1.0 and 0.0 < got[1] < 1.0
    assert precision_recall(real=real, fake=real, device="cpu") == (1.0, 1.0)
    assert precision_recall(real=real, fake=real + 1000.0, device="cpu") == (0.0, 0.0)


def test_precision_recall_hand_computed_and_order() -> None:
    # k = 1: real balls have radius 1 (unit spacing); the fake at 0.5 has radius 9.5 (its neighbour is at 10)
    real = np.array([[0.0], [1.0], [2.0], [3.0]])
    fake = np.array([[0.5], [10.0], [11.0], [12.0]])
    # precision: only the fake at 0.5 lies in a real ball; recall: the ball around 0.5 covers every real point
    assert precision_recall(real=real, fake=fake, k=1, device="cpu") == (0.25, 1.0)
    assert precision_recall(real=fake, fake=real, k=1, device="cpu") == (1.0, 0.25)
    with pytest.raises(RectokError, match="more than 3 samples"):
        precision_recall(real=real[:3], fake=fake, device="cpu")


# ---- Inception Score ----------------------------------------------------------------------------------------------
def test_inception_score_equals_the_reference_implementation() -> None:
    logits = np.random.default_rng(10).normal(size=(200, 1008)) * 3
    assert inception_score(logits) == pytest.approx(ref_inception_score(logits), rel=1e-9)
    assert inception_score(np.zeros((20, 1008)), splits=2)[0] == pytest.approx(1.0)  # uniform predictions
    # one-hot-ish predictions spread evenly over 4 classes within each split: IS = number of classes
    confident = np.full((40, 1008), -50.0)
    confident[np.arange(40), np.arange(40) % 4] = 50.0
    assert inception_score(confident, splits=1)[0] == pytest.approx(4.0, rel=1e-6)
    with pytest.raises(RectokError, match="splits"):
        inception_score(logits[:5])


def test_a_sample_folder_as_reference_counts_its_samples_not_its_grid(tmp_path) -> None:
    import json

    from PIL import Image

    from rectok_core.metrics.generator_eval import evaluate_samples
    from rectok_core.sampling.folder import SAMPLES_FORMAT, png_path

    rng = np.random.default_rng(0)
    ref = tmp_path / "ref"
    for i in range(3):
        png_path(ref, i).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(png_path(ref, i))
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(ref / "grid.png")
    (ref / "manifest.json").write_text(json.dumps({"format": SAMPLES_FORMAT, "complete": True, "n": 3,
                                                   "labels": {"num_classes": 3}}))
    samples = rng.integers(0, 255, (3, 16, 16, 3), dtype=np.uint8)
    np.savez(tmp_path / "s.npz", samples)
    out = evaluate_samples(tmp_path / "s.npz", ref_folder=str(ref), progress=False)
    assert out["manifest"]["reference"]["num_images"] == 3  # grid.png is no reference image
