"""RecTok tokenizer training. Stage 1: Flow Semantic Distillation + Reconstruction-Alignment Distillation
(recipe §1–3); stage 2: pixel-decoder fine-tuning on a frozen encoder (§3.2). One loop serves both.

Per step: mask (RAD) → encode visible tokens → sample the posterior → flow noise x_t (FSD) → pixel decoder and
semantic decoder on x_t → MSE + perceptual + KL + cosine-to-teacher (+ GAN once it starts) → AdamW → EMA →
discriminator step.
"""
from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel as DDP

from rectok_core.checkpoints import open_checkpoint
from rectok_core.config import from_dict
from rectok_core.data.datasets import stratified_indices
from rectok_core.data.readers import build_dataset
from rectok_core.flow.noise import sample_noise_level, timestep_shift
from rectok_core.losses.perceptual import PerceptualLoss
from rectok_core.losses.tokenizer import DiscriminatorLoss, TokenizerLoss
from rectok_core.metrics.image import psnr_from_mse
from rectok_core.models.discriminator import NLayerDiscriminator
from rectok_core.models.tokenizer import (
    RecTok,
    TokenizerModelConfig,
    masked_token_flags,
    random_masking,
)
from rectok_core.teachers.registry import build_teacher
from rectok_core.training.config import (
    FinetuneConfig,
    OptimConfig,
    TokenizerLossConfig,
    TokenizerTrainConfig,
)
from rectok_core.training.engine import EMA, StepRandom, adamw, optimizer_impl, param_groups, warmup_cosine
from rectok_core.training.evaluation import TokenizerEvaluator, resolve_eval_every, validation_split
from rectok_core.training.init import resume_source, tokenizer_init
from rectok_core.training.memory import check_fits
from rectok_core.training.rundir import RunDir
from rectok_core.training.scaffold import TrainLoop, plan_steps
from rectok_core.utils import checkpoint, distributed
from rectok_core.utils.images import save_grid
from rectok_core.utils.runtime import autocast, cuda_fast_paths, maybe_compile, resolve_compile, resolve_precision

logger = logging.getLogger(__name__)


KIND = "tokenizer"


def build_teacher_for(cfg: TokenizerTrainConfig, device: torch.device):
    """The frozen teacher on the tokenizer's token grid (None for --teacher none); sets ``cfg.model.teacher_dim``."""
    L = cfg.loss
    teacher = build_teacher(L.teacher, L.teacher_weights or None, cfg.model.grid, cfg.model.image_size,
                            resize=L.teacher_resize, pretrained="random" if L.teacher_init == "random" else "auto")
    cfg.model.teacher_dim = 0 if teacher is None else teacher.dim
    return None if teacher is None else teacher.to(device)


def build_perceptual(loss: TokenizerLossConfig, device: torch.device):
    if loss.perceptual == "none" or loss.perceptual_weight == 0:
        return None

    return PerceptualLoss(kind=loss.perceptual, vgg_weights=loss.lpips_vgg or None,
                          convnext_weights=loss.convnext_weights or None,
                          allow_random=loss.perceptual_init == "random").to(device)


