"""Training-engine pieces shared by every training command: optimizer groups, learning-rate schedules, EMA,
per-step random generators, the non-finite guard, stop requests and metric windows (optimisation only; device,
precision and compile helpers are in :mod:`rectok_core.utils.runtime`).

The loops themselves live next to their task (``training/tokenizer.py`` for both tokenizer stages,
``training/dit.py``) so each one reads top to bottom on one screen.
"""
from __future__ import annotations

import copy
import math
import os
import time
from collections.abc import Iterable
from typing import Any

import torch
import torch.nn as nn

from rectok_core.errors import RectokError, Stopped
from rectok_core.utils.checkpoint import load_state_strict
from rectok_core.utils.distributed import all_reduce_sum

NO_DECAY_KEYS = ("ln", "bias", "embedding", "norm", "gamma", "embed", "token")


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups with the official no-decay rule: ``ndim < 2`` or a name containing any of
    ``ln, bias, embedding, norm, gamma, embed, token`` (so patch/decoder embeddings are excluded)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or any(k in name for k in NO_DECAY_KEYS) else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


#: The AdamW implementations ``adamw`` chooses from (``RECTOK_ADAMW`` forces one; default ``auto``).
ADAMW_IMPLS = ("fused", "foreach", "for-loop")


def adamw_impl(device: torch.device) -> str:
    """The AdamW implementation for ``device``: ``fused`` wherever PyTorch has the fused kernel (CUDA; CPU since
    torch 2.4), else ``foreach``. Measured on one CPU thread (docs/performance.md, "AdamW on CPU"), fused is the
    fastest at every model size (tiny 0.48 ms, small64 7.1 ms, base 98 ms per step, against foreach 1.7 / 35 /
    759 ms and the for-loop 2.2 / 16 / 573 ms), so no size threshold is needed; the choice is deterministic
    (a resumed run uses the same arithmetic). ``RECTOK_ADAMW=fused|foreach|for-loop`` overrides it."""
    forced = os.environ.get("RECTOK_ADAMW", "auto").strip().lower()
    if forced != "auto":
        if forced not in ADAMW_IMPLS:
            raise RectokError(f"RECTOK_ADAMW={forced!r}: use auto, {', '.join(ADAMW_IMPLS)}")
        return forced
    try:
        from torch.utils._foreach_utils import _get_fused_kernels_supported_devices
        fused_ok = device.type in _get_fused_kernels_supported_devices()
    except ImportError:  # pragma: no cover - older torch
        fused_ok = device.type == "cuda"
    return "fused" if fused_ok else "foreach"


def adamw(groups: list[dict] | Iterable[torch.nn.Parameter], lr: float, betas: tuple[float, float],
          device: torch.device, weight_decay: float = 0.0) -> torch.optim.AdamW:
    """AdamW in the implementation :func:`adamw_impl` picks for ``device`` (see :func:`optimizer_impl`)."""
    impl = adamw_impl(device)
    return torch.optim.AdamW(groups, lr=lr, betas=betas, weight_decay=weight_decay,
                             fused=impl == "fused", foreach={"fused": None, "foreach": True}.get(impl, False))


def optimizer_impl(opt: torch.optim.Optimizer) -> str:
    """``fused``, ``foreach`` or ``for-loop``: the implementation an optimizer runs (logged in the start event)."""
    d = opt.defaults
    return "fused" if d.get("fused") else "foreach" if d.get("foreach") else "for-loop"


def set_lr(optimizers: Iterable[torch.optim.Optimizer], lr: float) -> None:
    for opt in optimizers:
        for g in opt.param_groups:
            g["lr"] = lr


def warmup_cosine(step: int, total: int, warmup: int, base: float, minimum: float = 0.0) -> float:
    """Per-step linear warm-up from 0, then a half cosine from ``base`` to ``minimum`` at ``total``."""
    if step < warmup:
        return base * step / warmup
    done = min(1.0, (step - warmup) / max(1, total - warmup))
    return minimum + (base - minimum) * 0.5 * (1 + math.cos(math.pi * done))


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
        load_state_strict(self.module, state, "EMA weights")


