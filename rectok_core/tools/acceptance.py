"""``rectok bench --acceptance``: the GPU acceptance in one call, one JSON (``acceptance.json``).

Three parts, each with its own deadline, run in order; the JSON is rewritten atomically after every part (and
every bench workload), so a call that is cut keeps what finished. A part that fails or runs out of time records
``{"status": "failed" | "timeout", "error": ...}`` and the next part still runs.

1. ``cuda_tests`` — ``pytest -m cuda tests/cuda`` in a subprocess (killed at its deadline): pass/fail/skip
   counts from its JUnit XML, the failures' messages, the skip reasons.
2. ``bench`` — the three target workloads through :func:`rectok_core.tools.bench.run_bench`, in this process
   (the deadline is checked between workloads): ``tokenizer-gan`` (base tokenizer, GAN on, batch 64),
   ``dit-cached`` (DiT^DH-XL from posterior moments, batch 64) and ``sample-autoguidance`` (XL + S guide, batch
   256): img/s, MFU against the measured bf16 matmul ceiling, peak memory, compile warm-up seconds, and
   measured/target with a pass flag (targets: :data:`TARGETS`); then the same measurements, without a target,
   for LightningDiT-XL beside DiT^DH-XL (:data:`CUDA_BENCH` ``generators``): its training step
   (``generator-train``, batch 64) and a CFG sampling step (``generator-sample``, batch 256).
3. ``real_run`` — the commands themselves in subprocesses on generated 64-px images (:func:`make_shapes_folder`;
   no external data): ``train-tokenizer --preset small64`` for a few hundred steps, ``train-dit --preset tiny``
   on its latent cache, ``rectok sample`` of a few hundred images; wall time and img/s of each.

On a CPU the same call runs a CPU-sized equivalent (tiny presets, small batches, a few steps; the CUDA tests
skip) inside :data:`CPU_BUDGET_S`. The targets are for one H100/H200 and are not judged on a CPU.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

import rectok_core
from rectok_core.config import from_flags
from rectok_core.errors import RectokError
from rectok_core.sampling.config import SampleConfig
from rectok_core.sampling.folder import sample
from rectok_core.tools.bench import BenchConfig, device_name, run_bench
from rectok_core.tools.config import AcceptanceConfig
from rectok_core.training.dit import train_dit
from rectok_core.training.inherit import dit_run_config, tokenizer_run_config
from rectok_core.training.rundir import read_metrics
from rectok_core.training.tokenizer import train_tokenizer
from rectok_core.utils.distributed import resolve_device
from rectok_core.utils.files import atomic_open, write_json_atomic

FORMAT = "rectok-acceptance"


VERSION = 1


#: workload → (target img/s — image-steps/s for sampling —, the reference implementation on an H100, unit)
TARGETS: dict[str, tuple[float, float, str]] = {
    "tokenizer-gan": (400.0, 163.0, "img/s"),
    "dit-cached": (450.0, 147.0, "img/s"),
    "sample-autoguidance": (1380.0, 343.0, "image-steps/s"),
}


#: presets (tokenizer, DiT^DH, guide), the generator models measured after the targets (no target), batches
CUDA_BENCH = {"presets": ("base", "XL", "S"), "generators": ("lightningdit-xl",),
              "batch": {"tokenizer-gan": 64, "dit-cached": 64, "sample-autoguidance": 256, "generator-train": 64,
                        "generator-sample": 256}}


CPU_BENCH = {"presets": ("tiny", "tiny", "tiny"), "generators": ("lightningdit-tiny",),
             "batch": {"tokenizer-gan": 4, "dit-cached": 8, "sample-autoguidance": 16, "generator-train": 8,
                       "generator-sample": 16}}


def bench_items(sizes: dict[str, Any]) -> list[tuple[str, str | None]]:
    """(workload, generator model) of the bench part in order: the targets first (no model), then each of
    ``sizes["generators"]``'s training and sampling steps (no target)."""
    return [(name, None) for name in TARGETS] + [(name, m) for m in sizes["generators"]
                                                  for name in ("generator-train", "generator-sample")]


CUDA_BUDGET_S = 520.0  # under 9 minutes in all, compilation included


