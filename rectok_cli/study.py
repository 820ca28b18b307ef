"""``rectok reproduce``: run the reproduction study (rectok_core.study) command by command, in this process."""
from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from rectok_core.errors import RectokError

from .options import split_overrides, with_config_options

console = Console(stderr=True)


def run_step(app: typer.Typer, argv: list[str]) -> None:
    """Run one ``rectok`` command line in-process; a non-zero exit becomes a RectokError."""
    command = typer.main.get_command(app)
    try:
        code = command.main(args=list(argv), prog_name="rectok", standalone_mode=False)
    except SystemExit as e:  # pragma: no cover - click may still exit on usage errors
        code = e.code
    if code not in (None, 0):
        raise RectokError(f"`rectok {argv[0]}` failed (exit {code}); fix the cause and rerun the study: finished "
                          f"steps are skipped and interrupted training resumes")


def run_study(app: typer.Typer, cfg, show: Callable[[str], None] = console.print) -> dict[str, Path]:
    """Every step of ``plan(cfg)`` not yet done (a marker per step), then the results files."""
    from rectok_core.config import dumps
    from rectok_core.tools.study import Layout, plan, write_commands
    from rectok_core.tools.study_report import write_results
    from rectok_core.utils.files import claim_output_dir, ensure_writable

    layout = Layout(cfg.run.out)
    claim_output_dir(layout.out, "study", own=("commands.sh",))
    ensure_writable(layout.done, layout.out)
    steps = plan(cfg)
    (layout.out / "config.json").write_text(dumps(cfg) + "\n")
    write_commands(cfg, steps, layout.out / "commands.sh")
    timing_file = layout.out / "timings.json"
    timings: dict[str, float] = json.loads(timing_file.read_text()) if timing_file.is_file() else {}
    for k, step in enumerate(steps, 1):
        marker = layout.done / step.key
        if marker.is_file():
            show(f"[dim]\\[{k}/{len(steps)}] done: {escape(step.key)}[/]")
            continue
        argv = list(step.argv)
        if step.run_dir and (Path(step.run_dir) / "checkpoints" / "latest.pt").is_file():
            argv.append("--resume")
        show(f"[bold]\\[{k}/{len(steps)}][/] " + escape(f"rectok {' '.join(argv)}"))
        t0 = time.time()
        run_step(app, argv)
        timings[step.key] = round(time.time() - t0, 2)
        timing_file.write_text(json.dumps(timings, indent=2) + "\n")
        marker.write_text(step.command() + "\n")
    return write_results(cfg, timings)


def register(app: typer.Typer, user_errors: Callable[[Callable], Callable]) -> None:
    """Add ``reproduce`` to ``app``."""
    import inspect

    from rectok_core.tools.study import STUDY_PRESETS, StudyConfig

    smoke = inspect.Parameter("smoke", inspect.Parameter.KEYWORD_ONLY, annotation=bool,
                              default=typer.Option(False, "--smoke", help="the CPU smoke variant: same as "
                                                                          "--preset smoke"))

    @app.command("reproduce")
    @user_errors
    @with_config_options(StudyConfig, STUDY_PRESETS, extra=[smoke])
    def reproduce(smoke: bool = False, **kwargs):
        """The paper's comparisons at small scale: FSD vs x0-only alignment vs none, RAD, latent dim.

        Trains one tokenizer per arm with equal budgets, fine-tunes each decoder, probes x_t along the flow
        (all arms in one plot), evaluates rFID/PSNR/SSIM, and trains a small DiT^DH with gFID for some arms — all
        with rectok's own commands, written to OUT/commands.sh. Rerunning skips finished steps and resumes
        interrupted training. Results: OUT/study.json, OUT/results.md, OUT/probe_flow.png, OUT/dims.png.
        """
        from rectok_core.config import build_config

        overrides, _ = split_overrides(StudyConfig, kwargs)
        preset = overrides.pop("preset", None)
        if smoke and preset not in (None, "smoke"):
            raise RectokError(f"--smoke is --preset smoke; got --preset {preset} as well")
        cfg = build_config(StudyConfig, STUDY_PRESETS, "smoke" if smoke else (preset or "gpu"), overrides)
        written = run_study(app, cfg)
        for name, path in written.items():
            console.print(f"{name}: {path}", highlight=False, soft_wrap=True)
        typer.echo((Path(cfg.run.out) / "results.md").read_text())
