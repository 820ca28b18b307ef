"""The generator half of the pipeline: ``cache-latents``, ``train-dit``, ``sample``, ``eval-samples``, ``fid-stats``."""
from __future__ import annotations

import os
from typing import Optional

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from rectok_core.data.config import CacheLatentsConfig
from rectok_core.metrics.config import EvalSamplesConfig, FidStatsConfig
from rectok_core.sampling.config import SampleConfig
from rectok_core.training.dit_config import DIT_TRAIN_PRESETS, DiTTrainConfig

from .app import app, user_errors
from .options import TOKENIZER_ARG, argument, make_config, split_overrides, with_config_options
from .present import note, run_done

console = Console(stderr=True, markup=False)  # paths and labels are printed as they are


def _is_main() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def cache_latents_config(tokenizer: str, **kwargs) -> CacheLatentsConfig:
    from rectok_core.training.inherit import from_tokenizer

    return from_tokenizer(CacheLatentsConfig, tokenizer, split_overrides(CacheLatentsConfig, kwargs)[0], show=note)


@app.command("cache-latents")
@user_errors
@with_config_options(CacheLatentsConfig, extra=[argument("tokenizer", TOKENIZER_ARG)], resolve=cache_latents_config)
def cache_latents(tokenizer: str, **kwargs):
    """Encode every training image and its mirror once: posterior moments in shards, plus latent statistics.

    `train-dit --cache-latents DIR` then reads no image. Launch with torchrun to spread the shards over GPUs.

    A killed run resumes where it stopped; a folder made from another tokenizer or data is refused.
    """
    from rectok_core.training.latents import cache_latents as run

    cache = run(tokenizer, cache_latents_config(tokenizer, **kwargs))
    if _is_main():
        console.print(f"latent cache: {cache.folder} ({cache.count} images × 2 flips, {cache.num_classes} "
                      f"classes, {len(cache.bad)} unreadable)", highlight=False, soft_wrap=True)


def train_dit_config(**kwargs) -> DiTTrainConfig:
    from rectok_core.training.inherit import dit_run_config

    return dit_run_config(split_overrides(DiTTrainConfig, kwargs)[0], show=note)


@app.command("train-dit")
@user_errors
@with_config_options(DiTTrainConfig, DIT_TRAIN_PRESETS, resolve=train_dit_config)
def train_dit(**kwargs):
    """Train a class-conditional DiT^DH on a tokenizer's latents (flow matching, recipe §4), or another family.

    --preset picks the size (XL: the paper's generator, S: its AutoGuidance guide, tiny: CPU demo).

    --model trains another generator family with its own objective: sit-xl, lightningdit-xl, dit-xl (diffusion) …
    or an official name (SiT_xl, LightningDiT_xl, DiT_xl, DiTDDT_xl); the preset still sets the recipe.

    Every option defaults to the preset's value. Latents are encoded every step, or read from --cache-latents.

    Launch with torchrun for several GPUs; --resume continues exactly.
    """
    from rectok_core.training.dit import train_dit as run

    run_done(run(train_dit_config(**kwargs)))


DIT_CKPT = argument("dit_ckpt", "DiT^DH checkpoint (train-dit), export folder or Hub id (default: the newest DiT run "
                                "under runs/)", required=False, annotation=Optional[str])


@app.command("sample")
@user_errors
@with_config_options(SampleConfig, extra=[DIT_CKPT])
def sample(dit_ckpt: str | None, **kwargs):
    """Generate images: PNGs, an ADM-style .npz and a grid, in a resumable folder with a manifest.

    Sample i has label i mod K and noise from (seed, i) only: the images do not depend on the batch size.

    Launch with torchrun to spread the samples over GPUs; a rerun continues an interrupted folder.
    """
    from rectok_core.sampling.folder import sample as run
    from rectok_core.training.rundir import newest_run_checkpoint

    cfg = make_config(SampleConfig, split_overrides(SampleConfig, kwargs)[0])
    if dit_ckpt is None:
        dit_ckpt = str(newest_run_checkpoint("dit"))
        if _is_main():
            console.print(f"sampling the newest DiT run: {dit_ckpt}", highlight=False, soft_wrap=True)
    res = run(dit_ckpt, cfg)
    if _is_main():
        console.print(f"{res.n} samples in {res.out} ({res.generated} new, {res.existing} already there): "
                      f"{res.npz}, {res.grid}", highlight=False, soft_wrap=True)


@app.command("eval-samples")
@user_errors
@with_config_options(EvalSamplesConfig, extra=[argument("samples", "a `rectok sample` folder, its samples.npz, an "
                                                                   "ADM-style .npz or an image folder")])
def eval_samples(samples: str, **kwargs):
    """gFID of generated samples against reference statistics or images (plus IS, precision/recall, KID).

    Writes the metrics and their manifest (reference hash, labels, sampler, guidance, seed, hashes) as JSON.

    A metric that cannot be computed is reported as unavailable with the reason, never as a number.
    """
    from rectok_core.metrics.commands import evaluate_generated

    result, path = evaluate_generated(samples, make_config(EvalSamplesConfig, split_overrides(EvalSamplesConfig,
                                                                                              kwargs)[0]))
    show_eval(result)
    console.print(f"results: {path}", highlight=False, soft_wrap=True)


def show_eval(result: dict, out: Console = Console()) -> None:
    """The terminal view of an ``evaluate_samples`` result."""
    m, man = result["metrics"], result["manifest"]
    gen = man["generator"]
    caption = escape(f"{man['samples']['num_images']} samples vs {man['reference']['kind']} {man['reference']['path']}")
    if gen["known"]:
        g = gen["guidance"]
        caption += escape(f"\n{gen['sampler']} {gen['steps']} steps, guidance {g['method']} {g['scale']}, seed {gen['seed']}, "
                    f"{gen['precision']}")
    table = Table(title="generator metrics", caption=caption)
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("FID", f"{m['fid']:.4f}")
    if "sfid" in m:
        table.add_row("sFID", f"{m['sfid']:.4f}")
    if "inception_score" in m:
        table.add_row("Inception Score", f"{m['inception_score']['mean']:.3f} ± {m['inception_score']['std']:.3f}")
    for k in ("precision", "recall"):
        if k in m:
            table.add_row(k, f"{m[k]:.4f}")
    if "kid" in m:
        table.add_row("KID", f"{m['kid']['mean']:.5f} ± {m['kid']['std']:.5f}")
    for k, why in result["unavailable"].items():
        table.add_row(k.replace("_", " "), f"[dim]unavailable: {escape(str(why))}[/]")
    out.print(table)


@app.command("fid-stats")
@user_errors
@with_config_options(FidStatsConfig, extra=[argument("folder", "folder of images (recursive)")])
def fid_stats(folder: str, **kwargs):
    """Reference statistics (InceptionV3 pool3 mean and covariance) of an image folder, for eval-samples."""
    from rectok_core.metrics.commands import fid_stats as run

    path, count = run(folder, make_config(FidStatsConfig, split_overrides(FidStatsConfig, kwargs)[0]))
    console.print(f"statistics of {count} images: {path}", highlight=False, soft_wrap=True)
