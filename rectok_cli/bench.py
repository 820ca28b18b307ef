"""``rectok bench``: training / sampling / inference throughput, memory, FLOPs and MFU (see :mod:`rectok_core.tools.bench`)."""
from __future__ import annotations

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from rectok_core.tools.config import BenchConfig

from .acceptance import ACCEPTANCE_OPTIONS, run_acceptance_command
from .app import app, user_errors
from .options import split_overrides, with_config_options

out_console = Console()
err_console = Console(stderr=True, markup=False)


def _what(rec: dict) -> str:
    """The workload, with its generator model for the generator workloads."""
    return rec["workload"] + (f" {rec['model']}" if rec.get("model") else "")


def _mem(rec: dict) -> str:
    b = rec.get("peak_memory_bytes")
    return "—" if b is None else f"{b / 2 ** 30:.2f}"


def show_result(result: dict, console: Console = out_console) -> None:
    """The terminal table of a :func:`rectok_core.tools.bench.run_bench` result."""
    c = result["ceiling"]
    mem = "GPU GiB" if result["device"]["type"] == "cuda" else "RSS GiB"
    table = Table(title=f"rectok bench — {result['device']['name']}", box=box.SIMPLE_HEAD, pad_edge=False,
                  caption=f"{result['precision']}, compile {'on' if result['compile'] else 'off'}, torch "
                          f"{result['torch']}; median of {result['timed_steps']} steps after {result['warmup']} warm-up; "
                          f"matmul ceiling {c['tflops']:.3f} TFLOP/s ({c['dtype']}, {c['n']}²); GFLOP per image "
                          f"(training: forward+backward); memory: {result['peak_memory'].split(':')[0]}; ms per step in the JSON")
    table.add_column("workload", no_wrap=True)
    for col in ("batch", "img/s", mem, "GFLOP/img", "TFLOP/s", "MFU"):
        table.add_column(col, justify="right", no_wrap=True)
    for r in result["records"]:
        if "error" in r:
            table.add_row(escape(_what(r)), str(r["batch_size"]), f"[red]{escape(str(r['error']))}[/]", "", "", "", "")
            continue
        rate = r["img_per_s"]
        table.add_row(escape(_what(r)), str(r["batch_size"]), f"{rate:.0f}" if rate >= 1000 else f"{rate:.1f}", _mem(r),
                      f"{r['flops_per_image'] / 1e9:.4g}", f"{r['tflops_per_s']:.3g}",
                      "—" if r["mfu"] is None else f"{100 * r['mfu']:.1f}%")
    console.print(table)


@app.command("bench")
@user_errors
@with_config_options(BenchConfig, extra=ACCEPTANCE_OPTIONS)
def bench(**kwargs):
    """Time the training, sampling and inference steps (img/s, peak memory, FLOPs, MFU) on random weights.

    Runs the same step code as train-tokenizer, finetune-decoder, train-dit, sample, cache-latents and
    probe-flow, on inputs already on the device. Writes a table and --out JSON.

    Example (CPU, seconds): rectok bench --tokenizer-preset tiny --dit-preset tiny --device cpu --timed-steps 3 --warmup 1

    Generator families: rectok bench --workloads generators --models dit-dh-xl,lightningdit-xl,sit-xl,dit-xl
    (training step and CFG sampling step of each; --models auto: every family's xl on CUDA, tiny on CPU).

    --acceptance [--out DIR]: the GPU acceptance in one call (CUDA tests, the three target workloads and
    LightningDiT-XL's training and sampling steps, a short real run) into DIR/acceptance.json; a CPU-sized
    equivalent on a CPU (see docs/performance.md).
    """
    from rectok_core.tools.bench import run_bench, write_result
    from rectok_core.utils.files import check_result_file

    overrides, other = split_overrides(BenchConfig, kwargs)
    if other.get("acceptance"):
        return run_acceptance_command(overrides, other)
    cfg = BenchConfig(**{k: v for k, v in overrides.items() if v is not None})
    cfg.validate()
    check_result_file(cfg.out, "--out", "bench", keys=("records",))  # before any measurement

    def progress(rec: dict) -> None:
        what = rec.get("error") or f"{rec['img_per_s']:.1f} img/s"
        err_console.print(f"{_what(rec)} (batch {rec['batch_size']}): {what}", highlight=False)

    result = run_bench(cfg, on_record=progress)
    path = write_result(result, cfg.out)
    show_result(result)
    err_console.print(f"results: {path}", highlight=False, soft_wrap=True)
