"""Pieces shared by the training loops: the resumable batch stream, start-up logging and :class:`TrainLoop`,
the scaffold around a loop's own optimizer step (resume, guards, logging, previews, checkpoints, stop signals)."""
from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch

from rectok_core.config import to_dict
from rectok_core.data.datasets import describe_dataset
from rectok_core.data.sampler import ResumableSampler, build_loader, drop_bad
from rectok_core.errors import DataError
from rectok_core.training.engine import EMA, FiniteGuard, MetricWindow, StepRandom, StopRequest, Throughput, set_lr
from rectok_core.training.evaluation import eval_mode, isolated_rng, record_eval
from rectok_core.training.milestones import milestone_steps
from rectok_core.training.rundir import RunDir
from rectok_core.utils import checkpoint, distributed
from rectok_core.utils.progress import progress
from rectok_core.utils.runtime import synchronize

logger = logging.getLogger(__name__)


def log_first_step(run: RunDir, step: int, t0: float, device: torch.device, compiled: bool) -> None:
    """Log the wall time of a run's first step (with torch.compile: mostly the compilation warm-up)."""
    synchronize(device)
    seconds = round(time.perf_counter() - t0, 3)
    run.log({"event": "first_step", "step": step, "seconds": seconds, "compile": compiled})
    if compiled and run.is_main:
        logger.info("first step (torch.compile warm-up included): %.1f s", seconds)


def plan_steps(dataset, R, d: distributed.Dist) -> tuple[ResumableSampler, int, int, int]:
    """The run's shuffling, flipping sampler over ``dataset`` (``R``: the run config), with the optimizer steps
    per epoch, the total steps (``R.steps``, else ``R.epochs`` worth) and the global batch."""
    sampler = ResumableSampler(len(dataset), d.rank, d.world_size, seed=R.seed, shuffle=True, flip=True,
                               drop_last=True, batch_size=R.batch_size)
    steps_per_epoch = sampler.steps_per_epoch // R.grad_accum
    if steps_per_epoch == 0:
        raise DataError(f"{R.data}: {len(dataset)} images are fewer than one step of "
                        f"{R.batch_size}×{R.grad_accum}×{d.world_size} images")
    total = R.steps or math.ceil(R.epochs * steps_per_epoch)
    if d.is_main:
        logger.info(describe_dataset(dataset))  # how many images and classes, and which (split) folder
    return sampler, steps_per_epoch, total, R.batch_size * R.grad_accum * d.world_size


class Batches:
    """Endless micro-batches from a resumable sampler: sets the epoch every epoch and can start mid-epoch."""

    def __init__(self, dataset, sampler: ResumableSampler, batch_size: int, per_epoch: int, workers: int,
                 device: torch.device):
        self.sampler = sampler
        self.batch_size, self.per_epoch = batch_size, per_epoch  # micro-batches used per epoch
        self.loader = build_loader(dataset, sampler, batch_size, workers, device.type == "cuda")
        self.bad = 0

    def start(self, epoch: int, skip_batches: int) -> None:
        self.epoch, self.left = epoch, self.per_epoch - skip_batches
        self.sampler.set_epoch(epoch)  # every epoch (the official code never does)
        self.sampler.set_start(skip_batches * self.batch_size)
        self.it = iter(self.loader)  # the loader re-reads the sampler; persistent workers stay up

    def next(self) -> dict:
        empty = 0  # micro-batches in a row that lost every sample: a whole epoch of them is an error, not a hang
        while True:
            if self.left == 0:
                self.start(self.epoch + 1, 0)
            self.left -= 1
            batch, n_bad = drop_bad(next(self.it))
            self.bad += n_bad
            if batch["index"].shape[0] > 0:  # every sample kind (images, cached latents) has an index
                return batch
            empty += 1
            if empty >= max(1, self.per_epoch):
                raise DataError(f"a whole epoch ({empty} batches) had no readable sample: {self.bad} unreadable "
                                f"samples skipped so far")



