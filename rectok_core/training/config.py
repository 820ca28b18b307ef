"""training.config"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from rectok_core.config import device_spec, fraction, nonneg, open_unit, opt, positive, section
from rectok_core.errors import RectokError
from rectok_core.models.tokenizer import TokenizerModelConfig
from rectok_core.teachers import available_teachers, teacher_help
from rectok_core.training.engine import PRECISIONS
from rectok_core.training.logging import parse_log_spec
from rectok_core.utils.checkpoint import WEIGHTS
from rectok_core.utils.env import WORKERS_DEFAULT, default_workers


# ---------------------------------------------------------------------------------------------------------
# Training configuration shared by every training command
# ---------------------------------------------------------------------------------------------------------
@dataclass
class RunConfig:
    data: str = opt("digits", "training data: an ImageFolder dir (uses DIR/train if present), a 'path label' "
                              "list file, or 'digits' (built-in scikit-learn digits)")
    out: str = opt("runs/tokenizer", "run directory (config, metrics, checkpoints, images)")
    resume: bool = opt(False, "continue the run in --out from its latest checkpoint")
    seed: int = opt(1, "random seed (each process adds its rank)")
    batch_size: int = opt(64, "images per process per optimizer step")
    grad_accum: int = opt(1, "micro-batches accumulated per optimizer step")
    epochs: float = opt(200.0, "training length in epochs (ignored when --steps is set)")
    steps: int = opt(0, "training length in optimizer steps (0: from --epochs)")
    workers: int = opt(None, f"data-loading worker processes per rank ({WORKERS_DEFAULT})", flag_type=int,
                       default_factory=default_workers)
    device: str = opt("auto", "cuda, cpu or auto")
    precision: str = opt("auto", "autocast precision (auto: bf16 on CUDA, fp32 on CPU)", PRECISIONS)
    compile: bool | None = opt(None, "torch.compile the model (auto: on CUDA, off on CPU)",
                                flag_type=bool)
    log_every: int = opt(20, "steps between metric log lines")
    ckpt_every: int = opt(1000, "steps between checkpoints (one is always written at the end)")
    keep_every: int = opt(0, "also keep a permanent checkpoint every N steps (0: keep only the latest)")
    image_every: int = opt(1000, "steps between reconstruction/sample image grids")
    strict_data: bool = opt(False, "fail on the first unreadable image instead of skipping it")
    log: str = opt("jsonl", "experiment tracking, comma-separated: jsonl (OUT/metrics.jsonl, always on), "
                            "tensorboard (OUT/tensorboard), wandb (needs rectok[wandb]; WANDB_MODE=offline works)")

    def validate(self) -> None:
        parse_log_spec(self.log)
        positive("batch_size", self.batch_size)
        positive("grad_accum", self.grad_accum)
        positive("log_every", self.log_every)
        positive("ckpt_every", self.ckpt_every)
        positive("image_every", self.image_every)
        nonneg("steps", self.steps)
        nonneg("workers", self.workers)
        nonneg("keep_every", self.keep_every)
        if self.steps == 0 and not self.epochs > 0:
            raise RectokError("set a positive --epochs or --steps")
        device_spec("device", self.device)


@dataclass
class AdamWConfig:
    """The AdamW, clipping and EMA settings both trainers share (each command sets its own defaults)."""
    weight_decay: float = opt(1e-4, "AdamW weight decay (not on norms, biases, embeddings, tokens)")
    beta1: float = opt(0.9, "AdamW beta1")
    beta2: float = opt(0.95, "AdamW beta2")
    grad_clip: float = opt(3.0, "global gradient-norm clip (0: off)")
    ema: float = opt(0.999, "EMA decay of the trained weights (the EMA is what is evaluated and sampled)")

    def validate(self) -> None:
        nonneg("weight_decay", self.weight_decay)
        nonneg("grad_clip", self.grad_clip)
        open_unit("beta1", self.beta1)
        open_unit("beta2", self.beta2)
        fraction("ema", self.ema)


@dataclass
class OptimConfig(AdamWConfig):
    blr: float = opt(1e-4, "base learning rate; lr = blr × global batch / 256")
    lr: float = opt(0.0, "absolute learning rate (overrides --blr when > 0)")
    min_lr: float = opt(0.0, "learning rate at the end of the cosine decay")
    warmup: float = opt(0.25, "linear warm-up, as a fraction of the run (0.25 = 50 of 200 epochs)")

    def validate(self) -> None:
        super().validate()
        nonneg("blr", self.blr)
        nonneg("lr", self.lr)
        nonneg("min_lr", self.min_lr)
        fraction("warmup", self.warmup)
        if self.blr == 0 and self.lr == 0:
            raise RectokError("the learning rate is zero: set --blr or --lr")


@dataclass
class TokenizerLossConfig:
    teacher: str = opt("dinov3", teacher_help("vision foundation model teacher"), available_teachers(),
                       aliases=("--vfm",))
    teacher_weights: str = opt("", "local teacher weights file (used instead of the hub)", aliases=("--vfm-weights",))
    teacher_init: str = opt("pretrained", "teacher weights: pretrained, or random (speed tests only: meaningless "
                                          "features)", ("pretrained", "random"), aliases=("--vfm-init",))
    teacher_resize: str = opt("native", "teacher input: native (one teacher patch per token) or the official "
                                        "256→224→256 round trip", ("native", "official"), aliases=("--vfm-resize",))
    t_schedule: str = opt("shift", "noise-level distribution of Flow Semantic Distillation",
                          ("shift", "uniform", "lognorm"))
    gamma: float = opt(1.0, "noise scale of FSD; 0 disables flow noise")
    sem_input: str = opt("noisy", "semantic decoder input: noisy x_t (FSD) or clean z (x0-only alignment)",
                         ("noisy", "clean"))
    sem_target: str = opt("rec+align", "tokens in the semantic loss: all (rec+align), visible (align) or masked "
                                       "(rec)", ("rec+align", "align", "rec"))
    mask_min: float = opt(-0.1, "RAD mask ratio r = max(0, U(mask_min, mask_max))")
    mask_max: float = opt(0.4, "upper end of the mask-ratio draw (0 disables masking)")
    perceptual: str = opt("lpips", "perceptual loss", ("lpips", "lpips+convnext", "none"))
    lpips_vgg: str = opt("", "VGG16 ImageNet weights file for LPIPS (vgg16-397923af.pth)")
    convnext_weights: str = opt("", "ConvNeXt-S ImageNet weights file for the logit term")
    rec_weight: float = opt(1.0, "pixel MSE weight")
    perceptual_weight: float = opt(1.0, "perceptual loss weight")
    kl_weight: float = opt(1e-6, "KL weight")
    sem_weight: float = opt(1.0, "semantic (cosine) loss weight")
    gan_weight: float = opt(0.1, "generator GAN loss weight (0.1 is what the official runs used)")
    disc_start: float = opt(0.5, "start of the GAN, as a fraction of the run (0.5 = epoch 100 of 200; 1 = never)")
    disc_norm: str = opt("batch", "discriminator normalisation", ("batch", "sync"))

    def validate(self) -> None:
        for name in ("gamma", "rec_weight", "perceptual_weight", "kl_weight", "sem_weight", "gan_weight"):
            nonneg(name, getattr(self, name))
        fraction("disc_start", self.disc_start)
        if not -1 <= self.mask_min <= self.mask_max < 1:
            raise RectokError(f"mask ratios need -1 <= --mask-min ({self.mask_min}) <= --mask-max ({self.mask_max}) < 1")


@dataclass
class TokenizerTrainConfig:
    """``rectok train-tokenizer``: stage-1 RecTok training (FSD + RAD)."""
    preset: str = opt("base", "named preset (sets the defaults of every other option)")
    model: TokenizerModelConfig = section(TokenizerModelConfig)
    run: RunConfig = section(RunConfig)
    optim: OptimConfig = section(OptimConfig)
    loss: TokenizerLossConfig = section(TokenizerLossConfig)

    def validate(self) -> None:
        for part in (self.model, self.run, self.optim, self.loss):
            part.validate()


TOKENIZER_PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    # The official model (rectok_BB): ViT-B encoder and decoder, 16×16 tokens of 128 channels, DINOv3-L teacher.
    "base": {},
    # A CPU-sized model on the built-in digits: trains in seconds, for demos, tests and smoke runs.
    "tiny": {
        "model": dict(image_size=32, patch_size=4, width=64, depth=2, heads=4, dim=16,
                      sem_width=32, sem_depth=1, sem_heads=2),
        "run": dict(batch_size=16, epochs=0.0, steps=500, workers=0, log_every=20, ckpt_every=250,
                    image_every=100, out="runs/tiny-tokenizer"),
        "optim": dict(blr=1e-2, warmup=0.05, ema=0.99),
        # no GAN: a 2.8M-parameter PatchGAN overwhelms a 0.2M-parameter tokenizer in a 200-step run
        "loss": dict(teacher="inception-s", perceptual="none", gan_weight=0.0),
    },
    # The imagenette-64 setting of the reproduction study: 64 px, patch 4 → the paper's 16×16 token grid.
    "small64": {
        "model": dict(image_size=64, patch_size=4, width=256, depth=4, heads=4, dim=32,
                      sem_width=192, sem_depth=3, sem_heads=4),
        "run": dict(batch_size=64, epochs=0.0, steps=5000, out="runs/small64-tokenizer"),
        "optim": dict(blr=4e-4, warmup=0.05),
        "loss": dict(teacher="inception", perceptual="none"),
    },
}


@dataclass
class DecoderLossConfig:
    perceptual: str = opt("lpips", "perceptual loss", ("lpips", "lpips+convnext", "none"))
    lpips_vgg: str = opt("", "VGG16 ImageNet weights file for LPIPS (vgg16-397923af.pth)")
    convnext_weights: str = opt("", "ConvNeXt-S ImageNet weights file for the logit term")
    rec_weight: float = opt(1.0, "pixel MSE weight")
    perceptual_weight: float = opt(1.0, "perceptual loss weight")
    gan_weight: float = opt(0.1, "generator GAN loss weight")
    disc_start: float = opt(0.0, "start of the GAN (a fresh discriminator), as a fraction of the run")
    disc_norm: str = opt("batch", "discriminator normalisation", ("batch", "sync"))

    def validate(self) -> None:
        for name in ("rec_weight", "perceptual_weight", "gan_weight"):
            nonneg(name, getattr(self, name))
        fraction("disc_start", self.disc_start)

    def as_tokenizer_loss(self) -> TokenizerLossConfig:
        """The stage-1 loss settings with everything but reconstruction switched off (recipe §3.2)."""
        return TokenizerLossConfig(teacher="none", gamma=0.0, mask_min=0.0, mask_max=0.0, kl_weight=0.0,
                                   sem_weight=0.0, **dataclasses.asdict(self))


@dataclass
class FinetuneConfig:
    """``rectok finetune-decoder``: frozen encoder, pixel decoder fine-tuned for reconstruction (recipe §3.2)."""
    preset: str = opt("base", "named preset (sets the defaults of every other option)")
    tokenizer: str = opt("", "stage-1 tokenizer checkpoint to fine-tune", cli=False)
    init: str = opt("ema", "stage-1 weights to start from (the EMA weights are what stage-1 evaluation uses)",
                    WEIGHTS)
    model: TokenizerModelConfig = section(TokenizerModelConfig, cli=False)
    run: RunConfig = section(RunConfig, epochs=100.0, out="runs/decoder-ft")
    optim: OptimConfig = section(OptimConfig, blr=5e-5, warmup=0.05)
    loss: DecoderLossConfig = section(DecoderLossConfig)

    def validate(self) -> None:
        for part in (self.run, self.optim, self.loss):
            part.validate()


FINETUNE_PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "base": {},
    "tiny": {
        "run": dict(batch_size=32, epochs=0.0, steps=200, workers=0, log_every=10, ckpt_every=100,
                    image_every=100, out="runs/tiny-decoder-ft"),
        "optim": dict(blr=5e-3, warmup=0.05, ema=0.99),
        "loss": dict(perceptual="none", gan_weight=0.0),  # see the tiny tokenizer preset
    },
    # Fine-tuning a small64 tokenizer (the reproduction study's setting): no LPIPS weights offline.
    "small64": {
        "run": dict(batch_size=64, epochs=0.0, steps=2000, out="runs/small64-decoder-ft"),
        "optim": dict(blr=2e-4, warmup=0.05),
        "loss": dict(perceptual="none"),
    },
}


# ---------------------------------------------------------------------------------------------------------
# Generator (DiT^DH) training: ``rectok train-dit`` (recipe §4)
# ---------------------------------------------------------------------------------------------------------
DIT_SIZES = ("S", "B", "L", "XL", "mini", "tiny")  # the keys of rectok_core.dit.DIT_PRESETS


@dataclass
class DiTModelConfig:
    size: str = opt("XL", "DiT^DH size (set by --preset)", DIT_SIZES, cli=False)
    class_dropout: float = opt(0.1, "label-dropout probability (trains the null class that CFG uses)")

    def validate(self) -> None:
        fraction("class_dropout", self.class_dropout)


@dataclass
class DiTLatentConfig:
    tokenizer: str = opt("", "tokenizer checkpoint whose latents the DiT models (train-tokenizer / "
                             "finetune-decoder)", required=True)
    tokenizer_weights: str = opt("ema", "tokenizer weights that encode the images", WEIGHTS)
    cache_latents: str = opt("", "latent-cache folder, built there when missing (see cache-latents); training "
                                 "then reads no image. Empty: encode the images every step (official)")
    stats_dir: str = opt("", "folder of latent-statistics files keyed by the tokenizer's sha256 (empty: "
                             "<rectok cache>/latent-stats); a latent cache holds its own")
    encode_batch_size: int = opt(64, "images per batch when computing latent statistics or building the cache")

    def validate(self) -> None:
        if not self.tokenizer:
            raise RectokError("--tokenizer is required: the tokenizer checkpoint whose latents the DiT models")
        positive("encode_batch_size", self.encode_batch_size)


@dataclass
class DiTOptimConfig(AdamWConfig):
    lr: float = opt(2e-4, "learning rate (absolute: not scaled with the batch size)")
    min_lr: float = opt(2e-5, "learning rate at the end of the linear decay")
    decay_start: float = opt(40.0, "epoch at which the linear decay starts (constant --lr before; official 40)")
    decay_end: float = opt(800.0, "epoch at which the decay reaches --min-lr (constant after; official 800)")

    def validate(self) -> None:
        super().validate()
        positive("lr", self.lr)
        nonneg("min_lr", self.min_lr)
        nonneg("decay_start", self.decay_start)
        if self.decay_end < self.decay_start:
            raise RectokError(f"--decay-end {self.decay_end} is before --decay-start {self.decay_start}")


@dataclass
class DiTTrainConfig:
    """``rectok train-dit``: a class-conditional DiT^DH on a tokenizer's latents (flow matching, recipe §4)."""
    preset: str = opt("XL", "named preset: the DiT^DH size and its recipe (sets the defaults of every other option)")
    model: DiTModelConfig = section(DiTModelConfig)
    latents: DiTLatentConfig = section(DiTLatentConfig)
    run: RunConfig = section(RunConfig, batch_size=64, epochs=800.0, log_every=100, ckpt_every=1250,
                             image_every=5000, out="runs/dit")
    optim: DiTOptimConfig = section(DiTOptimConfig, weight_decay=0.0, grad_clip=1.0, ema=0.9995)

    def validate(self) -> None:
        for part in (self.model, self.latents, self.run, self.optim):
            part.validate()


