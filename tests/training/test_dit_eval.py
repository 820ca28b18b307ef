"""Generator evaluation during train-dit (issue 20): the evaluator's FID is the eval-samples FID of the same samples,
the training-data reference is computed once and cached, a run with evaluation ends with the same weights as one
without, and its records, curve and best.pt are there."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import make_image_folder

from rectok_core.checkpoints import load_dit, load_matching_tokenizer, open_checkpoint
from rectok_core.config import build_config
from rectok_core.errors import RectokError
from rectok_core.metrics.fid import save_stats
from rectok_core.metrics.generator_eval import evaluate_samples
from rectok_core.models.inception import FEATURE_DIM, InceptionFeatures
from rectok_core.sampling.config import SampleConfig
from rectok_core.sampling.folder import sample
from rectok_core.training import dit_eval
from rectok_core.training.config import TOKENIZER_PRESETS, TokenizerTrainConfig
from rectok_core.training.dit import train_dit
from rectok_core.training.dit_config import DIT_TRAIN_PRESETS, DiTTrainConfig
from rectok_core.training.rundir import read_metrics
from rectok_core.training.tokenizer import train_tokenizer
from rectok_core.utils import distributed

pytestmark = pytest.mark.usefixtures("one_thread")

CPU = distributed.Dist(0, 1, 0, torch.device("cpu"))


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("dit_eval")


@pytest.fixture(scope="module")
def data(work):
    return make_image_folder(work / "data", classes=3, per_class=8, size=32)


@pytest.fixture(scope="module")
def tok(work, data):
    cfg = build_config(TokenizerTrainConfig, TOKENIZER_PRESETS, "tiny", dict(
        teacher="none", steps=2, batch_size=8, data=str(data), out=str(work / "tok"), workers=0, device="cpu",
        eval_every=0))
    return train_tokenizer(cfg)


@pytest.fixture(scope="module")
def ref_stats(work):
    """Made-up reference statistics (of 12 random feature vectors: a low-rank covariance keeps the FID cheap)."""
    feats = np.random.default_rng(0).gamma(1.0, 0.3, (12, FEATURE_DIM))
    return save_stats(work / "ref.npz", feats.mean(0), np.cov(feats, rowvar=False))


def dit_cfg(tok, data, out, **kw):
    base = dict(tokenizer=str(tok), data=str(data), out=str(out), steps=4, batch_size=8, log_every=2, ckpt_every=4,
                image_every=1000, device="cpu", workers=0, stats_dir=str(out) + "-stats", eval_images=4,
                eval_steps=3, milestones="none")
    base.update(kw)
    return build_config(DiTTrainConfig, DIT_TRAIN_PRESETS, "tiny", base)


@pytest.fixture(scope="module")
def plain_run(work, tok, data):
    return train_dit(dit_cfg(tok, data, work / "plain", eval_every=0))


def test_evaluation_leaves_the_weights_alone_and_records_curves(work, tok, data, ref_stats, plain_run):
    evaluated = train_dit(dit_cfg(tok, data, work / "evaluated", eval_every=2, ref_stats=str(ref_stats)))
    a, b = open_checkpoint(plain_run, "dit"), open_checkpoint(evaluated, "dit")
    for part in ("model", "ema", "opt"):
        flat_a, flat_b = _tensors(a[part]), _tensors(b[part])
        assert flat_a.keys() == flat_b.keys()
        for k, v in flat_a.items():
            assert torch.equal(v, flat_b[k]), f"{part} {k}"
    evals = [r for r in read_metrics(work / "evaluated") if r.get("event") == "eval"]
    assert [r["step"] for r in evals] == [2, 4]
    for r in evals:
        assert {"fid/ema", "fid_cfg/ema"} <= set(r) and all(np.isfinite(r[k]) for k in ("fid/ema", "fid_cfg/ema"))
    assert (work / "evaluated" / "eval_curves.png").stat().st_size > 0
    best = open_checkpoint(work / "evaluated" / "best.pt", "dit")["best"]
    assert best["metric"] == "fid/ema" and best["value"] == min(r["fid/ema"] for r in evals)
    assert not any(r.get("event") == "eval" for r in read_metrics(work / "plain"))


def _tensors(tree, prefix=""):
    out = {}
    if isinstance(tree, dict):
        for k, v in tree.items():
            out.update(_tensors(v, f"{prefix}{k}."))
    elif isinstance(tree, (list, tuple)):
        for i, v in enumerate(tree):
            out.update(_tensors(v, f"{prefix}{i}."))
    elif isinstance(tree, torch.Tensor):
        out[prefix] = tree
    return out


def test_evaluator_fid_is_the_eval_samples_fid_of_the_same_samples(work, plain_run, ref_stats):
    """Fixed labels (i mod K) and noise (seed, i): the evaluator's unguided samples are `rectok sample`'s, and its FID
    is eval-samples' on that folder; evaluating twice gives the same numbers."""
    dit = load_dit(plain_run, "ema", CPU.device)
    tokenizer, _ = load_matching_tokenizer(dit, None, CPU.device)
    c = dit.model.config
    ev = dit_eval.DiTEvaluator(dit.model, tokenizer, dit.stats, (c.in_channels, c.input_size, c.input_size),
                               dit.model.num_classes, dit_eval.load_reference(str(ref_stats)), InceptionFeatures(),
                               CPU, n=4, seed=3, steps=4, scale=1.0, batch_size=3)
    first = ev(10)
    assert set(first) == {"fid/ema"}  # scale 1: the guided evaluation would repeat the unguided one
    assert ev(11) == first
    out = work / "same-samples"
    sample(str(plain_run), SampleConfig(n=4, steps=4, seed=3, out=str(out), batch_size=4, device="cpu"))
    res = evaluate_samples(out, ref_stats=str(ref_stats), device="cpu", progress=False)
    assert first["fid/ema"] == pytest.approx(res["metrics"]["fid"], rel=1e-6)


