"""``rectok eval``: reconstruction metrics of a tokenizer (the protocol lives in :mod:`rectok_core.metrics.tokenizer_eval`)."""
from __future__ import annotations

import os

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from rectok_core.metrics.config import EvalConfig

from .app import app, user_errors
from .options import TOKENIZER_ARG, argument, split_overrides, with_config_options
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


def eval_config(tokenizer: str, **kwargs) -> EvalConfig:
    from rectok_core.training.inherit import from_tokenizer

    return from_tokenizer(EvalConfig, tokenizer, split_overrides(EvalConfig, kwargs)[0], show=note, eval_split="split")


@app.command("eval")
@user_errors
@with_config_options(EvalConfig, extra=[argument("tokenizer", TOKENIZER_ARG)], resolve=eval_config)
def evaluate(tokenizer: str, **kwargs):
    """Reconstruction metrics of a tokenizer: PSNR, SSIM, rFID (and LPIPS with real VGG16 weights).

    Images are center-cropped to the tokenizer's size and reconstructed from the posterior mean (no noise, no mask).

    Writes eval.json (metrics and manifest) and recon_grid.png into --out.

    Launch with torchrun to spread the images over GPUs: the numbers do not depend on the number of processes.

    Generators are evaluated with `rectok sample` and `rectok eval-samples`, not here.
    """
    from rectok_core.metrics.commands import evaluate_into_run

    ev, logged = evaluate_into_run(tokenizer, eval_config(tokenizer, **kwargs))
    if not _is_main():
        return
    if logged is not None:
        err_console.print(f"logged to {logged.run_dir} ({logged.trackers}) at step {logged.step}", highlight=False,
                          soft_wrap=True)
    metrics = ev.result["metrics"]
    for key, name in (("lpips", "LPIPS"), ("rfid", "rFID")):
        if f"{key}_unavailable" in metrics:
            err_console.print(f"{name} not computed: {metrics[f'{key}_unavailable']}", highlight=False,
                              soft_wrap=True)
    show_result(ev.result)
    if "saved_stats" in ev.result:
        out_console.print(f"real-image statistics: {ev.result['saved_stats']['path']}", highlight=False,
                          markup=False, soft_wrap=True)
    out_console.print(f"results: {ev.json_path}  grid: {ev.grid_path}", highlight=False, markup=False,
                      soft_wrap=True)
