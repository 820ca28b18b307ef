"""The generator half of the pipeline: ``cache-latents``, ``train-dit``, ``sample``, ``eval-samples``, ``fid-stats``."""
from __future__ import annotations

import os
from collections.abc import Callable
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from rectok_core.errors import RectokError

from .options import TOKENIZER_ARG, argument, make_config, split_overrides, with_config_options, with_flags
from .present import note, run_done

console = Console(stderr=True, markup=False)  # paths and labels are printed as they are
DIT_DEFAULT_PRESET = "XL"
# Fields that may point elsewhere on --resume (moved files); the tokenizer is then checked by its sha256.
DIT_RESUME_PATHS = ("tokenizer", "cache_latents", "stats_dir")


def _is_main() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def dit_config(overrides: dict):
    """Defaults → preset → flags for a new run; for --resume the saved config plus the allowed flag changes
    (the usual ones, and the paths of the tokenizer, latent cache and statistics folder)."""
    from rectok_core.config import build_config, flat_fields, resume_config, set_path
    from rectok_core.training.config import DIT_TRAIN_PRESETS, DiTTrainConfig
    from rectok_core.training.rundir import RunDir
    from rectok_core.utils import checkpoint

    given = overrides.pop("preset", None)
    preset = given or DIT_DEFAULT_PRESET
    if not overrides.get("resume"):
        return build_config(DiTTrainConfig, DIT_TRAIN_PRESETS, preset, overrides)
    if preset not in DIT_TRAIN_PRESETS:
        raise RectokError(f"unknown preset {preset!r}; choose one of {', '.join(DIT_TRAIN_PRESETS)}")
    out = overrides.get("out") or DIT_TRAIN_PRESETS[preset].get("run", {}).get("out") or DiTTrainConfig().run.out
    ck = checkpoint.load(RunDir(out, True, False).latest, "dit")
    moved = {k: overrides.pop(k) for k in DIT_RESUME_PATHS if overrides.get(k) is not None}
    cfg = resume_config(DiTTrainConfig, ck["config"], {**overrides, "preset": given})  # another --preset: refused
    fields = flat_fields(DiTTrainConfig)
    for k, v in moved.items():
        set_path(cfg, fields[k][0], v)
    cfg.validate()
    return cfg


def register(app: typer.Typer, user_errors: Callable[[Callable], Callable]) -> None:
    """Add the generator commands to ``app``; ``user_errors`` is the CLI's one-line error wrapper."""
    _register_cache_latents(app, user_errors)
    _register_train_dit(app, user_errors)
    _register_sample(app, user_errors)
    _register_eval_samples(app, user_errors)
    _register_fid_stats(app, user_errors)


def _register_cache_latents(app: typer.Typer, user_errors: Callable) -> None:
    from rectok_core.data.config import CacheLatentsConfig
    from rectok_core.training.inherit import TokenizerSettings, inherit

    tok = argument("tokenizer", TOKENIZER_ARG)

    def config(tokenizer: str, **kwargs):
        overrides, _ = split_overrides(CacheLatentsConfig, kwargs)
        note(inherit(overrides, TokenizerSettings.of(tokenizer)))
        return make_config(CacheLatentsConfig, overrides)

    @app.command("cache-latents")
    @user_errors
    @with_config_options(CacheLatentsConfig, extra=[tok], resolve=config)
    def cache_latents(tokenizer: str, **kwargs):
        """Encode every training image and its mirror once: posterior moments in shards, plus latent statistics.

        `train-dit --cache-latents DIR` then reads no image. Launch with torchrun to spread the shards over GPUs.

        A killed run resumes where it stopped; a folder made from another tokenizer or data is refused.
        """
        from rectok_core.data.latent_cache import cache_latents as run

        cache = run(tokenizer, config(tokenizer, **kwargs))
        if _is_main():
            console.print(f"latent cache: {cache.folder} ({cache.count} images × 2 flips, {cache.num_classes} "
                          f"classes, {len(cache.bad)} unreadable)", highlight=False, soft_wrap=True)


