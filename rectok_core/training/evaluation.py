"""Evaluation during training: the machinery every stage shares.

:meth:`TrainLoop.run <rectok_core.training.scaffold.TrainLoop.run>` calls a stage's ``evaluate(step)`` on every
rank at the evaluation steps (``--eval-every``) and the final step, inside :func:`isolated_rng` (the evaluation never
changes the training's random stream), and hands the metrics to :func:`record_eval`: an ``{"event": "eval", "step":
s, "<metric>/<weights>": value, ...}`` line in ``metrics.jsonl``, the scalars ``eval/<metric>/<weights>`` for
TensorBoard / W&B, and ``OUT/eval_curves.png`` redrawn from ``metrics.jsonl`` (:func:`draw_eval_curves`: one
panel per metric, the raw and the EMA weights as two lines), so a resumed run keeps one continuous curve. A step
evaluated twice (a run killed after its evaluation and before its checkpoint, then resumed) keeps the newest record.

The tokenizer stages' evaluator, :class:`TokenizerEvaluator`: PSNR, SSIM and rFID of the raw and the EMA weights'
posterior-mean reconstructions (``rectok eval``'s protocol and code, :func:`rectok_core.metrics.tokenizer_eval.
score_batch`) on a fixed, class-balanced subset of ``--eval-images`` validation images, sharded over the ranks
(per-image sums and Inception moments all-reduced). The reference statistics are those of the subset's real
images, computed in the first evaluation and cached in ``OUT/eval_reference.npz`` (reused by later evaluations
and by resumes; recomputed when the subset, image size or Inception weights differ).
"""
from __future__ import annotations

import contextlib
import logging
import math
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rectok_core.data.datasets import evaluation_split, splits_in, stratified_indices
from rectok_core.data.latent_stats import data_id, dataset_fingerprint
from rectok_core.data.readers import build_dataset, reader_for
from rectok_core.data.sampler import build_loader, drop_bad
from rectok_core.errors import DataError, RectokError
from rectok_core.metrics.fid import frechet_distance, load_stats, load_stats_meta, save_stats
from rectok_core.metrics.tokenizer_eval import FeatureMoments, score_batch
from rectok_core.models.inception import FEATURE_DIM, InceptionFeatures
from rectok_core.models.inception_weights import resolve_inception_weights
from rectok_core.training.rundir import RunDir, read_metrics
from rectok_core.utils import distributed
from rectok_core.utils.env import default_workers
from rectok_core.utils.files import file_sha256
from rectok_core.utils.plots import pyplot, save_figure
from rectok_core.utils.runtime import resolve_precision

logger = logging.getLogger(__name__)

#: The curve file in the run folder.
CURVES = "eval_curves.png"

#: EMA weights' line label and the raw weights' (metric names are ``<metric>/<weights>``).
WEIGHT_LABELS = {"raw": "raw weights", "ema": "EMA weights"}

#: Axis labels of the metrics the stages report (others are labelled by their name).
METRIC_LABELS = {"psnr": "PSNR (dB, higher is better)", "ssim": "SSIM (higher is better)",
                 "rfid": "rFID (lower is better)", "fid": "FID (lower is better)",
                 "fid_cfg": "FID with guidance (lower is better)", "is": "Inception Score (higher is better)",
                 "precision": "precision (higher is better)", "recall": "recall (higher is better)"}

#: Metric-name prefixes whose values are better when higher (``precision_cfg``, ``recall_cfg`` included).
HIGHER_IS_BETTER = ("precision", "recall")


def metric_label(metric: str) -> str:
    """The axis label of ``metric`` (a name before ``/weights``): :data:`METRIC_LABELS`, ``NAME_cfg`` as
    "… with guidance", any other precision/recall name "(higher is better)"; else the name itself."""
    if metric in METRIC_LABELS:
        return METRIC_LABELS[metric]
    base = metric.removesuffix("_cfg")
    if base != metric and base in METRIC_LABELS:
        name, _, rest = METRIC_LABELS[base].partition(" (")
        return f"{name} with guidance ({rest}"
    if metric.startswith(HIGHER_IS_BETTER):
        return f"{metric} (higher is better)"
    return metric


#: Runs shorter than this get no automatic evaluation (``--eval-every`` unset): a tenth of them is too few steps.
AUTO_MIN_STEPS = 100


@contextlib.contextmanager
def isolated_rng() -> Iterator[None]:
    """Run the body with the torch (CPU and every initialised CUDA device), Python and numpy random states saved
    and restored afterwards, so whatever it draws leaves the caller's random stream where it was."""
    cpu = torch.get_rng_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    py, npy = random.getstate(), np.random.get_state()
    try:
        yield
    finally:
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)
        random.setstate(py)
        np.random.set_state(npy)