CPU_BUDGET_S = 110.0


#: shares of the time left that each part may use (the last part gets whatever remains)
SHARES = {"cuda_tests": 0.32, "bench": 0.6}




def _defaults(cfg: AcceptanceConfig, cuda: bool) -> AcceptanceConfig:
    pick = (lambda v, gpu, cpu: v or (gpu if cuda else cpu))  # noqa: E731
    return AcceptanceConfig(
        out=cfg.out, device=cfg.device, budget_s=pick(cfg.budget_s, CUDA_BUDGET_S, CPU_BUDGET_S),
        timed_steps=pick(cfg.timed_steps, 10, 2), warmup=pick(cfg.warmup, 3, 1),
        train_steps=pick(cfg.train_steps, 300, 20), dit_steps=pick(cfg.dit_steps, 100, 10),
        sample_images=pick(cfg.sample_images, 256, 32), tests=cfg.tests, parts=cfg.parts)


# ---------------------------------------------------------------------------------------------------------
# Pieces
# ---------------------------------------------------------------------------------------------------------
def make_shapes_folder(root: str | os.PathLike[str], size: int = 64, classes: int = 4, per_class: int = 64,
                       seed: int = 0) -> Path:
    """A labelled ImageFolder of ``size``-px PNGs: class 0 discs, 1 squares, 2 horizontal and 3 vertical stripes
    (then repeating), random colours, positions and scales on a soft background gradient."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    for c in range(classes):
        d = Path(root) / f"class{c}"
        d.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            bg, fg = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
            cx, cy, r = rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7), rng.uniform(0.15, 0.3)
            kind = c % 4
            if kind == 0:
                mask = (xx - cx) ** 2 + (yy - cy) ** 2 < r ** 2
            elif kind == 1:
                mask = (abs(xx - cx) < r) & (abs(yy - cy) < r)
            else:
                period = rng.uniform(0.1, 0.25)
                mask = ((yy if kind == 2 else xx) / period + cx) % 1 < 0.5
            img = bg * (0.7 + 0.3 * yy[..., None]) * (~mask[..., None]) + fg * mask[..., None]
            img = np.clip(img + rng.normal(0, 6, img.shape), 0, 255).astype(np.uint8)
            with atomic_open(d / f"img{i:03d}.png", "wb") as f:
                Image.fromarray(img).save(f, format="PNG")
    return Path(root)


def run_command(cmd: list[str], timeout: float, log: Path, cwd: str | None = None) -> dict[str, Any]:
    """Run ``cmd`` (its own process group, killed whole at ``timeout``), output to ``log``; status, rc, wall."""
    env = dict(os.environ)
    importable = str(Path(rectok_core.__file__).resolve().parents[1])  # where this rectok_core is imported from
    env["PYTHONPATH"] = importable + os.pathsep + env.get("PYTHONPATH", "")
    log.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if timeout <= 1:
        return {"status": "timeout", "error": "no time left in the budget", "wall_s": 0.0}
    with open(log, "w") as f:
        f.write("$ " + " ".join(cmd) + "\n")
        f.flush()
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=cwd, env=env, start_new_session=True)
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return {"status": "timeout", "error": f"killed after {timeout:.0f} s", "wall_s": time.perf_counter() - t0,
                    "log": _rel(log), "tail": _tail(log)}
    out = {"status": "ok" if rc == 0 else "failed", "rc": rc, "wall_s": time.perf_counter() - t0, "log": _rel(log)}
    if rc != 0:
        out["error"] = f"exit status {rc}"
        out["tail"] = _tail(log)
    return out


def _rel(log: Path) -> str:
    """A log's path relative to the output folder (``logs/NAME.log``)."""
    return str(Path(log.parent.name) / log.name)


def _tail(path: Path, chars: int = 1500) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


