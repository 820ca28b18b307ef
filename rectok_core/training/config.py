"""The settings every training command shares (the run: data, length, logging, checkpoints, evaluation,
milestones, starting points; AdamW and EMA) and those of the tokenizer stages (``rectok train-tokenizer``,
``rectok finetune-decoder``) with their presets. ``rectok train-dit``'s are in
:mod:`rectok_core.training.dit_config`."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from rectok_core.config import (
    WEIGHTS,
    choice,
    device_option,
    device_spec,
    fraction,
    nonneg,
    open_unit,
    opt,
    positive,
    precision_option,
    section,
    strict_data_option,
    workers_option,
)
from rectok_core.errors import RectokError
from rectok_core.models.config import TokenizerModelConfig
from rectok_core.teachers import available_teachers, teacher_help
from rectok_core.teachers.registry import teacher_spec
from rectok_core.training.milestones import MILESTONES_HELP, parse_milestones
from rectok_core.training.trackers import parse_log_spec

PERCEPTUAL_HELP = ("perceptual loss: lpips+convnext (official: (LPIPS-VGG16 + 0.1·ConvNeXt-S logit MSE) / 1.1, needs "
                   "both ImageNet weight files), lpips (rectok's choice: LPIPS alone) or none")

#: ``--recipe``: ``official`` (the default) keeps the field defaults, which are the official code's settings
#: wherever a choice changes the trained model (recipe §11); ``rectok`` sets rectok's own choices, each of which is
#: also one flag. Applied after the defaults and before the preset, the config file and the flags.
RECIPES = ("official", "rectok")
RECIPE_HELP = ("official (the official code's settings wherever they change the trained model) or rectok (rectok's "
               "choices: --rope rotation, --teacher-resize native, --perceptual lpips, --lr-scale-accum, and "
               "for finetune-decoder --init ema; recipe §11)")
RECTOK_RECIPE = {
    "tokenizer": {"model": dict(rope="rotation"), "loss": dict(perceptual="lpips", teacher_resize="native"),
                  "optim": dict(lr_scale_accum=True)},
    "finetune": {"": dict(init="ema"), "loss": dict(perceptual="lpips"), "optim": dict(lr_scale_accum=True)},
}


INIT_HELP = "start a new run from the weights (raw and EMA; no optimizer state) of "


def _apply_recipe(cfg: Any, name: str, table: dict[str, dict[str, Any]]) -> None:
    choice("recipe", name, RECIPES)
    cfg.recipe = name
    if name == "rectok":
        for part, values in table.items():
            for k, v in values.items():
                setattr(getattr(cfg, part) if part else cfg, k, v)


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
    workers: int = workers_option()
    device: str = device_option()
    precision: str = precision_option()
    compile: bool | None = opt(None, "torch.compile the model (auto: on CUDA, off on CPU)",
                                flag_type=bool)
    log_every: int = opt(20, "steps between metric log lines")
    ckpt_every: int = opt(1000, "steps between checkpoints (one is always written at the end)")
    keep_every: int = opt(0, "also keep a permanent checkpoint every N steps (0: none besides --milestones)")
    milestones: str = opt("10%", MILESTONES_HELP)
    resume_from: str = opt("", "continue the checkpoint FILE of another run of this command exactly (model, EMA, "
                               "optimizer, RNG, step, data position) in a new --out; the source folder is not touched")
    image_every: int = opt(1000, "steps between reconstruction/sample image grids")
    strict_data: bool = strict_data_option()
    log: str = opt("jsonl", "experiment tracking, comma-separated: jsonl (OUT/metrics.jsonl, always on), "
                            "tensorboard (OUT/tensorboard), wandb (needs rectok[wandb]; WANDB_MODE=offline works)")
    eval_every: int | None = opt(None, "steps between evaluations during training (also one at the end; 0: off). "
                                       "Default: a tenth of the run when the data has a validation split (runs of "
                                       "100+ steps), else off", flag_type=int)
    eval_images: int = opt(1000, "validation images per evaluation during training (tokenizer stages: a fixed, "
                                 "class-balanced subset; train-dit: generated samples); 1000 keeps one evaluation "
                                 "to a few percent of a run")

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
        if self.eval_every is not None:
            nonneg("eval_every", self.eval_every)
        positive("eval_images", self.eval_images)
        parse_milestones(self.milestones)
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
    blr: float = opt(1e-4, "base learning rate; lr = blr × batch size × processes / 256 (official: --grad-accum "
                           "does not enter, recipe §11.15)")
    lr: float = opt(0.0, "absolute learning rate (overrides --blr when > 0)")
    lr_scale_accum: bool = opt(False, "also multiply the --blr learning rate by --grad-accum (rectok's choice; the "
                                      "official code does not, recipe §11.15)")
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
class ReconstructionLossConfig:
    """The reconstruction loss both tokenizer stages share (pixel MSE, perceptual, GAN): one definition of each
    option; stage 1 adds the teacher, flow and KL terms (:class:`TokenizerLossConfig`), the decoder fine-tune
    starts its GAN at once (:class:`DecoderLossConfig`)."""

    perceptual: str = opt("lpips+convnext", PERCEPTUAL_HELP, ("lpips+convnext", "lpips", "none"))
    lpips_vgg: str = opt("", "VGG16 ImageNet weights file for LPIPS (vgg16-397923af.pth)")
    convnext_weights: str = opt("", "ConvNeXt-S ImageNet weights file for the logit term (convnext_small-0c510722.pth)")
    perceptual_init: str = opt("pretrained", "perceptual networks: pretrained, or random (tests and speed checks "
                                             "only: a meaningless loss)", ("pretrained", "random"))
    rec_weight: float = opt(1.0, "pixel MSE weight")
    perceptual_weight: float = opt(1.0, "perceptual loss weight")
    gan_weight: float = opt(0.1, "generator GAN loss weight (0.1 is what the official runs used)")
    disc_start: float = opt(0.5, "start of the GAN, as a fraction of the run")
    disc_norm: str = opt("batch", "discriminator normalisation", ("batch", "sync"))

    def validate(self) -> None:
        for name in ("rec_weight", "perceptual_weight", "gan_weight"):
            nonneg(name, getattr(self, name))
        fraction("disc_start", self.disc_start)


@dataclass
class TokenizerLossConfig(ReconstructionLossConfig):
    teacher: str = opt("dinov3", teacher_help("vision foundation model teacher"), available_teachers(),
                       aliases=("--vfm",))
    teacher_weights: str = opt("", "local teacher weights file (used instead of the hub)", aliases=("--vfm-weights",))
    teacher_init: str = opt("pretrained", "teacher weights: pretrained, or random (speed tests only: meaningless "
                                          "features)", ("pretrained", "random"), aliases=("--vfm-init",))
    teacher_resize: str = opt("official", "teacher input: official (the 256→224→256 round trip, /16 DINOv3 teachers "
                                          "only) or native (one teacher patch per token, rectok's choice; needed by "
                                          "every other teacher)", ("official", "native"), aliases=("--vfm-resize",))
    t_schedule: str = opt("shift", "noise-level distribution of Flow Semantic Distillation",
                          ("shift", "uniform", "lognorm"))
    gamma: float = opt(1.0, "noise scale of FSD; 0 disables flow noise")
    sem_input: str = opt("noisy", "semantic decoder input: noisy x_t (FSD) or clean z (x0-only alignment)",
                         ("noisy", "clean"))
    sem_target: str = opt("rec+align", "tokens in the semantic loss: all (rec+align), visible (align) or masked "
                                       "(rec)", ("rec+align", "align", "rec"))
    mask_min: float = opt(-0.1, "RAD mask ratio r = max(0, U(mask_min, mask_max))")
    mask_max: float = opt(0.4, "upper end of the mask-ratio draw (0 disables masking)")
    kl_weight: float = opt(1e-6, "KL weight")
    sem_weight: float = opt(1.0, "semantic (cosine) loss weight")
    disc_start: float = opt(0.5, "start of the GAN, as a fraction of the run (0.5 = epoch 100 of 200; 1 = never)")

    def validate(self) -> None:
        super().validate()
        for name in ("gamma", "kl_weight", "sem_weight"):
            nonneg(name, getattr(self, name))
        if self.teacher_resize == "official" and self.teacher != "none":
            spec = teacher_spec(self.teacher)
            if (spec.family, spec.patch) != ("dinov3", 16):
                raise RectokError(f"--teacher-resize official (the official 256→224→256 round trip, the default) "
                                  f"exists for /16 DINOv3 teachers only: add --teacher-resize native for --teacher "
                                  f"{self.teacher}")
        if not -1 <= self.mask_min <= self.mask_max < 1:
            raise RectokError(f"mask ratios need -1 <= --mask-min ({self.mask_min}) <= --mask-max ({self.mask_max}) < 1")


@dataclass
class TokenizerTrainConfig:
    """``rectok train-tokenizer``: stage-1 RecTok training (FSD + RAD)."""
    preset: str = opt("base", "named preset: base (the official model and recipe), tiny and small64 (CPU and "
                              "small-GPU demos with cheaper settings: --perceptual none, an offline InceptionV3 "
                              "teacher with --teacher-resize native; tiny also no GAN)")
    recipe: str = opt("official", RECIPE_HELP, RECIPES)
    init: str = opt("", INIT_HELP + "a tokenizer (rectok checkpoint, imported official file or export folder): strict, "
                    "positional embeddings bicubic-interpolated to a new image size (same patch size)")
    model: TokenizerModelConfig = section(TokenizerModelConfig)
    run: RunConfig = section(RunConfig)
    optim: OptimConfig = section(OptimConfig)
    loss: TokenizerLossConfig = section(TokenizerLossConfig)

    def apply_recipe(self, name: str) -> None:
        _apply_recipe(self, name, RECTOK_RECIPE["tokenizer"])

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
        # no evaluation during training by default: on a CPU one InceptionV3 pass over the digits' 360 validation
        # images costs more than a tenth of this run (turn it on with --eval-every N --eval-images 50)
        "run": dict(batch_size=16, epochs=0.0, steps=500, workers=0, log_every=20, ckpt_every=250,
                    image_every=100, eval_every=0, out="runs/tiny-tokenizer"),
        "optim": dict(blr=1e-2, warmup=0.05, ema=0.99),
        # no GAN: a 2.8M-parameter PatchGAN overwhelms a 0.2M-parameter tokenizer in a 200-step run
        "loss": dict(teacher="inception-s", teacher_resize="native", perceptual="none", gan_weight=0.0),
    },
    # The imagenette-64 setting of the reproduction study: 64 px, patch 4 → the paper's 16×16 token grid.
    "small64": {
        "model": dict(image_size=64, patch_size=4, width=256, depth=4, heads=4, dim=32,
                      sem_width=192, sem_depth=3, sem_heads=4),
        "run": dict(batch_size=64, epochs=0.0, steps=5000, out="runs/small64-tokenizer"),
        "optim": dict(blr=4e-4, warmup=0.05),
        "loss": dict(teacher="inception", teacher_resize="native", perceptual="none"),
    },
}


@dataclass
class DecoderLossConfig(ReconstructionLossConfig):
    disc_start: float = opt(0.0, "start of the GAN (a fresh discriminator), as a fraction of the run")

    def as_tokenizer_loss(self) -> TokenizerLossConfig:
        """The stage-1 loss settings with everything but reconstruction switched off (recipe §3.2)."""
        return TokenizerLossConfig(teacher="none", gamma=0.0, mask_min=0.0, mask_max=0.0, kl_weight=0.0,
                                   sem_weight=0.0, **dataclasses.asdict(self))


#: Where a decoder fine-tuning starts (``--init``): see :class:`FinetuneConfig`.
FINETUNE_INITS = ("official",) + tuple(WEIGHTS)


@dataclass
class FinetuneConfig:
    """``rectok finetune-decoder``: frozen encoder, pixel decoder fine-tuned for reconstruction (recipe §3.2)."""
    preset: str = opt("base", "named preset: base (the official recipe), tiny and small64 (CPU and small-GPU demos "
                              "with --perceptual none; tiny also no GAN)")
    recipe: str = opt("official", RECIPE_HELP, RECIPES)
    tokenizer: str = opt("", "stage-1 tokenizer checkpoint to fine-tune", cli=False)
    init: str = opt("official", "start: official (live model ← stage-1 raw weights, EMA ← stage-1 EMA; the frozen "
                                "encoder is the raw one in both, recipe §3.3), ema or raw (both from those weights; "
                                "ema is rectok's choice)", FINETUNE_INITS)
    model: TokenizerModelConfig = section(TokenizerModelConfig, cli=False)
    run: RunConfig = section(RunConfig, epochs=100.0, out="runs/decoder-ft")
    optim: OptimConfig = section(OptimConfig, blr=5e-5, warmup=0.05)
    loss: DecoderLossConfig = section(DecoderLossConfig)

    def apply_recipe(self, name: str) -> None:
        _apply_recipe(self, name, RECTOK_RECIPE["finetune"])

    def validate(self) -> None:
        for part in (self.run, self.optim, self.loss):
            part.validate()


FINETUNE_PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "base": {},
    "tiny": {
        "run": dict(batch_size=32, epochs=0.0, steps=200, workers=0, log_every=10, ckpt_every=100,
                    image_every=100, eval_every=0, out="runs/tiny-decoder-ft"),  # no evaluation: see tiny above
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
