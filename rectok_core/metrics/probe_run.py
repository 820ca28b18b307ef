"""``probe-flow``: how linearly decodable a tokenizer's latents stay along the forward flow (recipe §5.1, §11.9).

Protocol (rectok's, recipe §11.9; the paper's exact protocol is not published):

* **Features.** Each frozen tokenizer encodes center-cropped images (no flip) and keeps the posterior **mean**
  ``z`` (B, N, C). By default (``space="normalized"``) ``z`` is standardised per channel with the mean and std of
  the posterior means over the (possibly ``per_class``-limited) **train** split, all tokens pooled, std =
  ``sqrt(E[z²] − E[z]²)`` (recipe §4.4): the DiT's input space. ``space="raw"`` keeps un-normalised latents.
* **Flow.** ``x_t = (1 − t)·z + t·ε`` in the tokenizer convention (t = 1 is pure noise) on a grid of t. ``ε`` is
  a standard normal (N, C) tensor that depends only on ``(seed, split, image index)`` (:func:`image_noise`; the
  index is the image's position in the probed, possibly limited, split): the same for every t and for every
  checkpoint whose latents have the same shape. It is drawn on the CPU (≈0.15 ms per 256×128 image), so it does
  not depend on the device.
* **Pooling shortcut.** The token grid is mean-pooled to one C-dim vector per image. Pooling is linear, so
  ``pool(x_t) = (1 − t)·pool(z) + t·pool(ε)``: ``z̄`` and ``ε̄`` are computed once per image and every t costs
  one (n, C) axpy (:func:`pooled_flow_features`) — exact, not an approximation. The per-channel standardisation is
  affine per channel, so it commutes with pooling too: it is applied to ``z̄``.
* **Classifier.** Pooled features are standardised (per feature, train-split statistics) and a multinomial linear
  classifier is fitted on train and scored on val (top-1; top-5 when there are ≥ 10 classes). Both back ends
  minimise the same convex objective ``mean cross-entropy + weight_decay/2·‖W‖²`` (bias not penalised) from a
  zero start, so the result is deterministic: ``"torch"`` (default) runs full-batch L-BFGS with strong-Wolfe line
  search on the device, the loss accumulated over row chunks so ImageNet-size sets fit in memory;
  ``"sklearn"`` is ``LogisticRegression(C = 1/(weight_decay·n_train))`` (small sets).
* **Chance check.** At t = 1 the features are pure noise and carry no label information, so the val accuracy
  must be at chance. *Chance* (the plotted line) is a uniform guess, ``1/K`` (top-5: ``5/K``). The check allows
  for an imbalanced val split by comparing with the best any label-independent predictor can do, the *majority*
  rate: the frequency of the most common val class (top-5: the five most common; equal to chance when the split
  is balanced). It fails when the accuracy exceeds
  ``majority + CHANCE_SIGMAS·sqrt(majority·(1 − majority)/n_val) + CHANCE_MARGIN``; t = 1 is always evaluated
  for the check, even when the grid leaves it out. A failure is logged loudly and flagged in the report.
* **Teacher line.** Optionally, the pooled patch features of a teacher (``teachers.build_teacher``) on the first
  checkpoint's image size and token grid go through the same classifier: a t-independent reference.
"""
from __future__ import annotations

import logging
import os
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from rectok_core.checkpoints import is_family_spec, load_any_tokenizer
from rectok_core.checkpoints.families import split_spec
from rectok_core.data.datasets import ImageDataset, evaluation_split, limit_per_class, splits_in
from rectok_core.data.readers import build_dataset
from rectok_core.errors import DataError, RectokError
from rectok_core.metrics.config import ProbeConfig  # noqa: F401 - re-exported
from rectok_core.metrics.probe import (
    CHANCE_MARGIN,
    CHANCE_SIGMAS,
    ChanceCheck,
    PooledFeatures,
    chance_levels,
    pooled_features,
    pooled_noise,
    probe_accuracy,
    probe_along_flow,
)
from rectok_core.teachers.registry import build_teacher
from rectok_core.utils.distributed import resolve_device
from rectok_core.utils.runtime import resolve_precision