def junit_counts(path: Path) -> dict[str, Any]:
    """passed / failed / errors / skipped counts, failure messages and skip reasons of a pytest JUnit XML."""
    counts = {"passed": 0, "failed": 0, "errors": 0, "skipped": 0}
    failures, skips = [], {}
    for case in ET.parse(path).getroot().iter("testcase"):
        name = f"{case.get('classname', '')}::{case.get('name', '')}"
        kind = next((c.tag for c in case if c.tag in ("failure", "error", "skipped")), None)
        if kind is None:
            counts["passed"] += 1
        elif kind == "skipped":
            counts["skipped"] += 1
            reason = case.find("skipped").get("message", "")
            skips[reason] = skips.get(reason, 0) + 1
        else:
            counts["failed" if kind == "failure" else "errors"] += 1
            node = case.find(kind)
            failures.append({"test": name, "message": (node.get("message") or "")[:600]})
    return {"counts": counts, "failures": failures, "skip_reasons": skips}


# ---------------------------------------------------------------------------------------------------------
# The parts
# ---------------------------------------------------------------------------------------------------------
def part_cuda_tests(cfg: AcceptanceConfig, dev: torch.device, deadline: float, logs: Path) -> dict[str, Any]:
    tests = Path(cfg.tests) if cfg.tests else Path.cwd() / "tests" / "cuda"  # the project's, from its folder
    if not tests.is_dir():
        return {"status": "failed", "error": f"no CUDA test folder at {tests}: run from a rectok source checkout or "
                                             f"give the folder (AcceptanceConfig.tests)"}
    with tempfile.TemporaryDirectory() as tmp:
        xml = Path(tmp) / "junit.xml"
        cmd = [sys.executable, "-m", "pytest", "-m", "cuda", str(tests), "-q", "-p", "no:cacheprovider",
               "--junitxml", str(xml), "-o", "junit_family=xunit2"]
        res = run_command(cmd, deadline - time.monotonic(), logs / "cuda-tests.log", cwd=str(tests.parents[1]))
        res["command"] = " ".join(["pytest", "-m", "cuda", str(tests)])
        if xml.is_file():
            res.update(junit_counts(xml))
    if res["status"] == "ok" or (res["status"] == "failed" and "counts" in res):
        c = res.get("counts", {})
        res["status"] = "failed" if c.get("failed") or c.get("errors") else (
            "skipped" if c.get("skipped") and not c.get("passed") else "passed")
        if res["status"] == "failed":
            res["error"] = f"{c['failed']} failed, {c['errors']} errors"
    res.pop("rc", None)
    return res


def part_bench(cfg: AcceptanceConfig, dev: torch.device, deadline: float,
               on_record: Callable[[dict], None]) -> dict[str, Any]:
    cuda = dev.type == "cuda"
    sizes = CUDA_BENCH if cuda else CPU_BENCH
    tok, dit, guide = sizes["presets"]
    out: dict[str, Any] = {"status": "ok", "presets": {"tokenizer": tok, "dit": dit, "guide": guide},
                           "generators": list(sizes["generators"]),
                           "timed_steps": cfg.timed_steps, "warmup": cfg.warmup, "records": []}
    for name, model in bench_items(sizes):
        batch = sizes["batch"][name]
        target, reference, unit = TARGETS.get(name, (None, None, "image-steps/s" if name == "generator-sample" else "img/s"))
        rec: dict[str, Any] = {"workload": name, **({"model": model} if model else {}), "batch_size": batch,
                               "target": target, "unit": unit, "reference_h100": reference}
        if time.monotonic() > deadline:
            rec.update(status="timeout", error="the bench part's deadline passed before this workload started")
        else:
            try:
                res = run_bench(BenchConfig(tokenizer_preset=tok, dit_preset=dit, guide_preset=guide,
                                            workloads=name, models=model or "auto", batch_sizes=str(batch),
                                            timed_steps=cfg.timed_steps, warmup=cfg.warmup, device=str(dev)))
                r = res["records"][0]
                out.update(ceiling=res["ceiling"], precision=res["precision"], compile=res["compile"])
                if "error" in r:
                    rec.update(status="failed", error=r["error"])
                else:
                    rate = r["img_per_s"]
                    rec.update(status="ok", img_per_s=rate, mfu=r["mfu"], peak_memory_bytes=r["peak_memory_bytes"],
                               warmup_s=r["warmup_s"], median_step_s=r["median_step_s"], compiled=r["compiled"],
                               flops_per_image=r["flops_per_image"], settings=r["settings"], passed=None)
                    if target is not None:
                        rec.update(ratio=rate / target, vs_reference=rate / reference,
                                   passed=(rate >= target) if cuda else None)
            except Exception as e:  # a broken workload must not stop the acceptance
                rec.update(status="failed", error=f"{type(e).__name__}: {e}"[:600])
        out["records"].append(rec)
        on_record(out)
    bad = [r for r in out["records"] if r["status"] != "ok"]
    if bad:
        out["status"] = "timeout" if all(r["status"] == "timeout" for r in bad) else "failed"
        out["error"] = "; ".join(f"{r['workload']}{' ' + r['model'] if 'model' in r else ''}: {r['error']}"
                                 for r in bad)
    return out