class StepRandom:
    """Random generators re-seeded from (seed, rank, step) at every step.

    All randomness of a training step (mask ratio and permutation, t, flow noise, posterior samples, label
    dropout) comes from these, so a resumed run continues exactly, whatever happened before the checkpoint.
    """

    def __init__(self, seed: int, rank: int, device: torch.device):
        self.seed, self.rank = seed, rank
        self.device = torch.Generator(device)
        self.cpu = torch.Generator("cpu")

    def at(self, step: int) -> StepRandom:
        s = (self.seed * 1_000_003 + self.rank * 7_919 + step * 104_729) % (2 ** 63)
        self.device.manual_seed(s)
        self.cpu.manual_seed(s + 1)
        return self

    def uniform(self, lo: float, hi: float) -> float:
        return lo + (hi - lo) * torch.rand((), generator=self.cpu).item()


class FiniteGuard:
    """Never lets a non-finite state reach a checkpoint.

    :meth:`observe` runs every step on the loss terms *and* the gradient norm (a finite loss with a NaN gradient
    poisons every weight); the flag and the first bad step accumulate on the device, so a CUDA step never waits on
    the host; :meth:`check` reads them (every step on CPU, at log and checkpoint steps elsewhere).
    :meth:`check_state` looks at every parameter and EMA tensor right before a save (cheap at checkpoint time): all
    finite, and none larger in magnitude than :data:`WEIGHT_BOUND` (weights that big have already exploded: a
    checkpoint of them is finite but useless, so it is not written either).
    :meth:`saved` records the last finite checkpoint, which the error names (path and step), or says none exists.
    """

    #: The largest |weight| a healthy run reaches (trained transformer weights stay well below 100).
    WEIGHT_BOUND = 1e4

    def __init__(self, device: torch.device, kept: tuple[str, int] | None = None):
        self.device = device
        self.ok = torch.ones((), dtype=torch.bool, device=device)
        self.bad_step = torch.zeros((), dtype=torch.int64, device=device)
        self.bad_terms: dict[str, torch.Tensor] = {}
        self.kept = kept  # (path, step) of the last finite checkpoint

    def observe(self, step: int, terms: dict[str, torch.Tensor]) -> None:
        flags = {k: torch.isfinite(v.detach()).all() for k, v in terms.items() if torch.is_tensor(v)}
        all_ok = torch.stack(list(flags.values())).all()
        newly = self.ok & ~all_ok  # the first bad step only
        self.bad_step = torch.where(newly, torch.full_like(self.bad_step, step), self.bad_step)
        for k, f in flags.items():
            prev = self.bad_terms.get(k, torch.zeros((), dtype=torch.bool, device=self.device))
            self.bad_terms[k] = prev | (newly & ~f)
        self.ok &= all_ok

    def saved(self, path: str | os.PathLike, step: int) -> None:
        self.kept = (str(path), step)

    def kept_text(self) -> str:
        if self.kept is None:
            return ("no finite checkpoint was written, so there is nothing to resume from: start again with a "
                    "smaller --lr (or --blr), a longer --warmup or a tighter --grad-clip")
        return (f"the last finite checkpoint is {self.kept[0]} (step {self.kept[1]}): --resume with a smaller --lr "
                f"(or --blr), a longer --warmup or a tighter --grad-clip continues from it (earlier ones: "
                f"recent_*.pt beside it)")

    def check(self, step: int) -> None:
        bad = all_reduce_sum((~self.ok).int())  # every rank stops together
        if bool(bad):
            bad_keys = [k for k, v in self.bad_terms.items() if bool(v)]
            losses = [k for k in bad_keys if k != "grad_norm"]
            what = " and ".join(([f"loss ({', '.join(losses)})"] if losses else [])
                                + (["gradient norm"] if "grad_norm" in bad_keys else [])) or "loss (on another process)"
            at = int(self.bad_step) or f"<= {step}"
            raise NonFiniteLoss(f"non-finite {what} at step {at}: training stopped; {self.kept_text()}")

    def check_state(self, step: int, modules: dict[str, Iterable[torch.Tensor]]) -> None:
        """Before saving at ``step``: every floating tensor of ``modules`` (name → tensors) must be finite."""
        bad_names, peak = [], 0.0
        for name, tensors in modules.items():
            ts = [t.detach() for t in tensors if torch.is_tensor(t) and t.is_floating_point() and t.numel()]
            if ts and not bool(torch.stack([torch.isfinite(t).all() for t in ts]).all()):
                bad_names.append(name)
            elif ts:
                peak = max(peak, float(torch.stack([t.abs().max().float() for t in ts]).max()))
        if bool(all_reduce_sum(torch.tensor(len(bad_names), device=self.device))):
            raise NonFiniteLoss(f"non-finite {' and '.join(bad_names) or 'weights'} at step {step} (not saved): "
                                f"training stopped; {self.kept_text()}")
        if bool(all_reduce_sum(torch.tensor(int(peak > self.WEIGHT_BOUND), device=self.device))):
            raise NonFiniteLoss(f"exploding weights at step {step} (max |w| = {peak:.3g} > {self.WEIGHT_BOUND:g}; "
                                f"not saved): training stopped; {self.kept_text()}")


