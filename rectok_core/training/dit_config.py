"""The settings of ``rectok train-dit`` (recipe §4): the generator's model, latents, optimizer and evaluation
sections, :class:`DiTTrainConfig` and its presets. The sections every training command shares (the run, AdamW,
``--init``) are in :mod:`rectok_core.training.config`."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rectok_core.config import (
    WEIGHTS,
    finite,
    fraction,
    nonneg,
    opt,
    positive,
    section,
)
from rectok_core.data.config import TOKENIZER_IMAGE_SIZE_HELP
from rectok_core.errors import RectokError
from rectok_core.flow import OBJECTIVES
from rectok_core.models.config import DIT_PRESETS, DiTConfig
from rectok_core.models.generators import DEFAULT_FAMILY, GENERATORS, parse_model_name
from rectok_core.training.config import INIT_HELP, AdamWConfig, RunConfig

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
    init: str = opt("", INIT_HELP + "a generator (train-dit or imported) of the same family and architecture; "
                    "label rows by class name, new classes fresh, the null row kept")
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

