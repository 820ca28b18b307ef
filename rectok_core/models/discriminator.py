"""PatchGAN discriminator and hinge losses (recipe §2; taming-transformers' ``NLayerDiscriminator``).

Layout for ``ndf=64, n_layers=3`` (the official configuration), all convolutions 4×4 with padding 1:

====  ======================  ======  ===========================
#     conv                    stride  followed by
====  ======================  ======  ===========================
1     3 → 64   (bias)         2       LeakyReLU(0.2)
2     64 → 128 (no bias)      2       BatchNorm + LeakyReLU(0.2)
3     128 → 256 (no bias)     2       BatchNorm + LeakyReLU(0.2)
4     256 → 512 (no bias)     1       BatchNorm + LeakyReLU(0.2)
5     512 → 1  (bias)         1       -- (logit map)
====  ======================  ======  ===========================

2,765,633 parameters (the "2.77M" of the recipe); a 256×256 input gives a 30×30 logit map. PyTorch default
initialisation, as in the official code. The official discriminator sees images in **[0, 1]** and its BatchNorm
is always in train mode (batch statistics, also for the generator's adversarial term); ``norm="sync"`` uses
``nn.SyncBatchNorm`` for DDP (identical to BatchNorm when not distributed).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from rectok_core.errors import RectokError

DISC_NORMS = ("batch", "sync")


class NLayerDiscriminator(nn.Module):
    """PatchGAN: images ``(B, in_channels, H, W)`` in [0, 1] → logits ``(B, 1, h, w)`` (30×30 for 256²)."""

    def __init__(self, in_channels: int = 3, ndf: int = 64, n_layers: int = 3, norm: str = "batch"):
        super().__init__()
        if norm not in DISC_NORMS:
            raise RectokError(f"unknown discriminator norm {norm!r}; choose one of {', '.join(DISC_NORMS)}")
        if n_layers < 1:
            raise ValueError(f"n_layers must be >= 1, got {n_layers}")
        norm_layer = nn.BatchNorm2d if norm == "batch" else nn.SyncBatchNorm
        self.norm = norm
        kw, padw = 4, 1
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, ndf, kernel_size=kw, stride=2, padding=padw),
            nn.LeakyReLU(0.2, True),
        ]
        mult = 1
        for n in range(1, n_layers):
            prev, mult = mult, min(2 ** n, 8)
            layers += [
                nn.Conv2d(ndf * prev, ndf * mult, kernel_size=kw, stride=2, padding=padw, bias=False),
                norm_layer(ndf * mult),
                nn.LeakyReLU(0.2, True),
            ]
        prev, mult = mult, min(2 ** n_layers, 8)
        layers += [
            nn.Conv2d(ndf * prev, ndf * mult, kernel_size=kw, stride=1, padding=padw, bias=False),
            norm_layer(ndf * mult),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(ndf * mult, 1, kernel_size=kw, stride=1, padding=padw),
        ]
        self.main = nn.Sequential(*layers)
        # NHWC input (set on CUDA by the trainer): cuDNN then runs channels-last kernels while the parameters, their
        # optimizer state and checkpoints keep the default layout.
        self.channels_last = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.main(x)


def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """Discriminator hinge loss ``0.5 · (mean relu(1 − D(real)) + mean relu(1 + D(fake)))``."""
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())