@contextlib.contextmanager
def eval_mode(*modules: torch.nn.Module) -> Iterator[None]:
    """``modules`` in eval mode for the body; afterwards every submodule gets back its own mode (train or eval)."""
    modes = [(m, m.training) for module in modules for m in module.modules()]
    try:
        for module in modules:
            module.eval()
        yield
    finally:
        for m, training in modes:
            m.training = training


# ---------------------------------------------------------------------------------------------------------
# When to evaluate
# ---------------------------------------------------------------------------------------------------------
def validation_split(spec: str) -> str | None:
    """The validation split of the training data ``spec``: ``val`` (or ``test``/``valid``… for a split tree
    without ``val/``, as ``rectok eval`` chooses) when the data has one, else None. The built-in digits always
    have their held-out ``val`` fifth; a plain class folder or a list file have none."""
    try:
        if reader_for(spec).name == "digits":
            return "val"
    except RectokError:
        return None
    split, _ = evaluation_split(spec)
    return split if split in splits_in(spec) else None


def resolve_eval_every(R, total: int, has_val: bool, is_main: bool, what: str = "validation data") -> int:
    """``R.eval_every`` (the run config) resolved and stored: unset (None) → a tenth of the run when ``has_val``
    (runs of fewer than :data:`AUTO_MIN_STEPS` steps: off), else off with one info line; an explicit positive
    value without validation data is a one-line error (raised before any training step)."""
    if R.eval_every is None:
        if not has_val:
            if is_main:
                logger.info("evaluation during training is off: %s has no %s (--eval-every 0 silences this)",
                            R.data, what)
            R.eval_every = 0
        else:
            R.eval_every = total // 10 if total >= AUTO_MIN_STEPS else 0
            if is_main and R.eval_every:
                logger.info("evaluating every %d steps (a tenth of the run; --eval-every N or 0 to change)",
                            R.eval_every)
    elif R.eval_every > 0 and not has_val:
        raise RectokError(f"--eval-every {R.eval_every}: {R.data} has no {what} to evaluate on (give data with a "
                          f"val/ split, or --eval-every 0)")
    return R.eval_every


# ---------------------------------------------------------------------------------------------------------
# Records, trackers and the curve
# ---------------------------------------------------------------------------------------------------------
def is_metric(key: str) -> bool:
    """A ``<metric>/<weights>`` key of an evaluation record."""
    return "/" in key


def record_eval(run: RunDir, step: int, metrics: dict[str, float], seconds: float) -> None:
    """Log one evaluation (main rank): metrics.jsonl, the trackers' ``eval/…`` scalars, the redrawn curve."""
    if not run.is_main:
        return
    run.log({"event": "eval", "step": step, **metrics, "seconds": round(seconds, 3)})
    nums = {k: float(v) for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}
    for sink in run.tracker.sinks:
        sink.scalars(step, nums, "eval/")
    try:
        draw_eval_curves(run.path / "metrics.jsonl", run.path / CURVES)
    except OSError as e:  # a full disk must not stop the run: the numbers are in metrics.jsonl
        logger.warning("cannot write %s: %s", run.path / CURVES, e)


def eval_records(metrics_path: str | Path) -> list[dict[str, Any]]:
    """The evaluation records of a run in step order, one per step: a step evaluated again after a resume keeps
    its newest record. Records of ``rectok eval --log`` (plain metric names) are not training evaluations."""
    by_step: dict[int, dict[str, Any]] = {}
    for rec in read_metrics(metrics_path):
        if rec.get("event") == "eval" and any(is_metric(k) for k in rec):
            by_step[int(rec["step"])] = rec
    return [by_step[s] for s in sorted(by_step)]


def draw_eval_curves(metrics_path: str | Path, out: str | Path) -> Path | None:
    """``out``: one panel per metric (metric against step), raw and EMA weights as two labelled lines; None when
    the run has no evaluation yet."""
    records = eval_records(metrics_path)
    if not records:
        return None
    plt = pyplot()
    from matplotlib.ticker import MaxNLocator

    names: dict[str, list[str]] = {}
    for rec in records:
        for key in rec:
            if is_metric(key):
                metric, weights = key.split("/", 1)
                if weights not in names.setdefault(metric, []):
                    names[metric].append(weights)
    cols = min(3, len(names))
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.3 * rows + 0.5), dpi=110, squeeze=False)
    for ax, (metric, weights) in zip(axes.flat, names.items()):
        for w in weights:
            pts = [(r["step"], r[f"{metric}/{w}"]) for r in records
                   if isinstance(r.get(f"{metric}/{w}"), (int, float)) and math.isfinite(r[f"{metric}/{w}"])]
            if pts:
                xs, ys = zip(*pts)
                ax.plot(xs, ys, marker="o", ms=3, label=WEIGHT_LABELS.get(w, w))
        ax.set_title(metric_label(metric).split(" (")[0])
        ax.set_xlabel("training step")
        ax.set_ylabel(metric_label(metric))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(names):]:
        ax.set_visible(False)
    last = records[-1]["step"]
    fig.suptitle(f"evaluation during training ({len(records)} evaluations, last at step {last})")
    fig.tight_layout()
    return save_figure(fig, out)


