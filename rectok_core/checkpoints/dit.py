"""The ``dit`` kind: DiT^DH generator checkpoints (``train-dit``, imported official files, export folders) →
the model with its latent statistics, classes and the identity of the tokenizer it was trained on."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rectok_core.checkpoints.families import is_family_spec, load_any_tokenizer, source_exists
from rectok_core.checkpoints.open import open_checkpoint
from rectok_core.checkpoints.registry import register_kind
from rectok_core.checkpoints.resolve import looks_like_hub_id
from rectok_core.checkpoints.tokenizer import load_tokenizer
from rectok_core.data.latent_stats import LatentStats
from rectok_core.errors import CheckpointError
from rectok_core.models.dit import DiTConfig, DiTDH
from rectok_core.models.tokenizer import RecTok
from rectok_core.utils import checkpoint

KIND = "dit"


@dataclass
class LoadedDiT:
    """A DiT^DH checkpoint ready for sampling, with what it needs to be decoded."""

    model: DiTDH
    stats: LatentStats
    classes: list[str]
    path: str
    sha256: str
    weights: str
    tokenizer: dict[str, Any]  # path, sha256, weights of the tokenizer it was trained on
    step: int


@register_kind(KIND, "a DiT^DH generator (train-dit)")
def load_dit(path: str | os.PathLike[str], weights: str = "ema", device: torch.device | str = "cpu") -> LoadedDiT:
    """The DiT^DH of a ``train-dit`` checkpoint (eval mode, frozen); any other kind is a one-line error."""
    ck = open_checkpoint(path, KIND)
    model = DiTDH(DiTConfig(**ck["dit_config"]))
    checkpoint.load_state_strict(model, checkpoint.state_of(ck, weights, path), f"{path} ({weights} weights)")
    bad = [n for n, t in model.state_dict().items() if t.is_floating_point() and not torch.isfinite(t).all()]
    if bad:
        raise CheckpointError(f"{path} ({weights} weights): {len(bad)} tensors hold NaN/inf (e.g. {bad[0]}): the run "
                              f"diverged; sample an earlier checkpoint")
    model.eval().requires_grad_(False).to(device)
    local, sha256 = checkpoint.identity(ck, path)  # an export folder keeps its source checkpoint's sha256
    return LoadedDiT(model=model, stats=LatentStats.from_state(ck["latent_stats"]), classes=list(ck["classes"]),
                     path=local, sha256=sha256, weights=weights,
                     tokenizer=dict(ck["tokenizer"]), step=int(ck["step"]))


def load_matching_tokenizer(dit: LoadedDiT, override: str | None, device: torch.device) -> tuple[RecTok, dict]:
    """The tokenizer a DiT was trained on: its recorded path (or ``override``), checked by sha256."""
    path = override or dit.tokenizer["path"]
    family = is_family_spec(path)  # FAMILY:SOURCE: another tokenizer family (rectok tokenizers)
    if not override and not (source_exists(path) if family else Path(path).exists() or looks_like_hub_id(path)):
        raise CheckpointError(f"tokenizer checkpoint {path} (recorded in {dit.path}) not found: pass --tokenizer")
    if family:
        tokenizer, meta = load_any_tokenizer(path, device=device, image_size=dit.tokenizer.get("image_size"))
    else:
        tokenizer, meta = load_tokenizer(path, use_ema=dit.tokenizer["weights"] == "ema", device=device)
    if meta["sha256"] != dit.tokenizer["sha256"]:
        raise CheckpointError(f"tokenizer {path} (sha256 {meta['sha256'][:12]}) is not the one {dit.path} was "
                              f"trained on (sha256 {dit.tokenizer['sha256'][:12]})")
    return tokenizer, meta
