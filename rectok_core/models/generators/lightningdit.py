"""LightningDiT (the official RecTok code's ``models/lightningdit.py``): the adaLN-Zero transformer of
:mod:`rectok_core.models.generators.sit` with SwiGLU, RMSNorm and 2-D RoPE.

Differences from SiT, as the official class builds it by default:

* every norm (blocks, final layer, and QK-norm when ``qk_norm``) is ``nn.RMSNorm`` with a learnable weight and
  PyTorch's default eps; QK-norm is off by default (the official class's default);
* the MLP is SwiGLU (fused ``w12``, then ``w3``) of hidden width ``int(2/3·mlp_ratio·D)``;
* attention rotates q and k with the EVA-style 2-D RoPE (θ = 10000, integer positions, adjacent channel pairs;
  the first half of each head's channels follows the row index, the second half the column index) -- rectok's
  ``RoPE2D``;
* the absolute position table starts as the 2-D sin-cos table but is trainable.

Time: the official transport is rectok's convention (t = 1 data, ``x_t = t·x1 + (1 − t)·x0``, velocity
``x1 − x0``, t fed unscaled to the time embedder), so ``forward`` converts nothing. The official training draws t
from a logit-normal(0, 1) and trains the MSE only (objective ``flow-lognorm``): its transport also computes a cosine
loss on the velocity, but the RecTok ``LightningDiT.forward`` drops it; ``--objective flow-lognorm-cosine`` adds it
(LightningDiT's own training recipe).

Parameter names are the official ones; the official module also stores its RoPE tables (``rope.freqs_cos``,
``rope.freqs_sin``), which rectok recomputes as non-persistent buffers -- :func:`from_official_state` drops them.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from rectok_core.models.generators.base import GeneratorFamily, SamplingDefaults, register_generator
from rectok_core.models.generators.sit import (
    AdaLNConfig,
    AdaLNTransformer,
    family_sizes,
    official_state,
    shape_from_state,
)

#: Official keys rectok does not store (recomputed RoPE tables).
OFFICIAL_DROPPED = ("rope.freqs_cos", "rope.freqs_sin")


@dataclass(frozen=True)
class LightningDiTConfig(AdaLNConfig):
    """LightningDiT: as :class:`AdaLNConfig`; the head size must be divisible by 4 (2-D RoPE)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if (self.width // self.heads) % 4 != 0:
            raise ValueError(f"width {self.width} with {self.heads} heads: the head size must be divisible by 4 "
                             "(2-D RoPE)")


class LightningDiT(AdaLNTransformer):
    """LightningDiT velocity model: t ∈ [0, 1] with t = 1 data."""

    label = "LightningDiT"
    norm = "rmsnorm"
    swiglu = True
    use_rope = True
    learned_pos_embed = True


def from_official_state(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An official ``LightningDiT`` state dict for :class:`LightningDiT`: the same keys less the RoPE tables
    (:data:`OFFICIAL_DROPPED`)."""
    return official_state(sd, OFFICIAL_DROPPED)


def config_from_official_state(sd: dict[str, torch.Tensor], heads: int | None = None) -> dict[str, object]:
    """:class:`LightningDiTConfig` fields of an official LightningDiT state dict (heads, unless given, from its RoPE
    table when present, else from the official sizes)."""
    if heads is None and "rope.freqs_cos" in sd:
        heads = int(sd["x_embedder.proj.weight"].shape[0]) // int(sd["rope.freqs_cos"].shape[-1])
    return {"qk_norm": False, **shape_from_state(sd, heads)}


LIGHTNINGDIT = register_generator(GeneratorFamily(
    name="lightningdit",
    model_class=LightningDiT,
    config_class=LightningDiTConfig,
    sizes=family_sizes(("tiny", "mini", "b", "l", "xl", "h")),
    objective="flow-lognorm",
    prediction="velocity",
    official={"LightningDiT_base": "b", "LightningDiT_large": "l", "LightningDiT_xl": "xl",
              "LightningDiT_huge": "h"},
    description="LightningDiT: SwiGLU, RoPE, RMSNorm transformer, log-normal t, MSE (+ cosine loss: --objective "
                "flow-lognorm-cosine) "
                "(official LightningDiT_models)",
    sampling=SamplingDefaults(1 / 0.3, (0.1, 1.0), "official LightningDiT: timestep_shift 0.3 (rectok shift "
                                                   "1/0.3), guidance only where t >= 0.10"),
))
