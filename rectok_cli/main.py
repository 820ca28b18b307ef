"""``rectok``: the command-line entry point (a thin layer over :mod:`rectok_core`)."""
from __future__ import annotations

import errno
import functools
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable

import typer
from rich.console import Console
from rich.text import Text

from rectok_core.errors import RectokError, Stopped

from .options import argument, split_overrides, with_config_options
from .present import note, run_done

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="RecTok: reconstruction distillation along rectified flow — tokenizers, generators, "
                       "probes and metrics.")
err = Console(stderr=True, markup=False)  # user text (paths, labels) is never markup


def _version(value: bool) -> None:
    if value:
        from rectok_core import __version__

        typer.echo(f"rectok {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="print the version and exit")) -> None:
    """RecTok: reconstruction distillation along rectified flow."""


def _setup_logging() -> None:
    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)


class Terminated(KeyboardInterrupt):
    """SIGTERM outside a training loop's safe points: handled like Ctrl-C, exit 143."""


def _on_sigterm(signum, frame) -> None:
    raise Terminated


def error_line(e: BaseException) -> str:
    """The one line a user sees for ``e`` (user text is never read as markup)."""
    from rectok_core.utils.files import DiskFull

    if isinstance(e, OSError) and e.errno == errno.ENOSPC:
        return str(DiskFull(e.filename or ".", getattr(e, "needed", None)))
    if isinstance(e, OSError):
        return f"{e.strerror or type(e).__name__}: {e.filename or ''}".rstrip(": ")
    return " ".join(str(e).split()) or type(e).__name__


def say_error(e: BaseException) -> None:
    err.print(Text.assemble(("error:", "bold red"), " ", error_line(e)), highlight=False, soft_wrap=True)


def user_errors(fn: Callable) -> Callable:
    """Print a RectokError (and an OSError such as a full disk) as one line and exit 1 (no traceback); Ctrl-C
    exits 130 and SIGTERM 143, also during start-up (training loops first finish the step and save)."""

    @functools.wraps(fn)
    def run(*args, **kwargs):
        _setup_logging()
        main = threading.current_thread() is threading.main_thread()
        old = signal.signal(signal.SIGTERM, _on_sigterm) if main else None
        try:
            return fn(*args, **kwargs)
        except Stopped as e:
            err.print(Text(error_line(e)), highlight=False, soft_wrap=True)
            raise typer.Exit(e.exit_code) from None
        except (RectokError, OSError) as e:
            say_error(e)
            raise typer.Exit(1) from None
        except Terminated:
            err.print("terminated (SIGTERM)", markup=False)
            raise typer.Exit(143) from None
        except KeyboardInterrupt:
            err.print("interrupted", markup=False)
            raise typer.Exit(130) from None
        finally:
            if main:
                signal.signal(signal.SIGTERM, old)

    return run


def resolve_config(cls: type, presets: dict, overrides: dict, kind: str):
    """Defaults → preset → flags for a new run; the saved config plus allowed flag changes for --resume."""
    from rectok_core.training.inherit import resolve_run

    return resolve_run(cls, presets, overrides, kind)


def _register_train_tokenizer() -> None:
    from rectok_core.training.config import TOKENIZER_PRESETS, TokenizerTrainConfig

    def config(**kwargs):
        from rectok_core.training.inherit import check_tokenizer_preset

        overrides, _ = split_overrides(TokenizerTrainConfig, kwargs)
        check_tokenizer_preset(overrides)
        return resolve_config(TokenizerTrainConfig, TOKENIZER_PRESETS, overrides, "tokenizer")

    @app.command("train-tokenizer")
    @user_errors
    @with_config_options(TokenizerTrainConfig, TOKENIZER_PRESETS, resolve=config)
    def train_tokenizer(**kwargs):
        """Stage-1 RecTok training: Flow Semantic Distillation + Reconstruction-Alignment Distillation.

        Launch with torchrun for several GPUs or nodes. Every option defaults to the --preset's value.
        """
        from rectok_core.training.tokenizer import train_tokenizer as run

        run_done(run(config(**kwargs)))


def _register_finetune_decoder() -> None:
    from rectok_core.training.config import FINETUNE_PRESETS, FinetuneConfig

    ckpt = argument("tokenizer", "stage-1 tokenizer checkpoint (train-tokenizer)")

    def config(tokenizer: str, **kwargs):
        from rectok_core.training.inherit import TokenizerSettings, inherit

        overrides, _ = split_overrides(FinetuneConfig, kwargs)
        if not overrides.get("resume"):  # a resumed run keeps its own settings
            note(inherit(overrides, TokenizerSettings.of(tokenizer), FINETUNE_PRESETS))
        cfg = resolve_config(FinetuneConfig, FINETUNE_PRESETS, overrides, "tokenizer")
        if not cfg.run.resume:
            cfg.tokenizer = tokenizer
        elif os.path.abspath(tokenizer) != os.path.abspath(cfg.tokenizer):
            raise RectokError(f"the run in {cfg.run.out} fine-tunes {cfg.tokenizer}, not {tokenizer}")
        return cfg

    @app.command("finetune-decoder")
    @user_errors
    @with_config_options(FinetuneConfig, FINETUNE_PRESETS, extra=[ckpt], resolve=config)
    def finetune_decoder(tokenizer: str, **kwargs):
        """Stage 2: freeze the encoder, fine-tune the pixel decoder for reconstruction (MSE + perceptual + GAN).

        Preset, data and image size default to the stage-1 checkpoint's. The result is a tokenizer checkpoint that
        every downstream command accepts.
        """
        from rectok_core.training.tokenizer import finetune_decoder as run

        run_done(run(config(tokenizer, **kwargs)))


_register_train_tokenizer()
_register_finetune_decoder()
__import__("rectok_cli.probe", fromlist=["register"]).register(app, user_errors)
__import__("rectok_cli.generate", fromlist=["register"]).register(app, user_errors)
__import__("rectok_cli.evaluate", fromlist=["register"]).register(app, user_errors)
__import__("rectok_cli.bench", fromlist=["register"]).register(app, user_errors)
__import__("rectok_cli.study", fromlist=["register"]).register(app, user_errors)
__import__("rectok_cli.interop", fromlist=["register"]).register(app, user_errors)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:  # Ctrl-C before a command started (imports, option parsing)
        err.print("interrupted", markup=False)
        sys.exit(130)


if __name__ == "__main__":
    main()
