"""Official-layout checkpoints made from small random rectok models (the official files cannot be downloaded).

The official key names are written by hand here (the inverse of recipe §12's renames), independently of
``rectok_core.interop.official.rename_tokenizer_key``, so the tests check that map.
"""
from __future__ import annotations

import argparse
import re
from pathlib import Path

import torch

from rectok_core.models.dit import DiTDH, build_dit
from rectok_core.models.tokenizer import RecTok, TokenizerModelConfig
from rectok_core.training.config import TOKENIZER_PRESETS

TEACHER_DIM = 24
DIT_CLASSES = 3
#: --heads of the tiny models (widths outside the official size tables are never guessed): the tokenizer's
#: encoder/decoder and semantic decoder, the DiT^DH's trunk and head.
TOK_HEADS = "{heads},{sem_heads}".format(**TOKENIZER_PRESETS["tiny"]["model"])
DIT_HEADS = "4,4"


def tiny_tokenizer(seed: int = 0, semantic: bool = True) -> RecTok:
    torch.manual_seed(seed)
    cfg = TokenizerModelConfig(**TOKENIZER_PRESETS["tiny"]["model"], rope="official",
                               teacher_dim=TEACHER_DIM if semantic else 0)
    model = RecTok(cfg, semantic=semantic)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)  # no exact zeros or ones: every weight matters
    return model.eval()


def tiny_dit(seed: int = 0, in_channels: int = 16, input_size: int = 8) -> DiTDH:
    torch.manual_seed(seed)
    model = build_dit("tiny", in_channels=in_channels, input_size=input_size, num_classes=DIT_CLASSES)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.05)  # adaLN and the final layer start at zero
    return model.eval()


def official_tokenizer_key(key: str) -> str:
    """rectok → official (recipe §12, inverted by hand)."""
    key = key.replace("pos_embed", "positional_embedding")
    key = re.sub(r"^encoder\.patch_embed\.", "encoder.patch_embed.0.", key)
    key = re.sub(r"\.blocks\.(\d+)\.", r".transformer.\1.", key)
    key = re.sub(r"^decoder\.head\.", "decoder.ffn.1.", key)
    return re.sub(r"^sem_decoder\.", "sem_decoders.dinov3.", key)


def official_tokenizer_state(model: RecTok, aux: bool = False) -> dict[str, torch.Tensor]:
    sd = {official_tokenizer_key(k): v.clone() for k, v in model.state_dict().items()}
    if any(k.startswith("sem_decoders.") for k in sd):
        sd["sem_foundation_models.dinov3.embeddings.weight"] = torch.randn(4, 4)  # the frozen teacher
    if aux:  # older files: aux_ instead of sem_
        sd = {k.replace("sem", "aux"): v for k, v in sd.items()}
    return sd


def official_dit_state(model: DiTDH, with_rope: bool = True) -> dict[str, torch.Tensor]:
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    if with_rope:  # persisted buffers of the official model
        for name, rope in (("enc_feat_rope", model.trunk_rope), ("dec_feat_rope", model.head_rope)):
            sd[f"{name}.freqs_cos"], sd[f"{name}.freqs_sin"] = rope.cos.clone(), rope.sin.clone()
    return sd


def perturbed(sd: dict[str, torch.Tensor], seed: int = 1) -> dict[str, torch.Tensor]:
    """Another set of weights of the same shapes (the 'EMA' next to the raw ones)."""
    g = torch.Generator().manual_seed(seed)
    return {k: v + 0.01 * torch.randn(v.shape, generator=g) if v.is_floating_point() else v for k, v in sd.items()}


def write_official(path: Path, model_sd: dict, ema_sd: dict | None, epoch: int = 199, **extra) -> Path:
    """An official container: model, model_ema (parameters only), optimizer, loss_scaler, epoch, args."""
    obj = {"model": model_sd, "optimizer": {"state": {}, "param_groups": [{"lr": 1e-4, "params": []}]},
           "loss_scaler": {"scale": 65536.0, "growth_factor": 2.0, "_growth_tracker": 0}, "epoch": epoch,
           "args": argparse.Namespace(model="rectok_BB", blr=1e-4, output_dir="work_dirs/x", use_ema=True), **extra}
    if ema_sd is not None:
        obj["model_ema"] = ema_sd
    torch.save(obj, path)
    return path
