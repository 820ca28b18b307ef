"""``rectok eval``: reconstruction metrics of a tokenizer (the protocol lives in :mod:`rectok_core.eval_tokenizer`)."""
from __future__ import annotations

import os
from collections.abc import Callable

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .options import TOKENIZER_ARG, argument, make_config, split_overrides, with_config_options, with_flags
from .present import note

out_console = Console()
err_console = Console(stderr=True, markup=False)


def _is_main() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def show_result(result: dict, console: Console = out_console) -> None:
    """The terminal view of an ``eval.json`` document: one row per metric, unavailable ones with their reason."""
    m, man = result["metrics"], result["manifest"]
    tok, data, ref = man["tokenizer"], man["data"], man["reference"]
    ref_text = "the same real images" if ref["kind"] == "same-pass" else ref["path"]
    console.print("[bold]tokenizer reconstruction[/]: " + escape(
                  f"{tok['path']} ({tok['weights']} weights, step {tok['step']}), "
                  f"{result['num_images']} images of {data['spec']} ({data['split']}) at {data['image_size']} px, "
                  f"{man['precision']}; rFID reference: {ref_text}"), highlight=False, soft_wrap=True)
    table = Table()
    table.add_column("metric")
    table.add_column("value", justify="right")
    rows = (("PSNR (dB)", "psnr", "{:.3f}"), ("SSIM", "ssim", "{:.4f}"), ("rFID", "rfid", "{:.3f}"),
            ("LPIPS", "lpips", "{:.4f}"))
    for label, key, fmt in rows:
        value = m.get(key)
        table.add_row(label, fmt.format(value) if value is not None else "[dim]not computed[/]")
    console.print(table)


def register(app: typer.Typer, user_errors: Callable[[Callable], Callable]) -> None:
    """Add ``eval`` to ``app``; ``user_errors`` is the CLI's one-line error wrapper. (rectok_core.eval_tokenizer is
    imported when the command runs: it pulls in the Inception and LPIPS stacks, which ``rectok --help`` needs not.)"""

    from rectok_core.metrics.config import EvalConfig

    tok = argument("tokenizer", TOKENIZER_ARG)

    def config(tokenizer: str, **kwargs):
        from rectok_core.training.inherit import TokenizerSettings, inherit

        overrides, _ = split_overrides(EvalConfig, kwargs)
        note(inherit(overrides, TokenizerSettings.of(tokenizer)))
        return make_config(EvalConfig, overrides)

    @app.command("eval")
    @user_errors
    @with_config_options(EvalConfig, extra=[tok], resolve=config)
    def evaluate(tokenizer: str, **kwargs):
        """Reconstruction metrics of a tokenizer: PSNR, SSIM, rFID (and LPIPS with real VGG16 weights).

        Images are center-cropped to the tokenizer's size and reconstructed from the posterior mean (no noise, no mask).

        Writes eval.json (metrics and manifest) and recon_grid.png into --out.

        Launch with torchrun to spread the images over GPUs: the numbers do not depend on the number of processes.

        Generators are evaluated with `rectok sample` and `rectok eval-samples`, not here.
        """
        from rectok_core.metrics.commands import evaluate as run
        from rectok_core.training.logging import log_results_to_run, results_run

        cfg = config(tokenizer, **kwargs)
        run_dir = results_run(tokenizer, cfg.log)
        ev = run(tokenizer, cfg)
        if not _is_main():
            return
        if run_dir is not None:
            step = ev.result["manifest"]["tokenizer"]["step"] or 0
            log_results_to_run(run_dir, f"eval-{cfg.weights}", ev.result["metrics"], step, cfg.log)
            err_console.print(f"logged to {run_dir} ({cfg.log}) at step {step}", highlight=False, soft_wrap=True)
        metrics = ev.result["metrics"]
        for key, name in (("lpips", "LPIPS"), ("rfid", "rFID")):
            if f"{key}_unavailable" in metrics:
                err_console.print(f"{name} not computed: {metrics[f'{key}_unavailable']}", highlight=False,
                                  soft_wrap=True)
        show_result(ev.result)
        if "saved_stats" in ev.result:
            out_console.print(f"real-image statistics: {ev.result['saved_stats']['path']}", highlight=False,
                              markup=False,
                              soft_wrap=True)
        out_console.print(f"results: {ev.json_path}  grid: {ev.grid_path}", highlight=False, markup=False,
                          soft_wrap=True)

    with_flags(evaluate, "n", "-n", "--num")
