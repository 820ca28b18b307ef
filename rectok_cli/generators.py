"""``rectok generators``: the generator families ``train-dit --model`` trains."""
from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from rectok_core.models.generators import generator_table

from .app import app, user_errors

out_console = Console()


@app.command("generators")
@user_errors
def generators():
    """List the generator families: their model names for train-dit --model (and the official names), training
    objective, prediction and sampler."""
    table = Table(title="generator families (train-dit --model NAME)")
    for col in ("family", "models", "official names", "objective", "prediction", "sampling"):
        table.add_column(col)
    for row in generator_table():
        table.add_row(*(escape(row[k]) for k in ("family", "models", "official", "objective", "prediction",
                                                 "sampling")))
    out_console.print(table)