# ---------------------------------------------------------------------------------------------------------
# The tokenizer stages' evaluator
# ---------------------------------------------------------------------------------------------------------
#: The cached reference statistics of the evaluation subset, in the run folder.
REFERENCE = "eval_reference.npz"

#: Data-loading workers of the evaluation subset per rank (they persist beside the training's own).
EVAL_WORKERS = 4


class TokenizerEvaluator:
    """``evaluate(step)`` of the tokenizer stages: ``{psnr,ssim,rfid}/{raw,ema}`` of ``model`` and ``ema`` (the EMA's
    module) on the first ``R.eval_images`` of a seeded, class-interleaved order of the validation split ``split`` of
    ``R.data`` (:func:`stratified_indices`: classes take turns, so any prefix is class-balanced). Built before the
    first training step: it reads the subset and resolves the Inception weights, failing fast with one line."""

    def __init__(self, run: RunDir, R, split: str, image_size: int, model: torch.nn.Module, ema: torch.nn.Module,
                 d: distributed.Dist, inception_weights: str | None = None):
        self.run, self.d, self.models = run, d, {"raw": model, "ema": ema}
        self.precision = resolve_precision(d.device, R.precision)
        full = build_dataset(R.data, image_size, split=split, strict=R.strict_data)
        order = stratified_indices([label for _, label in full.items], R.eval_images)
        if len(order) < R.eval_images and d.is_main:
            logger.info("evaluation during training: %s (%s) has %d images, fewer than --eval-images %d: using all",
                        R.data, split, len(order), R.eval_images)
        self.dataset = full.subset(order)
        if len(self.dataset) < 2:
            raise DataError(f"{R.data} ({split}): {len(self.dataset)} validation image, rFID needs at least 2")
        self.weights = resolve_inception_weights(inception_weights)
        self.meta = {"data": data_id(R.data), "split": split, "image_size": image_size, "images": len(self.dataset),
                     "subset_fingerprint": dataset_fingerprint(self.dataset),
                     "inception_sha256": file_sha256(self.weights)}
        shard = list(range(d.rank, len(self.dataset), d.world_size))
        workers = min(default_workers() if R.workers is None else R.workers, EVAL_WORKERS)
        self.loader = build_loader(self.dataset, shard, R.batch_size, workers, d.device.type == "cuda",
                                   drop_last=False)
        self.inception: InceptionFeatures | None = None
        self.reference: tuple[np.ndarray, np.ndarray] | None = None
        if d.is_main:
            logger.info("evaluation during training: %d validation images of %s (%s), raw and EMA weights",
                        len(self.dataset), R.data, split)

    def _cached_reference(self) -> tuple[np.ndarray, np.ndarray] | None:
        """Rank 0's cached statistics of this subset (None when absent or of another subset), on every rank."""
        found = None
        path = self.run.path / REFERENCE
        if self.d.is_main and path.is_file():
            try:
                if load_stats_meta(path) == self.meta:
                    found = load_stats(path)
            except (RectokError, OSError, ValueError) as e:
                logger.warning("ignoring %s (%s): recomputing the reference statistics", path, e)
        return distributed.broadcast_object(found)

    @torch.no_grad()
    def __call__(self, step: int) -> dict[str, float]:
        dev = self.d.device
        if self.inception is None:
            self.inception = InceptionFeatures(self.weights).to(dev)
            self.reference = self._cached_reference()
        sums = {w: torch.zeros(4, dtype=torch.float64, device=dev) for w in self.models}
        fake = {w: FeatureMoments(FEATURE_DIM, dev) for w in self.models}
        real = FeatureMoments(FEATURE_DIM, dev) if self.reference is None else None
        for batch in self.loader:
            batch, _ = drop_bad(batch)
            if batch["image"].shape[0] == 0:
                continue
            x = batch["image"].to(dev, non_blocking=True)
            for w, model in self.models.items():
                score_batch(model, x, self.precision, self.inception, sums[w], fake[w])
            if real is not None:
                real.add(self.inception((x + 1) / 2))
        for w in self.models:
            distributed.all_reduce_sum(sums[w])
            fake[w].all_reduce()
        if real is not None:
            real.all_reduce()
            self.reference = real.stats()
            if self.d.is_main:
                save_stats(self.run.path / REFERENCE, *self.reference, **self.meta)
        count = int(sums["raw"][0].item())
        if count < 2:
            raise DataError(f"evaluation at step {step}: {count} readable validation images, rFID needs 2")
        out: dict[str, float] = {}
        for metric, i in (("psnr", 1), ("ssim", 2)):
            for w in self.models:
                out[f"{metric}/{w}"] = sums[w][i].item() / count
        for w in self.models:
            out[f"rfid/{w}"] = frechet_distance(*fake[w].stats(), *self.reference)
        return out
