"""DiT^DH training on a tokenizer's latents: class-conditional flow matching (recipe §4.2, §4.4, §4.5).

Per step: ``(index, flip)`` keys from the resumable sampler → posterior moments (read from the latent cache, or
encoded from the images by the frozen tokenizer) → posterior sample ``z = mean + std·ε`` → ``x1 = (z − μ_c)/σ_c``
→ label-drop mask → ``t = 1 − shift(u)``, ``x0 ~ N(0, I)``, ``x_t = t·x1 + (1 − t)·x0`` → MSE(``v(x_t, t, y)``,
``x1 − x0``) → AdamW (clip 1) → EMA. Every random draw of a step (ε, the drop mask, t, x0) comes from the step
generator seeded by (seed, rank, step), so a resumed run continues exactly.

Learning rate: ``--lr`` until epoch ``--decay-start``, then linear to ``--min-lr`` at epoch ``--decay-end``,
constant after; no warm-up (the official 40 / 800 anchors hold for the 80- and 600-epoch checkpoints alike).
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
from collections.abc import Callable
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel as DDP

from rectok_core.checkpoints import load_tokenizer
from rectok_core.checkpoints.families import (
    absolute_spec,
    check_image_size,
    check_latent_fits,
    is_family_spec,
    load_any_tokenizer,
)
from rectok_core.data.latent_cache import ensure_latent_cache
from rectok_core.data.latent_stats import (
    LatentStats,
    choose_stats,
    encode_moments,
    load_or_compute_stats,
)
from rectok_core.data.readers import build_dataset
from rectok_core.errors import CheckpointError, DataError, RectokError
from rectok_core.flow.noise import timestep_shift
from rectok_core.flow.objectives import OBJECTIVES
from rectok_core.models.generators import GENERATORS, build_generator, generator_patch_size
from rectok_core.models.tokenizer import RecTok
from rectok_core.sampling.generate import preview_rows
from rectok_core.training.dit_config import DiTOptimConfig, DiTTrainConfig
from rectok_core.training.dit_eval import build_dit_evaluator, resolve_dit_eval_every
from rectok_core.training.engine import EMA, StepRandom, adamw, hold_then_linear, optimizer_impl, param_groups
from rectok_core.training.init import LABEL_RULE, dit_init, open_dit_init, resume_source
from rectok_core.training.memory import check_fits
from rectok_core.training.rundir import RunDir
from rectok_core.training.scaffold import TrainLoop, plan_steps
from rectok_core.utils import checkpoint, distributed
from rectok_core.utils.images import class_caption, save_grid
from rectok_core.utils.runtime import autocast, cuda_fast_paths, maybe_compile, resolve_compile, resolve_precision

KIND = "dit"

logger = logging.getLogger(__name__)


IMAGENET_PREVIEW_CLASSES = [207, 360, 387, 974, 88, 979, 417, 279]  # the official visualisation classes


PREVIEW_STEPS = 25


PREVIEW_PER_CLASS = 4


def train_dit(cfg: DiTTrainConfig) -> Path:
    """Run (or resume) DiT^DH training; returns the path of the final checkpoint."""
    d = distributed.setup(cfg.run.device)
    try:
        return _train(cfg, d)
    finally:
        distributed.cleanup()


@dataclasses.dataclass
class DiTTrainer:
    """The DiT^DH, its EMA and AdamW, and one optimizer step (shared by the training loop and ``rectok bench``).

    A batch holds ``label`` and either the posterior moments ``mean``/``logvar`` (latent cache) or ``image``
    (encoded by the frozen ``tokenizer`` inside the step, the official online mode). The step never waits for
    the device; its metrics are device tensors.
    """
    model: torch.nn.Module                      # a generator family's network (DiTDH, SiT, LightningDiT, DiT)
    ema: EMA
    opt: torch.optim.Optimizer
    stats: LatentStats
    optim: DiTOptimConfig
    device: torch.device
    precision: str                              # resolved: "bf16" or "fp32"
    tokenizer: RecTok | None = None             # for batches of images (online encoding)
    grad_accum: int = 1
    net: torch.nn.Module | None = None          # what the step calls: the model, DDP- and/or compile-wrapped
    model_ddp: torch.nn.Module | None = None    # the DDP wrapper (no_sync), or the model
    distributed: bool = False
    shift: float = 1.0
    objective: str = "flow-shifted"             # the family's training objective (flow.objectives.OBJECTIVES)

    def __post_init__(self) -> None:
        if self.net is None:
            self.net = self.model
        if self.model_ddp is None:
            self.model_ddp = self.model
        c = self.model.config
        self.shift = timestep_shift(c.input_size, c.input_size, c.in_channels)

    def wrap(self, ddp: bool, compile: bool) -> None:
        """DDP (when distributed) and torch.compile around the model; call after loading a checkpoint."""
        dev = self.device
        self.distributed = ddp
        net = self.model_ddp = DDP(self.model, device_ids=[dev.index] if dev.type == "cuda" else None) \
            if ddp else self.model
        self.net = maybe_compile(net, compile)

    def step(self, next_batch: Callable[[], dict], rnd: StepRandom) -> tuple[dict[str, torch.Tensor], int]:
        """One optimizer step over ``grad_accum`` micro-batches with the randomness of ``rnd`` (already at this
        step): posterior sample, normalisation, label drop, flow-matching loss, backward, clip, AdamW, EMA.
        Returns the metrics (device tensors) and the size of the last micro-batch."""
        dev, O = self.device, self.optim
        for micro in range(self.grad_accum):
            batch = next_batch()
            y = batch["label"].to(dev, non_blocking=True)
            if "mean" in batch:
                mean = batch["mean"].to(dev, non_blocking=True)
                logvar = batch["logvar"].to(dev, non_blocking=True)
            else:
                mean, logvar = encode_moments(self.tokenizer, batch["image"].to(dev, non_blocking=True),
                                              self.precision)
            eps = torch.randn(mean.shape, generator=rnd.device, device=dev)
            x1 = self.stats.normalize(mean + torch.exp(0.5 * logvar) * eps)  # posterior sample, normalised
            drop = self.model.draw_drop_mask(y.shape[0], rnd.device, dev)
            sync = micro == self.grad_accum - 1 or not self.distributed
            with self.model_ddp.no_sync() if not sync else contextlib.nullcontext():
                with autocast(dev, self.precision):
                    loss, _, terms = OBJECTIVES[self.objective].loss(self.net, x1, y, rnd.device, drop)
                (loss / self.grad_accum).backward()
        gnorm = torch.nn.utils.clip_grad_norm_(self.model.parameters(),
                                               O.grad_clip if O.grad_clip > 0 else float("inf"), foreach=True)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.ema.update(self.model)
        metrics = {"loss": loss.detach(), "grad_norm": gnorm, "latent_std": x1.detach().std()}
        if len(terms) > 1:  # the loss terms of a multi-term objective (mse + cos, mse + vb)
            metrics.update({f"loss_{k}": v.detach().mean() for k, v in terms.items()})
        return metrics, y.shape[0]


def family_objective(family: str, objective: str = "") -> str:
    """``objective`` (default: the family's own), checked to train what the family predicts (one line if not)."""
    fam = GENERATORS[family]
    objective = objective or fam.objective
    if OBJECTIVES[objective].prediction != fam.prediction:
        raise RectokError(f"--objective {objective} trains a model that predicts {OBJECTIVES[objective].prediction}; "
                          f"{family} predicts {fam.prediction}")
    return objective


def build_dit_trainer(size: str, latent_shape: tuple[int, int, int], num_classes: int, class_dropout: float,
                      O: DiTOptimConfig, stats: LatentStats, device: torch.device, precision: str,
                      tokenizer: RecTok | None = None, grad_accum: int = 1,
                      shape: dict[str, int] | None = None, family: str = "dit-dh",
                      objective: str = "") -> DiTTrainer:
    """A fresh generator of ``family`` (default DiT^DH) and ``size`` (a DiT^DH preset such as ``XL`` or a registered
    size such as ``xl``; ``shape``: config overrides, e.g. other DiT^DH trunk/head widths) for latents ``(C, h, w)``,
    with its EMA and AdamW, on ``device``, trained with ``objective`` (default: the family's)."""
    objective = family_objective(family, objective)
    C, h, _ = latent_shape
    model = build_generator(family, size.lower(), C, h, num_classes, class_dropout, **(shape or {})).to(device)
    ema = EMA(model, O.ema)
    opt = adamw(param_groups(model, O.weight_decay), O.lr, (O.beta1, O.beta2), device)
    return DiTTrainer(model=model, ema=ema, opt=opt, stats=stats, optim=O, device=device, precision=precision,
                      tokenizer=tokenizer, grad_accum=grad_accum, objective=objective)


def preview_classes(num_classes: int) -> list[int]:
    return IMAGENET_PREVIEW_CLASSES if num_classes == 1000 else list(range(min(8, num_classes)))


def _train(cfg: DiTTrainConfig, d: distributed.Dist) -> Path:
    R, O, M, L = cfg.run, cfg.optim, cfg.model, cfg.latents
    dev = d.device
    run = RunDir(R.out, R.resume, d.is_main, "train-dit")
    torch.manual_seed(R.seed)  # identical construction on every rank; step randomness is per rank (StepRandom)
    cuda_fast_paths(dev)
    prec = resolve_precision(dev, R.precision)
    compiled = resolve_compile(R.compile, dev)
    resumed = resume_source(run, R, KIND)  # --resume (OUT/latest.pt) or --resume-from FILE
    family, size, overrides = M.generator()
    family_objective(family, M.objective)  # a bad --model / --objective: one line before any data is read
    start = open_dit_init(cfg.init) if cfg.init and resumed is None else None  # --init: its kind checked first
    if start is not None and d.is_main:
        logger.info("init from %s: %s", cfg.init, LABEL_RULE)

    if is_family_spec(L.tokenizer):  # FAMILY:SOURCE: another tokenizer family (rectok tokenizers)
        tokenizer, tmeta = load_any_tokenizer(L.tokenizer, device=dev, image_size=L.image_size)
    else:
        tokenizer, tmeta = load_tokenizer(L.tokenizer, use_ema=L.tokenizer_weights == "ema", device=dev)
        check_image_size(tokenizer, L.tokenizer, L.image_size)
    if resumed is not None and tmeta["sha256"] != resumed["tokenizer"]["sha256"]:
        raise CheckpointError(f"tokenizer {L.tokenizer} (sha256 {tmeta['sha256'][:12]}) is not the one the run in "
                              f"{R.out} trains on (sha256 {resumed['tokenizer']['sha256'][:12]})")
    (h, w), C = tokenizer.cfg.grid, tokenizer.cfg.dim
    check_latent_fits(L.tokenizer, (C, h, w), M.label(), generator_patch_size(family, size, overrides),
                      tokenizer.cfg.image_size)
    if L.cache_latents:
        dataset = ensure_latent_cache(L.cache_latents, tokenizer, tmeta, R.data, d, batch_size=L.encode_batch_size,
                                      workers=R.workers, strict=R.strict_data)
        stats: LatentStats | None = choose_stats(tokenizer, tmeta, L.latent_norm, lambda: dataset.stats)
    else:
        dataset = build_dataset(R.data, tokenizer.cfg.image_size, split="train", strict=R.strict_data)
        if not dataset.has_labels:
            raise DataError(f"{R.data} is unlabelled: the class-conditional generator needs class labels")
        stats = None if resumed else choose_stats(tokenizer, tmeta, L.latent_norm, lambda: load_or_compute_stats(
            tokenizer, tmeta, dataset, L.stats_dir, d, L.encode_batch_size, R.workers))
    classes = list(dataset.classes)
    if resumed is not None:
        stats = LatentStats.from_state(resumed["latent_stats"])  # the statistics the run started with
        if classes != list(resumed["classes"]):
            raise DataError(f"{R.data} has other classes than the run being resumed ({len(classes)} vs "
                            f"{len(resumed['classes'])})")
    assert stats is not None

    sampler, steps_per_epoch, total, global_batch = plan_steps(dataset, R, d)
    resolve_dit_eval_every(cfg, total, d)
    decay_start, decay_end = round(O.decay_start * steps_per_epoch), round(O.decay_end * steps_per_epoch)

    check_fits(M.label(), lambda: build_generator(family, size, C, h, len(classes), M.class_dropout, **overrides),
               dev, batch=R.batch_size, tokens=h * w)
    tr = build_dit_trainer(size, (C, h, w), len(classes), M.class_dropout, O, stats, dev, prec,
                           tokenizer=None if L.cache_latents else tokenizer, grad_accum=R.grad_accum,
                           shape=overrides, family=family, objective=M.objective)
    model, ema, opt = tr.model, tr.ema, tr.opt
    if start is not None:
        fitted = dit_init(cfg.init, start, family, dataclasses.asdict(model.config), classes)
        fitted.apply(model)
        fitted.apply(ema.module, "ema")
        if d.is_main:
            logger.info(fitted.line)
    loop = TrainLoop(cfg, d, run, KIND, total, steps_per_epoch, "train-dit", compiled, main_metric=("fid/ema", "min"))
    loop.restore(resumed, model, ema, opt)
    evaluate = build_dit_evaluator(cfg, d, ema.module, tokenizer, tmeta["sha256"], stats, (C, h, w), len(classes), prec)

    tr.wrap(ddp=d.enabled, compile=compiled)
    batches = loop.batches(dataset, sampler)

    def one_step(rnd: StepRandom, step: int) -> tuple[dict, int, dict]:
        return *tr.step(batches.next, rnd), {}

    def preview(step: int) -> None:
        shown = preview_classes(len(classes))
        rows = preview_rows(ema.module, tokenizer, stats, shown, PREVIEW_PER_CLASS, R.seed, PREVIEW_STEPS, dev, prec)
        grid = run.image_dir / f"samples_{step:07d}.png"
        save_grid(rows, grid, row_labels=[class_caption(c, classes) for c in shown],
                  title=f"step {step}: EMA samples, one class per row ({PREVIEW_STEPS} Euler steps, no guidance)")
        run.image("samples", grid, step)

    def state() -> dict:
        gen = {"generator": {"family": family, "config": dataclasses.asdict(model.config)}}
        if family == "dit-dh":  # also where readers of DiT^DH checkpoints before the generator families look
            gen["dit_config"] = dataclasses.asdict(model.config)
        return {**gen, "model": model.state_dict(),
                "ema": ema.state_dict(), "opt": opt.state_dict(), "rng": checkpoint.rng_state(),
                "tokenizer": {"path": absolute_spec(L.tokenizer) if is_family_spec(L.tokenizer) else
                              os.path.abspath(L.tokenizer), "sha256": tmeta["sha256"],
                              "weights": tmeta["weights"], "image_size": tokenizer.cfg.image_size,
                              "grid": [h, w], "channels": C},
                "latent_stats": stats.state(), "num_classes": len(classes), "classes": classes,
                "latents": os.path.abspath(L.cache_latents) if L.cache_latents else "online"}

    return loop.run(one_step, lambda step: hold_then_linear(step, decay_start, decay_end, O.lr, O.min_lr), [opt],
                    state, preview, start=dict(
                        lr=O.lr, decay_steps=[decay_start, decay_end], global_batch=global_batch,
                        world_size=d.world_size, precision=prec, compile=compiled, adamw=optimizer_impl(opt),
                        generator=M.label(), objective=tr.objective, shift=tr.shift,
                        latents="cache" if L.cache_latents else "online", latent_shape=[C, h, w],
                        num_classes=len(classes), params=sum(p.numel() for p in model.parameters() if p.requires_grad)),
                    watch=("loss", "grad_norm"), evaluate=evaluate)