@dataclass
class TokenizerTrainer:
    """Everything one tokenizer optimizer step touches, and the step itself.

    The training loop (:func:`_fit`, both stages) and ``rectok bench`` run the same :meth:`step`. The step never
    waits for the device (no ``.item()``, no host copies of device tensors): metrics stay device tensors that
    the loop accumulates (``MetricWindow``) and checks for NaN/inf (``FiniteGuard``) at log steps.
    """
    model: RecTok
    ema: EMA
    opt: torch.optim.Optimizer
    loss_fn: TokenizerLoss
    loss: TokenizerLossConfig
    optim: OptimConfig
    device: torch.device
    precision: str                                 # resolved: "bf16" or "fp32"
    teacher: torch.nn.Module | None = None
    disc: torch.nn.Module | None = None
    opt_d: torch.optim.Optimizer | None = None
    grad_accum: int = 1
    net: torch.nn.Module | None = None             # what the step calls: the model, DDP- and/or compile-wrapped
    model_ddp: torch.nn.Module | None = None       # the DDP wrapper (no_sync), or the model
    disc_loss: torch.nn.Module | None = None
    distributed: bool = False

    def __post_init__(self) -> None:
        if self.net is None:
            self.net = self.model
        if self.model_ddp is None:
            self.model_ddp = self.model
        if self.disc is not None and self.disc_loss is None:
            self.disc_loss = DiscriminatorLoss(self.disc)
        M = self.model.cfg
        self.s_shift = timestep_shift(*M.grid, M.dim)

    def wrap(self, ddp: bool, compile: bool) -> None:
        """DDP (when distributed) and torch.compile around the model; call after loading a checkpoint."""
        dev = self.device
        ids = [dev.index] if dev.type == "cuda" else None
        self.distributed = ddp
        net = self.model_ddp = self.model
        if ddp:
            net = self.model_ddp = DDP(self.model, device_ids=ids)
            if self.disc is not None:
                self.disc_loss = DDP(DiscriminatorLoss(self.disc), device_ids=ids)
        # masking changes the token count: dynamic shapes
        self.net = maybe_compile(net, compile, dynamic=True)

    def step(self, next_images: Callable[[], torch.Tensor], rnd: StepRandom, gan_on: bool
             ) -> tuple[dict[str, torch.Tensor], int]:
        """One optimizer step over ``grad_accum`` micro-batches from ``next_images`` (images in [-1, 1]) with
        the randomness of ``rnd`` (already at this step): forward, losses, backward, clip, AdamW, EMA, then the
        discriminator step when ``gan_on``. Returns the loss terms (device tensors) and the number of images
        in the last micro-batch."""
        L, O, M, dev = self.loss, self.optim, self.model.cfg, self.device
        for micro in range(self.grad_accum):
            img = next_images().to(dev, non_blocking=True)
            B = img.shape[0]
            r = max(0.0, rnd.uniform(L.mask_min, L.mask_max)) if L.mask_max > 0 else 0.0
            ids_keep = ids_restore = None
            if r > 0:
                ids_keep, _, ids_restore = random_masking(B, M.num_tokens, r, dev, rnd.device)
            t = sample_noise_level(B, L.t_schedule, self.s_shift, rnd.device, dev) if L.gamma > 0 else None
            sync = micro == self.grad_accum - 1 or not self.distributed
            with self.model_ddp.no_sync() if not sync else contextlib.nullcontext():
                with autocast(dev, self.precision):
                    out = self.net(img, ids_keep, ids_restore, t, L.sem_input, L.gamma, rnd.device)
                    feats = self.teacher(img) if self.teacher is not None else None
                n_vis = M.num_tokens if ids_keep is None else ids_keep.shape[1]
                masked = masked_token_flags(ids_restore, n_vis, M.num_tokens, B, dev)
                terms = self.loss_fn(img, out, feats, masked, gan_on)
                (terms["loss"] / self.grad_accum).backward()
        gnorm = torch.nn.utils.clip_grad_norm_(self.ema.live_params, O.grad_clip if O.grad_clip > 0 else float("inf"),
                                               foreach=True)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.ema.update(self.model)
        if gan_on:
            d_terms = self.disc_loss(img, out["recon"])
            d_terms["disc"].backward()
            if O.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(self.disc.parameters(), O.grad_clip, foreach=True)
            self.opt_d.step()
            self.opt_d.zero_grad(set_to_none=True)
            terms.update(d_terms)
        terms["grad_norm"] = gnorm
        return terms, B


def build_trainer(M: TokenizerModelConfig, L: TokenizerLossConfig, O: OptimConfig, device: torch.device,
                  precision: str, lr: float, teacher: torch.nn.Module | None, perceptual: torch.nn.Module | None,
                  with_disc: bool, init: Callable[[RecTok], None] | None = None, frozen: tuple[str, ...] = (),
                  grad_accum: int = 1, channels_last: bool | None = None) -> TokenizerTrainer:
    """The model (``init`` loads starting weights; parameters under ``frozen`` prefixes never train), its EMA,
    AdamW, the PatchGAN and its AdamW (``with_disc``) and the loss, on ``device``. ``channels_last`` (default: on
    CUDA) puts the convolutional networks in NHWC layout."""
    model = RecTok(M, semantic=teacher is not None)
    if init is not None:
        init(model)
    for name, p in model.named_parameters():
        if name.startswith(frozen):
            p.requires_grad_(False)
    model.to(device)
    ema = EMA(model, O.ema)
    opt = adamw(param_groups(model, O.weight_decay), lr, (O.beta1, O.beta2), device)
    disc = opt_d = None
    if with_disc:
        disc = NLayerDiscriminator(norm=L.disc_norm).to(device)
        opt_d = adamw(param_groups(disc, O.weight_decay), lr, (O.beta1, O.beta2), device)
    nhwc = device.type == "cuda" if channels_last is None else channels_last
    if nhwc:
        inception = teacher if teacher is not None and getattr(teacher, "name", "").startswith("inception") else None
        for m in (perceptual, inception):
            if m is not None:
                m.to(memory_format=torch.channels_last)
        if disc is not None:
            # NHWC weights as well as inputs: cuDNN returns the weight gradients of NHWC inputs in NHWC, and DDP's
            # gradient buckets follow the parameters' strides ("Grad strides do not match bucket view strides")
            disc.channels_last = True
            disc.to(memory_format=torch.channels_last)
    loss_fn = TokenizerLoss(L.rec_weight, L.perceptual_weight, L.kl_weight, L.sem_weight, L.gan_weight,
                            L.sem_target, perceptual, disc)
    return TokenizerTrainer(model=model, ema=ema, opt=opt, loss_fn=loss_fn, loss=L, optim=O, device=device,
                            precision=precision, teacher=teacher, disc=disc, opt_d=opt_d, grad_accum=grad_accum)


