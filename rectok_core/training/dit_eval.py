"""Generator evaluation during ``train-dit`` (issue 20): FID (and IS, precision/recall where possible) of the EMA
model's samples, without guidance (``fid/ema``) and with the run's guidance setting (``fid_cfg/ema``).

Every evaluation generates the same ``--eval-images`` samples: sample ``i`` has label ``i mod K`` (class-balanced,
:func:`~rectok_core.flow.transport.labels_for`) and noise from ``(seed, i)`` only (the sampling functions of
:mod:`rectok_core.sampling.generate`: Euler on ``--eval-steps`` points of the family's official grid, guided in its
official interval, as ``rectok sample``'s ``auto`` defaults; a diffusion-family generator: its ancestral sampler on
``--eval-steps`` respaced steps), is decoded by the run's tokenizer, rounded to uint8 as a
sample folder's PNGs are, and goes through the FID InceptionV3. Rank ``r`` of ``W``
makes samples ``r, r+W, …``; the features are gathered in index order, and rank 0 computes the metrics (the same
dictionary is returned on every rank).

The reference is ``--ref-stats FILE`` (any ``mu``/``sigma`` .npz ``rectok eval-samples`` accepts) or else the
Inception statistics of ``--eval-ref-images`` class-balanced training images, computed once (sharded) and cached
in ``<rectok cache>/fid-ref/`` keyed by the image list and the Inception weights; that file also keeps the features
of the first ``--eval-images`` of those images, which give precision/recall (k = 3). The Inception Score needs the
network's logits (torch-fidelity's original weights file): without them ``is/*`` is left out. With
``--eval-cfg-scale 1`` guided sampling is plain conditional sampling, so ``*_cfg/ema`` is left out.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from rectok_core.checkpoints import load_dit
from rectok_core.data.datasets import stratified_indices
from rectok_core.data.latent_stats import LatentStats, dataset_fingerprint
from rectok_core.data.readers import build_dataset
from rectok_core.errors import RectokError
from rectok_core.flow.transport import labels_for
from rectok_core.metrics.fid import feature_stats, frechet_distance, load_stats
from rectok_core.metrics.generative import inception_score, precision_recall
from rectok_core.models.generators import GENERATORS, family_of_model
from rectok_core.models.inception import FEATURE_DIM, InceptionFeatures
from rectok_core.models.tokenizer import RecTok
from rectok_core.sampling.config import resolve_sampler
from rectok_core.sampling.generate import RowPadded, build_velocity, decode_latents, generate_latents
from rectok_core.training.evaluation import isolated_rng, resolve_eval_every, validation_split
from rectok_core.utils import distributed
from rectok_core.utils.env import cache_dir
from rectok_core.utils.files import atomic_open, file_sha256

logger = logging.getLogger(__name__)


REF_FORMAT = "rectok-fid-reference"


IS_SPLITS = 10


PR_K = 3


@dataclass
class Reference:
    """FID reference statistics, and reference features when known (precision/recall)."""
    mu: np.ndarray
    sigma: np.ndarray
    features: np.ndarray | None
    source: str


def gather_rows(x: torch.Tensor, n: int, d: distributed.Dist) -> torch.Tensor:
    """Rows of all ranks in global index order, when rank ``r`` holds the rows of indices ``r, r+W, r+2W, …``."""
    if not d.enabled:
        return x
    per = -(-n // d.world_size)
    padded = torch.zeros(per, *x.shape[1:], dtype=x.dtype, device=x.device)
    padded[:len(x)] = x
    parts = [torch.empty_like(padded) for _ in range(d.world_size)]
    dist.all_gather(parts, padded)
    return torch.stack(parts, 1).reshape(per * d.world_size, *x.shape[1:])[:n]


def as_uint8(img: torch.Tensor) -> torch.Tensor:
    """Images in [−1, 1] → uint8 (B, 3, H, W), rounded like a sample folder's PNGs (§11.6)."""
    return ((img.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


# ---------------------------------------------------------------------------------------------------------
# The reference
# ---------------------------------------------------------------------------------------------------------
def load_reference(path: str) -> Reference:
    """``--ref-stats``: ``mu``/``sigma`` of pool3 features (plus the ``features`` a rectok cache file keeps)."""
    mu, sigma = load_stats(path)
    if mu.shape[0] != FEATURE_DIM:
        raise RectokError(f"--ref-stats {path} holds {mu.shape[0]}-d statistics, not InceptionV3 pool3 "
                          f"({FEATURE_DIM})")
    with np.load(path, allow_pickle=False) as data:
        feats = data["features"] if "features" in data.files else None
    return Reference(mu, sigma, feats, os.path.abspath(path))


def reference_file(folder: Path, fingerprint: str, inception_sha: str) -> Path:
    return folder / f"fid-ref-{fingerprint[:16]}-{inception_sha[:12]}.npz"


def _read_cached(path: Path, fingerprint: str, inception_sha: str) -> Reference | None:
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"][()]))
            if (meta.get("format"), meta.get("fingerprint"), meta.get("inception_sha256")) != \
                    (REF_FORMAT, fingerprint, inception_sha):
                logger.warning("ignoring %s: made for other images or Inception weights", path)
                return None
            return Reference(data["mu"], data["sigma"], data["features"], str(path))
    except (OSError, ValueError, KeyError) as e:
        logger.warning("ignoring unreadable FID reference %s (%s): recomputing", path, e)
        return None


def training_reference(data: str, image_size: int, count: int, keep_features: int, inception: InceptionFeatures,
                       d: distributed.Dist, batch_size: int, workers: int, folder: str | os.PathLike[str] | None = None,
                       strict: bool = False) -> Reference:
    """The Inception statistics of ``count`` class-balanced training images of ``data`` (all when 0 or fewer
    exist), read from the cache in ``folder`` (default ``<rectok cache>/fid-ref``) or computed over all ranks and
    written there by rank 0; the first ``keep_features`` features are kept for precision/recall."""
    dataset = build_dataset(data, image_size, split="train", strict=strict)
    labels = [label for _, label in dataset.items]
    picked = stratified_indices(labels, count if 0 < count < len(dataset) else len(dataset), seed=0)
    subset = dataset.subset(picked)
    fp = dataset_fingerprint(subset)
    sha = file_sha256(inception.weights_path)
    path = reference_file(Path(folder) if folder else cache_dir() / "fid-ref", fp, sha)
    found = _read_cached(path, fp, sha) if d.is_main else None
    found = distributed.broadcast_object(found)
    if found is not None:
        return found
    if d.is_main:
        logger.info("FID reference: Inception statistics of %d training images (once; cached in %s)", len(subset),
                    path)
    mine = list(range(d.rank, len(subset), d.world_size))
    loader = DataLoader(_Rows(subset, mine), batch_size=batch_size, num_workers=workers)
    inception.to(d.device).eval()
    feats, oks = [], []
    with torch.no_grad():
        for batch in loader:
            f = inception(as_uint8(batch["image"]).to(d.device))
            feats.append(f.float())
            oks.append(batch["ok"].to(d.device))
    rows = torch.cat(feats) if feats else torch.zeros(0, FEATURE_DIM, device=d.device)
    ok = torch.cat(oks) if oks else torch.zeros(0, dtype=torch.bool, device=d.device)
    rows, ok = gather_rows(rows, len(subset), d), gather_rows(ok, len(subset), d)
    result: Reference | str
    if d.is_main:
        all_feats = rows[ok].cpu().numpy()
        if len(all_feats) < 2:
            result = f"{data}: fewer than 2 readable training images for the FID reference"
        else:
            mu, sigma = feature_stats(all_feats)
            kept = all_feats[:keep_features]
            meta = {"format": REF_FORMAT, "fingerprint": fp, "inception_sha256": sha, "data": data,
                    "image_size": image_size, "num_images": int(len(all_feats)), "class_balanced": True}
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_open(path, "wb") as fh:
                np.savez(fh, mu=mu, sigma=sigma, features=kept, meta=np.array(json.dumps(meta, sort_keys=True)))
            result = Reference(mu, sigma, kept, str(path))
    result = distributed.broadcast_object(result if d.is_main else None)
    if isinstance(result, str):
        raise RectokError(result)
    return result


class _Rows(torch.utils.data.Dataset):
    """Items ``rows`` of a dataset, no flip."""

    def __init__(self, dataset, rows: list[int]):
        self.dataset, self.rows = dataset, rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        item = self.dataset[self.rows[i]]
        return {"image": item["image"], "ok": item["ok"]}


# ---------------------------------------------------------------------------------------------------------
# The evaluator
# ---------------------------------------------------------------------------------------------------------
class DiTEvaluator:
    """``evaluate(step) -> {"fid/ema": …, "fid_cfg/ema": …, …}`` for ``TrainLoop.run``; called on every rank.

    ``model`` is used only through the velocity functions of :mod:`rectok_core.sampling.generate` (``model(x, t, y)``
    and its ``null_class`` for CFG); ``guide`` (a velocity model of the same latent space) turns the guided
    evaluation into AutoGuidance."""

    def __init__(self, model: torch.nn.Module, tokenizer: RecTok, stats: LatentStats, shape: tuple[int, int, int],
                 num_classes: int, reference: Reference, inception: InceptionFeatures, d: distributed.Dist, *,
                 n: int, seed: int, steps: int, method: str = "cfg", scale: float = 1.0,
                 guide: torch.nn.Module | None = None, batch_size: int = 64, precision: str = "fp32",
                 weights: str = "ema"):
        if n < 2:
            raise RectokError(f"--eval-images must be at least 2 (FID needs a covariance), got {n}")
        if method == "autoguidance" and guide is None:
            raise RectokError("--eval-cfg autoguidance needs --eval-guide GUIDE_CKPT")
        self.model, self.tokenizer, self.stats, self.shape, self.num_classes = model, tokenizer, stats, shape, num_classes
        self.reference, self.inception, self.d = reference, inception, d
        self.n, self.seed, self.steps, self.method, self.scale, self.guide = n, seed, steps, method, scale, guide
        self.batch_size, self.precision, self.weights = batch_size, precision, weights
        self.labels = labels_for(n, num_classes)  # fixed and class-balanced: i mod K
        family = GENERATORS[family_of_model(model)]
        self.prediction = family.prediction  # velocity, or epsilon (diffusion)
        self.sampler = resolve_sampler(self.prediction, "euler")  # Euler, or the diffusion family's own sampler
        # the family's official grid and guidance interval, as `rectok sample --time-shift auto --interval auto`
        self.shift = family.sampling.grid_shift(shape) if self.prediction == "velocity" else None
        self.interval = family.sampling.interval

    def variants(self) -> list[tuple[str, Any]]:
        """(metric suffix, velocity): no guidance, then the run's guidance (left out at scale 1: the same)."""
        model, null, kind = RowPadded(self.model), self.model.null_class, (self.prediction, self.shape[0])
        out = [("", build_velocity(model, "none", 1.0, null, None, (0.0, 1.0), *kind))]
        if self.scale != 1.0:
            guide = RowPadded(self.guide) if self.guide is not None else None
            out.append(("_cfg", build_velocity(model, self.method, self.scale, null, guide, self.interval, *kind)))
        return out

    @torch.no_grad()
    def features(self, velocity) -> tuple[torch.Tensor, torch.Tensor | None, int]:
        """Pool3 features (n, 2048), logits (when the weights have them) and the number of non-finite samples,
        of all ranks in index order."""
        d, dev = self.d, self.d.device
        self.inception.to(dev).eval()
        mine = torch.arange(d.rank, self.n, d.world_size)
        feats, logits, bad = [], [], torch.zeros((), dtype=torch.long, device=dev)
        for idx in mine.split(self.batch_size):
            z = generate_latents(velocity, idx, self.labels[idx], self.seed, self.shape, self.steps, self.sampler, dev,
                                 self.precision, self.shift)
            img = decode_latents(self.tokenizer, self.stats, z, self.precision)
            finite = torch.isfinite(img.reshape(len(idx), -1)).all(1)
            bad += (~finite).sum()
            f, lg, _ = self.inception.forward_all(as_uint8(torch.nan_to_num(img)), logits=self.inception.has_logits)
            feats.append(f.float())
            if lg is not None:
                logits.append(lg.float())
        f_all = gather_rows(torch.cat(feats) if feats else torch.zeros(0, FEATURE_DIM, device=dev), self.n, d)
        lg_all = None
        if self.inception.has_logits:
            lg_all = gather_rows(torch.cat(logits) if logits else torch.zeros(0, 1008, device=dev), self.n, d)
        return f_all, lg_all, int(distributed.all_reduce_sum(bad).item())

    def metrics(self, suffix: str, feats: np.ndarray, logits: np.ndarray | None, bad: int) -> dict[str, float]:
        w = self.weights
        if bad:
            logger.warning("evaluation: %d of %d samples%s are not finite: no metrics for them", bad, self.n,
                           " (guided)" if suffix else "")
            return {f"fid{suffix}/{w}": float("nan")}
        mu, sigma = feature_stats(feats)
        ref = self.reference
        out = {f"fid{suffix}/{w}": frechet_distance(mu, sigma, ref.mu, ref.sigma)}
        if logits is not None and self.n >= IS_SPLITS:
            out[f"is{suffix}/{w}"] = inception_score(logits, splits=IS_SPLITS)[0]
        if ref.features is not None and min(len(ref.features), self.n) > PR_K:
            p, r = precision_recall(real=ref.features, fake=feats, k=PR_K, device=self.d.device)
            out.update({f"precision{suffix}/{w}": p, f"recall{suffix}/{w}": r})
        return out

    def __call__(self, step: int) -> dict[str, float]:
        was_training = self.model.training
        self.model.eval()
        try:
            results: dict[str, float] = {}
            for suffix, velocity in self.variants():
                feats, logits, bad = self.features(velocity)
                if self.d.is_main:
                    results.update(self.metrics(suffix, feats.cpu().numpy(),
                                                None if logits is None else logits.cpu().numpy(), bad))
        finally:
            self.model.train(was_training)
        results = distributed.broadcast_object(results if self.d.is_main else None)
        if self.d.is_main:
            logger.info("step %d evaluation: %s", step, ", ".join(f"{k} {v:.4g}" for k, v in results.items()))
        return results


def check_guide_model(guide, shape: tuple[int, int, int], num_classes: int, tokenizer_sha256: str,
                      stats: LatentStats) -> None:
    """An ``--eval-guide`` must model the same latents: shape, classes, tokenizer and statistics."""
    c = guide.model.config
    if (c.in_channels, c.input_size, c.input_size) != tuple(shape) or guide.model.num_classes != num_classes:
        raise RectokError(f"--eval-guide {guide.path} models other latents or classes than this run")
    if guide.tokenizer["sha256"] != tokenizer_sha256:
        raise RectokError(f"--eval-guide {guide.path} was trained on another tokenizer")
    if not (torch.allclose(guide.stats.mean.cpu(), stats.mean.cpu(), rtol=1e-4, atol=1e-6)
            and torch.allclose(guide.stats.std.cpu(), stats.std.cpu(), rtol=1e-4, atol=1e-6)):
        raise RectokError(f"--eval-guide {guide.path} normalises latents with other statistics than this run")


def resolve_dit_eval_every(cfg, total: int, d: distributed.Dist) -> int:
    """``--eval-every`` of a train-dit run resolved (stored in ``cfg.run``): unset → a tenth of the run when the data
    has a validation split or ``--ref-stats`` is given (as the tokenizer stages); an explicit value always works
    (the training images are the default reference)."""
    R = cfg.run
    auto = bool(cfg.evaluation.ref_stats) or validation_split(R.data) is not None
    return resolve_eval_every(R, total, auto or R.eval_every is not None, d.is_main, "validation split (or --ref-stats)")


def build_dit_evaluator(cfg, d: distributed.Dist, model: torch.nn.Module, tokenizer: RecTok, tokenizer_sha256: str,
                        stats: LatentStats, shape: tuple[int, int, int], num_classes: int,
                        precision: str) -> DiTEvaluator | None:
    """The evaluator of a ``train-dit`` config (None when ``--eval-every 0``): the reference is loaded or computed
    here, before the first training step."""
    if not cfg.run.eval_every:
        return None
    with isolated_rng():  # building networks and data loaders draws from the global generators
        return _build(cfg, d, model, tokenizer, tokenizer_sha256, stats, shape, num_classes, precision)


def _build(cfg, d: distributed.Dist, model: torch.nn.Module, tokenizer: RecTok, tokenizer_sha256: str,
           stats: LatentStats, shape: tuple[int, int, int], num_classes: int, precision: str) -> DiTEvaluator:
    R, E = cfg.run, cfg.evaluation
    inception = InceptionFeatures(None)  # resolved offline; torch-fidelity's original file also gives the IS
    if E.ref_stats:
        reference = load_reference(E.ref_stats)
    else:
        reference = training_reference(R.data, tokenizer.cfg.image_size, E.eval_ref_images, R.eval_images,
                                       inception, d, R.batch_size, R.workers, strict=R.strict_data)
    guide = None
    if E.eval_cfg == "autoguidance":
        loaded = load_dit(E.eval_guide, "ema", d.device)
        if family_of_model(loaded.model) != family_of_model(model):
            raise RectokError(f"--eval-guide {E.eval_guide} is a {family_of_model(loaded.model)} generator, this run "
                              f"a {family_of_model(model)} one: AutoGuidance needs a guide of the same family")
        check_guide_model(loaded, shape, num_classes, tokenizer_sha256, stats)
        guide = loaded.model
    return DiTEvaluator(model, tokenizer, stats, shape, num_classes, reference, inception, d, n=R.eval_images,
                        seed=R.seed, steps=E.eval_steps, method=E.eval_cfg, scale=E.eval_cfg_scale, guide=guide,
                        batch_size=R.batch_size, precision=precision)
