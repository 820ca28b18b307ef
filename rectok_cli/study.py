"""``rectok reproduce``: run the reproduction study (:mod:`rectok_core.tools.study`) command by command, in this
process."""
from __future__ import annotations

import inspect
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from rectok_core.errors import RectokError
from rectok_core.tools.study import STUDY_PRESETS, Step, StudyConfig

from .app import app, user_errors
from .options import split_overrides, with_config_options

console = Console(stderr=True)


def run_step(argv: list[str]) -> None:
    """Run one ``rectok`` command line in-process; a non-zero exit becomes a RectokError."""
    command = typer.main.get_command(app)
    try:
        code = command.main(args=list(argv), prog_name="rectok", standalone_mode=False)
    except SystemExit as e:  # pragma: no cover - click may still exit on usage errors
        code = e.code
    if code not in (None, 0):
        raise RectokError(f"`rectok {argv[0]}` failed (exit {code}); fix the cause and rerun the study: finished "
                          f"steps are skipped and interrupted training resumes")


def show_step(k: int, n: int, step: Step, argv: list[str] | None) -> None:
    """One line per study step: done already (dim), or the command line about to run."""
    if argv is None:
        console.print(f"[dim]\\[{k}/{n}] done: {escape(step.key)}[/]")
    else:
        console.print(f"[bold]\\[{k}/{n}][/] " + escape(f"rectok {' '.join(argv)}"))


SMOKE = inspect.Parameter("smoke", inspect.Parameter.KEYWORD_ONLY, annotation=bool, default=typer.Option(
    False, "--smoke", help="the CPU smoke variant: same as --preset smoke"))


@app.command("reproduce")
@user_errors
@with_config_options(StudyConfig, STUDY_PRESETS, extra=[SMOKE])
def reproduce(smoke: bool = False, **kwargs):
    """The paper's comparisons at small scale: FSD vs x0-only alignment vs none, RAD, latent dim.

    Trains one tokenizer per arm with equal budgets, fine-tunes each decoder, probes x_t along the flow
    (all arms in one plot), evaluates rFID/PSNR/SSIM, and trains a small DiT^DH with gFID for some arms — all
    with rectok's own commands, written to OUT/commands.sh. Rerunning skips finished steps and resumes
    interrupted training. Results: OUT/study.json, OUT/results.md, OUT/probe_flow.png, OUT/dims.png.
    """
    from rectok_core.config import build_config
    from rectok_core.tools.study_run import run_study

    overrides, _ = split_overrides(StudyConfig, kwargs)
    preset = overrides.pop("preset", None)
    if smoke and preset not in (None, "smoke"):
        raise RectokError(f"--smoke is --preset smoke; got --preset {preset} as well")
    cfg = build_config(StudyConfig, STUDY_PRESETS, "smoke" if smoke else (preset or "gpu"), overrides)
    written = run_study(cfg, run_step, show_step)
    for name, path in written.items():
        console.print(f"{name}: {path}", highlight=False, soft_wrap=True)
    typer.echo((Path(cfg.run.out) / "results.md").read_text())
