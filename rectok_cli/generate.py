"""The generator half of the pipeline: ``cache-latents``, ``train-dit``, ``sample``, ``eval-samples``, ``fid-stats``."""
from __future__ import annotations

import inspect
import os
from typing import Callable, Optional

import typer
from rich.console import Console
from rich.table import Table

from rectok_core.errors import RectokError

from .options import split_overrides, with_config_options, with_flags

console = Console(stderr=True)
DIT_DEFAULT_PRESET = "XL"
# Fields that may point elsewhere on --resume (moved files); the tokenizer is then checked by its sha256.
DIT_RESUME_PATHS = ("tokenizer", "cache_latents", "stats_dir")


def _is_main() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def _check_device(device: str) -> None:
    if device not in ("auto", "cpu", "cuda") and not device.startswith("cuda:"):
        raise RectokError(f"--device {device!r}: use auto, cpu, cuda or cuda:N")


def _inception_device(device: str) -> str | None:
    _check_device(device)
    return None if device == "auto" else device


def dit_config(overrides: dict):
    """Defaults → preset → flags for a new run; for --resume the saved config plus the allowed flag changes
    (the usual ones, and the paths of the tokenizer, latent cache and statistics folder)."""
    from rectok_core.config import build_config, flat_fields, resume_config, set_path
    from rectok_core.training.config import DIT_TRAIN_PRESETS, DiTTrainConfig
    from rectok_core.training.rundir import RunDir
    from rectok_core.utils import checkpoint

    preset = overrides.pop("preset", None) or DIT_DEFAULT_PRESET
    if not overrides.get("resume"):
        return build_config(DiTTrainConfig, DIT_TRAIN_PRESETS, preset, overrides)
    if preset not in DIT_TRAIN_PRESETS:
        raise RectokError(f"unknown preset {preset!r}; choose one of {', '.join(DIT_TRAIN_PRESETS)}")
    out = overrides.get("out") or DIT_TRAIN_PRESETS[preset].get("run", {}).get("out") or DiTTrainConfig().run.out
    ck = checkpoint.load(RunDir(out, True, False).latest, "dit")
    moved = {k: overrides.pop(k) for k in DIT_RESUME_PATHS if overrides.get(k) is not None}
    cfg = resume_config(DiTTrainConfig, ck["config"], overrides)
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
    from rectok_core.data.latent_cache import CACHE_DTYPES, DEFAULT_SHARD_SIZE
    from rectok_core.data.latent_stats import ENCODE_PRECISIONS

    @app.command("cache-latents")
    @user_errors
    def cache_latents(
        tokenizer: str = typer.Argument(..., help="tokenizer checkpoint (train-tokenizer / finetune-decoder)"),
        out: str = typer.Option(..., "--out", help="cache folder (created; an unfinished one is resumed)"),
        data: str = typer.Option("digits", help="training data: image folder (DIR/train if present), list file or "
                                                "'digits'; the train split is encoded"),
        weights: str = typer.Option("ema", help="tokenizer weights {ema|raw}"),
        batch_size: int = typer.Option(64, help="images per batch per process"),
        shard_size: int = typer.Option(DEFAULT_SHARD_SIZE, help="images per shard file"),
        dtype: str = typer.Option("float16", help=f"storage of the moments {{{'|'.join(CACHE_DTYPES)}}}"),
        precision: str = typer.Option("fp32", help=f"encoder precision {{{'|'.join(ENCODE_PRECISIONS)}}}"),
        workers: int = typer.Option(4, help="data-loading worker processes per rank"),
        device: str = typer.Option("auto", help="cuda, cpu or auto"),
        strict_data: bool = typer.Option(False, help="fail on the first unreadable image instead of skipping it"),
    ):
        """Encode every training image and its mirror once: posterior moments in shards, plus latent statistics.

        `train-dit --cache-latents DIR` then reads no image. Launch with torchrun to spread the shards over GPUs.

        A killed run resumes where it stopped; a folder made from another tokenizer or data is refused.
        """
        from rectok_core.data.latent_cache import cache_latents as run

        if weights not in ("ema", "raw"):
            raise RectokError(f"--weights {weights!r}: choose one of ema, raw")
        _check_device(device)
        cache = run(tokenizer, data, out, weights=weights, batch_size=batch_size, workers=workers, device=device,
                    strict=strict_data, shard_size=shard_size, dtype=dtype, precision=precision)
        if _is_main():
            console.print(f"latent cache: {cache.folder} ({cache.count} images × 2 flips, {cache.num_classes} "
                          f"classes, {len(cache.bad)} unreadable)", highlight=False, soft_wrap=True)