def part_real_run(cfg: AcceptanceConfig, dev: torch.device, deadline: float, logs: Path) -> dict[str, Any]:
    cuda = dev.type == "cuda"
    work = Path(tempfile.mkdtemp(prefix="rectok-acceptance-"))
    rectok = [sys.executable, "-c", "import sys; from rectok_core.tools.acceptance import run_step; "
                                    "run_step(sys.argv[1], sys.argv[2])"]
    preset, size = ("small64", 64) if cuda else ("tiny", 32)
    out: dict[str, Any] = {"status": "ok", "tokenizer_preset": preset, "dit_preset": "tiny", "steps": {}}
    try:
        t0 = time.perf_counter()
        data = make_shapes_folder(work / "data", size=64, per_class=64 if cuda else 8)
        out["data"] = {"images": len(list(data.rglob("*.png"))), "size": 64, "classes": 4,
                       "generated_s": time.perf_counter() - t0}
        tok_ckpt = work / "tok" / "checkpoints" / "latest.pt"
        train_batch = 64 if cuda else 8

        def step(name: str, **options: Any) -> list[str]:  # a child python making the command's library call
            return [*rectok, name, json.dumps({**options, "device": str(dev)})]

        steps = [
            ("train-tokenizer", step("train-tokenizer", preset=preset, data=str(data), steps=cfg.train_steps,
                                     batch_size=train_batch, log_every=max(1, cfg.train_steps // 6),
                                     ckpt_every=cfg.train_steps, image_every=cfg.train_steps, out=str(work / "tok")),
             cfg.train_steps * train_batch),
            ("train-dit", step("train-dit", preset="tiny", tokenizer=str(tok_ckpt), data=str(data),
                               cache_latents=str(work / "cache"), steps=cfg.dit_steps, batch_size=train_batch,
                               log_every=max(1, cfg.dit_steps // 4), ckpt_every=cfg.dit_steps,
                               image_every=cfg.dit_steps, out=str(work / "dit"), compile=False),
             cfg.dit_steps * train_batch),
            ("sample", step("sample", dit_ckpt=str(work / "dit" / "checkpoints" / "latest.pt"), n=cfg.sample_images,
                            steps=26, out=str(work / "samples")), cfg.sample_images),
        ]
        for name, cmd, images in steps:
            res = run_command(cmd, deadline - time.monotonic(), logs / f"{name}.log")
            res["images"] = images
            if res["status"] == "ok":
                res["img_per_s_wall"] = images / res["wall_s"]  # process start-up and compilation included
                run_dir = {"train-tokenizer": work / "tok", "train-dit": work / "dit"}.get(name)
                if run_dir is not None:
                    ms = read_metrics(run_dir)
                    rates = [m["img_per_s"] for m in ms if "img_per_s" in m]
                    first = next((m for m in ms if m.get("event") == "first_step"), {})
                    start = next((m for m in ms if m.get("event") == "start"), {})
                    res.update(img_per_s_logged_last=rates[-1] if rates else None, first_step_s=first.get("seconds"),
                               compile=start.get("compile"), adamw=start.get("adamw"),
                               final_loss=next((m["loss"] for m in reversed(ms) if "loss" in m), None))
            out["steps"][name] = res
            if res["status"] != "ok":
                out.update(status=res["status"], error=f"{name}: {res.get('error', '')}")
                break
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out


#: The commands of the real run, by name: their library calls (config options → result).
REAL_RUN_STEPS = ("train-tokenizer", "train-dit", "sample")


def run_step(name: str, options_json: str) -> None:
    """One step of the real run in this process, as the library call of command ``name`` with the flat options
    ``options_json`` (what :func:`part_real_run` runs in a child python, so the budget can stop it)."""
    import logging

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    options = json.loads(options_json)
    if name == "train-tokenizer":
        print(train_tokenizer(tokenizer_run_config(options)))
    elif name == "train-dit":
        print(train_dit(dit_run_config(options, show=print)))
    elif name == "sample":
        dit = options.pop("dit_ckpt")
        print(sample(dit, from_flags(SampleConfig, options)).out)
    else:
        raise RectokError(f"unknown real-run step {name!r}; choose one of {', '.join(REAL_RUN_STEPS)}")


# ---------------------------------------------------------------------------------------------------------
# The call
# ---------------------------------------------------------------------------------------------------------
def run_acceptance(cfg: AcceptanceConfig, on_part: Callable[[str, dict], None] | None = None) -> dict[str, Any]:
    """Run the parts of ``cfg`` against their deadlines; writes ``<out>/acceptance.json`` after each; returns it."""
    dev = resolve_device(cfg.device)
    cuda = dev.type == "cuda"
    cfg = _defaults(cfg, cuda)
    parts = cfg.part_list()
    out = Path(cfg.out)
    logs = out / "logs"
    t_start = time.monotonic()
    end = t_start + cfg.budget_s
    doc: dict[str, Any] = {
        "format": FORMAT, "version": VERSION, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "finished": None, "device": {"type": dev.type, "name": device_name(dev)}, "torch": torch.__version__,
        "cuda": torch.version.cuda if cuda else None, "budget_s": cfg.budget_s, "elapsed_s": 0.0,
        "targets": {k: {"target": t, "reference_h100": r, "unit": u} for k, (t, r, u) in TARGETS.items()},
        "targets_judged": cuda, "config": cfg.__dict__, "parts": {p: {"status": "pending"} for p in parts},
    }
    path = out / "acceptance.json"

    def save() -> None:
        doc["elapsed_s"] = round(time.monotonic() - t_start, 2)
        try:
            write_json_atomic(path, doc, indent=2, default=str)
        except OSError as e:
            raise RectokError(f"cannot write {path}: {e.strerror or e}") from None

    save()
    for i, name in enumerate(parts):
        left = end - time.monotonic()
        share = 1.0 if i == len(parts) - 1 else SHARES.get(name, 0.5)
        deadline = time.monotonic() + max(0.0, left * share)
        t0 = time.monotonic()
        doc["parts"][name] = {"status": "running", "deadline_s": round(deadline - t0, 1)}
        save()
        try:
            if name == "cuda_tests":
                res = part_cuda_tests(cfg, dev, deadline, logs)
            elif name == "bench":
                def partial(state: dict) -> None:
                    doc["parts"]["bench"] = {**state, "status": "running"}
                    save()
                res = part_bench(cfg, dev, deadline, partial)
            else:
                res = part_real_run(cfg, dev, deadline, logs)
        except Exception as e:
            res = {"status": "failed", "error": f"{type(e).__name__}: {e}"[:600]}
        res["wall_s"] = round(time.monotonic() - t0, 2)
        res["deadline_s"] = round(deadline - t0, 1)
        doc["parts"][name] = res
        save()
        if on_part is not None:
            on_part(name, res)
    doc["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    doc["summary"] = summary(doc)
    save()
    return doc


def summary(doc: dict[str, Any]) -> dict[str, Any]:
    """Per part its status; the targets met (None off CUDA); ``ok`` when every part ran without failure."""
    bench = doc["parts"].get("bench", {})
    flags = [r.get("passed") for r in bench.get("records", []) if r.get("target") is not None]
    return {"parts": {k: v.get("status") for k, v in doc["parts"].items()},
            "targets_met": (all(f is True for f in flags) if flags else None) if doc["targets_judged"] else None,
            "ok": all(v.get("status") in ("ok", "passed", "skipped") for v in doc["parts"].values())}


def load(path: str | os.PathLike[str]) -> dict[str, Any]:
    return json.loads(Path(path).read_text())
