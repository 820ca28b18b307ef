"""The ``tokenizer`` kind: RecTok tokenizer checkpoints (``train-tokenizer``, ``finetune-decoder``, imported
official files, export folders) → the inference tokenizer."""
from __future__ import annotations

import torch

from rectok_core.checkpoints.open import open_checkpoint
from rectok_core.checkpoints.registry import register_kind
from rectok_core.config import from_dict
from rectok_core.models.tokenizer import RecTok, TokenizerModelConfig
from rectok_core.utils import checkpoint

KIND = "tokenizer"


@register_kind(KIND, "a RecTok tokenizer (train-tokenizer / finetune-decoder)")
def load_tokenizer(path, use_ema: bool = True, device: torch.device | str = "cpu") -> tuple[RecTok, dict]:
    """The inference tokenizer (encoder + pixel decoder, eval mode, frozen) of a rectok tokenizer checkpoint.

    Accepts stage-1 (``train-tokenizer``) and decoder-fine-tuned (``finetune-decoder``) checkpoints; any other
    kind is a one-line :class:`~rectok_core.errors.CheckpointError`. Returns the model and the checkpoint's
    metadata (``config``, ``stage``, ``step``, ``sha256``).
    """
    ck = open_checkpoint(path, KIND)
    mcfg = from_dict(TokenizerModelConfig, ck["config"]["model"])
    model = RecTok(mcfg, semantic=False)
    state = checkpoint.state_of(ck, "ema" if use_ema else "raw", path)
    state = {k: v for k, v in state.items() if not k.startswith("sem_decoder.")}
    checkpoint.load_state_strict(model, state, f"{path} ({'EMA' if use_ema else 'raw'} weights)")
    model.eval().requires_grad_(False).to(device)
    local, sha256 = checkpoint.identity(ck, path)  # an export folder keeps its source checkpoint's sha256
    meta = {"config": ck["config"], "stage": ck.get("stage"), "step": ck.get("step"),
            "sha256": sha256, "path": local, "weights": "ema" if use_ema else "raw",
            "latent_stats": ck.get("latent_stats")}  # an export folder may carry them
    return model, meta

