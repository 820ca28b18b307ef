"""Released models: ``import-official``, ``latent-stats``, ``export``, ``push``."""
from __future__ import annotations

import os
from collections.abc import Callable

import typer
from rich.console import Console
from rich.markup import escape

console = Console(stderr=True, markup=False)


def _say(line: str) -> None:
    if int(os.environ.get("RANK", "0")) == 0:
        console.print(escape(line), highlight=False, soft_wrap=True)


def register(app: typer.Typer, user_errors: Callable[[Callable], Callable]) -> None:
    """Add the interoperability commands to ``app``; ``user_errors`` is the CLI's one-line error wrapper."""

    @app.command("import-official")
    @user_errors
    def import_official(
        src: str = typer.Argument(..., help="an official RecTok .pth (RecTok.pth, RecTok_decft.pth, ditdh*.pth)"),
        out: str = typer.Option(..., "--out", help="the rectok checkpoint to write (.pt)"),
        kind: str = typer.Option("auto", "--kind", help="auto (from keys and shapes), stage1, decoder-ft or dit: "
                                                        "a tokenizer's stage is told by its semantic decoder"),
        weights: str = typer.Option("ema", "--weights", help="official weights to import: ema (model_ema, what the "
                                                             "official evaluation uses) or raw (model)"),
        tokenizer: str | None = typer.Option(None, "--tokenizer", help="DiT only: the imported tokenizer "
                                                                          "(RecTok_decft) whose latents it models"),
        latent_stats: str | None = typer.Option(None, "--latent-stats", help="DiT only: statistics JSON from "
                                                                                "`rectok latent-stats --out`"),
        data: str | None = typer.Option(None, "--data", help="DiT only: ImageNet train (folder or list) to compute "
                                                                "the latent statistics from instead"),
        classes: str | None = typer.Option(None, "--classes", help="DiT only: class names, one a line (default: "
                                                                      "the --data folder's, else class_0000 …)"),
        stats_dir: str | None = typer.Option(None, "--stats-dir", help="folder of keyed statistics files"),
        device: str = typer.Option("auto", "--device", help="for computing statistics: cuda, cpu or auto"),
        batch_size: int = typer.Option(64, "--batch-size", help="images per batch for the statistics"),
        workers: int = typer.Option(4, "--workers", help="data-loading workers for the statistics"),
    ):
        """Convert an official RecTok checkpoint into a rectok one that every command accepts.

        Strict: a key missing, left over or of the wrong shape is an error.

        Only the container classes official files hold are unpickled: nothing in the file is run.
        """
        from rectok_core.interop.official import import_official as run

        res = run(src, out, kind, weights, tokenizer, latent_stats, data, classes, stats_dir, device, batch_size,
                  workers)
        _say(f"{res.out}: {res.description}")

    @app.command("latent-stats")
    @user_errors
    def latent_stats(
        tokenizer: str = typer.Argument(..., help="tokenizer checkpoint, export folder or Hub id"),
        data: str = typer.Option(..., "--data", help="images (the train split of a folder, or a list file)"),
        out: str | None = typer.Option(None, "--out", help="also copy the statistics JSON here"),
        stats_dir: str | None = typer.Option(None, "--stats-dir", help="folder of statistics files keyed by "
                                                                          "tokenizer sha256 and data (default: cache)"),
        weights: str = typer.Option("ema", "--weights", help="tokenizer weights: ema or raw"),
        device: str = typer.Option("auto", "--device", help="cuda, cpu or auto"),
        batch_size: int = typer.Option(64, "--batch-size", help="images per batch per process"),
        workers: int = typer.Option(4, "--workers", help="data-loading workers per process"),
    ):
        """Per-channel mean and std of the posterior mean over a data set (center crop, no flip, fp32).

        What a DiT normalises its latents with (recipe §4.4). Launch with torchrun to spread it over GPUs.

        A file already computed for this tokenizer and data is reused.
        """
        from rectok_core.interop.stats import latent_stats as run

        res = run(tokenizer, data, stats_dir, weights, device, batch_size, workers, out)
        s = res.stats
        _say(f"latent statistics of {s.images} images ({s.tokens} tokens, {len(s.mean)} channels): {res.path}")

    @app.command("export")
    @user_errors
    def export(
        ckpt: str = typer.Argument(..., help="tokenizer or DiT checkpoint"),
        out: str = typer.Option(..., "--out", help="folder to write (model.safetensors, config.json, README.md)"),
        weights: str = typer.Option("ema", "--weights", help="weights to export: ema or raw"),
        eval_file: str | None = typer.Option(None, "--eval", help="eval.json (rectok eval / eval-samples) whose "
                                                                     "metrics go into the model card"),
        license: str = typer.Option("apache-2.0", "--license", help="license field of the model card"),
        tokenizer_ref: str | None = typer.Option(None, "--tokenizer-ref", help="DiT only: where its tokenizer "
                                                    "is found (a Hub id, or a folder relative to this one)"),
        latent_stats: str | None = typer.Option(None, "--latent-stats", help="tokenizer only: statistics JSON "
                                                                                "to include"),
    ):
        """An inference-only folder for a checkpoint, uploadable to the Hugging Face Hub as it is.

        Every command that takes a checkpoint also takes such a folder, or its Hub id owner/name.
        """
        from rectok_core.interop.export import export as run

        path = run(ckpt, out, weights, eval_file, license, tokenizer_ref, latent_stats)
        _say(f"exported {ckpt} ({weights} weights) to {path}")

    @app.command("push")
    @user_errors
    def push(
        folder: str = typer.Argument(..., help="an export folder (rectok export)"),
        repo: str = typer.Option(..., "--repo", help="Hub repository owner/name (created when missing)"),
        private: bool = typer.Option(False, "--private", help="create the repository private"),
        dry_run: bool = typer.Option(False, "--dry-run", help="check the folder and list what would be uploaded"),
    ):
        """Upload an export folder to the Hugging Face Hub (huggingface_hub; log in with `hf auth login`)."""
        from rectok_core.interop.export import push as run

        listing = run(folder, repo, dry_run=dry_run, private=private)
        for name, size in listing:
            _say(f"  {name}  {size} bytes")
        _say(f"{'would upload' if dry_run else 'uploaded'} {len(listing)} files to {repo}")
