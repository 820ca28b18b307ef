"""Tokenizer losses (recipe §2), computed in fp32 outside autocast.

Pixel terms see images rescaled to [0, 1] (``x·0.5 + 0.5``), as in the official implementation, so the MSE
and the PSNR are on the [0, 1] scale.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from rectok_core.models.discriminator import hinge_d_loss
from rectok_core.models.tokenizer import cosine_loss_map

SEM_TARGETS = ("rec+align", "align", "rec")


def to01(x: torch.Tensor) -> torch.Tensor:
    return x.float() * 0.5 + 0.5


def mse01(recon: torch.Tensor, img: torch.Tensor) -> torch.Tensor:
    """Mean squared error on the [0, 1] scale."""
    return (to01(recon) - to01(img)).pow(2).mean()



def semantic_loss(pred: torch.Tensor, target: torch.Tensor, masked: torch.Tensor, sem_target: str) -> torch.Tensor:
    """Mean ``1 − cos`` over the selected tokens.

    ``masked`` (B, N) is True where the encoder did not see the token. ``rec+align``: every token (visible =
    alignment, masked = reconstruction); ``align``: visible tokens only; ``rec``: masked tokens only (0 when
    nothing is masked).
    """
    per_token = cosine_loss_map(pred, target)
    if sem_target == "rec+align":
        return per_token.mean()
    if sem_target not in SEM_TARGETS:
        raise ValueError(f"unknown sem_target {sem_target!r}")
    sel = (masked if sem_target == "rec" else ~masked).float()
    return (per_token * sel).sum() / sel.sum().clamp_min(1.0)


def kl_term(kl_per_sample: torch.Tensor) -> torch.Tensor:
    """KL summed over tokens × channels, averaged over the batch."""
    return kl_per_sample.float().mean()


class TokenizerLoss(nn.Module):
    """Weighted sum of reconstruction, perceptual, KL, semantic and (from a start step) GAN terms.

    ``perceptual`` is a frozen module mapping two [-1, 1] image batches to per-sample distances (or None);
    ``disc`` the PatchGAN (or None when the GAN weight is 0).
    """

    def __init__(self, rec_weight: float, perceptual_weight: float, kl_weight: float, sem_weight: float,
                 gan_weight: float, sem_target: str, perceptual: nn.Module | None, disc: nn.Module | None):
        super().__init__()
        self.w = dict(rec=rec_weight, perceptual=perceptual_weight, kl=kl_weight, sem=sem_weight, gan=gan_weight)
        self.sem_target = sem_target
        self.perceptual = perceptual
        self.disc = disc

    def forward(self, img: torch.Tensor, out: dict[str, torch.Tensor], teacher_feats: torch.Tensor | None,
                masked: torch.Tensor, gan_on: bool) -> dict[str, torch.Tensor]:
        with torch.autocast(img.device.type, enabled=False):
            recon = out["recon"].float()
            terms = {"rec": mse01(recon, img)}
            total = self.w["rec"] * terms["rec"]
            if self.perceptual is not None and self.w["perceptual"] > 0:
                terms["perceptual"] = self.perceptual(recon, img.float()).float().mean()
                total = total + self.w["perceptual"] * terms["perceptual"]
            terms["kl"] = kl_term(out["kl"])
            total = total + self.w["kl"] * terms["kl"]
            if teacher_feats is not None and "sem" in out:
                terms["sem"] = semantic_loss(out["sem"], teacher_feats, masked, self.sem_target)
                total = total + self.w["sem"] * terms["sem"]
            if gan_on and self.disc is not None and self.w["gan"] > 0:
                self.disc.requires_grad_(False)  # gradients flow to the image only
                terms["gan"] = -self.disc(to01(recon)).float().mean()
                self.disc.requires_grad_(True)
                total = total + self.w["gan"] * terms["gan"]
            terms["loss"] = total
        return terms


class DiscriminatorLoss(nn.Module):
    """Hinge loss of the PatchGAN on real and (detached) fake images, as one module forward.

    Real and fake go through the discriminator in separate passes (separate BatchNorm statistics, as in the
    official code) but inside one ``forward``, so DistributedDataParallel sees a single forward per backward.
    """

    def __init__(self, disc: nn.Module):
        super().__init__()
        self.disc = disc

    def forward(self, real: torch.Tensor, fake: torch.Tensor) -> dict[str, torch.Tensor]:
        with torch.autocast(real.device.type, enabled=False):
            logits_real = self.disc(to01(real)).float()
            logits_fake = self.disc(to01(fake.detach())).float()
            return {"disc": hinge_d_loss(logits_real, logits_fake),
                    "logits_real": logits_real.mean().detach(), "logits_fake": logits_fake.mean().detach()}

