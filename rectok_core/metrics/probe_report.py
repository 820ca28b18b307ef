"""probe-flow's outputs: the JSON report and the labelled plot of val accuracy against the noise level t."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from rectok_core.metrics.probe_run import ProbeReport
from rectok_core.training.logging import log_figure_to_run
from rectok_core.utils.files import claim_output_dir, write_json_atomic
from rectok_core.utils.plots import pyplot, save_figure


def write_json(report: ProbeReport, path: str | Path) -> Path:
    """Write ``report.to_json()`` atomically."""
    return write_json_atomic(path, report.to_json())


def _figure(report: ProbeReport, checkpoints: list) -> Any:
    """Top-1 val accuracy against t: one line per checkpoint, the teacher as a horizontal line, chance dashed."""
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    for c in checkpoints:
        ts = [p["t"] for p in c.results]
        ax.plot(ts, [100 * p["top1"] for p in c.results], marker="o", ms=3.5, label=f"{c.name} (C={c.dim})")
    if report.teacher is not None:
        ax.axhline(100 * report.teacher.top1, color="black", ls=":", lw=1.2, label=f"teacher {report.teacher.name}")
    if checkpoints:
        ax.axhline(100 * checkpoints[0].chance["top1"], color="gray", ls="--", lw=1, label="chance")
    ax.set_xlabel("t  (x_t = (1−t)·z + t·ε; t = 1 is noise)")
    ax.set_ylabel("val top-1 accuracy (%)")
    ax.set_xlim(0, 1)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.set_title(f"linear probe along the flow ({report.protocol['space']} latents)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_report(report: ProbeReport, path: str | Path) -> Path:
    """The figure of every checkpoint of ``report`` as a PNG at ``path``."""
    return save_figure(_figure(report, report.checkpoints), path)


def figure_array(report: ProbeReport, index: int) -> np.ndarray:
    """The figure of checkpoint ``index`` alone (with the teacher and chance lines), as an (H, W, 3) uint8 array."""
    plt = pyplot()
    fig = _figure(report, [report.checkpoints[index]])
    try:
        fig.canvas.draw()
        return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    finally:
        plt.close(fig)


def log_to_runs(report: ProbeReport, runs: list[Path | None], trackers: str) -> None:
    """``--log``: each checkpoint's curve as one figure ``probe/top1_vs_t`` in the trackers of its run (at the
    checkpoint's step), and its numbers (t, top-1, top-5) as one ``probe`` record in the run's metrics.jsonl."""
    for i, (run_dir, c) in enumerate(zip(runs, report.checkpoints)):
        if run_dir is not None:
            record = {"checkpoint": c.name, "t": [r["t"] for r in c.results],
                      "top1": [r["top1"] for r in c.results], "top5": [r.get("top5") for r in c.results]}
            log_figure_to_run(run_dir, "probe/top1_vs_t", record, figure_array(report, i), c.step or 0, trackers)


def prepare_out(out: str | Path) -> Path:
    """Claim the output folder (new, empty or an earlier probe-flow's) before the probe spends any time."""
    return claim_output_dir(out, "probe-flow", own=("probe.json",))


def write_outputs(report: ProbeReport, out: str | Path) -> tuple[Path, Path]:
    """``OUT/probe.json`` and ``OUT/probe.png``."""
    out = prepare_out(out)
    return write_json(report, out / "probe.json"), plot_report(report, out / "probe.png")
