"""Shared terminal output of the training commands: the inherited-settings line and the end-of-run summary."""
from __future__ import annotations

import os
from pathlib import Path

from rich.console import Console
from rich.markup import escape

err = Console(stderr=True)


def is_main() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def note(line: str) -> None:
    """One line on stderr from rank 0 (e.g. the settings taken from a checkpoint)."""
    if line and is_main():
        err.print(escape(line), highlight=False, soft_wrap=True)


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def run_done(checkpoint_path: str | Path) -> None:
    """The end of a training run (rank 0): its final metrics and the files it wrote."""
    if not is_main():
        return
    from rectok_core.training.rundir import run_summary

    s = run_summary(Path(checkpoint_path).parent.parent)
    if s["metrics"]:
        metrics = ", ".join(f"{k} {_fmt(v)}" for k, v in s["metrics"].items())
        err.print(f"[bold]done[/] at step {s['step']}: {escape(metrics)}", highlight=False, soft_wrap=True)
    width = max((len(k) for k in s["files"]), default=0)
    for k, v in s["files"].items():
        err.print(f"  {k:<{width}}  {escape(v)}", highlight=False, soft_wrap=True)
