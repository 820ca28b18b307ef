"""Training-engine pieces shared by every training command: optimizer groups, learning-rate schedules, EMA,
precision, per-step random generators, the non-finite guard and the progress display.

The loops themselves live next to their task (``train_tokenizer.py`` for both tokenizer stages,
``train_dit.py``) so each one reads top to bottom on one screen.
"""
from __future__ import annotations

import contextlib
import copy
import math
import os
import sys
import time
from typing import Iterable

import torch
import torch.nn as nn

from rectok_core.errors import RectokError

NO_DECAY_KEYS = ("ln", "bias", "embedding", "norm", "gamma", "embed", "token", "diffloss")


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups with the official no-decay rule: ``ndim < 2`` or a name containing any of
    ``ln, bias, embedding, norm, gamma, embed, token, diffloss`` (so patch/decoder embeddings are excluded)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or any(k in name for k in NO_DECAY_KEYS) else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def adamw(groups: list[dict] | Iterable[torch.nn.Parameter], lr: float, betas: tuple[float, float],
          device: torch.device, weight_decay: float = 0.0) -> torch.optim.AdamW:
    """AdamW, fused on CUDA (one kernel for all parameters), foreach on CPU."""
    fused = device.type == "cuda"
    return torch.optim.AdamW(groups, lr=lr, betas=betas, weight_decay=weight_decay,
                             fused=fused, foreach=None if fused else True)


def set_lr(optimizers: Iterable[torch.optim.Optimizer], lr: float) -> None:
    for opt in optimizers:
        for g in opt.param_groups:
            g["lr"] = lr


def warmup_cosine(step: int, total: int, warmup: int, base: float, minimum: float = 0.0) -> float:
    """Per-step linear warm-up from 0, then a half cosine from ``base`` to ``minimum`` at ``total``."""
    if step < warmup:
        return base * step / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return minimum + (base - minimum) * 0.5 * (1 + math.cos(math.pi * progress))


def hold_then_linear(step: int, hold: int, end: int, base: float, final: float) -> float:
    """Constant ``base`` until ``hold``, linear to ``final`` at ``end``, constant after (DiT^DH schedule)."""
    if step <= hold:
        return base
    if step >= end:
        return final
    return base + (final - base) * (step - hold) / (end - hold)


class EMA:
    """Exponential moving average of the *trainable* parameters of a model, held as a full module copy.

    Frozen parameters and buffers are copied from the live model, never averaged (recipe §11.5): a frozen
    encoder stays bit-identical in the EMA.
    """

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        self._pairs(model)

    def _pairs(self, model: nn.Module) -> None:
        live = dict(model.named_parameters())
        self.names = [n for n, p in live.items() if p.requires_grad]
        ema = dict(self.module.named_parameters())
        self.ema_params = [ema[n] for n in self.names]
        self.live_params = [live[n] for n in self.names]

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        torch._foreach_lerp_(self.ema_params, self.live_params, 1.0 - self.decay)
        for b_ema, b in zip(self.module.buffers(), model.buffers()):
            b_ema.copy_(b)

    def state_dict(self) -> dict:
        return self.module.state_dict()

    def load_state_dict(self, state: dict) -> None:
        from rectok_core.utils.checkpoint import load_state_strict
        load_state_strict(self.module, state, "EMA weights")


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA by default; fp32 elsewhere unless asked."""
    if resolve_precision(device, precision) == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def resolve_precision(device: torch.device, precision: str) -> str:
    if precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    return precision


#: The torch.compile backend (``RECTOK_COMPILE_BACKEND=eager`` or ``aot_eager`` to debug or test the wiring).
COMPILE_BACKEND = os.environ.get("RECTOK_COMPILE_BACKEND", "inductor")


def resolve_compile(setting: bool | None, device: torch.device) -> bool:
    """``--compile/--no-compile``; not given (None, "auto") means on for CUDA, off elsewhere."""
    return device.type == "cuda" if setting is None else bool(setting)


def maybe_compile(module, enabled: bool, **kwargs):
    """``torch.compile(module)`` with :data:`COMPILE_BACKEND` when ``enabled``, else ``module`` unchanged."""
    return torch.compile(module, backend=COMPILE_BACKEND, **kwargs) if enabled else module


def cuda_fast_paths(device: torch.device) -> None:
    """TF32 matmuls/convolutions and cuDNN autotuning (fixed image sizes) on CUDA, as the official runs."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on CPU): for wall-clock timing."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class StepRandom:
    """Random generators re-seeded from (seed, rank, step) at every step.

    All randomness of a training step (mask ratio and permutation, t, flow noise, posterior samples, label
    dropout) comes from these, so a resumed run continues exactly, whatever happened before the checkpoint.
    """

    def __init__(self, seed: int, rank: int, device: torch.device):
        self.seed, self.rank = seed, rank
        self.device = torch.Generator(device)
        self.cpu = torch.Generator("cpu")

    def at(self, step: int) -> "StepRandom":
        s = (self.seed * 1_000_003 + self.rank * 7_919 + step * 104_729) % (2 ** 63)
        self.device.manual_seed(s)
        self.cpu.manual_seed(s + 1)
        return self

    def uniform(self, lo: float, hi: float) -> float:
        return lo + (hi - lo) * torch.rand((), generator=self.cpu).item()


