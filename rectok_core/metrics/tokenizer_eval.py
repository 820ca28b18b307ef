"""Tokenizer evaluation: PSNR, SSIM, rFID and LPIPS of posterior-mean reconstructions (recipe §5, §11.6, §11.8).

Protocol (recipe §5): each image of the evaluation split is center-cropped to the tokenizer's image size (no flip)
and reconstructed as ``decode(posterior mean)`` — no noise, no mask (:meth:`RecTok.reconstruct`, clamped to
[-1, 1]) — under bf16 autocast on CUDA and in fp32 on CPU (``precision="auto"``).

Metrics, each the mean over all readable images:

* **PSNR** per image on float [0, 1] images, ``10·log10(1 / MSE_i)``; the MSE is floored at ``1e-10`` (100 dB),
  so an exact reconstruction gives a finite number;
* **SSIM** per image (Wang et al. 2004): 11×11 Gaussian window with σ = 1.5, ``K1 = 0.01``, ``K2 = 0.03``, data
  range 1 on float [0, 1] RGB, population (co)variances, valid positions only (no padding), averaged over
  positions and channels — the convention of ``pytorch-msssim`` / ``skimage`` with ``gaussian_weights=True,
  use_sample_covariance=False`` — computed in float64;
* **rFID**: InceptionV3 pool3 statistics of the reconstructions, quantised to uint8 by *rounding* (§11.6), against
  reference statistics: by default those of the same real images, computed in the same pass, or a ``mu``/``sigma``
  .npz (``ref_stats``); Fréchet distance in float64 (§11.8);
* **LPIPS** (VGG16, v0.1) only with a real ImageNet VGG16 backbone (:func:`~rectok_core.losses.perceptual.build_lpips`);
  without one it is reported as unavailable, with the reason, never computed from a random network.

Distributed: under torchrun, rank ``r`` evaluates images ``r::world``; the per-image sums and the Inception
statistics (count, mean and centred scatter in float64, :class:`FeatureMoments`) are all-reduced — no gather of
features — so the numbers do not depend on the number of processes. Rank 0 writes ``eval.json`` (metrics and
manifest) and ``recon_grid.png`` (originals above their reconstructions of :data:`GRID_IMAGES` images chosen across
classes).
"""
from __future__ import annotations

import datetime
import logging
import math
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rectok_core import __version__
from rectok_core.checkpoints import KINDS, is_family_spec, load_any_tokenizer, load_tokenizer
from rectok_core.checkpoints.families import check_image_size
from rectok_core.config import settings
from rectok_core.data.datasets import ImageDataset, evaluation_split, limit_per_class, stratified_indices
from rectok_core.data.latent_stats import data_id, dataset_fingerprint
from rectok_core.data.readers import build_dataset
from rectok_core.data.sampler import build_loader, drop_bad
from rectok_core.errors import CheckpointError, DataError, RectokError, WeightsNotFound
from rectok_core.losses.perceptual import LPIPS, VGG16_FILE, build_lpips
from rectok_core.metrics.config import EvalConfig
from rectok_core.metrics.fid import (
    frechet_distance,
    load_stats,
    load_stats_meta,
    save_stats,
)
from rectok_core.metrics.image import (
    MSE_FLOOR,
    SSIM_K1,
    SSIM_K2,
    SSIM_SIGMA,
    SSIM_WINDOW,
    psnr,
    ssim,
)
from rectok_core.models.inception import FEATURE_DIM, InceptionFeatures
from rectok_core.models.tokenizer import RecTok
from rectok_core.utils import distributed
from rectok_core.utils.files import claim_output_dir, file_sha256, write_json_atomic
from rectok_core.utils.images import save_grid
from rectok_core.utils.progress import progress
from rectok_core.utils.runtime import autocast, resolve_precision

logger = logging.getLogger(__name__)


FORMAT = "rectok-tokenizer-eval"


VERSION = 1


GRID_IMAGES = 16


GRID_COLUMNS = 8


