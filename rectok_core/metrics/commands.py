"""The measuring commands as library calls: each takes its config (:mod:`rectok_core.metrics.config`) and does
what ``rectok eval``, ``eval-samples``, ``fid-stats`` and ``probe-flow`` do, so a notebook gets the same results."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rectok_core.metrics.config import EvalConfig, EvalSamplesConfig, FidStatsConfig, inception_device
from rectok_core.metrics.fid import is_stats_file, save_stats
from rectok_core.metrics.folder_stats import folder_stats as compute
from rectok_core.metrics.generator_eval import default_result_path, evaluate_samples, write_result
from rectok_core.metrics.probe_report import log_to_runs, prepare_out, write_outputs
from rectok_core.metrics.probe_run import run_probe
from rectok_core.metrics.tokenizer_eval import evaluate_tokenizer
from rectok_core.models.inception import InceptionFeatures
from rectok_core.training.logging import log_results_to_run, results_run
from rectok_core.utils.files import check_own_file, check_result_file, file_sha256


def evaluate(tokenizer: str, cfg: EvalConfig):
    """``rectok eval``: a :class:`~rectok_core.metrics.tokenizer_eval.TokenizerEval` (result, JSON and grid)."""
    cfg.validate()
    if cfg.save_stats:  # before the compute, not after it
        check_own_file(cfg.save_stats, "--save-stats", "eval", is_stats_file, cfg.overwrite)
    return evaluate_tokenizer(tokenizer, cfg)


def evaluate_generated(samples: str, cfg: EvalSamplesConfig) -> tuple[dict[str, Any], Path]:
    """``rectok eval-samples``: the metrics document and the path it was written to."""
    cfg.validate()
    out = check_result_file(cfg.out or default_result_path(samples), "--out", "eval-samples")
    result = evaluate_samples(samples, cfg.ref_stats or None, cfg.ref_data or None,
                              ref_image_size=cfg.ref_image_size or None,
                              inception_weights=cfg.inception_weights or None, with_kid=cfg.kid,
                              batch_size=cfg.batch_size, workers=cfg.workers, device=inception_device(cfg.device))
    return result, write_result(result, out)


def fid_stats(folder: str, cfg: FidStatsConfig) -> tuple[Path, int]:
    """``rectok fid-stats``: write the Inception statistics of ``folder``; (path, number of images)."""
    cfg.validate()
    check_own_file(cfg.out, "--out", "fid-stats", is_stats_file, cfg.overwrite)
    model = InceptionFeatures(cfg.inception_weights or None)
    st = compute(folder, model, cfg.batch_size, inception_device(cfg.device), n=cfg.n or None,
                 image_size=cfg.image_size or None, num_workers=cfg.workers, per_class=cfg.per_class or None)
    path = save_stats(cfg.out, st.mu, st.sigma, folder=os.path.abspath(folder), num_images=st.num_images,
                      image_size=cfg.image_size or "as stored", per_class=cfg.per_class or "all",
                      skipped_unreadable=len(st.skipped), inception_weights=str(model.weights_path),
                      inception_sha256=file_sha256(model.weights_path))
    return path, st.num_images


@dataclass
class Logged:
    """Where a command's results were also logged: the run folder, its trackers and the step."""
    run_dir: Path
    trackers: str
    step: int


def evaluate_into_run(tokenizer: str, cfg: EvalConfig) -> tuple[Any, Logged | None]:
    """``rectok eval`` with ``--log``: :func:`evaluate`, then (rank 0) the metrics logged as ``eval-<weights>/*`` to
    the trackers of the tokenizer's run folder at its step. The run folder is checked before the compute."""
    run_dir = results_run(tokenizer, cfg.log)
    ev = evaluate(tokenizer, cfg)
    if run_dir is None or not _is_main():
        return ev, None
    step = ev.result["manifest"]["tokenizer"]["step"] or 0
    log_results_to_run(run_dir, f"eval-{cfg.weights}", ev.result["metrics"], step, cfg.log)
    return ev, Logged(Path(run_dir), cfg.log, step)


def probe_flow(checkpoints: list[str], cfg: Any) -> tuple[Any, Path, Path]:
    """``rectok probe-flow``: the :class:`~rectok_core.metrics.probe_run.ProbeReport` of ``checkpoints`` under
    ``cfg`` (a :class:`~rectok_core.metrics.config.ProbeConfig`), written as ``probe.json`` and ``probe.png`` into
    ``cfg.out``; with ``--log`` each checkpoint's accuracy curve goes to its run's trackers as one figure.
    Returns (report, JSON path, PNG path)."""
    runs = [results_run(c, cfg.log) for c in checkpoints]
    prepare_out(cfg.out)
    report = run_probe(cfg, checkpoints)
    json_path, png_path = write_outputs(report, cfg.out)
    log_to_runs(report, runs, cfg.log)  # one figure per run, not a one-point chart per t
    return report, json_path, png_path


def _is_main() -> bool:
    return int(os.environ.get("RANK", "0")) == 0
