"""Released models: ``import-official``, ``latent-stats``, ``export``, ``push`` (options from
:mod:`rectok_core.interop.config`)."""
from __future__ import annotations

import os

from rich.console import Console
from rich.markup import escape

from rectok_core.interop.config import ExportConfig, ImportOfficialConfig, LatentStatsConfig, PushConfig

from .app import app, user_errors
from .options import argument, make_config, split_overrides, with_config_options

console = Console(stderr=True, markup=False)


def _say(line: str) -> None:
    if int(os.environ.get("RANK", "0")) == 0:
        console.print(escape(line), highlight=False, soft_wrap=True)


@app.command("import-official")
@user_errors
@with_config_options(ImportOfficialConfig, extra=[argument("src", "an official RecTok .pth (RecTok.pth, "
                                                                  "RecTok_decft.pth, ditdh*.pth)")])
def import_official(src: str, **kwargs):
    """Convert an official RecTok checkpoint into a rectok one that every command accepts.

    Strict: a key missing, left over or of the wrong shape is an error.

    Only the container classes official files hold are unpickled: nothing in the file is run.
    """
    from rectok_core.interop.official import import_official as run

    res = run(src, cfg=make_config(ImportOfficialConfig, split_overrides(ImportOfficialConfig, kwargs)[0]))
    _say(f"{res.out}: {res.description}")


@app.command("latent-stats")
@user_errors
@with_config_options(LatentStatsConfig, extra=[argument("tokenizer", "tokenizer checkpoint, export folder or Hub id, "
                                                                  "or FAMILY:SOURCE (rectok tokenizers)")])
def latent_stats(tokenizer: str, **kwargs):
    """Per-channel mean and std of the posterior mean over a data set (center crop, no flip, fp32).

    What a DiT normalises its latents with (recipe §4.4). Launch with torchrun to spread it over GPUs.

    A file already computed for this tokenizer and data is reused. For a family with a published global
    scale/shift (sd-vae, eq-vae, sd3-vae, flux-vae, mar-kl16) the default --latent-norm family writes that instead.
    """
    from rectok_core.interop.stats import latent_stats as run

    res = run(tokenizer, cfg=make_config(LatentStatsConfig, split_overrides(LatentStatsConfig, kwargs)[0]))
    s = res.stats
    if s.kind == "family":
        _say(f"{s.describe()} ({len(s.mean)} channels; --latent-norm data measures them on the data): {res.path}")
    else:
        _say(f"latent statistics of {s.images} images ({s.tokens} tokens, {len(s.mean)} channels): {res.path}")


@app.command("export")
@user_errors
@with_config_options(ExportConfig, extra=[argument("ckpt", "tokenizer or DiT checkpoint")])
def export(ckpt: str, **kwargs):
    """An inference-only folder for a checkpoint, uploadable to the Hugging Face Hub as it is.

    Every command that takes a checkpoint also takes such a folder, or its Hub id owner/name.
    """
    from rectok_core.interop.export import export as run

    cfg = make_config(ExportConfig, split_overrides(ExportConfig, kwargs)[0])
    path = run(ckpt, cfg=cfg)
    _say(f"exported {ckpt} ({cfg.weights} weights) to {path}")


@app.command("push")
@user_errors
@with_config_options(PushConfig, extra=[argument("folder", "an export folder (rectok export)")])
def push(folder: str, **kwargs):
    """Upload an export folder to the Hugging Face Hub (huggingface_hub; log in with `hf auth login`)."""
    from rectok_core.interop.export import push as run

    cfg = make_config(PushConfig, split_overrides(PushConfig, kwargs)[0])
    listing = run(folder, cfg=cfg)
    for name, size in listing:
        _say(f"  {name}  {size} bytes")
    _say(f"{'would upload' if cfg.dry_run else 'uploaded'} {len(listing)} files to {cfg.repo}")