logger = logging.getLogger(__name__)




JSON_FORMAT = "rectok-probe-flow"


JSON_VERSION = 1


# ---------------------------------------------------------------------------------------------------------
# Data: labelled train/val splits, label-mapped to the train classes
# ---------------------------------------------------------------------------------------------------------
def _load_split(spec: str, split: str, image_size: int, explicit: bool) -> ImageDataset:
    """One split. ``--data DIR`` must hold ``DIR/<split>/`` (for val: or the one evaluation split there is, e.g.
    ``DIR/test/`` beside ``DIR/train/``; a class folder serves as the train side as it is); an explicit
    ``--train-data/--val-data`` folder is used as is unless it holds a ``<split>/`` sub-folder."""
    if spec == "digits":
        return build_dataset("digits", image_size, split=split)
    flag = f"--{split}-data" if explicit else "--data"
    if os.path.isdir(spec):
        folder = split if split == "train" or explicit else evaluation_split(spec)[0]
        if os.path.isdir(os.path.join(spec, folder)):
            if folder != split:
                logger.info("%s has no %s/ split: scoring the probe on its %s/ split", spec, split, folder)
            return build_dataset(os.path.join(spec, folder), image_size)
        if not explicit and (split != "train" or splits_in(spec)):
            raise DataError(f"--data {spec} has no {split}/ folder (expected {spec}/train and {spec}/val or "
                            f"{spec}/test; or give --train-data and --val-data)")
        return build_dataset(spec, image_size)
    if not explicit and (os.path.isfile(spec) or "@" in spec):
        raise DataError(f"--data {spec} is a list file, i.e. one split: give --train-data and --val-data")
    try:
        return build_dataset(spec, image_size)
    except DataError as e:
        raise DataError(f"{flag}: {e}") from None


def _check_limit(dataset: ImageDataset, n: int, flag: str, split: str) -> ImageDataset:
    if n == 0:
        return dataset
    counts = Counter(label for _, label in dataset.items)
    label, largest = counts.most_common(1)[0]
    if n > largest:
        raise DataError(f"{flag} {n} is more than the {split} split holds for any class (largest: "
                        f"{largest} images of class {dataset.classes[label]!r})")
    return limit_per_class(dataset, n)