def _register_train_dit(app: typer.Typer, user_errors: Callable) -> None:
    from rectok_core.training.config import DIT_TRAIN_PRESETS, DiTTrainConfig

    def config(**kwargs):
        from rectok_core.training.inherit import DIT_PRESET_FOR_TOKENIZER, TokenizerSettings, inherit

        overrides, _ = split_overrides(DiTTrainConfig, kwargs)
        if overrides.get("tokenizer") and not overrides.get("resume"):  # a resumed run keeps its own settings
            note(inherit(overrides, TokenizerSettings.of(overrides["tokenizer"]), DIT_TRAIN_PRESETS,
                         preset_for=DIT_PRESET_FOR_TOKENIZER))
        return dit_config(overrides)

    @app.command("train-dit")
    @user_errors
    @with_config_options(DiTTrainConfig, DIT_TRAIN_PRESETS, resolve=config)
    def train_dit(**kwargs):
        """Train a class-conditional DiT^DH on a tokenizer's latents (flow matching, recipe §4).

        --preset picks the size (XL: the paper's generator, S: its AutoGuidance guide, tiny: CPU demo).

        Every option defaults to the preset's value. Latents are encoded every step, or read from --cache-latents.

        Launch with torchrun for several GPUs; --resume continues exactly.
        """
        from rectok_core.training.dit import train_dit as run

        run_done(run(config(**kwargs)))


def _register_sample(app: typer.Typer, user_errors: Callable) -> None:
    from rectok_core.sampling.folder import SampleConfig

    ckpt = argument("dit_ckpt", "DiT^DH checkpoint (train-dit), export folder or Hub id (default: the newest DiT run "
                                "under runs/)", required=False, annotation=Optional[str])

    @app.command("sample")
    @user_errors
    @with_config_options(SampleConfig, extra=[ckpt])
    def sample(dit_ckpt: str | None, **kwargs):
        """Generate images: PNGs, an ADM-style .npz and a grid, in a resumable folder with a manifest.

        Sample i has label i mod K and noise from (seed, i) only: the images do not depend on the batch size.

        Launch with torchrun to spread the samples over GPUs; a rerun continues an interrupted folder.
        """
        from rectok_core.sampling.folder import sample as run

        overrides, _ = split_overrides(SampleConfig, kwargs)
        cfg = make_config(SampleConfig, overrides)
        if dit_ckpt is None:
            from rectok_core.training.rundir import newest_run_checkpoint

            dit_ckpt = str(newest_run_checkpoint("dit"))
            if _is_main():
                console.print(f"sampling the newest DiT run: {dit_ckpt}", highlight=False, soft_wrap=True)
        res = run(dit_ckpt, cfg)
        if _is_main():
            console.print(f"{res.n} samples in {res.out} ({res.generated} new, {res.existing} already there): "
                          f"{res.npz}, {res.grid}", highlight=False, soft_wrap=True)

    with_flags(sample, "n", "-n", "--num")


def _register_eval_samples(app: typer.Typer, user_errors: Callable) -> None:
    from rectok_core.metrics.config import EvalSamplesConfig

    samples = argument("samples", "a `rectok sample` folder, its samples.npz, an ADM-style .npz or an image folder")

    @app.command("eval-samples")
    @user_errors
    @with_config_options(EvalSamplesConfig, extra=[samples])
    def eval_samples(samples: str, **kwargs):
        """gFID of generated samples against reference statistics or images (plus IS, precision/recall, KID).

        Writes the metrics and their manifest (reference hash, labels, sampler, guidance, seed, hashes) as JSON.

        A metric that cannot be computed is reported as unavailable with the reason, never as a number.
        """
        from rectok_core.metrics.commands import evaluate_generated

        overrides, _ = split_overrides(EvalSamplesConfig, kwargs)
        result, path = evaluate_generated(samples, make_config(EvalSamplesConfig, overrides))
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


def _register_fid_stats(app: typer.Typer, user_errors: Callable) -> None:
    from rectok_core.metrics.config import FidStatsConfig

    folder = argument("folder", "folder of images (recursive)")

    @app.command("fid-stats")
    @user_errors
    @with_config_options(FidStatsConfig, extra=[folder])
    def fid_stats(folder: str, **kwargs):
        """Reference statistics (InceptionV3 pool3 mean and covariance) of an image folder, for eval-samples."""
        from rectok_core.metrics.commands import fid_stats as run

        overrides, _ = split_overrides(FidStatsConfig, kwargs)
        path, count = run(folder, make_config(FidStatsConfig, overrides))
        console.print(f"statistics of {count} images: {path}", highlight=False, soft_wrap=True)

    with_flags(fid_stats, "n", "-n", "--num")
