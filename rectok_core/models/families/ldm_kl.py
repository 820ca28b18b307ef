"""The LDM-style KL autoencoders the RecTok paper compares against, as their projects ship them:

* ``mar-kl16``: MAR's ``kl16.ckpt`` (``{"model": state_dict}``): 16 latent channels, ch_mult (1, 1, 2, 2, 4) (16×
  down-sampling), attention in the encoder's last level and both mid blocks, none in the decoder's levels;
  official scale 0.2325.
* ``va-vae``: LightningDiT's VA-VAE f16d32 (``{"state_dict": …}``, loss tensors beside the model): 32 channels, the
  same grid, attention at resolution 16 in encoder and decoder; normalised per channel with data statistics.

Both are diffusers ``AutoencoderKL`` networks (LDM's ResNet blocks, single-head attention, asymmetric-pad
down-sampling and nearest up-sampling are what diffusers implements): the weights are renamed from the LDM layout
(:mod:`~rectok_core.models.families.kl_files`), no encoder or decoder is written here. Only the order of two
computations follows the LDM code (:func:`ldm_numerics`), so that outputs equal the projects' own to the last bit
instead of to ~1e-5: its swish ``x·sigmoid(x)`` (``nn.SiLU`` rounds differently) and its attention (1×1 convolutions,
``bmm`` then scale, softmax). Without them a full-size VA-VAE decode differs from the official one by 1.5e-5
(relative L2, PyTorch-default weights); with them, by 0.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from rectok_core.errors import CheckpointError
from rectok_core.models.families.base import Normalization, frozen, register_family
from rectok_core.models.families.diffusers_vae import KLAutoencoder, load_diffusers_vae

MAR_NORM = Normalization("global", 0.2325, 0.0)
VAVAE_NORM = Normalization("per-channel")

#: (latent channels, down-sampling) of each published LDM-style model (official ``VAE_models``: embed_dim, ch_mult).
LDM_SHAPES = {"mar-kl16": (16, 16), "va-vae": (32, 16)}
#: Latent channels of the diffusers families (any widths and levels are loaded as the weights describe them).
DIFFUSERS_CHANNELS = {"sd-vae": 4, "eq-vae": 4, "sd3-vae": 16, "flux-vae": 16}


class Swish(nn.Module):
    """The LDM nonlinearity, ``x·sigmoid(x)``: equal to ``nn.SiLU`` in exact arithmetic, not in fp32 rounding."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(x)


def _conv1x1(linear: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    return F.conv2d(x, linear.weight[:, :, None, None], linear.bias)


class LDMAttnProcessor:
    """A diffusers attention processor computing the LDM ``AttnBlock`` in its own order: 1×1-convolution q/k/v,
    ``bmm(q, k)·c^-½``, softmax over keys, ``bmm(v, wᵀ)``, 1×1-convolution output, residual."""

    def __call__(self, attn, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None) -> torch.Tensor:
        b, c, h, w = hidden_states.shape
        x = attn.group_norm(hidden_states)
        q = _conv1x1(attn.to_q, x).reshape(b, c, h * w).permute(0, 2, 1)
        k = _conv1x1(attn.to_k, x).reshape(b, c, h * w)
        v = _conv1x1(attn.to_v, x).reshape(b, c, h * w)
        weights = torch.softmax(torch.bmm(q, k) * (int(c) ** -0.5), dim=2)
        out = torch.bmm(v, weights.permute(0, 2, 1)).reshape(b, c, h, w)
        return hidden_states + _conv1x1(attn.to_out[0], out)


def ldm_numerics(vae) -> None:
    """Make a diffusers ``AutoencoderKL`` compute in the LDM code's order (swish and attention, see the module doc)."""
    for module in vae.modules():
        for name, child in list(module.named_children()):
            if isinstance(child, nn.SiLU):
                setattr(module, name, Swish())
    vae.set_attn_processor(LDMAttnProcessor())


def check_shape(name: str, model: KLAutoencoder, where: str) -> None:
    """One line when the file's latent channels or down-sampling are not the family's, naming the families that fit."""
    channels, down = model.cfg.dim, model.cfg.downsample
    want = LDM_SHAPES[name]
    if (channels, down) != want:
        fits = [f"{f}:" for f, shape in LDM_SHAPES.items() if shape == (channels, down)]
        fits += [f"{f}:" for f, c in DIFFUSERS_CHANNELS.items() if c == channels]
        raise CheckpointError(f"{where}: an autoencoder of {channels} latent channels down-sampling by {down}, "
                              f"{name} has {want[0]} channels and {want[1]}x down-sampling (" +
                              (f"what fits: {', '.join(fits)}" if fits else "no tokenizer family fits it") + ")")


def _load_ldm(name: str, norm: Normalization, source: str, local: Path | None, image_size: int,
              device: torch.device | str) -> KLAutoencoder:
    where = f"{name}:{source}"
    if local is None:
        raise CheckpointError(f"{where}: {name} loads a local weights file ({name}:PATH/TO/FILE), not a Hub id")
    vae = load_diffusers_vae(source, local, None, where)
    ldm_numerics(vae)
    model = KLAutoencoder(vae.float(), name, norm, source, image_size)
    check_shape(name, model, where)
    return frozen(model, device)


@register_family("mar-kl16", "MAR's KL-16 autoencoder (LDM layout)", "kl16.ckpt (github.com/LTH14/mar)",
                 "16 x H/16 x W/16", MAR_NORM)
def load_mar(source: str, local: Path | None = None, image_size: int = 256, device: torch.device | str = "cpu",
             revision: str | None = None) -> KLAutoencoder:
    model = _load_ldm("mar-kl16", MAR_NORM, source, local, image_size, device)
    if any(t.startswith("Attn") for t in model.vae.config.up_block_types):
        raise CheckpointError(f"mar-kl16:{source} has attention in its decoder levels, which MAR's KL-16 has not: "
                              f"is it a VA-VAE (va-vae:{source})?")
    return model


@register_family("va-vae", "LightningDiT's VA-VAE f16d32 (LDM layout)", "vavae-imagenet256-f16d32-dinov2.pt "
                 "(github.com/hustvl/LightningDiT)", "32 x H/16 x W/16", VAVAE_NORM)
def load_vavae(source: str, local: Path | None = None, image_size: int = 256, device: torch.device | str = "cpu",
               revision: str | None = None) -> KLAutoencoder:
    return _load_ldm("va-vae", VAVAE_NORM, source, local, image_size, device)
