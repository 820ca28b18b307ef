"""``rectok bench``: throughput, memory, FLOPs and MFU of every hot loop, timed on the code the commands run.

Workloads (:data:`WORKLOADS`), each built from random-initialised weights (teachers with ``--teacher-init random``
for DINO; the Inception teachers are small and real offline; LPIPS/ConvNeXt with random backbones) and random
inputs already on the device — data loading is not part of the measurement:

* ``tokenizer-gan`` / ``tokenizer-nogan`` — one stage-1 optimizer step, :meth:`TokenizerTrainer.step` (the
  training loop's own step): mask, encoder, posterior, flow noise, pixel and semantic decoders, teacher,
  MSE + perceptual + KL + cosine (+ GAN) losses, backward, clip, AdamW, EMA (+ the discriminator step).
* ``decoder-ft`` — one stage-2 step (frozen encoder, the ``finetune-decoder`` preset's losses).
* ``dit-cached`` / ``dit-online`` — one DiT^DH step, :meth:`DiTTrainer.step`, from posterior moments (latent
  cache) or from images encoded by the tokenizer inside the step (the official online mode).
* ``sample-cfg`` / ``sample-autoguidance`` — one Euler step of the sampler: ``sampling.generate.build_velocity`` (CFG
  with w = 1.5 on a doubled batch; AutoGuidance with w = 1.29 and a smaller guide) integrated by
  ``flow.solvers.sample_ode`` under autocast, as ``rectok sample`` does.
* ``encode`` / ``decode`` — tokenizer inference (``data.latent_stats.encode_moments``, ``sampling.generate.decode_latents``).
* ``probe-features`` — ``probe.encode_pooled``: posterior mean + mean pooling, as ``probe-flow``.
* ``generator-train`` / ``generator-sample`` (not in ``all``; ``--workloads generators``) — per ``--models``
  generator of any family (:data:`rectok_core.models.generators.GENERATORS`; auto: every family's xl on CUDA,
  tiny on CPU): one ``DiTTrainer.step`` with the family's objective from cached moments (as ``train-dit --model``),
  and one CFG sampling step (an Euler update; for the diffusion family DiT one ancestral step of its own sampler).
  Their records carry ``model``.

Per workload: ``warmup`` untimed steps, then ``steps`` steps each timed by the wall clock between device
synchronisations (``torch.cuda.synchronize`` on CUDA); img/s = batch / median step time. FLOPs are counted by
``torch.utils.flop_counter.FlopCounterMode`` over further eager steps (matmuls, convolutions, attention —
forward and backward for training steps, averaged over 3 steps since the mask ratio changes the token count;
elementwise work is not counted). MFU = achieved FLOP/s ÷ the
matmul ceiling measured at start-up (a large bf16 matmul on CUDA, fp32 on CPU, in the run's precision).
"""
from __future__ import annotations

import gc
import os
import platform
import resource
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from rectok_core.errors import RectokError
from rectok_core.tools.bench_workloads import (
    GUIDE_FOR,
    TRAINING,
    Context,
    Workload,
    build_workload,
    default_batch,
)
from rectok_core.tools.config import GENERATOR_WORKLOADS, WORKLOADS, BenchConfig  # noqa: F401 - re-exported
from rectok_core.utils.distributed import resolve_device
from rectok_core.utils.files import write_json_atomic
from rectok_core.utils.runtime import cuda_fast_paths, resolve_compile, resolve_precision, synchronize

FORMAT = "rectok-bench"


VERSION = 1




FLOP_STEPS = 3  # eager steps whose FLOP counts are averaged for a training workload




# ---------------------------------------------------------------------------------------------------------
# Measurement helpers
# ---------------------------------------------------------------------------------------------------------
def median(values: Sequence[float]) -> float:
    """The median (the mean of the two middle values for an even count)."""
    if not values:
        raise ValueError("median of no values")
    s = sorted(values)
    mid = len(s) // 2
    return float(s[mid]) if len(s) % 2 else 0.5 * (s[mid - 1] + s[mid])


