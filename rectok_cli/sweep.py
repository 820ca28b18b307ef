"""``rectok sweep``: sample and evaluate a DiT^DH at several guidance scales, pick the best (the official protocol)."""
from __future__ import annotations

import os

from rich.console import Console
from rich.table import Table

from rectok_core.sampling.sweep_config import SweepConfig

from .app import app, user_errors
from .generate import DIT_CKPT
from .options import make_config, split_overrides, with_config_options

console = Console(stderr=True, markup=False)


@app.command("sweep")
@user_errors
@with_config_options(SweepConfig, extra=[DIT_CKPT])
def sweep(dit_ckpt: str | None, **kwargs):
    """Guidance sweep: one sample folder per --scales value, each evaluated (FID, IS), the best picked by FID.

    Writes OUT/sweep.json, sweep.csv, sweep.md and sweep.png (FID and IS against the scale, the best marked).

    A rerun resumes: finished folders are neither regenerated nor re-evaluated. --final-n 50000 then samples and
    evaluates the full set at the best scale (official: a 10,000-sample sweep, then 50,000 at the best).
    """
    from rectok_core.sampling.sweep import sweep as run
    from rectok_core.training.rundir import newest_run_checkpoint

    cfg = make_config(SweepConfig, split_overrides(SweepConfig, kwargs)[0])
    if dit_ckpt is None:
        dit_ckpt = str(newest_run_checkpoint("dit"))
        if int(os.environ.get("RANK", "0")) == 0:
            console.print(f"sweeping the newest DiT run: {dit_ckpt}", highlight=False, soft_wrap=True)
    res = run(dit_ckpt, cfg)
    if int(os.environ.get("RANK", "0")) != 0:
        return
    table = Table(title=f"guidance sweep ({cfg.cfg}): best scale {res.best.scale:g}, FID {res.best.fid:.4f}")
    for col in ("scale", "samples", "FID", "IS", "precision", "recall", ""):
        table.add_column(col, justify="right" if col else "left")
    for r in res.rows + ([res.final] if res.final else []):
        mark = "final" if r is res.final else "best" if r is res.best else ""
        cells = [f"{v:.4f}" if v is not None else "–" for v in (r.fid, r.inception_score, r.precision, r.recall)]
        table.add_row(f"{r.scale:g}", str(r.n), *cells, mark)
    Console().print(table)
    console.print(f"table: {res.json}, {res.csv}, {res.markdown}; plot: {res.plot}", highlight=False, soft_wrap=True)
