"""KL autoencoder weights as projects ship them, read into a diffusers ``AutoencoderKL``.

Two layouts exist: diffusers' own (``encoder.down_blocks.0.resnets.0…``, what ``AutoencoderKL.save_pretrained``
writes) and the LDM one of CompVis' latent-diffusion, which MAR (``kl16.ckpt``), LightningDiT (VA-VAE) and the
original SD checkpoints keep (``encoder.down.0.block.0…``). Both are read here; the architecture (widths, blocks
per level, where attention sits, latent channels, quant convs) comes from the weights' names and shapes.

LDM keys are renamed by :func:`ldm_to_diffusers` rather than diffusers' ``convert_ldm_vae_checkpoint``: that helper
knows no attention inside a down/up level (VA-VAE and the official RecTok encoder have one at resolution 16) and
drops keys it does not know silently, while rectok must name every missing or extra key. The attention tensors are
renamed and reshaped with diffusers' own ``update_vae_attentions_ldm_to_diffusers`` (1×1 conv → linear).
"""
from __future__ import annotations

import argparse
import pathlib
import re
from pathlib import Path

import torch

from rectok_core.errors import CheckpointError
from rectok_core.models.families.base import load_exact

#: Prefixes of training-only tensors in LDM-layout files (the GAN/LPIPS loss modules): never part of the model.
TRAINING_ONLY = ("loss.", "model_ema.", "aux_decoders.", "aux_foundation_models.")

_LDM_LEVEL = re.compile(r"^(encoder)\.down\.(\d+)\.(block|attn|downsample)\.(.*)$"
                        r"|^(decoder)\.up\.(\d+)\.(block|attn|upsample)\.(.*)$")
_LDM_MID = re.compile(r"^(encoder|decoder)\.mid\.(block_1|block_2|attn_1)\.(.*)$")
_LDM_END = {"norm_out": "conv_norm_out", "conv_in": "conv_in", "conv_out": "conv_out"}


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a weights file (``.safetensors``, or a torch pickle read with ``weights_only``), unwrapped
    from a ``state_dict``/``model`` container; one-line errors for anything else."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"tokenizer weights not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj = load_file(str(path))
        else:
            with torch.serialization.safe_globals([argparse.Namespace, pathlib.PosixPath, pathlib.PurePosixPath]):
                obj = torch.load(path, map_location="cpu", weights_only=True)  # l-DeTok/RecTok files hold args
    except Exception as e:  # noqa: BLE001 - any unreadable file is one line
        raise CheckpointError(f"cannot read {path} as tensors: {type(e).__name__}: {' '.join(str(e).split())[:160]}") from None
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path} holds no state dict of tensors (nor a 'state_dict'/'model' entry with one)")
    return obj


def layout(sd: dict[str, torch.Tensor]) -> str:
    """``"diffusers"``, ``"ldm"``, ``"vit"`` (a RecTok/l-DeTok ViT tokenizer), ``"generator"`` (a DiT of any family)
    or ``"unknown"``, from the key names."""
    keys = list(sd)
    if any(k.startswith("encoder.down_blocks.") for k in keys):
        return "diffusers"
    if any(k.startswith("encoder.down.") for k in keys):
        return "ldm"
    if any(k.startswith(("t_embedder.", "y_embedder.")) for k in keys):
        return "generator"
    if any(".blocks." in k or k.startswith("blocks.") or ".transformer." in k for k in keys):
        return "vit"
    return "unknown"


def _attn_key(rest: str, new_prefix: str, value: torch.Tensor, out: dict[str, torch.Tensor]) -> None:
    from diffusers.loaders.single_file_utils import update_vae_attentions_ldm_to_diffusers

    update_vae_attentions_ldm_to_diffusers(["x." + rest], out, {"x." + rest: value}, {"old": "x.", "new": new_prefix})