@dataclass
class Plan:
    """What distinguishes the two tokenizer stages; the loop below is shared."""
    stage: str                                   # "stage1" or "decoder-ft"
    model: TokenizerModelConfig
    loss: TokenizerLossConfig                    # stage 2 switches noise, masking, KL and semantics off
    init: Callable[[RecTok], None] | None = None  # load starting weights (fresh runs only)
    frozen: tuple[str, ...] = ()                 # parameter-name prefixes that never train
    init_ema: Callable[[torch.nn.Module], None] | None = None  # load the EMA's starting weights (fresh runs only)
    teacher: Callable[[], torch.nn.Module | None] = lambda: None  # built after seeding (random-init teachers)


def train_tokenizer(cfg: TokenizerTrainConfig) -> Path:
    """Run (or resume) stage-1 training; returns the path of the final checkpoint."""
    d = distributed.setup(cfg.run.device)
    try:
        plan = Plan("stage1", cfg.model, cfg.loss, teacher=lambda: build_teacher_for(cfg, d.device))
        if cfg.init and not (cfg.run.resume or cfg.run.resume_from):  # --init CKPT: checked before anything is built
            start = tokenizer_init(cfg.init, cfg.model)
            if d.is_main:
                logger.info(start.line)
            plan.init, plan.init_ema = start.apply, lambda module: start.apply(module, "ema")
        return _fit(cfg, d, plan)
    finally:
        distributed.cleanup()


def finetune_decoder(cfg: FinetuneConfig) -> Path:
    """Stage 2 (recipe §3.2): freeze the encoder and posterior, fine-tune the pixel decoder on posterior
    samples with MSE + perceptual + GAN (fresh discriminator). No flow noise, masking, KL or semantic loss; the
    semantic decoder and the teacher are dropped. The EMA keeps the frozen encoder of the live model (§11.5).

    ``--init official`` starts as the official run (§3.2, §3.3): the live model from the stage-1 raw weights, the
    EMA's trained part (the pixel decoder) from the stage-1 EMA, its frozen encoder from the live model, so both
    weight sets of the result hold the raw stage-1 encoder. ``ema`` / ``raw`` start both from those weights."""
    d = distributed.setup(cfg.run.device)
    try:
        ck = open_checkpoint(cfg.tokenizer, KIND)
        cfg.model = from_dict(TokenizerModelConfig, {**ck["config"]["model"], "teacher_dim": 0})
        frozen = ("encoder.",)

        def weights(slot: str) -> dict[str, torch.Tensor]:
            return {k: v for k, v in ck[slot].items() if not k.startswith("sem_decoder.")}

        def init(model: RecTok) -> None:
            slot = "ema" if cfg.init == "ema" else "model"
            checkpoint.load_state_strict(model, weights(slot), f"{cfg.tokenizer} ({slot} weights)")

        def init_ema(ema: torch.nn.Module) -> None:  # official: the EMA's frozen encoder stays the live (raw) one
            state = {**{k: v for k, v in ema.state_dict().items() if k.startswith(frozen)},
                     **{k: v for k, v in weights("ema").items() if not k.startswith(frozen)}}
            checkpoint.load_state_strict(ema, state, f"{cfg.tokenizer} (ema weights of the trained part)")

        plan = Plan("decoder-ft", cfg.model, cfg.loss.as_tokenizer_loss(), init, frozen=frozen,
                    init_ema=init_ema if cfg.init == "official" else None)
        return _fit(cfg, d, plan)
    finally:
        distributed.cleanup()