def _register_train_dit(app: typer.Typer, user_errors: Callable) -> None:
    from rectok_core.training.config import DIT_TRAIN_PRESETS, DiTTrainConfig

    @app.command("train-dit")
    @user_errors
    @with_config_options(DiTTrainConfig, DIT_TRAIN_PRESETS)
    def train_dit(**kwargs):
        """Train a class-conditional DiT^DH on a tokenizer's latents (flow matching, recipe §4).

        --preset picks the size (XL: the paper's generator, S: its AutoGuidance guide, tiny: CPU demo).

        Every option defaults to the preset's value. Latents are encoded every step, or read from --cache-latents.

        Launch with torchrun for several GPUs; --resume continues exactly.
        """
        from rectok_core.training.dit import train_dit as run

        overrides, _ = split_overrides(DiTTrainConfig, kwargs)
        path = run(dit_config(overrides))
        if _is_main():
            console.print(f"checkpoint: {path}", highlight=False, soft_wrap=True)


def _register_sample(app: typer.Typer, user_errors: Callable) -> None:
    from rectok_core.sampling.folder import SampleConfig

    ckpt = inspect.Parameter("dit_ckpt", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=str,
                             default=typer.Argument(..., help="DiT^DH checkpoint (train-dit)"))

    @app.command("sample")
    @user_errors
    @with_config_options(SampleConfig, extra=[ckpt])
    def sample(dit_ckpt: str, **kwargs):
        """Generate images: PNGs, an ADM-style .npz and a grid, in a resumable folder with a manifest.

        Sample i has label i mod K and noise from (seed, i) only: the images do not depend on the batch size.

        Launch with torchrun to spread the samples over GPUs; a rerun continues an interrupted folder.
        """
        from rectok_core.sampling.folder import sample as run

        overrides, _ = split_overrides(SampleConfig, kwargs)
        cfg = SampleConfig(**{k: v for k, v in overrides.items() if v is not None})
        cfg.validate()
        res = run(dit_ckpt, cfg)
        if _is_main():
            console.print(f"{res.n} samples in {res.out} ({res.generated} new, {res.existing} already there): "
                          f"{res.npz}, {res.grid}", highlight=False, soft_wrap=True)

    with_flags(sample, "n", "-n", "--num")


def _register_eval_samples(app: typer.Typer, user_errors: Callable) -> None:
    @app.command("eval-samples")
    @user_errors
    def eval_samples(
        samples: str = typer.Argument(..., help="a `rectok sample` folder, its samples.npz, an ADM-style .npz or "
                                                "an image folder"),
        ref_stats: Optional[str] = typer.Option(None, "--ref-stats",
                                                help="reference statistics .npz (mu/sigma: ADM reference batch, "
                                                     "torch-fidelity or `rectok fid-stats`)"),
        ref_data: Optional[str] = typer.Option(None, "--ref-data",
                                               help="folder of reference images (also gives precision/recall, KID)"),
        ref_image_size: int = typer.Option(0, help="ADM center crop of the reference images (0: as stored)"),
        kid: bool = typer.Option(False, help="also compute KID (needs --ref-data)"),
        inception_weights: str = typer.Option("", help="InceptionV3 weights file (default: resolved offline; "
                                                       "torch-fidelity's original file also gives the IS)"),
        batch_size: int = typer.Option(50, help="images per Inception batch"),
        workers: int = typer.Option(0, help="image-decoding worker processes"),
        device: str = typer.Option("auto", help="cuda, cpu or auto"),
        out: str = typer.Option("", help="result JSON (default: SAMPLES/eval.json, or NAME.eval.json beside an .npz)"),
    ):
        """gFID of generated samples against reference statistics or images (plus IS, precision/recall, KID).

        Writes the metrics and their manifest (reference hash, labels, sampler, guidance, seed, hashes) as JSON.

        A metric that cannot be computed is reported as unavailable with the reason, never as a number.
        """
        from rectok_core.metrics.generator_eval import (
            default_result_path,
            evaluate_samples,
            write_result,
        )

        if workers < 0:
            raise RectokError(f"--workers must be >= 0, got {workers}")
        result = evaluate_samples(samples, ref_stats, ref_data, ref_image_size=ref_image_size or None,
                                  inception_weights=inception_weights or None, with_kid=kid, batch_size=batch_size,
                                  workers=workers, device=_inception_device(device))
        path = write_result(result, out or default_result_path(samples))
        show_eval(result)
        console.print(f"results: {path}", highlight=False, soft_wrap=True)


