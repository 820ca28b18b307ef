"""``detok``: l-DeTok's ViT tokenizers, all ten sizes ``detok_SS`` … ``detok_XLXL`` (encoder size × decoder size), as
their project saves them: a torch pickle ``{"model", "model_ema", "args", …}`` (``model_ema`` is used, as the official
evaluation does).

l-DeTok is RecTok's lineage: its encoder (patch conv, learned positions, RMSNorm/SwiGLU blocks with 2-D RoPE,
latent head to mean|logvar) and pixel decoder (mask token, blocks, 1×1 conv to patches, 3×3 conv) are the official
RecTok tokenizer's without the semantic decoder, so the weights are renamed onto rectok's ViT
:class:`~rectok_core.models.tokenizer.Encoder` and :class:`~rectok_core.models.tokenizer.PixelDecoder` (official
RoPE variant), each with its own width, depth and heads: the sizes are read from the state dict (widths from the
position embeddings, depths from the block indices, heads from l-DeTok's size table by width). Its normalisation is
per-channel statistics of the data (``reset_stats`` in the official generator training, scale factor 1).
"""
from __future__ import annotations

import argparse
import dataclasses
import pathlib
import re
from pathlib import Path

import torch

from rectok_core.errors import CheckpointError
from rectok_core.models.config import TokenizerModelConfig
from rectok_core.models.families.base import (
    LatentConfig,
    LatentTokenizer,
    Normalization,
    frozen,
    load_exact,
    register_family,
)
from rectok_core.models.tokenizer import DiagonalGaussian, Encoder, PixelDecoder

#: l-DeTok's ViT sizes (its ``SIZE_DICT``): letter of the ``detok_XY`` names, width → (name, heads).
SIZES = {192: ("T", "tiny", 4), 512: ("S", "small", 8), 768: ("B", "base", 12), 1024: ("L", "large", 16),
         1152: ("XL", "xl", 16), 1280: ("H", "huge", 16)}

_RENAMES = ((r"^encoder\.patch_embed\.0\.", "encoder.patch_embed."), (r"(^|\.)transformer\.(\d+)\.", r"\1blocks.\2."),
            (r"^decoder\.ffn\.1\.", "decoder.head."), (r"positional_embedding", "pos_embed"))


class DeTokTokenizer(LatentTokenizer):
    """An l-DeTok tokenizer: ViT encoder (``enc``) and pixel decoder (``dec``) of their own sizes; tokens are the
    row-major (B, h·w, C) latents of its patch grid."""

    family = "detok"

    def __init__(self, enc: TokenizerModelConfig, dec: TokenizerModelConfig, source: str, name: str):
        cfg = LatentConfig(enc.image_size, enc.grid, enc.dim, enc.patch_size)
        super().__init__(cfg, Normalization("per-channel"), source)
        self.name = name  # detok_SB, … (the official factory this file's sizes are)
        self.encoder = Encoder(enc)
        self.decoder = PixelDecoder(dec)

    def encode(self, img: torch.Tensor) -> DiagonalGaussian:
        return DiagonalGaussian(self.encoder(img))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def encode_moments(self, img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        post = self.encode(img)
        return self.latent_grid(post.mean), self.latent_grid(post.logvar)

    def decode_latents(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.latent_tokens(z))


def _read(path: Path, where: str) -> dict[str, torch.Tensor]:
    try:
        with torch.serialization.safe_globals([argparse.Namespace, pathlib.PosixPath, pathlib.PurePosixPath]):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is one line
        raise CheckpointError(f"{where}: cannot read it as an l-DeTok checkpoint ({type(e).__name__}: "
                              f"{' '.join(str(e).split())[:120]})") from None
    if isinstance(obj, dict) and obj.get("format") == "rectok":
        what = "a rectok generator checkpoint" if "generator" in obj or "dit_config" in obj else "a rectok checkpoint"
        raise CheckpointError(f"{where}: {what}, not an l-DeTok one" + ("" if "generator" in what else " (rectok:FILE)"))
    for key in ("model_ema", "model", "state_dict"):
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


def _part(sd: dict[str, torch.Tensor], part: str, where: str) -> tuple[int, int, int]:
    """(width, depth, heads) of the encoder or decoder."""
    width = int(sd[f"{part}.pos_embed"].shape[-1])
    if width not in SIZES:
        known = ", ".join(f"{n} {w}" for w, (_, n, _) in SIZES.items())
        raise CheckpointError(f"{where}: {part} width {width} is none of l-DeTok's sizes ({known})")
    depth = len({k.split(".")[2] for k in sd if k.startswith(f"{part}.blocks.")})
    return width, depth, SIZES[width][2]


def configs(sd: dict[str, torch.Tensor], where: str) -> tuple[TokenizerModelConfig, TokenizerModelConfig, str]:
    """Encoder and decoder configs of renamed l-DeTok tensors, and the official factory name (``detok_SB``)."""
    if "encoder.pos_embed" not in sd or "decoder.pos_embed" not in sd or "encoder.latent_head.weight" not in sd:
        hint = " (a KL autoencoder: sd-vae:FILE, mar-kl16:FILE or va-vae:FILE)" if any(
            k.startswith(("encoder.down", "encoder.conv_in")) for k in sd) else ""
        raise CheckpointError(f"{where}: no l-DeTok encoder and decoder in it (e.g. encoder.positional_embedding){hint}")
    n = int(sd["encoder.pos_embed"].shape[1])
    patch = int(sd["encoder.patch_embed.weight"].shape[-1])
    grid = int(round(n ** 0.5))
    if grid * grid != n or sd["decoder.pos_embed"].shape[1] != n:
        raise CheckpointError(f"{where}: {n} encoder and {sd['decoder.pos_embed'].shape[1]} decoder positions: not the "
                              f"square token grid of an l-DeTok tokenizer")
    (ew, ed, eh), (dw, dd, dh) = _part(sd, "encoder", where), _part(sd, "decoder", where)
    enc = TokenizerModelConfig(image_size=grid * patch, patch_size=patch, width=ew, depth=ed, heads=eh,
                               dim=int(sd["encoder.latent_head.weight"].shape[0]) // 2, rope="official", teacher_dim=0)
    dec = dataclasses.replace(enc, width=dw, depth=dd, heads=dh)
    return enc, dec, f"detok_{SIZES[ew][0]}{SIZES[dw][0]}"


@register_family("detok", "l-DeTok ViT tokenizer (all sizes detok_SS … detok_XLXL; encoder and decoder sizes "
                 "read from the file)", "detok-BB.pth (github.com/Jiawei-Yang/DeTok)", "C x H/p x W/p (p: patch size)",
                 Normalization("per-channel"))
def load_detok(source: str, local: Path | None = None, image_size: int | None = None,
               device: torch.device | str = "cpu", revision: str | None = None) -> DeTokTokenizer:
    where = f"detok:{source}"
    if local is None or not local.is_file():
        raise CheckpointError(f"{where}: detok loads a local .pth file (detok:PATH/TO/FILE)")
    sd = {_rename(k): v for k, v in _read(local, where).items()}
    enc, dec, name = configs(sd, where)
    model = DeTokTokenizer(enc, dec, source, name)
    load_exact(model, sd, where, f"an l-DeTok tokenizer ({name})")
    return frozen(model, device)