def _fit(cfg, d: distributed.Dist, plan: Plan) -> Path:
    R, O, L, M = cfg.run, cfg.optim, plan.loss, plan.model
    dev = d.device
    run = RunDir(R.out, R.resume, d.is_main, "train-tokenizer" if plan.stage == "stage1" else "finetune-decoder")
    resumed = resume_source(run, R, KIND, plan.stage)  # --resume / --resume-from: opened (and checked) first
    continued = resumed is not None
    torch.manual_seed(R.seed)  # identical construction on every rank; step randomness is per rank (StepRandom)
    cuda_fast_paths(dev)
    teacher = plan.teacher()  # fails fast offline without weights

    perceptual = build_perceptual(L, dev)
    dataset = build_dataset(R.data, M.image_size, split="train", strict=R.strict_data)
    sampler, steps_per_epoch, total, global_batch = plan_steps(dataset, R, d)
    val_split = validation_split(R.data)
    resolve_eval_every(R, total, val_split is not None, d.is_main, "validation split")
    warmup = int(O.warmup * total)
    disc_start = int(L.disc_start * total) if L.disc_start < 1 else total + 1
    # official: lr = blr × batch × processes / 256, without --grad-accum (recipe §11.15)
    base_lr = O.lr or O.blr * (global_batch if O.lr_scale_accum else R.batch_size * d.world_size) / 256
    prec = resolve_precision(dev, R.precision)
    compiled = resolve_compile(R.compile, dev)

    check_fits(f"the {plan.stage} tokenizer", lambda: RecTok(M, semantic=teacher is not None), dev,
               batch=R.batch_size, tokens=(M.image_size // M.patch_size) ** 2)
    tr = build_trainer(M, L, O, dev, prec, base_lr, teacher, perceptual,
                       with_disc=L.gan_weight > 0 and disc_start <= total,
                       init=plan.init if not continued else None, frozen=plan.frozen, grad_accum=R.grad_accum)
    model, ema, opt, disc, opt_d = tr.model, tr.ema, tr.opt, tr.disc, tr.opt_d
    if plan.init_ema is not None and not continued:
        plan.init_ema(ema.module)

    loop = TrainLoop(cfg, d, run, KIND, total, steps_per_epoch, plan.stage, compiled, head={"stage": plan.stage},
                     main_metric=("rfid/ema", "min"))

    def load_disc(ck: dict) -> None:
        if disc is not None:
            checkpoint.load_state_strict(disc, ck["disc"], f"{run.latest} discriminator")
            opt_d.load_state_dict(ck["opt_d"])

    loop.restore(resumed, model, ema, opt, more=load_disc)
    evaluate = TokenizerEvaluator(run, R, val_split, M.image_size, model, ema.module, d) if R.eval_every else None
    tr.wrap(ddp=d.enabled, compile=compiled)
    batches = loop.batches(dataset, sampler)
    shown = stratified_indices([label for _, label in dataset.items], 8)  # several classes, not the first files
    vis = torch.stack([dataset[i]["image"] for i in shown]).to(dev)

    def one_step(rnd: StepRandom, step: int) -> tuple[dict, int, dict]:
        gan_on = disc is not None and step >= disc_start
        terms, n_img = tr.step(lambda: batches.next()["image"], rnd, gan_on)
        return terms, n_img, {"gan_on": gan_on}

    def preview(step: int) -> None:
        model.eval()
        with autocast(dev, prec):
            rows = [vis, model.reconstruct(vis), ema.module.reconstruct(vis)]
        model.train()
        grid = run.image_dir / f"recon_{step:07d}.png"
        save_grid(rows, grid, row_labels=["original", "reconstruction (raw model)", "reconstruction (EMA)"],
                  title=f"step {step}: tokenizer reconstructions ({plan.stage})")
        run.image("recon", grid, step)

    def state() -> dict:
        return {"model": model.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict(),
                "disc": None if disc is None else disc.state_dict(),
                "opt_d": None if opt_d is None else opt_d.state_dict(), "rng": checkpoint.rng_state()}

    return loop.run(one_step, lambda step: warmup_cosine(step, total, warmup, base_lr, O.min_lr), (opt, opt_d),
                    state, preview, start=dict(
                        lr=base_lr, global_batch=global_batch, world_size=d.world_size, precision=prec,
                        compile=compiled, adamw=optimizer_impl(opt),
                        params_encoder_decoder=sum(p.numel() for n, p in model.named_parameters()
                                                   if not n.startswith("sem_decoder.")),
                        params_trainable=sum(p.numel() for p in ema.live_params)),
                    derived=lambda means: {"psnr": psnr_from_mse(means["rec"])}, evaluate=evaluate)