class NonFiniteLoss(RectokError):
    pass


class StopRequest:
    """SIGTERM (and SIGINT) during a training loop: the loop finishes its step, saves a checkpoint when the state
    is finite and stops with :class:`Stopped` (exit 143 for SIGTERM, 130 for Ctrl-C). Use as a context manager;
    outside the main thread it does nothing."""

    def __init__(self):
        self.signum: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> StopRequest:
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.signum is not None:  # a second signal: stop now
            raise KeyboardInterrupt
        self.signum = signum

    def __exit__(self, *exc) -> None:
        import signal

        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def poll(self, step: int, every: int, distributed: bool, device: torch.device) -> bool:
        """Whether to stop after ``step``: at once on one process; with several, at log steps when any process
        got a signal (every rank stops at the same step)."""
        if not distributed:
            return self.requested
        if step % every:
            return False
        return bool(all_reduce_sum(torch.tensor(int(self.requested), device=device)))

    def stop(self, step: int, saved: str | None) -> None:
        import signal

        name = "SIGTERM" if self.signum == signal.SIGTERM else "Ctrl-C"
        where = f"checkpoint {saved} (step {step}) written" if saved else "no checkpoint written (state not finite)"
        raise Stopped(f"{name}: stopped after step {step}; {where}", 128 + (self.signum or 2))


class MetricWindow:
    """Running sums of a step's loss terms on the device, averaged (one host sync) at each log step. Checkpoints
    carry it (:meth:`state_dict`), so the first row logged after a resume averages the same steps as an
    uninterrupted run's."""

    def __init__(self):
        self.sums: dict[str, torch.Tensor] = {}
        self.n = 0

    def state_dict(self) -> dict[str, Any]:
        return {"n": self.n, "sums": {k: v.detach().cpu() for k, v in self.sums.items()}}

    def load_state_dict(self, state: dict[str, Any], device: torch.device) -> None:
        self.n = int(state["n"])
        self.sums = {k: v.to(device) for k, v in state["sums"].items()}

    def add(self, terms: dict[str, torch.Tensor]) -> None:
        for k, v in terms.items():
            self.sums[k] = self.sums.get(k, 0) + v.detach().float()
        self.n += 1

    def means(self, reset: bool = True) -> dict[str, float]:
        """The window's averages; the window starts again empty (unless not ``reset``: a run's last row off the
        ``--log-every`` grid, whose checkpoint keeps the window for a resumed run's next row)."""
        vals = torch.stack(list(self.sums.values())).cpu().tolist() if self.sums else []
        out = {k: v / max(self.n, 1) for k, v in zip(self.sums, vals)}
        if reset:
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