def time_steps(fn: Callable[[], Any], steps: int, warmup: int, device: torch.device
               ) -> tuple[list[float], float]:
    """Run ``fn`` ``warmup`` times untimed, then ``steps`` times each timed between device synchronisations.
    Returns (seconds per timed step, seconds of the whole warm-up)."""
    synchronize(device)
    t0 = time.perf_counter()
    for _ in range(warmup):
        fn()
    synchronize(device)
    warm = time.perf_counter() - t0
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - t)
    return times, warm


def _sdpa_cpu_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    from torch.utils.flop_counter import sdpa_flop_count

    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _sdpa_cpu_backward_flops(grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None,
                             **kwargs) -> int:
    from torch.utils.flop_counter import sdpa_backward_flop_count

    return sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)


def count_flops(fn: Callable[[], Any]) -> int:
    """FLOPs of one call of ``fn`` (matmuls, convolutions, attention; forward and any backward it runs) by
    ``FlopCounterMode``, which also counts the CPU flash-attention kernels (PyTorch leaves them out)."""
    from torch.utils.flop_counter import FlopCounterMode

    aten = torch.ops.aten
    mapping = {}
    if hasattr(aten, "_scaled_dot_product_flash_attention_for_cpu"):
        mapping[aten._scaled_dot_product_flash_attention_for_cpu] = _sdpa_cpu_flops
        mapping[aten._scaled_dot_product_flash_attention_for_cpu_backward] = _sdpa_cpu_backward_flops
    with FlopCounterMode(display=False, custom_mapping=mapping) as counter:
        fn()
    return int(counter.get_total_flops())


def matmul_ceiling(device: torch.device, precision: str, n: int | None = None, reps: int | None = None
                   ) -> dict[str, Any]:
    """The device's measured matmul rate: an ``n×n @ n×n`` product (bf16 for bf16 runs, else fp32; TF32 as the
    commands set it on CUDA) repeated ``reps`` times, best of 3 rounds, in TFLOP/s."""
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    n = n or (8192 if device.type == "cuda" else 1024)
    reps = reps or (20 if device.type == "cuda" else 5)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    best = 0.0
    for _ in range(3):
        synchronize(device)
        t = time.perf_counter()
        for _ in range(reps):
            a @ b
        synchronize(device)
        best = max(best, 2 * n ** 3 * reps / (time.perf_counter() - t))
    return {"tflops": best / 1e12, "dtype": str(dtype).replace("torch.", ""), "n": n, "reps": reps,
            "method": f"best of 3 rounds of {reps} {n}x{n} matmuls, wall clock between device synchronisations"}


def peak_memory_kind(device: torch.device) -> str:
    return "cuda_max_memory_allocated" if device.type == "cuda" else "cpu_max_rss"


def _peak_memory(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # Linux reports KiB


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            name = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), name)
    except OSError:
        pass
    return f"{name} ({os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads)"


# ---------------------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------------------
def measure(w: Workload, ctx: Context, ceiling_tflops: float) -> dict[str, Any]:
    """Time, FLOP-count and memory-profile one built workload."""
    times, warm = time_steps(w.run, ctx.cfg.timed_steps, ctx.cfg.warmup, ctx.device)
    peak = _peak_memory(ctx.device)
    # training steps draw a new mask ratio (tokenizer) every step: average the count over a few steps
    n = FLOP_STEPS if w.name in TRAINING else 1
    flops = sum(count_flops(w.run_eager) for _ in range(n)) / n
    med = median(times)
    achieved = flops / med / 1e12
    return {
        "workload": w.name, "batch_size": w.batch, "img_per_s": w.batch / med, "median_step_s": med,
        "min_step_s": min(times), "max_step_s": max(times), "timed_steps": len(times),
        "warmup_steps": ctx.cfg.warmup, "warmup_s": warm, "compiled": w.compiled,
        "peak_memory_bytes": peak, "flops_per_step": flops, "flops_per_image": flops / w.batch,
        "flops_counted": "forward+backward" if w.name in TRAINING else "forward",
        "tflops_per_s": achieved, "mfu": achieved / ceiling_tflops if ceiling_tflops > 0 else None,
        "params": w.params, "settings": w.settings,
    }


