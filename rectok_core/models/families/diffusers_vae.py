"""The diffusers ``AutoencoderKL`` families: SD-VAE, EQ-VAE, SD3-VAE and FLUX-VAE (8× down-sampling; the scale and
shift are the ones the official RecTok code and the families' own pipelines use).

A source is a diffusers folder (``config.json`` + weights, or a ``vae/`` sub-folder with them), a single weights
file (diffusers or LDM layout; the architecture is read from the tensors), or a Hub id, which diffusers'
``AutoencoderKL.from_pretrained`` downloads and caches.
"""
from __future__ import annotations

from pathlib import Path

import torch

from rectok_core.errors import CheckpointError
from rectok_core.models.families.base import LatentConfig, LatentTokenizer, Normalization, frozen, register_family
from rectok_core.models.families.kl_files import build_autoencoder_kl, layout, ldm_to_diffusers, read_state_dict


class KLAutoencoder(LatentTokenizer):
    """A diffusers ``AutoencoderKL`` (``self.vae``) as a :class:`LatentTokenizer`: the posterior is its
    ``latent_dist`` (moments after ``quant_conv``), decoding is ``vae.decode(z).sample``."""

    def __init__(self, vae, family: str, normalization: Normalization, source: str, image_size: int):
        down = 2 ** (len(vae.config.block_out_channels) - 1)
        if image_size % down:
            raise CheckpointError(f"{family} down-samples by {down}: an image size of {image_size} does not fit (use a "
                                  f"multiple of {down})")
        cfg = LatentConfig(image_size, (image_size // down, image_size // down), int(vae.config.latent_channels), down)
        super().__init__(cfg, normalization, source)
        self.family = family
        self.vae = vae

    def encode_moments(self, img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        dist = self.vae.encode(img).latent_dist
        return dist.mean, dist.logvar

    def decode_latents(self, z: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(z).sample


def load_diffusers_vae(source: str, local: Path | None, subfolder: str | None, where: str, revision: str | None = None):
    """A diffusers ``AutoencoderKL`` from a local folder or file (``local``) or the Hub id ``source``."""
    from diffusers import AutoencoderKL
    from diffusers.utils import is_accelerate_available

    low_mem = is_accelerate_available()  # without accelerate, asking for it only prints a multi-line warning
    if local is None:
        try:
            return AutoencoderKL.from_pretrained(source, subfolder=subfolder, revision=revision,
                                                 low_cpu_mem_usage=low_mem)
        except Exception as e:  # noqa: BLE001 - any hub failure is one line
            raise CheckpointError(f"cannot load {where} from the Hugging Face Hub: {type(e).__name__}: "
                                  f"{' '.join(str(e).split())[:200]}") from None
    if local.is_dir():
        for folder in (local, local / (subfolder or "vae")):
            if (folder / "config.json").is_file():
                return AutoencoderKL.from_pretrained(str(folder), low_cpu_mem_usage=low_mem)
        raise CheckpointError(f"{where}: {local} holds no diffusers autoencoder (no config.json, nor vae/config.json)")
    sd = read_state_dict(local)
    kind = layout(sd)
    if kind == "ldm":
        sd = ldm_to_diffusers(sd, where)
    elif kind != "diffusers":
        hint = {"vit": " (a ViT tokenizer: rectok:FILE or detok:FILE)",
                "generator": " (a generator checkpoint, not a tokenizer)"}.get(kind, "")
        raise CheckpointError(f"{where}: {local} holds no KL autoencoder (neither diffusers nor LDM layout){hint}")
    return build_autoencoder_kl(sd, where)


def _register(name: str, description: str, hub_id: str, subfolder: str | None, channels: int, scale: float,
              shift: float) -> None:
    norm = Normalization("global", scale, shift)

    @register_family(name, description, hub_id, f"{channels} x H/8 x W/8", norm, hub=True, local_form="FOLDER or FILE")
    def load(source: str, local: Path | None = None, image_size: int = 256, device: torch.device | str = "cpu",
             revision: str | None = None) -> KLAutoencoder:
        where = f"{name}:{source}"
        vae = load_diffusers_vae(source, local, subfolder, where, revision)
        return frozen(KLAutoencoder(vae.float(), name, norm, source, image_size), device)


_register("sd-vae", "Stable Diffusion VAE (ft-EMA)", "stabilityai/sd-vae-ft-ema", None, 4, 0.18215, 0.0)
_register("eq-vae", "EQ-VAE: equivariance-regularised SD-VAE", "zelaki/eq-vae-ema", None, 4, 0.18215, 0.0)
_register("sd3-vae", "Stable Diffusion 3 VAE", "stabilityai/stable-diffusion-3-medium-diffusers", "vae", 16, 1.5305,
          0.0609)
_register("flux-vae", "FLUX.1 VAE", "black-forest-labs/FLUX.1-dev", "vae", 16, 0.3611, 0.1159)
