"""Importing official checkpoints of the generator families beside DiT^DH: SiT, LightningDiT and DiT (the official
RecTok code's ``SiT_models``, ``LightningDiT_models``, ``DiT_models``, in its ``{"model", "model_ema", "args",
...}`` container).

The family is told from the weights: the official classes of these three share the ``transformer.blocks.*`` /
``x_embedder`` / ``final_layer`` layout (no ``s_embedder``, which marks DiT^DH); LightningDiT has SwiGLU weights
(``mlp.w12``) and RMSNorm weights; DiT outputs twice the latent channels (its learned variance); what is left is
SiT. The container's ``args.model``, when it names an official builder (``SiT_xl`` …), decides first (a DiT trained
without learned variance looks like a SiT). The keys and configs come from each family's module
(``from_official_state``, ``config_from_official_state``, kept next to the network); heads come from ``--heads N``,
else the official size table (a width outside it without ``--heads`` is a one-line error).
"""
from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path
from typing import Any

import torch

from rectok_core.checkpoints import load_tokenizer
from rectok_core.config import build_config, to_dict
from rectok_core.errors import CheckpointError, RectokError
from rectok_core.interop.stats import compute_or_read_stats, read_classes
from rectok_core.models.generators import GENERATORS, generator_from_config
from rectok_core.training.dit_config import DIT_TRAIN_PRESETS, DiTTrainConfig
from rectok_core.utils import checkpoint

#: The families this importer handles (their official classes share the ``models/layers.py`` transformer).
FAMILIES = ("sit", "lightningdit", "dit")


def detect_family(state: dict[str, torch.Tensor], args: dict[str, Any] | None = None) -> str | None:
    """``sit``, ``lightningdit`` or ``dit`` for an official state dict of one of them; None for anything else."""
    names = {k.removeprefix("module.") for k in state}
    if "s_embedder.proj.weight" in names or "x_embedder.proj.weight" not in names or not any(
            k.startswith("transformer.blocks.") for k in names) or "final_layer.linear.weight" not in names:
        return None
    named = str((args or {}).get("model", ""))
    for family in FAMILIES:
        if named in GENERATORS[family].official:
            return family
    if any(".mlp.w12." in k for k in names) or "rope.freqs_cos" in names:
        return "lightningdit"
    x = state.get("x_embedder.proj.weight", state.get("module.x_embedder.proj.weight"))
    out = state.get("final_layer.linear.weight", state.get("module.final_layer.linear.weight"))
    assert x is not None and out is not None
    C, p = int(x.shape[1]), int(x.shape[2])
    return "dit" if out.shape[0] == 2 * p * p * C else "sit"


def _module(family: str):
    """The module that registers ``family`` (it holds ``from_official_state`` / ``config_from_official_state``)."""
    return sys.modules[GENERATORS[family].model_class.__module__]


def _size_of(family: str, config: dict[str, Any]) -> str | None:
    """The registered size whose fields ``config`` has, if any."""
    return next((s for s, fields in GENERATORS[family].sizes.items()
                 if all(config.get(k) == v for k, v in fields.items())), None)


def official_generator(state: dict[str, torch.Tensor], family: str, args: dict[str, Any] | None = None,
                       heads: str | None = None, fallback: dict[str, torch.Tensor] | None = None) -> torch.nn.Module:
    """The rectok network of ``family`` holding the official ``state`` (strict: every key and shape must match);
    ``fallback`` (the raw weights) supplies frozen tensors an EMA dict lacks."""
    args = args or {}
    mod = _module(family)
    state = mod.from_official_state({k.removeprefix("module."): v for k, v in state.items()})
    try:
        n = int(heads) if heads else None
    except ValueError:
        raise RectokError(f"--heads {heads}: a {family} model needs one number, --heads N") from None
    extra = {"qk_norm": bool(args.get("qk_norm", False))} if family == "sit" else {}
    try:
        config = mod.config_from_official_state(state, n, **extra)
        model = generator_from_config(family, config)
    except ValueError as e:
        raise CheckpointError(f"{family}: {e}" + ("" if heads else " (give it with --heads N)")) from None
    if fallback:
        fb = mod.from_official_state({k.removeprefix("module."): v for k, v in fallback.items()})
        frozen = [n for n, p in model.named_parameters() if not p.requires_grad and n not in state and n in fb]
        state = {**state, **{n: fb[n] for n in frozen}}
    checkpoint.load_state_strict(model, state, f"official {family} weights")
    return model


def import_generator(src: Path, out: Path, container: dict, raw: dict, weights: str, family: str,
                     tokenizer: str | None, latent_stats: str | None, data: str | None, classes: str | None,
                     stats_dir: str | None, device: str, batch_size: int, workers: int, heads: str | None,
                     args: dict[str, Any], step: int, epoch: float | None, provenance: dict[str, Any]) -> str:
    """Write the rectok checkpoint of an official SiT / LightningDiT / DiT file; returns its one-line description."""
    if not tokenizer:
        raise RectokError(f"a {family} generator needs --tokenizer TOK.pt: the imported tokenizer whose latents it "
                          f"models")
    fallback = container.get("model") if weights == "ema" and isinstance(container.get("model"), dict) else None
    model = official_generator(raw, family, args, heads, fallback)
    cfg_dict = dataclasses.asdict(model.config)
    tok, tmeta = load_tokenizer(tokenizer, use_ema=True)
    (h, w), C = tok.cfg.grid, tok.cfg.dim
    if (C, h) != (cfg_dict["in_channels"], cfg_dict["input_size"]) or h != w:
        raise CheckpointError(f"the {family} model takes {cfg_dict['in_channels']}×{cfg_dict['input_size']}×"
                              f"{cfg_dict['input_size']} latents, the tokenizer {tokenizer} makes {C}×{h}×{w}")
    stats, names = compute_or_read_stats(tok, tmeta, latent_stats, data, stats_dir, device, batch_size, workers)
    K = cfg_dict["num_classes"]
    names = read_classes(classes, K) if classes else (
        names if names is not None and len(names) == K else [f"class_{i:04d}" for i in range(K)])
    size = _size_of(family, cfg_dict)
    name = f"{family}-{size}" if size else ""
    cfg = build_config(DiTTrainConfig, DIT_TRAIN_PRESETS, DiTTrainConfig().preset,
                       {"tokenizer": os.path.abspath(tokenizer), "name": name})
    cfg.run.data = data or ""
    sd = model.state_dict()
    ck = {"format": checkpoint.FORMAT, "version": checkpoint.VERSION, "kind": "dit", "config": to_dict(cfg),
          "step": step, "epoch": epoch, "generator": {"family": family, "config": cfg_dict}, "model": sd, "ema": sd,
          "tokenizer": {"path": os.path.abspath(tmeta["path"]), "sha256": tmeta["sha256"], "weights": "ema",
                        "image_size": tok.cfg.image_size, "grid": [h, w], "channels": C},
          "latent_stats": stats.state(), "num_classes": K, "classes": names, "latents": "online",
          "imported": provenance}
    if int(os.environ.get("RANK", "0")) == 0:
        checkpoint.save_atomic(ck, out)
    return (f"{family}-{size or 'custom'} (width {cfg_dict['width']}, depth {cfg_dict['depth']}, heads "
            f"{cfg_dict['heads']}, patch {cfg_dict['patch_size']}), {K} classes, latent statistics of {stats.images} "
            f"images")
