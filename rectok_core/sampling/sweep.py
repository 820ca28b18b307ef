"""``rectok sweep``: the official end-of-training protocol — sample a DiT^DH at several guidance scales (10,000 images
each), evaluate every scale, pick the best by FID, and optionally sample and evaluate the full 50,000 there.

Sweep folder (``--out``)::

    OUT/scale_1.29/       a `rectok sample` folder per scale (resumable: a rerun skips written samples) + eval.json
    OUT/final_scale_W/    with --final-n: the full-size folder at the best scale W, + eval.json
    OUT/sweep.json        settings, one row per scale (FID, IS, precision/recall), the best scale, the final run
    OUT/sweep.csv         the table; OUT/sweep.md the same as a markdown table (best row marked)
    OUT/sweep.png         FID (and IS) against the scale, the best scale marked

Every scale's samples use the same seed, so sample ``i`` starts from the same noise at every scale. A rerun of the
same sweep regenerates nothing (each sample folder resumes) and re-evaluates nothing whose ``eval.json`` already
holds the result for the same images and reference; a scale can be added by rerunning with a longer ``--scales``.
The sampling is spread over torchrun ranks; the evaluation runs on rank 0 (as ``rectok eval-samples``).
"""
from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from rectok_core.errors import RectokError
from rectok_core.metrics.generator_eval import default_result_path, evaluate_samples, write_result
from rectok_core.sampling.config import SampleConfig
from rectok_core.sampling.folder import sample_in_group as sample_into
from rectok_core.sampling.sweep_config import SweepConfig, scale_folder
from rectok_core.utils import distributed
from rectok_core.utils.files import file_sha256, write_json_atomic, write_text_atomic
from rectok_core.utils.plots import pyplot, save_figure

logger = logging.getLogger(__name__)


SWEEP_FORMAT = "rectok-sweep"


@dataclass
class SweepRow:
    """One evaluated sample folder."""
    scale: float
    folder: str
    n: int
    fid: float
    inception_score: float | None
    precision: float | None
    recall: float | None
    generated: int  # samples made by this run
    evaluated: bool  # evaluated by this run (False: eval.json reused)


@dataclass
class SweepResult:
    rows: list[SweepRow]
    best: SweepRow
    final: SweepRow | None
    json: Path
    csv: Path
    markdown: Path
    plot: Path


def sample_config(cfg: SweepConfig, scale: float, n: int, out: Path) -> SampleConfig:
    """The ``rectok sample`` settings of one scale of the sweep."""
    shared = {f.name: getattr(cfg, f.name) for f in fields(SampleConfig)}
    return SampleConfig(**{**shared, "scale": scale, "n": n, "out": str(out)})


def _reference_id(cfg: SweepConfig) -> dict[str, Any]:
    if cfg.ref_stats:
        return {"path": os.path.abspath(cfg.ref_stats), "sha256": file_sha256(cfg.ref_stats)}
    return {"path": os.path.abspath(cfg.ref_data)}


def _reusable(path: Path, n: int, reference: dict[str, Any]) -> dict | None:
    """The result in ``path`` when it evaluated ``n`` images of this folder against this reference, else None."""
    try:
        res = json.loads(path.read_text())
        ref, samples = res["manifest"]["reference"], res["manifest"]["samples"]
        same = all(ref.get(k) == v for k, v in reference.items()) and samples["num_images"] == n
        return res if same and "fid" in res["metrics"] else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _evaluate(cfg: SweepConfig, folder: Path, n: int, fresh: bool, device: Any) -> tuple[dict, bool]:
    """(eval-samples result of ``folder``, whether it was computed now); rank 0 only."""
    path = default_result_path(folder)
    old = None if fresh else _reusable(path, n, _reference_id(cfg))
    if old is not None:
        return old, False
    res = evaluate_samples(folder, cfg.ref_stats or None, cfg.ref_data or None,
                           ref_image_size=cfg.ref_image_size or None, inception_weights=cfg.inception_weights or None,
                           batch_size=cfg.eval_batch_size, workers=cfg.workers,
                           device=device)
    write_result(res, path)
    return res, True


def _one(dit_ckpt: str, cfg: SweepConfig, d: distributed.Dist, scale: float, n: int, folder: Path) -> SweepRow:
    """Sample (or resume) one folder on every rank, evaluate it on rank 0; the row on every rank."""
    sc = sample_config(cfg, scale, n, folder)
    sc.validate()
    res = sample_into(dit_ckpt, sc, d)
    row: SweepRow | str | None = None
    if d.is_main:
        try:
            ev, computed = _evaluate(cfg, folder, n, res.generated > 0, d.device)
            m = ev["metrics"]
            row = SweepRow(scale=scale, folder=str(folder), n=n, fid=float(m["fid"]),
                           inception_score=m["inception_score"]["mean"] if "inception_score" in m else None,
                           precision=m.get("precision"), recall=m.get("recall"), generated=res.generated,
                           evaluated=computed)
        except RectokError as e:
            row = str(e)
    row = distributed.broadcast_object(row)
    if isinstance(row, str):
        raise RectokError(row)
    assert row is not None
    if d.is_main:
        logger.info("scale %g: FID %.4f%s", scale, row.fid, "" if row.evaluated else " (eval.json reused)")
    return row


