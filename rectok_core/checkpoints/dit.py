"""The ``dit`` kind: generator checkpoints of every family (``train-dit``, imported official files, export
folders) → the model with its latent statistics, classes and the identity of the tokenizer it was trained on.

A checkpoint names its family and config in ``"generator": {"family", "config"}``; one written before the
generator families (only ``"dit_config"``) is a DiT^DH."""
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
from rectok_core.models.generators import DEFAULT_FAMILY, GENERATORS, generator_from_config
from rectok_core.models.tokenizer import RecTok
from rectok_core.utils import checkpoint

KIND = "dit"


@dataclass
class LoadedDiT:
    """A generator checkpoint ready for sampling, with what it needs to be decoded."""

    model: torch.nn.Module
    stats: LatentStats
    classes: list[str]
    path: str
    sha256: str
    weights: str
    tokenizer: dict[str, Any]  # path, sha256, weights of the tokenizer it was trained on
    step: int
    family: str = DEFAULT_FAMILY

    @property
    def prediction(self) -> str:
        """``velocity`` (flow families) or ``epsilon`` (diffusion: DiT)."""
        return GENERATORS[self.family].prediction


def generator_of(ck: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """``(family, config)`` of a generator checkpoint (old ones, with only ``dit_config``: a DiT^DH)."""
    gen = ck.get("generator")
    if gen is not None:
        return str(gen["family"]), dict(gen["config"])
    return DEFAULT_FAMILY, dict(ck["dit_config"])


@register_kind(KIND, "a generator (train-dit)")
def load_dit(path: str | os.PathLike[str], weights: str = "ema", device: torch.device | str = "cpu") -> LoadedDiT:
    """The generator of a ``train-dit`` checkpoint (eval mode, frozen); any other kind is a one-line error."""
    ck = open_checkpoint(path, KIND)
    family, config = generator_of(ck)
    if family not in GENERATORS:
        raise CheckpointError(f"{path} holds a generator of family {family!r}, which this rectok does not know "
                              f"(known: {', '.join(GENERATORS.names())})")
    model = generator_from_config(family, config)
    checkpoint.load_state_strict(model, checkpoint.state_of(ck, weights, path), f"{path} ({weights} weights)")
    bad = [n for n, t in model.state_dict().items() if t.is_floating_point() and not torch.isfinite(t).all()]
    if bad:
        raise CheckpointError(f"{path} ({weights} weights): {len(bad)} tensors hold NaN/inf (e.g. {bad[0]}): the run "
                              f"diverged; sample an earlier checkpoint")
    model.eval().requires_grad_(False).to(device)
    local, sha256 = checkpoint.identity(ck, path)  # an export folder keeps its source checkpoint's sha256
    return LoadedDiT(model=model, stats=LatentStats.from_state(ck["latent_stats"]), classes=list(ck["classes"]),
                     path=local, sha256=sha256, weights=weights,
                     tokenizer=dict(ck["tokenizer"]), step=int(ck["step"]), family=family)


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