class FiniteGuard:
    """Accumulates a device-side 'all finite' flag so the step never waits on the host; checked at log and
    checkpoint steps (every step on CPU, where checking is free)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.ok = torch.ones((), dtype=torch.bool, device=device)
        self.first_bad: dict | None = None

    def observe(self, step: int, losses: dict[str, torch.Tensor]) -> None:
        flags = torch.stack([torch.isfinite(v.detach()).all() for v in losses.values()])
        self.ok &= flags.all()
        if self.device.type == "cpu" and not self.ok and self.first_bad is None:
            self.first_bad = {"step": step, "terms": [k for k, f in zip(losses, flags) if not f]}

    def check(self, step: int, last_good: str) -> None:
        from rectok_core.utils.distributed import all_reduce_sum

        bad = all_reduce_sum((~self.ok).int())  # every rank stops together
        if bool(bad):
            where = self.first_bad or {"step": f"≤{step}", "terms": ["?"]}
            raise NonFiniteLoss(f"non-finite loss ({', '.join(where['terms'])}) at step {where['step']}: "
                                f"training stopped; the last good checkpoint is kept at {last_good}")


class NonFiniteLoss(RectokError):
    pass


class MetricWindow:
    """Running sums of a step's loss terms on the device, averaged (one host sync) at each log step."""

    def __init__(self):
        self.sums: dict[str, torch.Tensor] = {}
        self.n = 0

    def add(self, terms: dict[str, torch.Tensor]) -> None:
        for k, v in terms.items():
            self.sums[k] = self.sums.get(k, 0) + v.detach().float()
        self.n += 1

    def means(self) -> dict[str, float]:
        """The window's averages; the window starts again empty."""
        vals = torch.stack(list(self.sums.values())).cpu().tolist() if self.sums else []
        out = {k: v / max(self.n, 1) for k, v in zip(self.sums, vals)}
        self.sums, self.n = {}, 0
        return out


class Throughput:
    """Images per second over the last logging window, device-synchronised."""

    def __init__(self, device: torch.device):
        self.device = device
        self.t0 = time.perf_counter()
        self.n = 0

    def add(self, n: int) -> None:
        self.n += n

    def rate(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        t = time.perf_counter()
        r = self.n / max(t - self.t0, 1e-9)
        self.t0, self.n = t, 0
        return r


def progress(total: int, initial: int, desc: str, enabled: bool):
    """A tqdm bar on the main process (plain periodic lines when not attached to a terminal)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, disable=not enabled, dynamic_ncols=True,
                mininterval=1.0 if sys.stderr.isatty() else 30.0, file=sys.stderr)


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module under DDP and torch.compile wrappers."""
    while True:
        if hasattr(model, "module"):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model

