"""DiT (the official RecTok code's Gaussian-diffusion DiT): the adaLN-Zero transformer of
:mod:`rectok_core.models.generators.sit` with learned variance, trained for noise prediction.

Same network as SiT (LayerNorm without affine parameters, GELU MLP, fixed sin-cos positions, adaLN-Zero); the
official class differs only in ``learn_sigma=True`` (its default): the output has ``2C`` channels, the noise
prediction followed by the ``C`` variance-interpolation values of the improved-DDPM ``LEARNED_RANGE`` variance,
and ``forward`` returns all of them. Time: ``t`` is the diffusion timestep index in ``[0, 1000)`` (a float; the
official diffusion passes the original-process index, also when respaced), fed unscaled to the sinusoidal time
embedder -- the official convention, so ``forward`` converts nothing. The official DiT has no QK-norm option
(``qk_norm`` stays False for official weights).

Parameter names are the official ones; an official ``DiT`` state dict loads unchanged (:func:`from_official_state`).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from rectok_core.models.generators.base import RESOLUTION_SHIFT, GeneratorFamily, SamplingDefaults, register_generator
from rectok_core.models.generators.sit import (
    AdaLNConfig,
    AdaLNTransformer,
    family_sizes,
    official_state,
    shape_from_state,
)


@dataclass(frozen=True)
class GenDiTConfig(AdaLNConfig):
    """DiT: ``learn_sigma`` (official default True) adds ``C`` learned-variance output channels."""

    learn_sigma: bool = True


class DiT(AdaLNTransformer):
    """DiT noise-prediction model: ``forward(x, t, y)`` with ``t`` the diffusion timestep index, output
    ``(B, 2C, H, W)`` (noise, then variance values) with ``learn_sigma``, else ``(B, C, H, W)``."""

    label = "DiT"
    return_sigma = True


def from_official_state(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An official ``DiT`` state dict (``model.state_dict()``) for :class:`DiT`: the keys are identical."""
    return official_state(sd)


def config_from_official_state(sd: dict[str, torch.Tensor], heads: int | None = None) -> dict[str, object]:
    """:class:`GenDiTConfig` fields of an official DiT state dict."""
    return {"learn_sigma": False, **shape_from_state(sd, heads)}


DIT = register_generator(GeneratorFamily(
    name="dit",
    model_class=DiT,
    config_class=GenDiTConfig,
    sizes=family_sizes(("tiny", "mini", "b", "l", "xl", "h")),
    objective="diffusion",
    prediction="epsilon",
    official={"DiT_base": "b", "DiT_large": "l", "DiT_xl": "xl", "DiT_huge": "h"},
    description="DiT: adaLN-Zero transformer trained with Gaussian diffusion, noise prediction "
                "(official DiT_models)",
    sampling=SamplingDefaults(RESOLUTION_SHIFT, (0.0, 1.0), "official DiT: its ddpm sampler (own respacing, no "
                                                            "time grid), guidance at every step"),
))