def run_bench(cfg: BenchConfig, on_record: Callable[[dict], None] | None = None) -> dict[str, Any]:
    """Run every (workload, batch size) of ``cfg``; returns the result document (see :func:`write_result`)."""
    cfg.validate()
    dev = resolve_device(cfg.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RectokError(f"--device {cfg.device}: CUDA is not available on this machine")
    cuda_fast_paths(dev)
    precision = resolve_precision(dev, cfg.precision)
    compiled = resolve_compile(cfg.compile, dev)
    tok = cfg.tokenizer_preset if cfg.tokenizer_preset != "auto" else ("base" if dev.type == "cuda" else "tiny")
    dit = cfg.dit_preset if cfg.dit_preset != "auto" else ("XL" if dev.type == "cuda" else "tiny")
    guide = cfg.guide_preset if cfg.guide_preset != "auto" else GUIDE_FOR[dit]
    ctx = Context(cfg, dev, precision, compiled, tok, dit, guide)
    workloads = cfg.workload_list()
    models = cfg.model_list(dev.type == "cuda") if any(w in GENERATOR_WORKLOADS for w in workloads) else []
    # the DiT^DH / tokenizer workloads in order, then per generator model its generator workloads
    jobs = [(name, None) for name in workloads if name not in GENERATOR_WORKLOADS]
    jobs += [(name, m) for m in models for name in workloads if name in GENERATOR_WORKLOADS]
    ceiling = matmul_ceiling(dev, precision)
    records = []
    for name, model in jobs:
        for batch in cfg.batch_list() or [default_batch(ctx, name, model)]:
            if compiled:
                torch._dynamo.reset()  # fresh caches: no recompile limit carried over from another workload
            if dev.type == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(dev)
            torch.manual_seed(0)
            try:
                w = build_workload(ctx, name, batch, model)
                rec = measure(w, ctx, ceiling["tflops"])
            except torch.cuda.OutOfMemoryError:
                rec = {"workload": name, "batch_size": batch, "error": "CUDA out of memory"}
            finally:
                w = None
                gc.collect()
            if model is not None:
                rec = {"workload": name, "model": model, **{k: v for k, v in rec.items() if k != "workload"}}
            records.append(rec)
            if on_record is not None:
                on_record(rec)
    extra = {"models": models} if models else {}
    return {
        "format": FORMAT, "version": VERSION, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "device": {"type": dev.type, "name": device_name(dev)}, "torch": torch.__version__,
        "cuda": torch.version.cuda if dev.type == "cuda" else None, "precision": precision, "compile": compiled,
        "presets": {"tokenizer": tok, "dit": dit, "guide": guide}, **extra, "timed_steps": cfg.timed_steps, "warmup": cfg.warmup,
        "ceiling": ceiling, "peak_memory": peak_memory_kind(dev) + (
            ": torch.cuda.max_memory_allocated, reset before each workload" if dev.type == "cuda" else
            ": the process's resident-set high-water mark (getrusage ru_maxrss) so far, not per workload"),
        "timing": "median of per-step wall times between device synchronisations, after warm-up steps; inputs "
                  "already on the device (data loading excluded)",
        "flops": "torch.utils.flop_counter.FlopCounterMode over eager steps (training: forward+backward, mean of "
                 f"{FLOP_STEPS} steps; inference: forward, one step): matmuls, convolutions and attention; "
                 "elementwise work not counted",
        "mfu": "achieved FLOP/s (counted FLOPs / median step time) / the measured matmul ceiling",
        "records": records,
    }


def write_result(result: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write the result JSON atomically (creating the folder)."""
    path = Path(path)
    try:
        write_json_atomic(path, result, indent=2, default=_jsonable)
    except OSError as e:
        raise RectokError(f"cannot write --out {path}: {e.strerror or e}") from None
    return path


def _jsonable(x: Any) -> Any:
    return x.item() if isinstance(x, torch.Tensor) and x.numel() == 1 else str(x)

