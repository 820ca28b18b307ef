"""``rectok bench --acceptance``: options and the terminal table (see :mod:`rectok_core.tools.acceptance`)."""
from __future__ import annotations

import inspect
from typing import Any

import typer
from rich import box
from rich.console import Console
from rich.table import Table

out_console = Console(width=None if Console().is_terminal else 150)  # logs and the device tool: one wide table
err_console = Console(stderr=True, markup=False)

ACCEPTANCE_OPTIONS = [
    inspect.Parameter("acceptance", inspect.Parameter.KEYWORD_ONLY, annotation=bool, default=typer.Option(
        False, "--acceptance", help="run the GPU acceptance instead (CUDA tests, the three target workloads, a "
                                    "short real run); --out is then a folder (default: acceptance)")),
    inspect.Parameter("acceptance_budget", inspect.Parameter.KEYWORD_ONLY, annotation=float, default=typer.Option(
        0.0, "--acceptance-budget", help="with --acceptance: wall-clock budget in seconds (0: 470 on CUDA, 110 on "
                                         "CPU)")),
    inspect.Parameter("acceptance_parts", inspect.Parameter.KEYWORD_ONLY, annotation=str, default=typer.Option(
        "cuda_tests,bench,real_run", "--acceptance-parts", help="with --acceptance: the parts to run")),
]


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
            goal = f"≥ {r['target']:.0f} (×{r['ratio']:.2f})" if "ratio" in r else f"≥ {r['target']:.0f}"
            ok = {True: " [green]met[/]", False: " [red]missed[/]"}.get(r.get("passed"), "")
            t.add_row("", f"{r['workload']} b{r['batch_size']}", _status(r["status"]), fig, goal + ok, "")
        for step, r in part.get("steps", {}).items():
            fig = f"{r['img_per_s_wall']:.1f} img/s (wall)" if "img_per_s_wall" in r else ""
            t.add_row("", step, _status(r["status"]), fig, r.get("error", "")[:70], f"{r.get('wall_s', 0):.0f}")
    console.print(t)


def run_acceptance_command(overrides: dict[str, Any], other: dict[str, Any]) -> None:
    from rectok_core.tools.acceptance import AcceptanceConfig, run_acceptance

    cfg = AcceptanceConfig(out=overrides.get("out") or "acceptance", device=overrides.get("device") or "auto",
                           budget_s=other.get("acceptance_budget") or 0.0,
                           timed_steps=overrides.get("timed_steps") or 0, warmup=overrides.get("warmup") or 0,
                           parts=other.get("acceptance_parts") or AcceptanceConfig.parts)
    cfg.part_list()

    def progress(name: str, res: dict) -> None:
        err_console.print(f"{name}: {res.get('status')} ({res.get('wall_s', 0):.0f} s) {res.get('error', '')}",
                          highlight=False, soft_wrap=True)

    doc = run_acceptance(cfg, on_part=progress)
    show_acceptance(doc)
    err_console.print(f"results: {cfg.out}/acceptance.json", highlight=False, soft_wrap=True)
