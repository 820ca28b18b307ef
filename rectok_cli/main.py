"""``rectok``: the command-line entry point (a thin layer over :mod:`rectok_core`).

The app and its shared error handling are in :mod:`rectok_cli.app`; each module imported below registers its
commands on it, in the order ``rectok --help`` lists them. Importing this module imports no torch.
"""
from __future__ import annotations

import sys

# isort: off
from rectok_cli.app import app, err, error_line, say_error, user_errors  # noqa: F401 - the app and its error helpers
from rectok_cli import training  # noqa: F401 - train-tokenizer, finetune-decoder
from rectok_cli import probe  # noqa: F401 - probe-flow
from rectok_cli import generate  # noqa: F401 - cache-latents, train-dit, sample, eval-samples, fid-stats
from rectok_cli import sweep  # noqa: F401 - sweep (guidance scales)
from rectok_cli import evaluate  # noqa: F401 - eval
from rectok_cli import bench  # noqa: F401 - bench (and bench --acceptance)
from rectok_cli import study  # noqa: F401 - reproduce
from rectok_cli import interop  # noqa: F401 - import-official, latent-stats, export, push
from rectok_cli import tokenizers  # noqa: F401 - tokenizers (the FAMILY:SOURCE families)
from rectok_cli import generators  # noqa: F401 - generators (the train-dit --model families)
# isort: on


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:  # Ctrl-C before a command started (imports, option parsing)
        err.print("interrupted", markup=False)
        sys.exit(130)


if __name__ == "__main__":
    main()
