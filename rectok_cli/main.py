"""``rectok``: the command-line entry point (a thin layer over :mod:`rectok_core`)."""
from __future__ import annotations

import functools
import inspect
import logging
import os
import sys
from typing import Callable

import typer
from rich.console import Console

from rectok_core.errors import RectokError

from .options import split_overrides, with_config_options

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="RecTok: reconstruction distillation along rectified flow — tokenizers, generators, "
                       "probes and metrics.")
err = Console(stderr=True)


@app.callback()
def _root() -> None:
    """RecTok: reconstruction distillation along rectified flow."""


def _setup_logging() -> None:
    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)


def user_errors(fn: Callable) -> Callable:
    """Print a RectokError as one line and exit 1 (no traceback); Ctrl-C exits 130."""

    @functools.wraps(fn)
    def run(*args, **kwargs):
        _setup_logging()
        try:
            return fn(*args, **kwargs)
        except RectokError as e:
            err.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            err.print("interrupted")
            raise typer.Exit(130) from None

    return run


def resolve_config(cls: type, presets: dict, overrides: dict, kind: str):
    """Defaults → preset → flags for a new run; the saved config plus allowed flag changes for --resume."""
    from rectok_core.config import build_config, resume_config

    preset = overrides.pop("preset", None) or "base"
    if overrides.get("resume"):
        from rectok_core.training.rundir import RunDir
        from rectok_core.utils import checkpoint

        cfg = build_config(cls, presets, preset, dict(overrides))
        ck = checkpoint.load(RunDir(cfg.run.out, True, False).latest, kind)
        return resume_config(cls, ck["config"], {"preset": overrides.get("preset"), **overrides})
    return build_config(cls, presets, preset, overrides)


def _done(path) -> None:
    if int(os.environ.get("RANK", "0")) == 0:
        err.print(f"checkpoint: {path}")


def _register_train_tokenizer() -> None:
    from rectok_core.training.config import TOKENIZER_PRESETS, TokenizerTrainConfig

    @app.command("train-tokenizer")
    @user_errors
    @with_config_options(TokenizerTrainConfig, TOKENIZER_PRESETS)
    def train_tokenizer(**kwargs):
        """Stage-1 RecTok training: Flow Semantic Distillation + Reconstruction-Alignment Distillation.

        Launch with torchrun for several GPUs or nodes. Every option defaults to the --preset's value.
        """
        from rectok_core.training.tokenizer import train_tokenizer as run

        overrides, _ = split_overrides(TokenizerTrainConfig, kwargs)
        _done(run(resolve_config(TokenizerTrainConfig, TOKENIZER_PRESETS, overrides, "tokenizer")))


def _register_finetune_decoder() -> None:
    from rectok_core.training.config import FINETUNE_PRESETS, FinetuneConfig

    ckpt = inspect.Parameter("tokenizer", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=str,
                             default=typer.Argument(..., help="stage-1 tokenizer checkpoint (train-tokenizer)"))

    @app.command("finetune-decoder")
    @user_errors
    @with_config_options(FinetuneConfig, FINETUNE_PRESETS, extra=[ckpt])
    def finetune_decoder(tokenizer: str, **kwargs):
        """Stage 2: freeze the encoder, fine-tune the pixel decoder for reconstruction (MSE + perceptual + GAN).

        The result is a tokenizer checkpoint that every downstream command accepts.
        """
        from rectok_core.training.tokenizer import finetune_decoder as run

        overrides, _ = split_overrides(FinetuneConfig, kwargs)
        cfg = resolve_config(FinetuneConfig, FINETUNE_PRESETS, overrides, "tokenizer")
        if not cfg.run.resume:
            cfg.tokenizer = tokenizer
        elif os.path.abspath(tokenizer) != os.path.abspath(cfg.tokenizer):
            raise RectokError(f"the run in {cfg.run.out} fine-tunes {cfg.tokenizer}, not {tokenizer}")
        _done(run(cfg))


_register_train_tokenizer()
_register_finetune_decoder()
__import__("rectok_cli.probe", fromlist=["register"]).register(app, user_errors)
__import__("rectok_cli.generate", fromlist=["register"]).register(app, user_errors)
__import__("rectok_cli.evaluate", fromlist=["register"]).register(app, user_errors)
__import__("rectok_cli.bench", fromlist=["register"]).register(app, user_errors)
__import__("rectok_cli.study", fromlist=["register"]).register(app, user_errors)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
