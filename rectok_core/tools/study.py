"""The reproduction study: the paper's comparative claims at small scale, run with rectok's own commands.

RecTok's claims are comparative (the paper's ablations):

1. distilling the teacher along the whole forward flow (FSD) keeps x_t semantic where x0-only alignment does not;
2. alignment plus masked reconstruction (RAD) beats alignment alone;
3. with FSD, a larger latent dim improves reconstruction, generation and probing together.

The study trains one tokenizer per *arm* with equal budgets (same steps, batch, model size and seed) and only
the flags that define the arm changed:

==============  ===================================  ==========================================
arm             meaning                              flags on top of the shared settings
==============  ===================================  ==========================================
no-distill      1. no distillation                   ``--teacher none --mask-max 0``
x0-align        2. x0-only alignment                 ``--sem-input clean --mask-max 0``
fsd-align       3. FSD, alignment only (no RAD)      ``--mask-max 0``
fsd-rad         4. FSD + RAD (the full recipe)       (none: the recipe's defaults)
fsd-rad-cN      5. the full recipe at latent dim N   ``--dim N``
fsd-rad-seedS   the full recipe again, seed S        ``--seed S`` (run-to-run noise)
==============  ===================================  ==========================================

and then, per arm: a short decoder fine-tune, rFID/PSNR/SSIM on the val split, a probe-flow curve (all arms in one
plot, the teacher's own line included), and for some arms a small DiT^DH with gFID against train-set statistics.

:func:`plan` turns a :class:`StudyConfig` into the list of ``rectok`` command lines (:class:`Step`), which the
CLI runs in order (skipping finished ones, resuming interrupted training); :func:`collect` reads their outputs
back into ``study.json``, ``results.md`` and the plots. The plan is pure data, so the exact commands are written
to ``commands.sh`` and can be rerun by hand.
"""
from __future__ import annotations

import os
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rectok_core.config import device_option, device_spec, opt, section, to_argv, workers_option
from rectok_core.errors import RectokError
from rectok_core.metrics.config import EvalConfig, EvalSamplesConfig, FidStatsConfig, ProbeConfig
from rectok_core.sampling.config import SampleConfig
from rectok_core.teachers import available_teachers, teacher_help
from rectok_core.training.config import FinetuneConfig, TokenizerTrainConfig
from rectok_core.training.dit_config import DiTTrainConfig
from rectok_core.utils.files import write_text_atomic

FORMAT = "rectok.study"


VERSION = 1


# ---------------------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------------------
@dataclass
class StudyRunConfig:
    data: str = opt("", "labelled ImageFolder with train/ and val/ (e.g. imagenette-64, see the README); required")
    out: str = opt("runs/reproduction", "study folder: every run, commands.sh, study.json, results.md, plots")
    device: str = device_option("every command of the study")
    workers: int = workers_option(what="data-loading worker processes of every command")
    seed: int = opt(1, "training seed of every arm (the repeat arm uses --repeat-seed)")

    def validate(self) -> None:
        if not self.data:
            raise RectokError("--data is required: a labelled ImageFolder with train/ and val/ sub-folders")
        root = Path(self.data)
        for split in ("train", "val"):
            if not (root / split).is_dir():
                raise RectokError(f"--data {self.data}: no {split}/ folder (the study needs train/ and val/)")
        if self.workers < 0:
            raise RectokError(f"--workers must be >= 0, got {self.workers}")
        device_spec("device", self.device)


