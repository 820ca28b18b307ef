"""``detok``: l-DeTok's ViT tokenizers (``detok_SS`` … ``detok_XLXL``) as their project saves them: a torch pickle
``{"model", "model_ema", "args", …}`` (``model_ema`` is used, as the official evaluation does).

l-DeTok is RecTok's lineage: its encoder (patch conv, learned positions, RMSNorm/SwiGLU blocks with 2-D RoPE,
latent head to mean|logvar) and pixel decoder (mask token, blocks, 1×1 conv to patches, 3×3 conv) are the official
RecTok tokenizer's without the semantic decoder, so the weights are renamed onto rectok's :class:`RecTok` with the
official RoPE variant. Its normalisation is per-channel statistics of the data. rectok's ViT tokenizer has one
width for encoder and decoder, so the asymmetric sizes (``detok_SB``, ``_BL``, …) are a one-line error.
"""
from __future__ import annotations

import argparse
import pathlib
import re
from pathlib import Path

import torch

from rectok_core.errors import CheckpointError
from rectok_core.models.families.base import Normalization, frozen, load_exact, register_family
from rectok_core.models.tokenizer import RecTok, TokenizerModelConfig

#: Attention heads of l-DeTok's ViT sizes by width (its size table: tiny, small, base, large, xl, huge).
HEADS_BY_WIDTH = {192: 4, 512: 8, 768: 12, 1024: 16, 1152: 16, 1280: 16}

_RENAMES = ((r"^encoder\.patch_embed\.0\.", "encoder.patch_embed."), (r"(^|\.)transformer\.(\d+)\.", r"\1blocks.\2."),
            (r"^decoder\.ffn\.1\.", "decoder.head."), (r"positional_embedding", "pos_embed"))


def _read(path: Path, where: str) -> dict[str, torch.Tensor]:
    try:
        with torch.serialization.safe_globals([argparse.Namespace, pathlib.PosixPath, pathlib.PurePosixPath]):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is one line
        raise CheckpointError(f"{where}: cannot read it as an l-DeTok checkpoint ({type(e).__name__}: "
                              f"{' '.join(str(e).split())[:120]})") from None
    for key in ("model_ema", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            return obj[key]
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj
    raise CheckpointError(f"{where}: no 'model_ema'/'model' state dict in it: not an l-DeTok checkpoint")


def _rename(key: str) -> str:
    key = key.removeprefix("module.")
    for pattern, new in _RENAMES:
        key = re.sub(pattern, new, key)
    return key


def _config(sd: dict[str, torch.Tensor], where: str) -> TokenizerModelConfig:
    if "encoder.pos_embed" not in sd or "decoder.pos_embed" not in sd or "encoder.latent_head.weight" not in sd:
        raise CheckpointError(f"{where}: no l-DeTok encoder and decoder in it (e.g. encoder.positional_embedding)")
    n, width = sd["encoder.pos_embed"].shape[1:]
    dec_width = sd["decoder.pos_embed"].shape[-1]
    depth = len({k.split(".")[2] for k in sd if k.startswith("encoder.blocks.")})
    dec_depth = len({k.split(".")[2] for k in sd if k.startswith("decoder.blocks.")})
    if (width, depth) != (dec_width, dec_depth):
        raise CheckpointError(f"{where}: encoder {width}x{depth} and decoder {dec_width}x{dec_depth} differ (an asymmetric "
                              f"l-DeTok size): rectok's ViT tokenizer has one width and depth for both")
    if width not in HEADS_BY_WIDTH:
        raise CheckpointError(f"{where}: width {width} is none of l-DeTok's sizes ({', '.join(map(str, HEADS_BY_WIDTH))})")
    patch = sd["encoder.patch_embed.weight"].shape[-1]
    grid = int(round(n ** 0.5))
    return TokenizerModelConfig(image_size=grid * patch, patch_size=patch, width=width, depth=depth,
                                heads=HEADS_BY_WIDTH[width], dim=sd["encoder.latent_head.weight"].shape[0] // 2,
                                rope="official", teacher_dim=0)


@register_family("detok", "l-DeTok ViT tokenizer (symmetric sizes: detok_SS, _BB, _LL, _XLXL)",
                 "detok-BB.pth (github.com/Jiawei-Yang/DeTok)", "C x H/p x W/p (p: patch size)",
                 Normalization("per-channel"))
def load_detok(source: str, local: Path | None = None, image_size: int | None = None,
               device: torch.device | str = "cpu", revision: str | None = None) -> RecTok:
    where = f"detok:{source}"
    if local is None or not local.is_file():
        raise CheckpointError(f"{where}: detok loads a local .pth file (detok:PATH/TO/FILE)")
    sd = {_rename(k): v for k, v in _read(local, where).items()}
    cfg = _config(sd, where)
    model = RecTok(cfg, semantic=False)
    load_exact(model, sd, where, "an l-DeTok tokenizer")
    return frozen(model, device)
