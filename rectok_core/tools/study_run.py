"""Running the reproduction study (``rectok reproduce``): every planned step not yet done, with markers, resume
and timings, then the results (the plan is :mod:`rectok_core.tools.study`, the report
:mod:`rectok_core.tools.study_report`)."""
from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from rectok_core.config import dumps
from rectok_core.tools.study import Layout, Step, StudyConfig, plan, write_commands
from rectok_core.tools.study_report import write_results
from rectok_core.utils.files import claim_output_dir, ensure_writable, write_text_atomic


def run_study(cfg: StudyConfig, run_step: Callable[[list[str]], None],
              show: Callable[[int, int, Step, list[str] | None], None] = lambda k, n, step, argv: None) -> dict[str, Path]:
    """Every step of :func:`plan` not yet done, then the results files (their paths by name).

    ``run_step(argv)`` runs one ``rectok`` command line (raising on failure). A marker per finished step (under
    ``OUT/.done``) makes a rerun skip it, a run folder with a checkpoint gets ``--resume``, and ``OUT/timings.json``
    keeps each step's seconds. ``show(k, n, step, argv)`` is told of each step: ``argv`` None when it was done.
    """
    layout = Layout(cfg.run.out)
    claim_output_dir(layout.out, "study", own=("commands.sh",))
    ensure_writable(layout.done, layout.out)
    steps = plan(cfg)
    write_text_atomic(layout.out / "config.json", dumps(cfg) + "\n")
    write_commands(cfg, steps, layout.out / "commands.sh")
    timing_file = layout.out / "timings.json"
    timings: dict[str, float] = json.loads(timing_file.read_text()) if timing_file.is_file() else {}
    for k, step in enumerate(steps, 1):
        marker = layout.done / step.key
        if marker.is_file():
            show(k, len(steps), step, None)
            continue
        argv = list(step.argv)
        if step.run_dir and (Path(step.run_dir) / "checkpoints" / "latest.pt").is_file():
            argv.append("--resume")
        show(k, len(steps), step, argv)
        t0 = time.time()
        run_step(argv)
        timings[step.key] = round(time.time() - t0, 2)
        write_text_atomic(timing_file, json.dumps(timings, indent=2) + "\n")
        write_text_atomic(marker, step.command() + "\n")
    return write_results(cfg, timings)
