"""Start-up time of the ``rectok`` CLI: the median wall-clock time of ``rectok --help``, ``rectok --version`` and
``rectok train-tokenizer --help`` over N runs each (a measurement to read, not a test).

    python tools/bench_cli_startup.py [-n 7] [--module]

Each line gives the median wall-clock time and the median CPU time (user + system) of the process: on a loaded
machine the wall clock includes waiting for a core, the CPU time does not. ``--module`` runs
``python -m rectok_cli.main`` instead of the ``rectok`` script (e.g. to time another checkout via ``PYTHONPATH``).
"""
from __future__ import annotations

import argparse
import resource
import shutil
import statistics
import subprocess
import sys
import time

CASES = (["--help"], ["--version"], ["train-tokenizer", "--help"])


def _child_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def time_command(argv: list[str], runs: int) -> tuple[list[float], list[float]]:
    """(wall-clock seconds, CPU seconds) of each of ``runs`` runs of ``argv`` (output discarded; a failing run is
    an error)."""
    wall, cpu = [], []
    for _ in range(runs):
        c0, t0 = _child_cpu(), time.perf_counter()
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        wall.append(time.perf_counter() - t0)
        cpu.append(_child_cpu() - c0)
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--runs", type=int, default=7, help="runs per command (default: 7)")
    parser.add_argument("--module", action="store_true", help="run python -m rectok_cli.main, not the rectok script")
    args = parser.parse_args()
    exe = None if args.module else shutil.which("rectok")
    base = [exe] if exe else [sys.executable, "-m", "rectok_cli.main"]
    print(f"{' '.join(base)}: median of {args.runs} runs")
    for case in CASES:
        wall, cpu = time_command(base + case, args.runs)
        print(f"  rectok {' '.join(case):<24} wall {statistics.median(wall):6.3f} s (min {min(wall):.3f}, "
              f"max {max(wall):.3f}); CPU {statistics.median(cpu):6.3f} s")


if __name__ == "__main__":
    main()