def ldm_to_diffusers(sd: dict[str, torch.Tensor], where: str) -> dict[str, torch.Tensor]:
    """LDM-layout tensors → diffusers ``AutoencoderKL`` names; training-only tensors are dropped, any other
    unknown key is a one-line error naming it."""
    ups = {int(m.group(6)) for k in sd if (m := _LDM_LEVEL.match(k)) and m.group(5)}
    n_up = max(ups) + 1 if ups else 0
    out: dict[str, torch.Tensor] = {}
    unknown = []
    for key, value in sd.items():
        if key.startswith(TRAINING_ONLY):
            continue
        m = _LDM_LEVEL.match(key)
        mid = _LDM_MID.match(key)
        head, _, rest = key.partition(".")
        if m:
            part = m.group(1) or m.group(5)
            level = int(m.group(2) or m.group(6))
            what, tail = m.group(3) or m.group(7), m.group(4) or m.group(8)
            block = f"encoder.down_blocks.{level}" if part == "encoder" else f"decoder.up_blocks.{n_up - 1 - level}"
            if what == "block":
                j, _, p = tail.partition(".")
                out[f"{block}.resnets.{j}.{p.replace('nin_shortcut', 'conv_shortcut')}"] = value
            elif what == "attn":
                j, _, p = tail.partition(".")
                _attn_key(p, f"{block}.attentions.{j}.", value, out)
            else:
                out[f"{block}.{what}rs.0.{tail}"] = value
        elif mid:
            part, what, p = mid.groups()
            if what == "attn_1":
                _attn_key(p, f"{part}.mid_block.attentions.0.", value, out)
            else:
                out[f"{part}.mid_block.resnets.{int(what[-1]) - 1}.{p.replace('nin_shortcut', 'conv_shortcut')}"] = value
        elif head in ("encoder", "decoder") and rest.split(".")[0] in _LDM_END:
            name, _, p = rest.partition(".")
            out[f"{head}.{_LDM_END[name]}.{p}"] = value
        elif head in ("quant_conv", "post_quant_conv"):
            out[key] = value
        else:
            unknown.append(key)
    if unknown:
        raise CheckpointError(f"{where} has {len(unknown)} keys no KL autoencoder has (e.g. {unknown[0]}): not an "
                              f"LDM-layout autoencoder file")
    return out


def _levels(sd: dict[str, torch.Tensor], prefix: str) -> list[int]:
    return sorted({int(k[len(prefix):].split(".")[0]) for k in sd if k.startswith(prefix)})


def _need(sd: dict[str, torch.Tensor], key: str, where: str) -> torch.Tensor:
    if key not in sd:
        raise CheckpointError(f"{where} is missing {key}: not a complete KL autoencoder")
    return sd[key]


def infer_config(sd: dict[str, torch.Tensor], where: str) -> dict:
    """The ``AutoencoderKL`` config of diffusers-layout tensors (norm groups: 32, as every published KL VAE)."""
    levels = _levels(sd, "encoder.down_blocks.")
    if not levels or levels != list(range(len(levels))):
        raise CheckpointError(f"{where} has no encoder.down_blocks.0…: not a KL autoencoder")
    widths = [int(_need(sd, f"encoder.down_blocks.{i}.resnets.0.conv2.weight", where).shape[0]) for i in levels]
    per_level = len(_levels(sd, "encoder.down_blocks.0.resnets."))
    up_levels = _levels(sd, "decoder.up_blocks.")
    if len(up_levels) != len(levels):
        raise CheckpointError(f"{where} has {len(levels)} encoder levels but {len(up_levels)} decoder levels")

    def has_attn(block: str) -> bool:
        return any(k.startswith(block + ".attentions.") for k in sd)

    latent = int(_need(sd, "decoder.conv_in.weight", where).shape[1])
    return {
        "in_channels": int(_need(sd, "encoder.conv_in.weight", where).shape[1]),
        "out_channels": int(_need(sd, "decoder.conv_out.weight", where).shape[0]),
        "block_out_channels": tuple(widths),
        "layers_per_block": per_level,
        "latent_channels": latent,
        "down_block_types": tuple("AttnDownEncoderBlock2D" if has_attn(f"encoder.down_blocks.{i}") else "DownEncoderBlock2D"
                                  for i in levels),
        "up_block_types": tuple("AttnUpDecoderBlock2D" if has_attn(f"decoder.up_blocks.{i}") else "UpDecoderBlock2D"
                                for i in up_levels),
        "use_quant_conv": "quant_conv.weight" in sd,
        "use_post_quant_conv": "post_quant_conv.weight" in sd,
        "mid_block_add_attention": has_attn("encoder.mid_block"),
        "norm_num_groups": 32,
    }


def build_autoencoder_kl(sd: dict[str, torch.Tensor], where: str):
    """A diffusers ``AutoencoderKL`` holding diffusers-layout tensors ``sd`` (strict: a missing, extra or
    mis-shaped tensor is a one-line error)."""
    from diffusers import AutoencoderKL

    cfg = infer_config(sd, where)
    if any(w % cfg["norm_num_groups"] for w in cfg["block_out_channels"]):
        raise CheckpointError(f"{where}: widths {cfg['block_out_channels']} are not multiples of 32 (GroupNorm(32))")
    model = AutoencoderKL(**cfg)
    load_exact(model, sd, where, "the autoencoder its weights describe")
    return model