# ---------------------------------------------------------------------------------------------------------
# Inception statistics from sufficient statistics
# ---------------------------------------------------------------------------------------------------------
class FeatureMoments:
    """Count, mean and centred scatter ``Σ(f − μ)(f − μ)ᵀ`` of feature vectors in float64.

    Batches are merged with Chan et al.'s pairwise update and ranks in two all-reduces (the global mean, then each
    rank's scatter about it): no raw second moments, hence no cancellation (identical features give an exactly
    positive semi-definite, near-zero covariance), and no gather of the features themselves.
    """

    def __init__(self, dim: int, device: torch.device | str = "cpu"):
        self.count = 0
        self.mean = torch.zeros(dim, dtype=torch.float64, device=device)
        self.scatter = torch.zeros(dim, dim, dtype=torch.float64, device=device)

    def add(self, features: torch.Tensor) -> None:
        """Accumulate (B, dim) features."""
        f = features.to(self.mean.device, torch.float64)
        nb = f.shape[0]
        if nb == 0:
            return
        mb = f.mean(0)
        centred = f - mb
        total = self.count + nb
        delta = mb - self.mean
        self.mean += delta * (nb / total)
        self.scatter += centred.T @ centred + torch.outer(delta, delta) * (self.count * nb / total)
        self.count = total

    def all_reduce(self) -> None:
        """Merge the moments of all torchrun ranks (every rank ends with the global ones; no-op in one process)."""
        count = distributed.all_reduce_sum(torch.tensor(float(self.count), dtype=torch.float64,
                                                        device=self.mean.device))
        total = int(count.item())
        if total == 0:
            return
        mean = distributed.all_reduce_sum(self.mean * self.count) / total
        delta = self.mean - mean
        self.scatter = distributed.all_reduce_sum(self.scatter + torch.outer(delta, delta) * self.count)
        self.mean, self.count = mean, total

    def stats(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean (d,) and unbiased covariance (d, d), float64 (as :func:`rectok_core.metrics.fid.feature_stats`)."""
        if self.count < 2:
            raise RectokError(f"need at least 2 feature vectors for a covariance, got {self.count}")
        sigma = self.scatter.cpu().numpy() / (self.count - 1)
        return self.mean.cpu().numpy().copy(), (sigma + sigma.T) / 2


def score_batch(model: RecTok, x: torch.Tensor, precision: str, inception: InceptionFeatures, sums: torch.Tensor,
                fake: FeatureMoments, lpips: LPIPS | None = None) -> torch.Tensor:
    """Score the reconstructions of one batch ``x`` (images in [-1, 1] on the model's device) by ``model``: adds the
    image count, the per-image PSNR, SSIM and LPIPS (when ``lpips``) sums to ``sums`` (float64, 4 entries) and the
    Inception features of the reconstructions (rounded to uint8 inside, recipe §11.6) to ``fake``. Returns the
    reconstructions (float, [-1, 1])."""
    with autocast(x.device, precision):
        rec = model.reconstruct(x)
    rec = rec.float()
    x01, rec01 = (x + 1) / 2, (rec + 1) / 2
    sums[0] += x.shape[0]
    sums[1] += psnr(rec01, x01).sum()
    sums[2] += ssim(rec01, x01).sum()
    if lpips is not None:
        sums[3] += lpips(rec, x).double().sum()
    fake.add(inception(rec01))
    return rec


# ---------------------------------------------------------------------------------------------------------
# The evaluation
# ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TokenizerEval:
    """What :func:`evaluate_tokenizer` returns: the JSON document (on every rank) and, on rank 0, its files."""

    result: dict[str, Any]
    json_path: Path
    grid_path: Path


def default_out_dir(tokenizer_path: str | os.PathLike[str], step: int | None, weights: str) -> Path:
    """``RUN/eval/step_XXXXXXX-<weights>`` for a checkpoint in ``RUN/checkpoints/``, else ``CKPT_DIR/eval/…``."""
    parent = Path(tokenizer_path).resolve().parent
    run = parent.parent if parent.name == "checkpoints" else parent
    name = f"step_{step:07d}" if step is not None else Path(tokenizer_path).stem
    return run / "eval" / f"{name}-{weights}"


def _load(tokenizer_path: str, weights: str, device: torch.device, image_size: int = 0) -> tuple[RecTok, dict]:
    try:
        if is_family_spec(tokenizer_path):  # FAMILY:SOURCE: another tokenizer family (rectok tokenizers)
            return load_any_tokenizer(tokenizer_path, device=device, image_size=image_size)
        model, meta = load_tokenizer(tokenizer_path, use_ema=weights == "ema", device=device)
        check_image_size(model, tokenizer_path, image_size)
        return model, meta
    except CheckpointError as e:
        if KINDS["dit"].description in str(e):
            raise CheckpointError(f"{tokenizer_path} is a generator checkpoint (train-dit), not a tokenizer: evaluate a "
                                  f"generator with `rectok sample` and then `rectok eval-samples` on its samples") \
                from None
        raise


def _dataset(spec: str, split: str, image_size: int, n: int | None, strict: bool,
             per_class: int | None = None) -> ImageDataset:
    dataset = build_dataset(spec, image_size, split=split, strict=strict)
    if per_class is not None:
        if n is not None:
            raise RectokError("give -n or --per-class, not both")
        if per_class < 1:
            raise RectokError(f"--per-class must be positive, got {per_class}")
        try:
            return limit_per_class(dataset, per_class)
        except DataError as e:
            raise RectokError(f"--per-class: {e}") from None
    if n is None:
        return dataset
    if n < 1:
        raise RectokError(f"-n must be positive, got {n}")
    if n > len(dataset):
        raise RectokError(f"-n {n} is more than the {len(dataset)} images of {dataset.source or spec}")
    return dataset.subset(range(n))


def _reference(ref_stats: str | None) -> tuple[tuple[np.ndarray, np.ndarray] | None, dict[str, Any]]:
    """Loaded reference statistics (None: the same pass's real images) and their manifest entry."""
    if ref_stats is None:
        return None, {"kind": "same-pass", "source": "InceptionV3 statistics of the evaluated real images"}
    mu, sigma = load_stats(ref_stats)
    if mu.shape[0] != FEATURE_DIM:
        raise RectokError(f"{ref_stats} holds {mu.shape[0]}-d statistics, not InceptionV3 pool3 ({FEATURE_DIM})")
    return (mu, sigma), {"kind": "file", "path": os.path.abspath(ref_stats), "sha256": file_sha256(ref_stats),
                         "meta": load_stats_meta(ref_stats)}


def _prepare_out(out: Path, is_main: bool) -> None:
    """Rank 0 creates ``out``; every rank raises rank 0's one-line error when it cannot."""
    error = None
    if is_main:
        try:
            claim_output_dir(out, "eval")
        except RectokError as e:
            error = str(e)
    error = distributed.broadcast_object(error)
    if error:
        raise RectokError(error)


def _grid(model: RecTok, dataset: ImageDataset, device: torch.device, precision: str, path: Path) -> None:
    """Originals above their reconstructions of up to :data:`GRID_IMAGES` readable images, :data:`GRID_COLUMNS` per
    row: a fixed, seeded, class-stratified choice (:func:`stratified_indices`), not the first files by path."""
    images = []
    for i in stratified_indices([label for _, label in dataset.items], len(dataset)):
        item = dataset[i]
        if item["ok"]:
            images.append(item["image"])
        if len(images) == GRID_IMAGES:
            break
    if len(images) > GRID_COLUMNS:
        images = images[: len(images) // GRID_COLUMNS * GRID_COLUMNS]
    if not images:
        return
    x = torch.stack(images).to(device)
    with autocast(device, precision):
        rec = model.reconstruct(x)
    rows, labels = [], []
    for start in range(0, len(x), GRID_COLUMNS):
        rows += [x[start:start + GRID_COLUMNS].cpu(), rec[start:start + GRID_COLUMNS].float().cpu()]
        span = f"row {start // GRID_COLUMNS + 1}"
        labels += [f"original ({span})", f"reconstruction ({span})"]
    save_grid(rows, path, row_labels=labels, title=f"tokenizer eval: originals above their reconstructions "
              f"({x.shape[-1]}px, images chosen across classes, seed 0)")


def _lpips(vgg_weights: str | None, device: torch.device) -> tuple[LPIPS | None, str | None]:
    """LPIPS with a real VGG16 backbone, or (None, why) when no weights were given and none can be found; an
    explicit ``vgg_weights`` file that cannot be used is an error."""
    if vgg_weights:
        return build_lpips(vgg_weights).to(device), None
    try:
        return build_lpips().to(device), None
    except WeightsNotFound:
        return None, (f"no VGG16 ImageNet weights (pass --lpips-vgg FILE, torchvision's {VGG16_FILE}, or put it in "
                      f"the torch hub cache {Path(torch.hub.get_dir()) / 'checkpoints'})")


def evaluate_tokenizer(tokenizer: str, cfg: EvalConfig | None = None, *, show_progress: bool = True,
                       **options: Any) -> TokenizerEval:
    """``rectok eval``'s measurement: the reconstructions of the tokenizer checkpoint ``tokenizer`` under ``cfg``
    (:class:`~rectok_core.metrics.config.EvalConfig`; ``options`` set its fields by name, e.g. ``data``, ``n``,
    ``device``) on ``cfg.data`` (default: the checkpoint's training data), its ``cfg.split`` (``val``, or for data
    with ``train/`` and ``test/`` but no ``val/`` its one evaluation split:
    :func:`~rectok_core.data.datasets.evaluation_split`), the first ``n`` images (all when None) or the first
    ``per_class`` images of each class. Spread over torchrun ranks.

    Writes ``eval.json`` and ``recon_grid.png`` into ``cfg.out`` (default: :func:`default_out_dir`) and, with
    ``cfg.save_stats``, the Inception statistics of the real images (for a later ``ref_stats``).
    """
    cfg = settings(EvalConfig, cfg, **options)
    d = distributed.setup(cfg.device)
    try:
        return _evaluate(d, tokenizer, cfg, show_progress)
    finally:
        distributed.cleanup()


@torch.no_grad()
def _evaluate(d: distributed.Dist, tokenizer_path: str, cfg: EvalConfig, show_progress: bool) -> TokenizerEval:
    data, n, per_class, batch_size, weights = cfg.data or None, cfg.n, cfg.per_class, cfg.batch_size, cfg.weights
    split = None if cfg.split == "val" else cfg.split  # val, or the one evaluation split data without val/ has
    ref_stats, save_stats_to, lpips_vgg = cfg.ref_stats or None, cfg.save_stats or None, cfg.lpips_vgg or None
    inception_weights, precision, workers = cfg.inception_weights or None, cfg.precision, cfg.workers
    strict_data, out = cfg.strict_data, cfg.out or None
    t0 = time.time()
    dev = d.device
    prec = resolve_precision(dev, precision)
    model, meta = _load(tokenizer_path, weights, dev, cfg.image_size)
    if not data and not meta.get("config"):
        raise RectokError(f"{tokenizer_path} records no training data: give --data")
    spec = data or meta["config"]["run"]["data"]
    family = meta.get("family", "rectok")
    source = meta.get("source", tokenizer_path)
    split, why = evaluation_split(spec, split)
    if why and d.is_main:
        logger.info(why)
    image_size = model.cfg.image_size
    dataset = _dataset(spec, split, image_size, n, strict_data, per_class)
    reference, ref_manifest = _reference(ref_stats)
    out_dir = Path(out) if out else default_out_dir(source if family == "rectok" else meta["path"],
                                                    meta.get("step"), weights)
    _prepare_out(out_dir, d.is_main)
    inception = InceptionFeatures(inception_weights).to(dev)
    lpips, lpips_missing = _lpips(lpips_vgg, dev)
    need_real = reference is None or save_stats_to is not None

    # per-image sums: images, PSNR, SSIM, LPIPS (score_batch), unreadable
    sums = torch.zeros(5, dtype=torch.float64, device=dev)
    fake = FeatureMoments(FEATURE_DIM, dev)
    real = FeatureMoments(FEATURE_DIM, dev) if need_real else None
    indices = list(range(d.rank, len(dataset), d.world_size))
    loader = build_loader(dataset, indices, batch_size, workers, dev.type == "cuda", drop_last=False)
    bar = progress(len(dataset), 0, "eval", d.is_main and show_progress, unit="img")
    for batch in loader:
        n_all = batch["image"].shape[0]
        batch, n_bad = drop_bad(batch)
        sums[4] += n_bad
        if batch["image"].shape[0]:
            x = batch["image"].to(dev, non_blocking=True)
            score_batch(model, x, prec, inception, sums[:4], fake, lpips)
            if real is not None:
                real.add(inception((x + 1) / 2))  # exact: the real images are uint8 values
        bar.update(min(n_all * d.world_size, len(dataset) - bar.n))
    bar.close()
    distributed.all_reduce_sum(sums)
    fake.all_reduce()
    if real is not None:
        real.all_reduce()
    count, unreadable = int(sums[0].item()), int(sums[4].item())
    if count == 0:
        raise DataError(f"none of the {len(dataset)} images of {dataset.source or spec} could be read")
    if unreadable:
        logger.warning("%d of %d images were unreadable and left out", unreadable, len(dataset))

    metrics: dict[str, Any] = {"psnr": sums[1].item() / count, "ssim": sums[2].item() / count}
    if count >= 2:
        ref_mu, ref_sigma = reference if reference is not None else real.stats()
        metrics["rfid"] = frechet_distance(*fake.stats(), ref_mu, ref_sigma)
    else:
        metrics["rfid"] = None
        metrics["rfid_unavailable"] = f"needs at least 2 readable images, got {count}"
    metrics["lpips"] = None if lpips is None else sums[3].item() / count
    if lpips_missing is not None:
        metrics["lpips_unavailable"] = lpips_missing
    for k, v in metrics.items():
        if isinstance(v, float) and not math.isfinite(v):
            raise RectokError(f"{k} is not finite ({v}): the tokenizer produced NaN/inf reconstructions?")
    if reference is None:
        ref_manifest["num_images"] = count

    inception_file = Path(inception.weights_path)
    result = {
        "format": FORMAT,
        "version": VERSION,
        "metrics": metrics,
        "num_images": count,
        "unreadable_images": unreadable,
        "manifest": {
            "tokenizer": {"path": os.path.abspath(source) if family == "rectok" else meta["path"],
                          "sha256": meta["sha256"], "stage": meta["stage"], "step": meta["step"], "weights": weights,
                          **({} if family == "rectok" else {"family": family})},
            "data": {"spec": data_id(spec), "split": split, "source": dataset.source, "n": len(dataset),
                     "n_requested": n, "per_class": per_class,
                     "order": ("first per_class of each class by path" if per_class else
                               "dataset order (sorted paths), first n"), "image_size": image_size,
                     "fingerprint": dataset_fingerprint(dataset)},
            "reconstruction": "decode(posterior mean): no noise, no mask; ADM center crop, no flip; clamped to [-1, 1]",
            "metrics": {
                "psnr": f"per image on float [0, 1], 10·log10(1/MSE), MSE floored at {MSE_FLOOR:g}; mean over images",
                "ssim": f"per image on float [0, 1] RGB, Gaussian {SSIM_WINDOW}×{SSIM_WINDOW} window σ={SSIM_SIGMA}, "
                        f"K1={SSIM_K1}, K2={SSIM_K2}, valid positions, mean over positions and channels; mean over "
                        f"images",
                "rfid": "InceptionV3 pool3 of uint8-rounded reconstructions vs the reference; float64 Fréchet distance",
                "lpips": "LPIPS-VGG16 v0.1 on [-1, 1] images; mean over images",
            },
            "reference": ref_manifest,
            "inception": {"weights": str(inception_file), "sha256": file_sha256(inception_file),
                          "features": f"pool3 {FEATURE_DIM}-d"},
            "lpips_backbone": None if lpips is None else lpips.source,
            "precision": prec,
            "randomness": "none: posterior mean, no mask, no noise, no flip, fixed order",
            "batch_size": batch_size,
            "world_size": d.world_size,
            "device": _device_name(dev),
            "rectok_version": __version__,
            "torch_version": torch.__version__,
            "python_version": platform.python_version(),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "seconds": round(time.time() - t0, 1),
        },
    }
    json_path, grid_path = out_dir / "eval.json", out_dir / "recon_grid.png"
    error = None
    if d.is_main:
        try:
            if save_stats_to is not None:
                assert real is not None
                mu, sigma = real.stats()
                path = save_stats(save_stats_to, mu, sigma, source="rectok eval", data=data_id(spec), split=split,
                                  num_images=count, image_size=image_size,
                                  data_fingerprint=result["manifest"]["data"]["fingerprint"],
                                  inception_weights=str(inception_file),
                                  inception_sha256=result["manifest"]["inception"]["sha256"])
                result["saved_stats"] = {"path": os.path.abspath(path), "sha256": file_sha256(path)}
            _grid(model, dataset, dev, prec, grid_path)
            write_json_atomic(json_path, result)
        except RectokError as e:
            error = str(e)
        except OSError as e:
            error = f"cannot write the evaluation results: {e.strerror or e} ({e.filename or out_dir})"
    error = distributed.broadcast_object(error)  # every rank waits for rank 0 and stops with its message
    if error:
        raise RectokError(error)
    return TokenizerEval(result=result, json_path=json_path, grid_path=grid_path)


def _device_name(dev: torch.device) -> str:
    if dev.type == "cuda":
        return f"{dev} ({torch.cuda.get_device_name(dev)})"
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"

