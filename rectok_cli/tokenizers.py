"""``rectok tokenizers``: the tokenizer families every command takes as ``FAMILY:SOURCE``."""
from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .app import app, user_errors

out_console = Console()


@app.command("tokenizers")
@user_errors
def tokenizers():
    """List the tokenizer families: how to name one (FAMILY:SOURCE), its published source, latent shape and
    normalisation. A plain checkpoint, export folder or Hub id is a RecTok tokenizer, as before."""
    from rectok_core.checkpoints.families import family_table

    table = Table(title="tokenizer families (name one as FAMILY:SOURCE)")
    for col in ("family", "latent (C x h x w)", "normalization", "published source", "name it as"):
        table.add_column(col)
    for row in family_table():
        table.add_row(*(escape(row[k]) for k in ("family", "latent", "normalization", "source", "form")))
    out_console.print(table)
