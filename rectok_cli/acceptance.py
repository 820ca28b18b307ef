"""``rectok bench --acceptance``: options and the terminal table (see :mod:`rectok_core.tools.acceptance`)."""
from __future__ import annotations

from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table

from rectok_core.tools.config import AcceptanceFlags, acceptance_config

from .options import config_parameters, make_config, split_overrides

out_console = Console(width=None if Console().is_terminal else 150)  # logs and the device tool: one wide table
err_console = Console(stderr=True, markup=False)

#: ``--acceptance``, ``--acceptance-budget``, ``--acceptance-parts``: options of ``rectok bench``.
ACCEPTANCE_OPTIONS = config_parameters(AcceptanceFlags)


def _status(s: str | None) -> str:
    colour = {"ok": "green", "passed": "green", "skipped": "yellow"}.get(s or "", "red")
    return f"[{colour}]{s}[/]"


def show_acceptance(doc: dict[str, Any], console: Console = out_console) -> None:
    """One table: each part's status and time, each workload's rate against its target, each real-run step."""
    t = Table(title=f"rectok acceptance — {doc['device']['name']}", box=box.SIMPLE_HEAD, pad_edge=False,
              caption=f"torch {doc['torch']}; {doc['elapsed_s']:.0f} s of a {doc['budget_s']:.0f} s budget; targets "
                      + ("judged (CUDA)" if doc["targets_judged"] else "not judged off CUDA"))
    for col in ("part", "item", "status", "figure", "target / note", "s"):
        t.add_column(col, no_wrap=col in ("part", "item", "status", "s"))
    for name, part in doc["parts"].items():
        t.add_row(f"[bold]{name}[/]", "", _status(part.get("status")), "", part.get("error", "")[:70],
                  f"{part.get('wall_s', 0):.0f}")
        if name == "cuda_tests" and "counts" in part:
            c = part["counts"]
            t.add_row("", "pytest -m cuda", "", f"{c['passed']} passed, {c['failed']} failed, {c['errors']} errors, "
                      f"{c['skipped']} skipped", "; ".join(part.get("skip_reasons", {}))[:70], "")
        for r in part.get("records", []):
            fig = (f"{r['img_per_s']:.1f} {r['unit']}, MFU {100 * (r['mfu'] or 0):.1f}%, "
                   f"{r['peak_memory_bytes'] / 2 ** 30:.1f} GiB, warm-up {r['warmup_s']:.0f} s") if "img_per_s" in r \
                else ""
            goal = ("no target" if r.get("target") is None else f"≥ {r['target']:.0f} (×{r['ratio']:.2f})"
                    if "ratio" in r else f"≥ {r['target']:.0f}")
            ok = {True: " [green]met[/]", False: " [red]missed[/]"}.get(r.get("passed"), "")
            what = r["workload"] + (f" {r['model']}" if r.get("model") else "")
            t.add_row("", f"{what} b{r['batch_size']}", _status(r["status"]), fig, goal + ok, "")
        for step, r in part.get("steps", {}).items():
            fig = f"{r['img_per_s_wall']:.1f} img/s (wall)" if "img_per_s_wall" in r else ""
            t.add_row("", step, _status(r["status"]), fig, r.get("error", "")[:70], f"{r.get('wall_s', 0):.0f}")
    console.print(t)


def run_acceptance_command(bench: dict[str, Any], other: dict[str, Any]) -> None:
    """``rectok bench --acceptance``: ``bench`` the bench options given, ``other`` the acceptance flags."""
    from rectok_core.tools.acceptance import run_acceptance

    cfg = acceptance_config(bench, make_config(AcceptanceFlags, split_overrides(AcceptanceFlags, other)[0]))

    def progress(name: str, res: dict) -> None:
        err_console.print(f"{name}: {res.get('status')} ({res.get('wall_s', 0):.0f} s) {res.get('error', '')}",
                          highlight=False, soft_wrap=True)

    doc = run_acceptance(cfg, on_part=progress)
    show_acceptance(doc)
    err_console.print(f"results: {cfg.out}/acceptance.json", highlight=False, soft_wrap=True)
