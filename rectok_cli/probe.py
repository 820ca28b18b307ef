"""``rectok probe-flow``: linear probes along the forward flow (the protocol lives in :mod:`rectok_core.metrics.probe_run`)."""
from __future__ import annotations

import inspect

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from rectok_core.metrics.config import ProbeConfig

from .app import app, user_errors
from .options import split_overrides, with_config_options
from .present import note

out_console = Console()


def _pct(v: float | None) -> str:
    return "—" if v is None else f"{100 * v:.1f}"


def _cell(acc: dict) -> str:
    return _pct(acc["top1"]) if acc.get("top5") is None else f"{_pct(acc['top1'])} / {_pct(acc['top5'])}"


def show_report(report, console: Console = out_console) -> None:
    """The terminal view of a :class:`~rectok_core.metrics.probe_run.ProbeReport`: rows t, one column per checkpoint (and
    the teacher), a chance row, then the t = 1 check of each checkpoint (red when it fails)."""
    cks = report.checkpoints
    top5 = any(p["top5"] is not None for c in cks for p in c.results)
    console.print(f"[bold]linear probe along the flow[/]: val top-1{' / top-5' if top5 else ''} (%), "
                  f"{report.protocol['space']} latents, {cks[0].num_classes} classes, train {cks[0].n_train} / "
                  f"val {cks[0].n_val} images, {report.protocol['classifier']['kind']} classifier", highlight=False)
    table = Table()
    table.add_column("t", justify="right", style="bold")
    for c in cks:
        table.add_column(escape(f"{c.name}\n(C={c.dim})"), justify="right")
    if report.teacher is not None:
        table.add_column(f"teacher\n{report.teacher.name}", justify="right", style="dim")
    teacher = [] if report.teacher is None else [_cell({"top1": report.teacher.top1, "top5": report.teacher.top5})]
    for i, t in enumerate(report.protocol["t_grid"]):
        table.add_row(f"{t:g}", *(_cell(c.results[i]) for c in cks), *teacher)
    table.add_row("chance", *(_cell(c.chance) for c in cks),
                  *([] if report.teacher is None else [_cell(report.teacher.chance)]), style="dim")
    console.print(table)
    for c in cks:
        chk = c.chance_check
        line = (f"t = 1 (pure noise): top-1 {_pct(chk.accuracy['top1'])}% vs chance {_pct(chk.chance['top1'])}% "
                f"(majority class {_pct(chk.majority['top1'])}%, limit {_pct(chk.limit['top1'])}%)")
        if chk.passed:
            console.print(f"[green]chance check passed[/] for {escape(c.name)}: {line}", highlight=False)
        else:
            console.print(f"[bold red]CHANCE CHECK FAILED for {escape(c.name)}: {line} — the features leak labels at "
                          f"t = 1 or the probe is broken[/]", highlight=False)


CHECKPOINTS = inspect.Parameter(
    "checkpoints", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=list[str],
    default=typer.Argument(..., help="tokenizers, one curve each: RecTok checkpoints (train-tokenizer / "
                                   "finetune-decoder, export folders, Hub ids) or FAMILY:SOURCE of any family "
                                   "(rectok tokenizers)"))


def probe_config(checkpoints: list[str], **kwargs) -> ProbeConfig:
    from rectok_core.training.inherit import probe_config as build

    return build(checkpoints, split_overrides(ProbeConfig, kwargs)[0], show=note)


@app.command("probe-flow")
@user_errors
@with_config_options(ProbeConfig, extra=[CHECKPOINTS], resolve=probe_config)
def probe_flow(checkpoints: list[str], **kwargs):
    """Linear probes of tokenizer latents x_t = (1−t)·z + t·ε along the forward flow (t = 1 is noise).

    At each t, a multinomial linear classifier is fitted on the mean-pooled x_t of the train split and scored
    on the val split. Prints a table, writes OUT/probe.json and OUT/probe.png, and checks that t = 1 is at
    chance.
    """
    from rectok_core.metrics.commands import probe_flow as run

    report, json_path, png_path = run(checkpoints, probe_config(checkpoints, **kwargs))
    show_report(report)
    out_console.print(f"results: {json_path}  plot: {png_path}", highlight=False, markup=False)