class ProbeSplits:
    """The labelled train and val splits of a probe, at any image size.

    Labels are mapped by class *name* onto the classes present in the train split (``class_names``, contiguous
    ids 0…K−1), so folders that number their classes differently agree. A val class absent from train, an
    unlabelled split, fewer than two train classes and train/val sharing files are :class:`DataError`.
    """

    def __init__(self, cfg: ProbeConfig, image_size: int):
        train_spec, val_spec = cfg.train_data or cfg.data, cfg.val_data or cfg.data
        if not train_spec or not val_spec:
            raise RectokError("probe-flow needs labelled train and val images: --data DIR (with train/ and val/) "
                              "or --data digits, or --train-data and --val-data")
        self.train_spec, self.val_spec = train_spec, val_spec
        train = _load_split(train_spec, "train", image_size, bool(cfg.train_data))
        val = _load_split(val_spec, "val", image_size, bool(cfg.val_data))
        for ds, split in ((train, "train"), (val, "val")):
            if not ds.has_labels or ds.num_classes == 0:
                raise DataError(f"the {split} split ({ds.source}) is unlabelled: probe-flow needs class labels "
                                f"(ImageFolder class folders or 'path label' list lines)")
        train = _check_limit(train, cfg.per_class, "--per-class", "train")
        val = _check_limit(val, cfg.val_per_class, "--val-per-class", "val")
        shared = {p for p, _ in train.items} & {p for p, _ in val.items}
        if shared:
            raise DataError(f"{len(shared)} val images are also train images (e.g. {sorted(shared)[0]}): the probe "
                            f"must be scored on held-out images")
        present = sorted({label for _, label in train.items})
        if len(present) < 2:
            raise DataError(f"the train split ({train.source}) has {len(present)} class: a probe needs at least 2")
        self.class_names = [train.classes[i] for i in present]
        ids = {name: k for k, name in enumerate(self.class_names)}
        missing = sorted({val.classes[label] for _, label in val.items} - set(ids))
        if missing:
            shown = ", ".join(repr(m) for m in missing[:3]) + (" …" if len(missing) > 3 else "")
            raise DataError(f"the val split ({val.source}) has {len(missing)} classes that the train split "
                            f"({train.source}) lacks: {shown}")
        self.train_labels = torch.tensor([ids[train.classes[label]] for _, label in train.items])
        self.val_labels = torch.tensor([ids[val.classes[label]] for _, label in val.items])
        self._base = {"train": train, "val": val}
        self._sized: dict[tuple[str, int], ImageDataset] = {}

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def dataset(self, split: str, image_size: int) -> ImageDataset:
        """The ``split`` dataset center-cropped to ``image_size`` (same items, hence the same indices)."""
        key = (split, image_size)
        if key not in self._sized:
            ds = self._base[split].subset(range(len(self._base[split])))
            ds.image_size = image_size
            self._sized[key] = ds
        return self._sized[key]


# ---------------------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------------------
@dataclass
class CheckpointProbe:
    name: str
    path: str
    sha256: str
    step: int | None
    weights: str
    image_size: int
    grid: list[int]
    dim: int
    space: str
    n_train: int
    n_val: int
    num_classes: int
    chance: dict[str, float | None]
    results: list[dict[str, float | None]]
    chance_check: ChanceCheck
    latent_stats: dict[str, list[float]]  # per-channel train mean/std of the posterior means (raw latents)
    family: str = "rectok"  # the tokenizer family (FAMILY:SOURCE; rectok for a plain checkpoint)


@dataclass
class TeacherProbe:
    name: str
    weights: str
    dim: int
    image_size: int
    grid: list[int]
    n_train: int
    n_val: int
    num_classes: int
    chance: dict[str, float | None]
    top1: float
    top5: float | None


@dataclass
class ProbeReport:
    protocol: dict[str, Any]
    checkpoints: list[CheckpointProbe]
    teacher: TeacherProbe | None = None
    created: float = field(default_factory=time.time)

    @property
    def chance_check_failed(self) -> bool:
        return any(not c.chance_check.passed for c in self.checkpoints)

    def to_json(self) -> dict[str, Any]:
        return {"format": JSON_FORMAT, "version": JSON_VERSION, "created": round(self.created, 3),
                "chance_check_failed": self.chance_check_failed, "protocol": self.protocol,
                "checkpoints": [asdict(c) for c in self.checkpoints],
                "teacher": None if self.teacher is None else asdict(self.teacher)}


def checkpoint_names(paths: Sequence[str]) -> list[str]:
    """Short distinct labels: the run folder for ``RUN/checkpoints/latest.pt`` (``RUN/step_X`` for milestones),
    otherwise the file stem; repeats get ``#2``, ``#3``, …"""
    names = []
    for p in map(Path, paths):
        if p.parent.name == "checkpoints" and p.parent.parent.name:
            run = p.parent.parent.name
            names.append(run if p.stem == "latest" else f"{run}/{p.stem}")
        else:
            names.append(p.stem)
    seen: Counter[str] = Counter()
    out = []
    for n in names:
        seen[n] += 1
        out.append(n if seen[n] == 1 else f"{n}#{seen[n]}")
    return out