def show_eval(result: dict, out: Console = Console()) -> None:
    """The terminal view of an ``evaluate_samples`` result."""
    m, man = result["metrics"], result["manifest"]
    gen = man["generator"]
    caption = (f"{man['samples']['num_images']} samples vs {man['reference']['kind']} {man['reference']['path']}")
    if gen["known"]:
        g = gen["guidance"]
        caption += (f"\n{gen['sampler']} {gen['steps']} steps, guidance {g['method']} {g['scale']}, seed {gen['seed']}, "
                    f"{gen['precision']}")
    table = Table(title="generator metrics", caption=caption)
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("FID", f"{m['fid']:.4f}")
    if "inception_score" in m:
        table.add_row("Inception Score", f"{m['inception_score']['mean']:.3f} ± {m['inception_score']['std']:.3f}")
    for k in ("precision", "recall"):
        if k in m:
            table.add_row(k, f"{m[k]:.4f}")
    if "kid" in m:
        table.add_row("KID", f"{m['kid']['mean']:.5f} ± {m['kid']['std']:.5f}")
    for k, why in result["unavailable"].items():
        table.add_row(k.replace("_", " "), f"[dim]unavailable: {why}[/]")
    out.print(table)


def _register_fid_stats(app: typer.Typer, user_errors: Callable) -> None:
    @app.command("fid-stats")
    @user_errors
    def fid_stats(
        folder: str = typer.Argument(..., help="folder of PNG/JPEG images (recursive)"),
        out: str = typer.Option(..., "--out", help="statistics file to write (.npz with mu/sigma)"),
        image_size: int = typer.Option(0, help="ADM center crop to this size (0: as stored; 256 for ImageNet-256)"),
        n: int = typer.Option(0, "-n", "--num", help="use the first N images in path order (0: all)"),
        per_class: int = typer.Option(0, "--per-class", help="use the first N images of each sub-folder (class) "
                                                             "(0: all); a class-balanced subset"),
        inception_weights: str = typer.Option("", help="InceptionV3 weights file (default: resolved offline)"),
        batch_size: int = typer.Option(50, help="images per Inception batch"),
        workers: int = typer.Option(0, help="image-decoding worker processes"),
        device: str = typer.Option("auto", help="cuda, cpu or auto"),
    ):
        """Reference statistics (InceptionV3 pool3 mean and covariance) of an image folder, for eval-samples."""
        from rectok_core.metrics.fid import save_stats
        from rectok_core.metrics.folder_stats import folder_stats
        from rectok_core.metrics.inception import InceptionFeatures
        from rectok_core.utils.files import file_sha256

        for name, v in (("image-size", image_size), ("num", n), ("per-class", per_class), ("workers", workers)):
            if v < 0:
                raise RectokError(f"--{name} must be >= 0, got {v}")
        if batch_size < 1:
            raise RectokError(f"--batch-size must be positive, got {batch_size}")
        model = InceptionFeatures(inception_weights or None)
        st = folder_stats(folder, model, batch_size, _inception_device(device), n=n or None,
                          image_size=image_size or None, num_workers=workers, per_class=per_class or None)
        path = save_stats(out, st.mu, st.sigma, folder=os.path.abspath(folder), num_images=st.num_images,
                          image_size=image_size or "as stored", per_class=per_class or "all",
                          skipped_unreadable=len(st.skipped),
                          inception_weights=str(model.weights_path),
                          inception_sha256=file_sha256(model.weights_path))
        console.print(f"statistics of {st.num_images} images: {path}", highlight=False, soft_wrap=True)