def best_row(rows: list[SweepRow]) -> SweepRow:
    """The row of the lowest finite FID (the first of equal ones)."""
    finite = [r for r in rows if math.isfinite(r.fid)]
    if not finite:
        raise RectokError("no scale has a finite FID")
    return min(finite, key=lambda r: r.fid)


def sweep(dit_ckpt: str, cfg: SweepConfig) -> SweepResult:
    """``rectok sweep``: one sample folder per scale of ``cfg.scales`` in ``cfg.out``, each evaluated; the table,
    the plot and the best scale; then, with ``cfg.final_n``, the full-size folder at the best scale."""
    cfg.validate()
    d = distributed.setup(cfg.device)
    try:
        return _sweep(dit_ckpt, cfg, d)
    finally:
        distributed.cleanup()


def _sweep(dit_ckpt: str, cfg: SweepConfig, d: distributed.Dist) -> SweepResult:
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise RectokError(f"--out {out} is a file, not a folder")
    rows = [_one(dit_ckpt, cfg, d, w, cfg.n, out / scale_folder(w)) for w in cfg.scale_list()]
    best = best_row(rows)
    final = None
    if cfg.final_n:
        final = _one(dit_ckpt, cfg, d, best.scale, cfg.final_n, out / f"final_{scale_folder(best.scale)}")
    paths = out / "sweep.json", out / "sweep.csv", out / "sweep.md", out / "sweep.png"
    if d.is_main:
        write_outputs(cfg, dit_ckpt, rows, best, final, *paths)
    distributed.barrier()
    return SweepResult(rows, best, final, *paths)


# ---------------------------------------------------------------------------------------------------------
# Table and plot
# ---------------------------------------------------------------------------------------------------------
COLUMNS = ("scale", "n", "fid", "inception_score", "precision", "recall", "folder")


def _cell(v: Any) -> str:
    if v is None:
        return ""
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def table_csv(rows: list[SweepRow]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(COLUMNS)
    for r in rows:
        w.writerow([f"{r.scale:g}", r.n, *(_cell(getattr(r, k)) for k in COLUMNS[2:6]), r.folder])
    return buf.getvalue()


def table_markdown(rows: list[SweepRow], best: SweepRow, final: SweepRow | None) -> str:
    head = ["scale", "samples", "FID", "IS", "precision", "recall", ""]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows + ([final] if final else []):
        mark = "final (best scale)" if r is final else "**best**" if r is best else ""
        lines.append("| " + " | ".join([f"{r.scale:g}", str(r.n), *(_cell(getattr(r, k)) or "–" for k in
                                                                        COLUMNS[2:6]), mark]) + " |")
    return "\n".join(lines) + "\n"


def plot(rows: list[SweepRow], best: SweepRow, title: str, path: Path) -> Path:
    """FID against the scale (and the IS on a second axis when known), the best scale marked."""
    plt = pyplot()

    pts = sorted(rows, key=lambda r: r.scale)
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=100)
    ax.plot([r.scale for r in pts], [r.fid for r in pts], "o-", color="tab:blue", label="FID")
    ax.plot([best.scale], [best.fid], "*", color="tab:red", markersize=16,
            label=f"best: w = {best.scale:g}, FID {best.fid:.3f}")
    ax.set_xlabel("guidance scale w")
    ax.set_ylabel("FID (lower is better)")
    handles, labels = ax.get_legend_handles_labels()
    scored = [r for r in pts if r.inception_score is not None]
    if scored:
        ax2 = ax.twinx()
        ax2.plot([r.scale for r in scored], [r.inception_score for r in scored], "s--", color="tab:green",
                 label="Inception Score")
        ax2.set_ylabel("Inception Score (higher is better)")
        h2, l2 = ax2.get_legend_handles_labels()
        handles, labels = handles + h2, labels + l2
    ax.legend(handles, labels, loc="best", fontsize=8)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, path)


def write_outputs(cfg: SweepConfig, dit_ckpt: str, rows: list[SweepRow], best: SweepRow, final: SweepRow | None,
                  json_path: Path, csv_path: Path, md_path: Path, png_path: Path) -> None:
    doc = {"format": SWEEP_FORMAT, "dit": os.path.abspath(dit_ckpt) if os.path.exists(dit_ckpt) else dit_ckpt,
           "guidance": cfg.cfg, "guide": os.path.abspath(cfg.guide) if cfg.guide else None, "n": cfg.n,
           "steps": cfg.steps, "sampler": cfg.sampler, "seed": cfg.seed, "weights": cfg.weights,
           "interval": cfg.interval, "time_shift": cfg.time_shift, "reference": _reference_id(cfg), "selected_by": "lowest FID",
           "rows": [asdict(r) for r in rows], "best": {"scale": best.scale, "fid": best.fid},
           "final": asdict(final) if final else None}
    write_json_atomic(json_path, doc)
    write_text_atomic(csv_path, table_csv(rows + ([final] if final else [])))
    write_text_atomic(md_path, table_markdown(rows, best, final))
    plot(rows, best, f"guidance sweep: {cfg.cfg}, {cfg.n} samples per scale, {cfg.sampler} {cfg.steps} steps",
         png_path)
