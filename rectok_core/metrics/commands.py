"""The measuring commands as library calls: each takes its config (:mod:`rectok_core.metrics.config`) and does
what ``rectok eval``, ``rectok eval-samples`` and ``rectok fid-stats`` do, so a notebook gets the same results."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from rectok_core.metrics.config import EvalConfig, EvalSamplesConfig, FidStatsConfig, inception_device
from rectok_core.utils.files import check_result_file, check_writable_file


def evaluate(tokenizer: str, cfg: EvalConfig):
    """``rectok eval``: a :class:`~rectok_core.metrics.tokenizer_eval.TokenizerEval` (result, JSON and grid)."""
    from rectok_core.metrics.tokenizer_eval import evaluate_tokenizer

    cfg.validate()
    if cfg.save_stats:
        check_writable_file(cfg.save_stats, "--save-stats")  # before the compute, not after it
    return evaluate_tokenizer(tokenizer, cfg.data or None, split=cfg.split, n=cfg.n,
                              per_class=cfg.per_class, batch_size=cfg.batch_size, weights=cfg.weights,
                              ref_stats=cfg.ref_stats or None, save_stats_to=cfg.save_stats or None,
                              lpips_vgg=cfg.lpips_vgg or None, inception_weights=cfg.inception_weights or None,
                              device=cfg.device, precision=cfg.precision, workers=cfg.workers,
                              strict_data=cfg.strict_data, out=cfg.out or None)


def evaluate_generated(samples: str, cfg: EvalSamplesConfig) -> tuple[dict[str, Any], Path]:
    """``rectok eval-samples``: the metrics document and the path it was written to."""
    from rectok_core.metrics.generator_eval import default_result_path, evaluate_samples, write_result

    cfg.validate()
    out = check_result_file(cfg.out or default_result_path(samples), "--out", "eval-samples")
    result = evaluate_samples(samples, cfg.ref_stats or None, cfg.ref_data or None,
                              ref_image_size=cfg.ref_image_size or None,
                              inception_weights=cfg.inception_weights or None, with_kid=cfg.kid,
                              batch_size=cfg.batch_size, workers=cfg.workers, device=inception_device(cfg.device))
    return result, write_result(result, out)


def fid_stats(folder: str, cfg: FidStatsConfig) -> tuple[Path, int]:
    """``rectok fid-stats``: write the Inception statistics of ``folder``; (path, number of images)."""
    from rectok_core.metrics.fid import save_stats
    from rectok_core.metrics.folder_stats import folder_stats as compute
    from rectok_core.metrics.inception import InceptionFeatures
    from rectok_core.utils.files import file_sha256

    cfg.validate()
    check_writable_file(cfg.out, "--out")
    model = InceptionFeatures(cfg.inception_weights or None)
    st = compute(folder, model, cfg.batch_size, inception_device(cfg.device), n=cfg.n or None,
                 image_size=cfg.image_size or None, num_workers=cfg.workers, per_class=cfg.per_class or None)
    path = save_stats(cfg.out, st.mu, st.sigma, folder=os.path.abspath(folder), num_images=st.num_images,
                      image_size=cfg.image_size or "as stored", per_class=cfg.per_class or "all",
                      skipped_unreadable=len(st.skipped), inception_weights=str(model.weights_path),
                      inception_sha256=file_sha256(model.weights_path))
    return path, st.num_images
