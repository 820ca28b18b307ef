"""probe-flow's outputs: the JSON report and the labelled plot of val accuracy against the noise level t."""
from __future__ import annotations

from pathlib import Path

from rectok_core.metrics.probe_run import ProbeReport
from rectok_core.utils.files import claim_output_dir, write_json_atomic


def write_json(report: ProbeReport, path: str | Path) -> Path:
    """Write ``report.to_json()`` atomically."""
    return write_json_atomic(path, report.to_json())


def plot_report(report: ProbeReport, path: str | Path) -> Path:
    """Top-1 val accuracy against t: one line per checkpoint, the teacher as a horizontal line, chance dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    try:
        for c in report.checkpoints:
            ts = [p["t"] for p in c.results]
            ax.plot(ts, [100 * p["top1"] for p in c.results], marker="o", ms=3.5, label=f"{c.name} (C={c.dim})")
        if report.teacher is not None:
            ax.axhline(100 * report.teacher.top1, color="black", ls=":", lw=1.2,
                       label=f"teacher {report.teacher.name}")
        if report.checkpoints:
            ax.axhline(100 * report.checkpoints[0].chance["top1"], color="gray", ls="--", lw=1, label="chance")
        ax.set_xlabel("t  (x_t = (1−t)·z + t·ε; t = 1 is noise)")
        ax.set_ylabel("val top-1 accuracy (%)")
        ax.set_xlim(0, 1)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.set_title(f"linear probe along the flow ({report.protocol['space']} latents)")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(path)
    finally:
        plt.close(fig)
    return path


def prepare_out(out: str | Path) -> Path:
    """Claim the output folder (new, empty or an earlier probe-flow's) before the probe spends any time."""
    return claim_output_dir(out, "probe-flow", own=("probe.json",))


def write_outputs(report: ProbeReport, out: str | Path) -> tuple[Path, Path]:
    """``OUT/probe.json`` and ``OUT/probe.png``."""
    out = prepare_out(out)
    return write_json(report, out / "probe.json"), plot_report(report, out / "probe.png")
