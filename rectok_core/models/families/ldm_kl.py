"""The LDM-style KL autoencoders the RecTok paper compares against, as their projects ship them:

* ``mar-kl16``: MAR's ``kl16.ckpt`` (``{"model": state_dict}``): 16 latent channels, ch_mult (1, 1, 2, 2, 4) (16×
  down-sampling), attention in the encoder's last level and both mid blocks, none in the decoder's levels;
  official scale 0.2325.
* ``va-vae``: LightningDiT's VA-VAE f16d32 (``{"state_dict": …}``, loss tensors beside the model): 32 channels, the
  same grid, attention at resolution 16 in encoder and decoder; normalised per channel with data statistics.

Both are diffusers ``AutoencoderKL`` networks (LDM's ResNet blocks, single-head attention, asymmetric-pad
down-sampling and nearest up-sampling are what diffusers implements): the weights are renamed from the LDM layout
(:mod:`~rectok_core.models.families.kl_files`), no encoder or decoder is written here.
"""
from __future__ import annotations

from pathlib import Path

import torch

from rectok_core.errors import CheckpointError
from rectok_core.models.families.base import Normalization, frozen, register_family
from rectok_core.models.families.diffusers_vae import KLAutoencoder, load_diffusers_vae

MAR_NORM = Normalization("global", 0.2325, 0.0)
VAVAE_NORM = Normalization("per-channel")


def _load_ldm(name: str, norm: Normalization, source: str, local: Path | None, image_size: int,
              device: torch.device | str) -> KLAutoencoder:
    where = f"{name}:{source}"
    if local is None:
        raise CheckpointError(f"{where}: {name} loads a local weights file ({name}:PATH/TO/FILE), not a Hub id")
    vae = load_diffusers_vae(source, local, None, where)
    return frozen(KLAutoencoder(vae.float(), name, norm, source, image_size), device)


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