def load_probed(cfg: ProbeConfig, checkpoints: Sequence[str]) -> list[tuple[Any, dict]]:
    """The tokenizers to probe, in order, on the CPU. Another family's (``FAMILY:SOURCE``) encodes images of
    ``cfg.image_size``, else of the first RecTok checkpoint's size, else 256 (its family default)."""
    loaded = {i: load_any_tokenizer(p, use_ema=cfg.weights == "ema", device="cpu")
              for i, p in enumerate(checkpoints) if not is_family_spec(p)}
    size = cfg.image_size or next((m.cfg.image_size for m, _ in loaded.values()), 0) or None
    for i, p in enumerate(checkpoints):
        if i not in loaded:
            loaded[i] = load_any_tokenizer(p, device="cpu", image_size=size)
    return [loaded[i] for i in range(len(checkpoints))]


def probe_names(checkpoints: Sequence[str]) -> list[str]:
    """:func:`checkpoint_names` of the sources, with ``FAMILY:`` before another family's (``sd-vae:sd-vae-ft-ema``)."""
    specs = [split_spec(p) for p in checkpoints]
    return [n if family == "rectok" else f"{family}:{n}"
            for n, (family, _) in zip(checkpoint_names([source for _, source in specs]), specs)]


def run_probe(cfg: ProbeConfig, checkpoints: Sequence[str]) -> ProbeReport:
    """Probe every tokenizer checkpoint (and the optional teacher) on the train/val splits of ``cfg``."""

    cfg.validate()
    if not checkpoints:
        raise RectokError("give at least one tokenizer checkpoint")
    times = cfg.times()
    device = resolve_device(cfg.device)
    precision = resolve_precision(device, cfg.precision)
    models = load_probed(cfg, checkpoints)
    first = models[0][0].cfg
    if not cfg.data and not (cfg.train_data and cfg.val_data):  # --val-data alone keeps the recorded train data
        recorded = next(((meta, p) for (_, meta), p in zip(models, checkpoints) if meta.get("config")), None)
        if recorded is None:
            raise RectokError("no RecTok checkpoint records its training data here: give --data (or --train-data "
                              "and --val-data)")
        cfg.data = recorded[0]["config"]["run"]["data"]
        logger.info("probing on --data %s, the training data recorded in %s", cfg.data, recorded[1])
    splits = ProbeSplits(cfg, first.image_size)
    teacher = None
    if cfg.teacher:
        teacher = build_teacher(cfg.teacher, cfg.teacher_weights or None, first.grid, first.image_size)
        if teacher is None:
            raise RectokError(f"--teacher {cfg.teacher} has no features to probe")
    clf = dict(classifier=cfg.classifier, weight_decay=cfg.weight_decay, max_iter=cfg.max_iter, device=device)
    noise_cache: dict[tuple[str, int, int], torch.Tensor] = {}

    def eps_for(split: str, feats: PooledFeatures, dim: int) -> torch.Tensor:
        """Pooled ε̄ of the rows of ``feats``: drawn once per split and latent shape, shared by checkpoints."""
        key = (split, feats.num_tokens, dim)
        if key not in noise_cache:
            n_all = len(splits.train_labels if split == "train" else splits.val_labels)
            noise_cache[key] = pooled_noise(cfg.seed, split, range(n_all), (feats.num_tokens, dim))
        return noise_cache[key][feats.index]

    results = []
    for name, (model, meta) in zip(probe_names(checkpoints), models):
        mcfg = model.cfg
        model.to(device)
        feats = {}
        for split in ("train", "val"):
            ds = splits.dataset(split, mcfg.image_size)
            feats[split] = pooled_features(lambda img, m=model: m.encode(img).mean, ds, cfg.batch_size, cfg.workers,
                                           device, precision, f"{name} {split}")
        model.cpu()
        tr, va = feats["train"], feats["val"]
        z_tr, z_va = tr.pooled, va.pooled
        if cfg.space == "normalized":
            mean, std = tr.channel_mean.float(), tr.channel_std.float().clamp_min(1e-8)
            z_tr, z_va = (z_tr - mean) / std, (z_va - mean) / std
        curve = probe_along_flow(z_tr, eps_for("train", tr, mcfg.dim), splits.train_labels[tr.index],
                                 z_va, eps_for("val", va, mcfg.dim), splits.val_labels[va.index], times,
                                 splits.num_classes, label=name, **clf)
        results.append(CheckpointProbe(
            name=name, path=str(Path(meta["source"]).resolve()) if meta["family"] == "rectok" else meta["path"],
            family=meta["family"], sha256=meta["sha256"], step=meta.get("step"), weights=meta["weights"],
            image_size=mcfg.image_size, grid=list(mcfg.grid), dim=mcfg.dim, space=cfg.space,
            n_train=len(tr.index), n_val=len(va.index), num_classes=splits.num_classes, chance=curve.chance,
            results=curve.points, chance_check=curve.chance_check,
            latent_stats={"mean": tr.channel_mean.tolist(), "std": tr.channel_std.tolist()}))
    teacher_probe = None
    if teacher is not None:
        teacher.to(device)
        feats = {split: pooled_features(teacher, splits.dataset(split, first.image_size), cfg.batch_size,
                                        cfg.workers, device, precision, f"teacher {cfg.teacher} {split}")
                 for split in ("train", "val")}
        tr, va = feats["train"], feats["val"]
        y_tr, y_va = splits.train_labels[tr.index], splits.val_labels[va.index]
        acc = probe_accuracy(tr.pooled, y_tr, va.pooled, y_va, splits.num_classes, **clf)
        logger.info("teacher %s: top-1 %.4f", cfg.teacher, acc["top1"])
        teacher_probe = TeacherProbe(name=cfg.teacher, weights=teacher.source, dim=teacher.dim,
                                     image_size=first.image_size, grid=list(first.grid), n_train=len(tr.index),
                                     n_val=len(va.index), num_classes=splits.num_classes,
                                     chance=chance_levels(splits.num_classes), **acc)
    protocol = {
        "features": "tokenizer posterior mean of center-cropped images (no flip), mean-pooled over tokens",
        "space": cfg.space,
        "normalization": "per-channel mean/std of the train split's posterior means (all tokens)"
                         if cfg.space == "normalized" else "none",
        "flow": "x_t = (1 - t) * z + t * eps (t = 1 is pure noise); pooled as (1 - t) * mean(z) + t * mean(eps)",
        "t_grid": times,
        "noise": {"seed": cfg.seed, "rule": "eps ~ N(0, I) of shape (N, C) per image, seeded by "
                                            "(seed, split, image index); drawn on the CPU"},
        "classifier": {"kind": cfg.classifier, "weight_decay": cfg.weight_decay, "max_iter": cfg.max_iter,
                       "objective": "mean cross-entropy + weight_decay/2 * ||W||^2 (bias free) on pooled "
                                    "features standardised with train statistics, from W = 0"},
        "weights": cfg.weights,
        "precision": precision,
        "device": str(device),
        "train": {"data": splits.train_spec, "per_class": cfg.per_class},
        "val": {"data": splits.val_spec, "per_class": cfg.val_per_class},
        "classes": splits.class_names,
        "chance": {"rule": "uniform guess: top-1 1/K, top-5 5/K (top-5 with >= 10 classes)",
                   "majority": "most common val class frequency (top-5: five most common)",
                   "check": "accuracy at t = 1 <= majority + sigmas * sqrt(majority * (1 - majority) / n_val) "
                            "+ margin, for top-1 and top-5",
                   "sigmas": CHANCE_SIGMAS, "margin": CHANCE_MARGIN},
    }
    return ProbeReport(protocol, results, teacher_probe)


# ---------------------------------------------------------------------------------------------------------
# Outputs
# ---------------------------------------------------------------------------------------------------------