@dataclass
class StudyTokenizerConfig:
    tokenizer_preset: str = opt("small64", "train-tokenizer preset of every arm (model size and optimiser)")
    image_size: int = opt(64, "image side in pixels")
    patch_size: int = opt(4, "patch side (64 px / 4 = the paper's 16×16 token grid)")
    teacher: str = opt("inception", teacher_help("teacher of the distilling arms (inception: the offline stand-in; "
                                                 "dinov3 where its weights exist)", include_none=False),
                       available_teachers(include_none=False))
    teacher_weights: str = opt("", "local teacher weights file (--teacher-weights)")
    dim: int = opt(32, "latent dim of arms 1–4")
    dims: str = opt("16,32,64,128", "latent dims of the full-recipe arm 5 (comma-separated)")
    steps: int = opt(2000, "stage-1 optimizer steps of every arm")
    batch_size: int = opt(64, "stage-1 batch size of every arm")
    gan_weight: float = opt(0.0, "stage-1 GAN weight of every arm (0: off — the claims are about the latent, and "
                                 "a PatchGAN can overwhelm a small tokenizer in a short run)")
    repeat_seed: int = opt(2, "run the full-recipe arm again with this seed to measure run-to-run noise (0: no)")
    ft_steps: int = opt(1000, "decoder fine-tuning steps of every arm (MSE; no LPIPS/GAN, see docs)")
    ft_blr: float = opt(2e-4, "decoder fine-tuning base learning rate (lr = blr × batch / 256)")

    def validate(self) -> None:
        if not self.gan_weight >= 0:
            raise RectokError(f"--gan-weight must be >= 0, got {self.gan_weight}")
        if not self.ft_blr > 0:
            raise RectokError(f"--ft-blr must be positive, got {self.ft_blr}")
        for name in ("image_size", "patch_size", "dim", "steps", "batch_size", "ft_steps"):
            if getattr(self, name) < 1:
                raise RectokError(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        if self.repeat_seed < 0:
            raise RectokError(f"--repeat-seed must be >= 0, got {self.repeat_seed}")
        self.dim_list()

    def dim_list(self) -> list[int]:
        try:
            dims = [int(x) for x in self.dims.split(",") if x.strip()]
        except ValueError:
            raise RectokError(f"--dims {self.dims!r}: expected comma-separated integers") from None
        if any(d < 1 for d in dims):
            raise RectokError(f"--dims {self.dims!r}: every dim must be positive")
        if len(set(dims)) != len(dims):
            raise RectokError(f"--dims {self.dims!r} has repeated values")
        return sorted(dims)


@dataclass
class StudyEvalConfig:
    probe_per_class: int = opt(0, "probe-flow: train images per class (0: all)")
    probe_val_per_class: int = opt(0, "probe-flow: val images per class (0: all)")
    rfid_per_class: int = opt(0, "rFID/PSNR/SSIM: val images per class (0: all)")
    dit_arms: str = opt("x0-align,fsd-rad", "arms that get a DiT^DH and a gFID (comma-separated; empty: none)")
    dit_preset: str = opt("mini", "train-dit preset of the generators")
    dit_steps: int = opt(4000, "DiT^DH training steps of every generator arm")
    dit_batch_size: int = opt(128, "DiT^DH batch size")
    samples: int = opt(10000, "samples per generator for gFID (labels cycle over the classes)")
    sample_steps: int = opt(50, "Euler time-grid points of sampling (no guidance)")
    ref_per_class: int = opt(0, "train images per class in the gFID reference statistics (0: all)")

    def validate(self) -> None:
        for name in ("probe_per_class", "probe_val_per_class", "rfid_per_class", "ref_per_class"):
            if getattr(self, name) < 0:
                raise RectokError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")
        for name in ("dit_steps", "dit_batch_size", "samples"):
            if getattr(self, name) < 1:
                raise RectokError(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        if self.samples < 2:
            raise RectokError("--samples must be at least 2 (FID)")
        if self.sample_steps < 2:
            raise RectokError(f"--sample-steps must be at least 2, got {self.sample_steps}")


@dataclass
class StudyConfig:
    """``rectok reproduce``: the paper's comparisons at small scale (see ``docs/reproduction.md``)."""
    preset: str = opt("gpu", "named preset: gpu (one GPU; sized for ≤ 25 min, not yet timed) or smoke (CPU)")
    run: StudyRunConfig = section(StudyRunConfig)
    tokenizer: StudyTokenizerConfig = section(StudyTokenizerConfig)
    eval: StudyEvalConfig = section(StudyEvalConfig)

    def validate(self) -> None:
        self.run.validate()
        self.tokenizer.validate()
        self.eval.validate()
        known = {a.name for a in arms(self)}
        bad = [a for a in self.dit_arm_list() if a not in known]
        if bad:
            raise RectokError(f"--dit-arms: unknown arm {bad[0]!r}; arms are {', '.join(sorted(known))}")

    def dit_arm_list(self) -> list[str]:
        return [a.strip() for a in self.eval.dit_arms.split(",") if a.strip()]


STUDY_PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    # One GPU: the small64 tokenizer (ViT width 256, depth 4) with the full InceptionV3 Mixed_6e teacher, a
    # DiT^DH "mini" generator, 10,000 samples against all train images.
    "gpu": {},
    # CPU (72 min on the shared 2-core development machine): the tiny tokenizer at 64 px with the cheap Mixed_5d
    # teacher, short runs, class-balanced subsets for probing and FID. The same commands and arms; the numbers are
    # a smoke test of the study, not findings.
    "smoke": {
        "run": dict(workers=0, out="runs/reproduction-smoke"),
        "tokenizer": dict(tokenizer_preset="tiny", teacher="inception-s", dims="16,32,64", steps=300,
                          batch_size=32, ft_steps=150, ft_blr=5e-3),
        "eval": dict(probe_per_class=200, probe_val_per_class=100, rfid_per_class=50, dit_preset="tiny",
                     dit_steps=600, dit_batch_size=64, samples=1000, sample_steps=25, ref_per_class=100),
    },
}


# ---------------------------------------------------------------------------------------------------------
# Arms
# ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Arm:
    name: str                # run-folder name and curve label
    label: str               # what it tests, for tables
    options: tuple[tuple[str, Any], ...]  # train-tokenizer options (field, value) on top of the shared settings
    dim: int
    seed: int
    group: str               # "method" (arms 1–4), "dim" (arm 5) or "repeat"

    @property
    def flags(self) -> tuple[str, ...]:
        """The arm's own ``train-tokenizer`` flags."""
        return to_argv(TokenizerTrainConfig, dict(self.options))


def arms(cfg: StudyConfig) -> list[Arm]:
    """Every arm of the study, in table order. The full-recipe arm at ``--dim`` is shared by arms 4 and 5."""
    T, seed = cfg.tokenizer, cfg.run.seed
    no_mask = (("mask_max", 0),)
    out = [
        Arm("no-distill", "1. no distillation", (("teacher", "none"), *no_mask), T.dim, seed, "method"),
        Arm("x0-align", "2. x0-only alignment", (("sem_input", "clean"), *no_mask), T.dim, seed, "method"),
        Arm("fsd-align", "3. FSD, alignment only", no_mask, T.dim, seed, "method"),
        Arm("fsd-rad", "4. FSD + RAD (full recipe)", (), T.dim, seed, "method"),
    ]
    for d in T.dim_list():
        if d != T.dim:
            out.append(Arm(f"fsd-rad-c{d}", f"5. full recipe, C = {d}", (), d, seed, "dim"))
    if T.repeat_seed and T.repeat_seed != seed:
        out.append(Arm(f"fsd-rad-seed{T.repeat_seed}", f"4. again with seed {T.repeat_seed}", (), T.dim,
                       T.repeat_seed, "repeat"))
    return out


def dim_arms(cfg: StudyConfig) -> list[Arm]:
    """The full-recipe arms ordered by latent dim (arm 5), the ``--dim`` one included when it is in ``--dims``."""
    dims = set(cfg.tokenizer.dim_list())
    return sorted((a for a in arms(cfg) if a.group in ("dim", "method") and a.name.startswith("fsd-rad")
                   and a.dim in dims), key=lambda a: a.dim)


# ---------------------------------------------------------------------------------------------------------
# The plan: rectok command lines
# ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Step:
    key: str                 # unique, also the name of its done-marker
    argv: tuple[str, ...]    # arguments of ``rectok``
    run_dir: str = ""        # a training run that an interrupted study resumes (adds --resume)

    def command(self) -> str:
        return "rectok " + " ".join(shlex.quote(a) for a in self.argv)


class Layout:
    """Where everything of a study lives under ``out``."""

    def __init__(self, out: str | os.PathLike[str]):
        self.out = Path(out)

    def tokenizer(self, arm: str) -> Path:
        return self.out / "tokenizers" / arm

    def tokenizer_ckpt(self, arm: str) -> Path:
        return self.tokenizer(arm) / "checkpoints" / "latest.pt"

    def decoder(self, arm: str) -> Path:
        return self.out / "decoders" / arm

    def decoder_ckpt(self, arm: str) -> Path:
        return self.decoder(arm) / "checkpoints" / "latest.pt"

    def eval(self, arm: str) -> Path:
        return self.out / "eval" / arm

    def dit(self, arm: str) -> Path:
        return self.out / "dit" / arm

    def samples(self, arm: str) -> Path:
        return self.out / "samples" / arm

    @property
    def probe(self) -> Path:
        return self.out / "probe"

    @property
    def val_stats(self) -> Path:
        return self.out / "stats" / "val.npz"

    @property
    def train_stats(self) -> Path:
        return self.out / "stats" / "train.npz"

    @property
    def done(self) -> Path:
        return self.out / ".done"


def _common(cfg: StudyConfig) -> dict[str, Any]:
    return {"device": cfg.run.device, "workers": cfg.run.workers}


def _step(key: str, command: str, cls: type, *args: Any, run_dir: Path | None = None, **options: Any) -> Step:
    """One ``rectok`` command line: ``command``, its positional ``args``, then ``options`` (fields of the command's
    config ``cls``) as flags through :func:`~rectok_core.config.to_argv`."""
    return Step(key, (command, *map(str, args), *to_argv(cls, options)), run_dir=str(run_dir) if run_dir else "")


def plan(cfg: StudyConfig) -> list[Step]:
    """The study's command lines, in the order they must run."""
    R, T, E = cfg.run, cfg.tokenizer, cfg.eval
    L = Layout(R.out)
    data = R.data
    teacher = {"teacher": T.teacher, "teacher_weights": T.teacher_weights or None}
    steps: list[Step] = []
    all_arms = arms(cfg)
    for a in all_arms:
        own = dict(a.options)
        steps.append(_step(
            f"train-tokenizer.{a.name}", "train-tokenizer", TokenizerTrainConfig, run_dir=L.tokenizer(a.name),
            preset=T.tokenizer_preset, data=data, image_size=T.image_size, patch_size=T.patch_size, dim=a.dim,
            steps=T.steps, batch_size=T.batch_size, gan_weight=f"{T.gan_weight:g}", seed=a.seed, **_common(cfg),
            ckpt_every=max(1, T.steps // 4), image_every=T.steps, **({} if "teacher" in own else teacher), **own,
            out=L.tokenizer(a.name)))
    steps.append(_step(
        "probe-flow", "probe-flow", ProbeConfig, *(L.tokenizer_ckpt(a.name) for a in all_arms), data=data,
        teacher=T.teacher, device=R.device, workers=R.workers, out=L.probe, teacher_weights=T.teacher_weights or None,
        per_class=E.probe_per_class or None, val_per_class=E.probe_val_per_class or None))
    for i, a in enumerate(all_arms):
        steps.append(_step(
            f"finetune-decoder.{a.name}", "finetune-decoder", FinetuneConfig, L.tokenizer_ckpt(a.name),
            run_dir=L.decoder(a.name), preset="tiny", data=data, steps=T.ft_steps, batch_size=T.batch_size,
            blr=T.ft_blr, seed=a.seed, perceptual="none", gan_weight=0, **_common(cfg),
            ckpt_every=max(1, T.ft_steps // 2), image_every=T.ft_steps, out=L.decoder(a.name)))
        # the first evaluation saves the val images' Inception statistics; the others reuse them
        stats = {"save_stats" if i == 0 else "ref_stats": L.val_stats}
        steps.append(_step(
            f"eval.{a.name}", "eval", EvalConfig, L.decoder_ckpt(a.name), data=data, split="val", **stats,
            **_common(cfg), out=L.eval(a.name), per_class=E.rfid_per_class or None))
    dit_arms = cfg.dit_arm_list()
    if dit_arms:
        steps.append(_step(
            "fid-stats.train", "fid-stats", FidStatsConfig, Path(data) / "train", out=L.train_stats, device=R.device,
            workers=R.workers, per_class=E.ref_per_class or None))
    by_name = {a.name: a for a in all_arms}
    for name in dit_arms:
        a = by_name[name]
        steps.append(_step(
            f"train-dit.{name}", "train-dit", DiTTrainConfig, run_dir=L.dit(name), preset=E.dit_preset,
            tokenizer=L.decoder_ckpt(name), data=data, cache_latents=L.out / "latents" / name, steps=E.dit_steps,
            batch_size=E.dit_batch_size, seed=a.seed, **_common(cfg), ckpt_every=max(1, E.dit_steps // 4),
            image_every=E.dit_steps, out=L.dit(name)))
        steps.append(_step(
            f"sample.{name}", "sample", SampleConfig, L.dit(name) / "checkpoints" / "latest.pt", n=E.samples,
            steps=E.sample_steps, seed=0, device=R.device, out=L.samples(name)))
        steps.append(_step(
            f"eval-samples.{name}", "eval-samples", EvalSamplesConfig, L.samples(name), ref_stats=L.train_stats,
            device=R.device, out=L.samples(name) / "eval.json"))
    return steps


def write_commands(cfg: StudyConfig, steps: list[Step], path: str | os.PathLike[str]) -> Path:
    """``commands.sh``: the study as a shell script (what ``rectok reproduce`` runs, in order)."""
    path = Path(path)
    lines = ["#!/usr/bin/env bash", f"# rectok reproduce --preset {cfg.preset}: {len(steps)} commands, in order.",
             "# Rerun a command with --resume added to continue an interrupted training run.", "set -euo pipefail", ""]
    lines += [s.command() for s in steps]
    return write_text_atomic(path, "\n".join(lines) + "\n")
