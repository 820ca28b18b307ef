"""The ``rectok`` Typer app and what every command shares: ``--version``, logging, and the one-line errors.

Each command module (``rectok_cli.training``, ``probe``, ``generate``, ...) registers its commands on :data:`app`
when imported; :mod:`rectok_cli.main` imports them all. Nothing here imports torch: ``rectok --help`` and
``--version`` answer at once, and a command loads what it needs when it runs.
"""
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

from rectok_core.errors import RectokError, Stopped, out_of_memory

from .help_format import HelpGroup

# --help: plain click help wrapped at spaces (HelpGroup), never cutting an option name or choice at 80 columns as
# rich's tables did; up to 120 columns wide on wide terminals.
app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None,
                  cls=HelpGroup, context_settings={"max_content_width": 120},
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
        except (RuntimeError, MemoryError) as e:  # out of memory: one line on what to change; others propagate
            oom = out_of_memory(e)
            if oom is None:
                raise
            say_error(oom)
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
