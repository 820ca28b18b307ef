"""training.config"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from rectok_core.config import (
    WEIGHTS,
    choice,
    device_option,
    device_spec,
    finite,
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
from rectok_core.data.config import TOKENIZER_IMAGE_SIZE_HELP
from rectok_core.errors import RectokError
from rectok_core.flow import OBJECTIVES
from rectok_core.models.config import DIT_PRESETS, DiTConfig, TokenizerModelConfig
from rectok_core.models.generators import DEFAULT_FAMILY, GENERATORS, parse_model_name
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


# ---------------------------------------------------------------------------------------------------------
# Generator (DiT^DH) training: ``rectok train-dit`` (recipe §4)
# ---------------------------------------------------------------------------------------------------------
DIT_SIZES = tuple(DIT_PRESETS)  # the DiT^DH size presets

#: The DiT^DH shape options: trunk width/depth/heads and DDT-head width/depth/heads.
DIT_SHAPE = ("width", "depth", "heads", "head_width", "head_depth", "head_heads")


def dit_shape(size: str) -> dict[str, int]:
    """The trunk and head shape of a DiT^DH size preset (head fields the preset omits: ``DiTConfig``'s defaults)."""
    c = DiTConfig(**DIT_PRESETS[size])
    return {k: getattr(c, k) for k in DIT_SHAPE}


def _head_counts(width: int) -> list[int]:
    """Head counts that split ``width`` into heads of a size divisible by 4 (2-D RoPE)."""
    return [h for h in range(1, width // 4 + 1) if width % (4 * h) == 0]


MODEL_HELP = GENERATORS.help("generator: FAMILY-SIZE (sizes s, b, l, xl, h where the family has them, tiny, mini "
                             "for CPU) or an official name (SiT_xl, DiTDDT_b, LightningDiT_large, DiT_xl ...); empty: "
                             "the DiT^DH of --preset. Families")


@dataclass
class DiTModelConfig:
    name: str = opt("", MODEL_HELP, flag="--model")
    objective: str = opt("", OBJECTIVES.help("training objective (empty: the --model family's own)"),
                         ("", *OBJECTIVES.names()))
    size: str = opt("XL", "DiT^DH size preset the shape starts from (set by --preset)", DIT_SIZES, cli=False)
    width: int = opt(None, "DiT trunk width (channels per token)", flag_type=int)
    depth: int = opt(None, "DiT trunk blocks", flag_type=int)
    heads: int = opt(None, "DiT trunk attention heads (width/heads must be divisible by 4)", flag_type=int)
    head_width: int = opt(None, "width of the wide DDT head", flag_type=int)
    head_depth: int = opt(None, "DDT head blocks", flag_type=int)
    head_heads: int = opt(None, "DDT head attention heads (head-width/head-heads must be divisible by 4)",
                          flag_type=int)
    class_dropout: float = opt(0.1, "label-dropout probability (trains the null class that CFG uses)")

    def __post_init__(self) -> None:
        # unset shape fields (also those of a config saved before they existed) are the size preset's
        if self.size in DIT_PRESETS:
            for k, v in dit_shape(self.size).items():
                if getattr(self, k) is None:
                    setattr(self, k, v)

    def shape(self) -> dict[str, int]:
        """The ``DiTConfig`` shape fields (``build_dit`` overrides)."""
        return {k: getattr(self, k) for k in DIT_SHAPE}

    def generator(self) -> tuple[str, str, dict[str, Any]]:
        """``(family, size, config overrides)`` of the generator to build: the ``--model`` (its registered size;
        the DiT^DH shape options apply to the DiT^DH of --preset only) or, without one, the DiT^DH of
        ``--preset`` with the shape options."""
        if self.name:
            family, size = parse_model_name(self.name)
            return family, size, {}
        return DEFAULT_FAMILY, self.size.lower(), self.shape()

    def label(self) -> str:
        """``DiT^DH-S``, or the trunk and head shape when the shape options changed the preset's; ``--model``'s
        rectok name (``sit-xl``) when one is given."""
        if self.name:
            family, size = parse_model_name(self.name)
            return f"{family}-{size}"
        if self.size in DIT_PRESETS and self.shape() == dit_shape(self.size):
            return f"DiT^DH-{self.size}"
        return (f"DiT^DH (trunk {self.width}×{self.depth}, {self.heads} heads; head {self.head_width}×"
                f"{self.head_depth}, {self.head_heads} heads)")

    def validate(self) -> None:
        fraction("class_dropout", self.class_dropout)
        if self.name:
            parse_model_name(self.name)  # unknown: one line listing the known names
            preset = dit_shape(self.size) if self.size in DIT_PRESETS else None
            given = [f"--{k.replace('_', '-')}" for k in DIT_SHAPE if preset and getattr(self, k) != preset[k]]
            if given:  # they shape the DiT^DH of --preset only: never silently ignored
                raise RectokError(f"{', '.join(given)} shape the DiT^DH of --preset, not --model {self.name}, which "
                                  f"has its registered shape: pick its size in the name (rectok generators)")
        for k in DIT_SHAPE:
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, int):
                raise RectokError(f"--{k.replace('_', '-')} must be an integer, got {v!r}")
            positive(k, v)
        for w, h, wn, hn in ((self.width, self.heads, "width", "heads"),
                             (self.head_width, self.head_heads, "head-width", "head-heads")):
            if w % h != 0 or (w // h) % 4 != 0:
                ok = _head_counts(w)
                hint = (f"e.g. --{hn} {min(ok, key=lambda c: abs(c - h))}" if ok else
                        f"make --{wn} a multiple of 4")
                raise RectokError(f"--{wn} {w} with --{hn} {h}: each attention head needs a whole number of "
                                  f"channels divisible by 4 (2-D RoPE); {hint}")


@dataclass
class DiTLatentConfig:
    tokenizer: str = opt("", "tokenizer checkpoint whose latents the DiT models (train-tokenizer / "
                             "finetune-decoder), or FAMILY:SOURCE of another family (rectok tokenizers)", required=True)
    tokenizer_weights: str = opt("ema", "tokenizer weights that encode the images", WEIGHTS)
    image_size: int = opt(0, TOKENIZER_IMAGE_SIZE_HELP + "; recorded in the checkpoint, so sample and export "
                             "decode at it")
    cache_latents: str = opt("", "latent-cache folder, built there when missing (see cache-latents); training "
                                 "then reads no image. Empty: encode the images every step (official)")
    stats_dir: str = opt("", "folder of latent-statistics files keyed by the tokenizer's sha256 (empty: "
                             "<rectok cache>/latent-stats); a latent cache holds its own")
    encode_batch_size: int = opt(64, "images per batch when computing latent statistics or building the cache")
    latent_norm: str = opt("family", "latent normalisation: family (the tokenizer family's own, as the official code "
                                     "trains: global scale/shift for sd-vae, eq-vae, sd3-vae, flux-vae, mar-kl16; "
                                     "per-channel data statistics for rectok, va-vae, detok) or data (per-channel "
                                     "statistics measured on the data for every family)", ("family", "data"))

    def validate(self) -> None:
        if not self.tokenizer:
            raise RectokError("--tokenizer is required: the tokenizer checkpoint whose latents the DiT models")
        positive("encode_batch_size", self.encode_batch_size)
        nonneg("image_size", self.image_size)


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


#: Guidance of train-dit's guided evaluation (``fid_cfg``): CFG with the run's null class, or AutoGuidance.
EVAL_GUIDANCE = ("cfg", "autoguidance")


@dataclass
class DiTEvalConfig:
    """Generator evaluation during train-dit (``--eval-every``, ``--eval-images``: the run section)."""
    eval_cfg: str = opt("cfg", "guidance of the guided evaluation (fid_cfg): cfg (the run's own null class) or "
                               "autoguidance (needs --eval-guide)", EVAL_GUIDANCE)
    eval_cfg_scale: float = opt(1.29, "guidance scale of the guided evaluation (official sampling: 1.29; 1: no "
                                      "guided evaluation)")
    eval_steps: int = opt(50, "time-grid points of the evaluation sampler (Euler; official online evaluation: 50)")
    eval_guide: str = opt("", "guide DiT checkpoint for --eval-cfg autoguidance (a smaller DiT of the same latents)")
    ref_stats: str = opt("", "FID reference statistics .npz (mu/sigma, as eval-samples takes; default: the training "
                             "images' statistics, computed once and cached)")
    eval_ref_images: int = opt(50000, "class-balanced training images whose statistics are the default FID "
                                      "reference (0: all)")

    def validate(self) -> None:
        finite("eval_cfg_scale", self.eval_cfg_scale)
        nonneg("eval_cfg_scale", self.eval_cfg_scale)
        if self.eval_steps < 2:
            raise RectokError(f"--eval-steps must be at least 2 (grid points), got {self.eval_steps}")
        nonneg("eval_ref_images", self.eval_ref_images)
        if self.eval_cfg == "autoguidance" and not self.eval_guide and self.eval_cfg_scale != 1.0:
            raise RectokError("--eval-cfg autoguidance needs --eval-guide GUIDE_CKPT (a smaller DiT of the same "
                              "latents)")
        if self.eval_guide and self.eval_cfg != "autoguidance":
            raise RectokError(f"--eval-guide is only used by --eval-cfg autoguidance (got --eval-cfg {self.eval_cfg})")


@dataclass
class DiTTrainConfig:
    """``rectok train-dit``: a class-conditional DiT^DH on a tokenizer's latents (flow matching, recipe §4)."""
    preset: str = opt("XL", "named preset: the DiT^DH size and its recipe (sets the defaults of every other option)")
    init: str = opt("", INIT_HELP + "a DiT^DH (train-dit or imported) of the same architecture; label rows by class "
                    "name, new classes fresh, the null row kept")
    model: DiTModelConfig = section(DiTModelConfig)
    latents: DiTLatentConfig = section(DiTLatentConfig)
    run: RunConfig = section(RunConfig, batch_size=64, epochs=800.0, log_every=100, ckpt_every=1250,
                             image_every=5000, out="runs/dit", eval_images=10000)  # official: 10k samples
    optim: DiTOptimConfig = section(DiTOptimConfig, weight_decay=0.0, grad_clip=1.0, ema=0.9995)
    evaluation: DiTEvalConfig = section(DiTEvalConfig)

    def validate(self) -> None:
        for part in (self.model, self.latents, self.run, self.optim, self.evaluation):
            part.validate()


DIT_TRAIN_PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    # The paper's generator: 800-epoch schedule (lr held to epoch 40, linear to 2e-5 at 800), 64 images per
    # GPU × 16 GPUs = 1024; the released checkpoints are epochs 80 and 600 of that schedule (--epochs 80/600).
    "XL": {"model": dict(size="XL", **dit_shape("XL")), "run": dict(out="runs/dit-xl")},
    "L": {"model": dict(size="L", **dit_shape("L")), "run": dict(out="runs/dit-l")},
    "B": {"model": dict(size="B", **dit_shape("B")), "run": dict(out="runs/dit-b")},
    # The AutoGuidance guide: DiT^DH-S, 30 epochs of the same schedule.
    "S": {"model": dict(size="S", **dit_shape("S")), "run": dict(epochs=30.0, out="runs/dit-s")},
    # One-GPU small-scale studies (rectok reproduce): lr held, then decayed over the last part of a short run.
    "mini": {
        "model": dict(size="mini", **dit_shape("mini")),
        "run": dict(epochs=0.0, steps=6000, log_every=100, ckpt_every=1000, image_every=2000, out="runs/dit-mini",
                    eval_images=1000),
        "optim": dict(lr=2e-4, min_lr=2e-5, ema=0.999),
        "evaluation": dict(eval_ref_images=10000),
    },
    # CPU-sized, on the tiny tokenizer's digits latents: a few hundred steps, for demos, tests and smoke runs.
    "tiny": {
        "model": dict(size="tiny", **dit_shape("tiny")),
        "run": dict(batch_size=32, epochs=0.0, steps=300, workers=0, log_every=10, ckpt_every=100,
                    image_every=100, out="runs/tiny-dit", eval_every=0, eval_images=64),
        "optim": dict(lr=1e-3, min_lr=1e-4, decay_start=2.0, decay_end=7.0, ema=0.99),
        "latents": dict(encode_batch_size=128),
        # evaluation off unless asked (--eval-every N): on a CPU the InceptionV3 costs more than the tiny DiT
        "evaluation": dict(eval_steps=10, eval_ref_images=500),
    },
}