def config_changes(old: dict, new: dict, prefix: str = "", defaults: dict | None = None) -> dict[str, tuple[Any, Any]]:
    """``{dotted.key: (old, new)}`` for the settings a resume changed (``run.resume`` itself left out).

    A setting the saved config lacks (added to rectok after the run started) counts as changed only when the new
    value differs from its default in ``defaults`` (the config class's defaults, same nesting)."""
    out: dict[str, tuple[Any, Any]] = {}
    defaults = defaults or {}
    for k in sorted(set(old) | set(new)):
        key, a, b = f"{prefix}{k}", old.get(k), new.get(k)
        default = defaults.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out.update(config_changes(a, b, f"{key}.", default if isinstance(default, dict) else None))
        elif k not in old and k in defaults and b == default:
            continue
        elif a != b and key != "run.resume":
            out[key] = (a, b)
    return out


class TrainLoop:
    """What every training loop does around its own optimizer step.

    :meth:`restore` loads a resumed checkpoint (model, EMA, optimizer, RNG, step) and records the run's config,
    :meth:`batches` starts the micro-batch stream at the restored step, and :meth:`run` steps to ``total``: the
    learning rate, the step randomness, the finite-guard checks, the metric window logged every ``log_every``
    steps, previews every ``image_every``, checkpoints every ``ckpt_every`` (milestones at the ``--milestones`` /
    ``--keep-every`` steps, ``best.pt``), SIGTERM / Ctrl-C stops after a saved step, and the start and done events.
    """

    def __init__(self, cfg, d: distributed.Dist, run: RunDir, kind: str, total: int, steps_per_epoch: int,
                 label: str, compiled: bool, head: dict[str, Any] | None = None,
                 main_metric: tuple[str, str] | None = None):
        self.cfg, self.R, self.d, self.rundir, self.kind = cfg, cfg.run, d, run, kind
        self.total, self.steps_per_epoch, self.label, self.compiled = total, steps_per_epoch, label, compiled
        self.head = head or {}  # checkpoint fields between "kind" and "config" (e.g. the tokenizer stage)
        self.step = 0
        self.last_eval: dict[str, Any] | None = None  # {"step": s, "metrics": {...}} of the latest evaluation
        self.main_metric = main_metric  # (metric name, "min" or "max"): what best.pt is chosen by
        self.best: dict[str, Any] | None = None  # {"metric", "value", "step"}: the best evaluation so far
        self.keeps = milestone_steps(self.R.milestones, total, steps_per_epoch, self.R.keep_every)
        self.resumed = False  # restored from a checkpoint (--resume or --resume-from)

    def restore(self, resumed: dict | None, model: torch.nn.Module, ema: EMA, opt: torch.optim.Optimizer,
                more: Callable[[dict], None] | None = None) -> None:
        """Load ``resumed`` (a checkpoint, or None for a fresh run) into the model, EMA and optimizer (``more``
        loads any further state), restore the RNG and the step; then write the config and start tracking."""
        self.model, self.ema = model, ema
        run, R = self.rundir, self.R
        self.window_state = None
        source = run.latest if R.resume or not R.resume_from else Path(R.resume_from)
        if resumed is not None:
            self.resumed = True
            checkpoint.load_state_strict(model, resumed["model"], f"{source} model")
            ema.load_state_dict(resumed["ema"])
            opt.load_state_dict(resumed["opt"])
            if more is not None:
                more(resumed)
            checkpoint.set_rng_state(resumed["rng"])
            self.step = resumed["step"]
            self.window_state = resumed.get("metric_window")
            self.best = resumed.get("best") if R.resume else None  # --resume-from: a new folder, its own best.pt
            changed = config_changes(resumed["config"], to_dict(self.cfg), defaults=to_dict(type(self.cfg)()))
            if source != run.latest:  # --resume-from: the new folder is no change of setting
                changed = {k: v for k, v in changed.items() if k not in ("run.out", "run.resume_from")}
            if run.is_main:
                shown = ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in changed.items())
                where = run.path if source == run.latest else f"{source} in {run.path}"
                logger.info("resuming %s at step %d%s", where, self.step,
                            f" with changed settings: {shown}" if shown else "")
            origin = {} if source == run.latest else {"from": str(source)}  # --resume-from: the file continued
            run.record_history({"event": "resume", "step": self.step, **origin, "changed": changed})
            run.log({"event": "resume", "step": self.step, **origin, **({"changed": changed} if changed else {})})
        run.write_config(to_dict(self.cfg))
        run.track(R.log, to_dict(self.cfg), self.step, R.resume)

    def batches(self, dataset, sampler: ResumableSampler) -> Batches:
        """The micro-batch stream, positioned at the restored step."""
        R = self.R
        self.stream = Batches(dataset, sampler, R.batch_size, self.steps_per_epoch * R.grad_accum, R.workers,
                              self.d.device)
        epoch, pos = divmod(self.step, self.steps_per_epoch)
        self.stream.start(epoch, pos * R.grad_accum)
        return self.stream

    def due(self, step: int, every: int) -> bool:
        return step % every == 0 or step == self.total

    def improved(self, step: int) -> dict[str, Any] | None:
        """The new best ``{"metric", "value", "step"}`` when the evaluation at ``step`` improved the main metric
        (a finite value, strictly better than the best so far; the first one always), else None."""
        ev = self.last_eval
        if self.main_metric is None or not ev or ev["step"] != step:
            return None
        name, mode = self.main_metric
        value = ev["metrics"].get(name)
        if value is None or not math.isfinite(value):
            return None
        best = self.best
        if best is not None and best["metric"] == name and not (
                value < best["value"] if mode == "min" else value > best["value"]):
            return None
        return {"metric": name, "value": float(value), "step": step}

    def must_save(self, step: int) -> bool:
        """A checkpoint at ``step`` besides the ``ckpt_every`` ones: a milestone (``--milestones``,
        ``--keep-every``), or an evaluation at this step that improved the main metric (``best.pt``)."""
        return step in self.keeps or self.improved(step) is not None

    def save(self, state: Callable[[], dict]) -> None:
        """The checkpoint at the current step (the header, then ``state()``), only when the loss, gradients,
        weights and EMA are all finite; a milestone copy at the ``--milestones`` / ``--keep-every`` steps, and
        ``best.pt`` when this step's evaluation improved the main metric. Every checkpoint records ``best``, the
        best evaluation so far (``{"metric", "value", "step"}``; None before the first), which a resume restores."""
        step, run = self.step, self.rundir
        self.guard.check(step)
        self.guard.check_state(step, {"weights": self.model.state_dict().values(),
                                      "EMA weights": self.ema.state_dict().values()})
        new_best = self.improved(step)
        if new_best is not None:
            self.best = new_best
        if self.d.is_main:
            full = {"format": checkpoint.FORMAT, "version": checkpoint.VERSION, "kind": self.kind, **self.head,
                    "config": to_dict(self.cfg), "step": step, "epoch": step / self.steps_per_epoch, **state()}
            full["metric_window"] = self.window.state_dict()
            full["best"] = self.best
            linked = run.keep_recent(self.guard.kept[1] if self.guard.kept else None)
            try:
                checkpoint.save_atomic(full, run.latest)
            except BaseException:
                if linked is not None:  # latest.pt is unchanged: no second name for it
                    linked.unlink(missing_ok=True)
                raise
            run.prune_recent()
            if step in self.keeps:  # a copy, not a hard link: a later `cp X latest.pt` must not change it
                checkpoint.save_atomic(full, run.milestone(step))
            if new_best is not None:
                checkpoint.save_atomic(full, run.best)
                run.log({"event": "best", "step": step, "best": new_best, "path": str(run.best)})
        self.guard.saved(run.latest, step)

    def evaluation(self, evaluate: Callable[[int], dict[str, float]], step: int) -> dict[str, float | None]:
        """One evaluation at ``step`` on every rank: inside :func:`isolated_rng` (the training's random stream is
        untouched) with the model and its EMA in eval mode (every submodule gets its own mode back afterwards);
        logged to metrics.jsonl, the trackers and the curve (main rank) and kept as ``self.last_eval``."""
        t0 = time.perf_counter()
        with isolated_rng(), eval_mode(self.model, self.ema.module):
            metrics = {k: None if v is None else float(v) for k, v in evaluate(step).items()}
        self.last_eval = {"step": step, "metrics": metrics}
        record_eval(self.rundir, step, metrics, time.perf_counter() - t0)
        return metrics

    def run(self, one_step: Callable[[StepRandom, int], tuple[dict[str, torch.Tensor], int, dict]],
            lr_at: Callable[[int], float], optimizers: Iterable[torch.optim.Optimizer], state: Callable[[], dict],
            preview: Callable[[int], None], start: dict[str, Any], watch: tuple[str, ...] | None = None,
            derived: Callable[[dict], dict] | None = None,
            evaluate: Callable[[int], dict[str, float]] | None = None) -> Path:
        """Step to ``total``; returns the final checkpoint's path.

        ``one_step(rnd, step)`` runs one optimizer step (``rnd`` already at ``step``) and returns its metrics
        (device tensors), the size of its last micro-batch and extra log fields. ``watch`` names the metrics the
        finite guard observes (default: all); ``derived(means)`` adds logged values (shown in the progress bar);
        ``preview(step)`` writes the image grid (main process); ``start`` are the start event's fields after the
        step counts; ``state()`` is a checkpoint's body after the common header. ``evaluate(step)`` (every rank)
        returns ``{"<metric>/<weights>": value}`` at every ``R.eval_every``-th step and the final one (when
        ``R.eval_every`` > 0), before that step's checkpoint: see :meth:`evaluation`."""
        R, d, run, dev, total = self.R, self.d, self.rundir, self.d.device, self.total
        optimizers = [o for o in optimizers if o is not None]
        rnd = StepRandom(R.seed, d.rank, dev)
        self.guard = FiniteGuard(dev, kept=(str(run.latest), self.step) if R.resume else None)  # not --resume-from
        meter, window = Throughput(dev), MetricWindow()
        self.window = window
        if self.window_state is not None:  # the steps logged since the last log step before the checkpoint
            window.load_state_dict(self.window_state, dev)
        partial = self.resumed and self.window_state is None  # an older checkpoint: the first row is marked
        bar = progress(total, self.step, self.label, d.is_main)
        if d.is_main and self.step == 0:
            run.log({"event": "start", "total_steps": total, "steps_per_epoch": self.steps_per_epoch, **start})
        first = self.step
        t_first = time.perf_counter()
        with StopRequest() as stop:
            while self.step < total:
                lr = lr_at(self.step)
                set_lr(optimizers, lr)
                rnd.at(self.step)
                terms, n, info = one_step(rnd, self.step)
                self.guard.observe(self.step + 1, terms if watch is None else {k: terms[k] for k in watch})
                window.add(terms)
                meter.add(n * d.world_size * R.grad_accum)
                self.step += 1
                step = self.step
                bar.update(1)
                if step == first + 1:
                    log_first_step(run, step, t_first, dev, self.compiled)

                if dev.type == "cpu" or step % R.log_every == 0 or step % R.image_every == 0 or step == total:
                    self.guard.check(step)
                if self.due(step, R.log_every):
                    rec = window.means(reset=step % R.log_every == 0)
                    shown = derived(rec) if derived is not None else {}
                    rec.update(shown)
                    if partial:
                        rec["steps_averaged"], partial = step - first, False  # only those since the resume
                    rec.update(step=step, epoch=round(step / self.steps_per_epoch, 4), lr=lr, img_per_s=meter.rate(),
                               bad_images=self.stream.bad, **info)
                    run.log(rec)
                    bar.set_postfix(loss=f"{rec['loss']:.4f}", **{k: f"{rec[k]:.2f}" for k in shown},
                                    img_s=f"{rec['img_per_s']:.1f}")
                if d.is_main and self.due(step, R.image_every):
                    preview(step)
                if evaluate is not None and R.eval_every and self.due(step, R.eval_every):
                    self.evaluation(evaluate, step)
                stop_now = stop.poll(step, R.log_every, d.enabled, dev)
                if self.due(step, R.ckpt_every) or stop_now or self.must_save(step):
                    self.save(state)
                if stop_now:
                    stop.stop(step, str(run.latest))
        bar.close()
        distributed.barrier()
        if d.is_main:
            run.log({"event": "done", "step": self.step})
        run.close()
        return run.latest