DIT_TRAIN_PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    # The paper's generator: 800-epoch schedule (lr held to epoch 40, linear to 2e-5 at 800), 64 images per
    # GPU × 16 GPUs = 1024; the released checkpoints are epochs 80 and 600 of that schedule (--epochs 80/600).
    "XL": {"model": dict(size="XL"), "run": dict(out="runs/dit-xl")},
    "L": {"model": dict(size="L"), "run": dict(out="runs/dit-l")},
    "B": {"model": dict(size="B"), "run": dict(out="runs/dit-b")},
    # The AutoGuidance guide: DiT^DH-S, 30 epochs of the same schedule.
    "S": {"model": dict(size="S"), "run": dict(epochs=30.0, out="runs/dit-s")},
    # One-GPU small-scale studies (rectok reproduce): lr held, then decayed over the last part of a short run.
    "mini": {
        "model": dict(size="mini"),
        "run": dict(epochs=0.0, steps=6000, log_every=100, ckpt_every=1000, image_every=2000, out="runs/dit-mini"),
        "optim": dict(lr=2e-4, min_lr=2e-5, ema=0.999),
    },
    # CPU-sized, on the tiny tokenizer's digits latents: a few hundred steps, for demos, tests and smoke runs.
    "tiny": {
        "model": dict(size="tiny"),
        "run": dict(batch_size=32, epochs=0.0, steps=300, workers=0, log_every=10, ckpt_every=100,
                    image_every=100, out="runs/tiny-dit"),
        "optim": dict(lr=1e-3, min_lr=1e-4, decay_start=2.0, decay_end=7.0, ema=0.99),
        "latents": dict(encode_batch_size=128),
    },
}

