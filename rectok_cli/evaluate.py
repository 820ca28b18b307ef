"""``rectok eval``: reconstruction metrics of a tokenizer (the protocol lives in :mod:`rectok_core.eval_tokenizer`)."""
from __future__ import annotations

import os
from typing import Callable, Optional

import typer
from rich.console import Console
from rich.table import Table

out_console = Console()
err_console = Console(stderr=True)


def _is_main() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def show_result(result: dict, console: Console = out_console) -> None:
    """The terminal view of an ``eval.json`` document: one row per metric, unavailable ones with their reason."""
    m, man = result["metrics"], result["manifest"]
    tok, data, ref = man["tokenizer"], man["data"], man["reference"]
    ref_text = "the same real images" if ref["kind"] == "same-pass" else ref["path"]
    console.print(f"[bold]tokenizer reconstruction[/]: {tok['path']} ({tok['weights']} weights, step {tok['step']}), "
                  f"{result['num_images']} images of {data['spec']} ({data['split']}) at {data['image_size']} px, "
                  f"{man['precision']}; rFID reference: {ref_text}", highlight=False, soft_wrap=True)
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

    @app.command("eval")
    @user_errors
    def evaluate(
        tokenizer: str = typer.Argument(..., help="tokenizer checkpoint (train-tokenizer / finetune-decoder)"),
        data: Optional[str] = typer.Option(None, "--data",
                                           help="evaluation data: image folder (DIR/<split> if present), list file "
                                                "or 'digits' (default: the checkpoint's training data)"),
        split: str = typer.Option("val", help="split of --data to evaluate"),
        n: Optional[int] = typer.Option(None, "-n", "--num",
                                        help="evaluate the first N images in dataset order (default: all)"),
        per_class: Optional[int] = typer.Option(None, "--per-class",
                                                help="evaluate the first N images of each class (a class-balanced "
                                                     "subset; not with -n)"),
        batch_size: int = typer.Option(64, help="images per batch per process"),
        out: Optional[str] = typer.Option(None, "--out",
                                          help="folder for eval.json and recon_grid.png (default: "
                                               "RUN/eval/step_XXXXXXX-WEIGHTS beside the checkpoint folder)"),
        weights: str = typer.Option("ema", help="tokenizer weights {ema|raw}"),
        ref_stats: Optional[str] = typer.Option(None, "--ref-stats",
                                                help="rFID reference statistics .npz (mu/sigma; default: the same "
                                                     "real images, computed in the same pass)"),
        save_stats: Optional[str] = typer.Option(None, "--save-stats",
                                                 help="also write the real images' statistics to this .npz (reuse "
                                                      "them with --ref-stats)"),
        lpips_vgg: Optional[str] = typer.Option(None, "--lpips-vgg",
                                                help="VGG16 ImageNet weights for LPIPS (vgg16-397923af.pth; default: "
                                                     "torch hub cache; LPIPS is left out without them)"),
        inception_weights: Optional[str] = typer.Option(None, "--inception-weights",
                                                        help="InceptionV3 weights file (default: resolved offline)"),
        precision: str = typer.Option("auto", help="autocast {auto|bf16|fp32} (auto: bf16 on CUDA, fp32 on "
                                                  "CPU)"),
        workers: int = typer.Option(4, help="data-loading worker processes per rank"),
        device: str = typer.Option("auto", help="cuda, cpu or auto"),
        strict_data: bool = typer.Option(False, help="fail on the first unreadable image instead of skipping it"),
    ):
        """Reconstruction metrics of a tokenizer: PSNR, SSIM, rFID (and LPIPS with real VGG16 weights).

        Images are center-cropped to the tokenizer's size and reconstructed from the posterior mean (no noise, no mask).

        Writes eval.json (metrics and manifest) and recon_grid.png into --out.

        Launch with torchrun to spread the images over GPUs: the numbers do not depend on the number of processes.

        Generators are evaluated with `rectok sample` and `rectok eval-samples`, not here.
        """
        from rectok_core.metrics.tokenizer_eval import evaluate_tokenizer

        ev = evaluate_tokenizer(tokenizer, data, split=split, n=n, per_class=per_class, batch_size=batch_size, weights=weights,
                                ref_stats=ref_stats, save_stats_to=save_stats, lpips_vgg=lpips_vgg,
                                inception_weights=inception_weights, device=device, precision=precision,
                                workers=workers, strict_data=strict_data, out=out)
        if not _is_main():
            return
        metrics = ev.result["metrics"]
        for key, name in (("lpips", "LPIPS"), ("rfid", "rFID")):
            if f"{key}_unavailable" in metrics:
                err_console.print(f"{name} not computed: {metrics[f'{key}_unavailable']}", highlight=False,
                                  soft_wrap=True)
        show_result(ev.result)
        if "saved_stats" in ev.result:
            out_console.print(f"real-image statistics: {ev.result['saved_stats']['path']}", highlight=False,
                              soft_wrap=True)
        out_console.print(f"results: {ev.json_path}  grid: {ev.grid_path}", highlight=False, soft_wrap=True)