def test_training_reference_is_computed_once_and_cached(work, data, monkeypatch):
    inception = InceptionFeatures()
    calls = []
    real = inception.forward
    monkeypatch.setattr(inception, "forward", lambda x: calls.append(len(x)) or real(x))
    first = dit_eval.training_reference(str(data), 32, 6, 4, inception, CPU, batch_size=4, workers=0,
                                        folder=work / "refcache")
    assert sum(calls) == 6 and first.features.shape == (4, FEATURE_DIM)
    again = dit_eval.training_reference(str(data), 32, 6, 4, inception, CPU, batch_size=4, workers=0,
                                        folder=work / "refcache")
    assert sum(calls) == 6  # read from the cache
    np.testing.assert_array_equal(first.mu, again.mu)
    (cached,) = (work / "refcache").glob("fid-ref-*.npz")
    loaded = dit_eval.load_reference(str(cached))  # the cache file is a --ref-stats file too
    np.testing.assert_array_equal(loaded.sigma, first.sigma)
    assert np.isfinite(first.sigma).all() and first.mu.shape == (FEATURE_DIM,)


@pytest.mark.parametrize("flags, message", [
    (dict(eval_cfg_scale=float("nan")), "--eval-cfg-scale must be a finite number"),
    (dict(eval_cfg_scale=-1.0), "--eval-cfg-scale"),
    (dict(eval_steps=1), "--eval-steps must be at least 2"),
    (dict(eval_cfg="autoguidance"), "--eval-cfg autoguidance needs --eval-guide"),
    (dict(eval_guide="g.pt"), "--eval-guide is only used by --eval-cfg autoguidance"),
    (dict(eval_ref_images=-5), "--eval-ref-images"),
])
def test_bad_evaluation_options_are_one_line_errors(flags, message):
    with pytest.raises(RectokError) as e:
        build_config(DiTTrainConfig, DIT_TRAIN_PRESETS, "tiny", {"tokenizer": "t.pt", **flags})
    assert message in str(e.value) and "\n" not in str(e.value)


def test_wrong_reference_statistics_are_refused(tmp_path):
    bad = save_stats(tmp_path / "small.npz", np.zeros(8), np.eye(8))
    with pytest.raises(RectokError, match="not InceptionV3 pool3"):
        dit_eval.load_reference(str(bad))


def test_autoguidance_evaluation_uses_the_guide(work, tok, data, ref_stats, plain_run):
    cfg = dit_cfg(tok, data, work / "ag", eval_every=1, eval_images=2, ref_stats=str(ref_stats),
                  eval_cfg="autoguidance", eval_guide=str(plain_run), eval_cfg_scale=2.0)
    dit = load_dit(plain_run, "ema", CPU.device)
    tokenizer, meta = load_matching_tokenizer(dit, None, CPU.device)
    c = dit.model.config
    ev = dit_eval.build_dit_evaluator(cfg, CPU, dit.model, tokenizer, meta["sha256"], dit.stats,
                                      (c.in_channels, c.input_size, c.input_size), dit.model.num_classes, "fp32")
    assert ev.guide is not None and ev.method == "autoguidance"
    m = ev(1)
    assert set(m) == {"fid/ema", "fid_cfg/ema"} and all(np.isfinite(v) for v in m.values())
    with pytest.raises(RectokError, match="--eval-guide .* other latents or classes"):
        dit_eval.build_dit_evaluator(cfg, CPU, dit.model, tokenizer, meta["sha256"], dit.stats,
                                     (c.in_channels, c.input_size + 1, c.input_size), dit.model.num_classes, "fp32")
