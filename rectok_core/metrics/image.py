"""Image metrics: PSNR and SSIM."""
from __future__ import annotations

import logging
import math

import torch
import torch.nn.functional as F

from rectok_core.errors import RectokError

logger = logging.getLogger(__name__)


SSIM_K1 = 0.01
SSIM_K2 = 0.03


SSIM_WINDOW = 11


SSIM_SIGMA = 1.5


MSE_FLOOR = 1e-10  # PSNR ceiling of 100 dB


# ---------------------------------------------------------------------------------------------------------
# Per-image metrics
# ---------------------------------------------------------------------------------------------------------
def psnr_from_mse(mse: float) -> float:
    """PSNR in dB of a mean squared error of images in [0, 1] (the MSE floored at 1e-10: at most 100 dB)."""
    return -10.0 * math.log10(max(mse, MSE_FLOOR))


def psnr(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR (B,) in dB of images in [0, 1]: ``10·log10(1 / MSE_i)``, MSE floored at 1e-10."""
    if x.shape != y.shape or x.ndim != 4:
        raise ValueError(f"PSNR needs two (B, C, H, W) batches of the same shape, got {tuple(x.shape)} and "
                         f"{tuple(y.shape)}")
    mse = (x.double() - y.double()).pow(2).flatten(1).mean(1)
    return -10.0 * torch.log10(mse.clamp_min(MSE_FLOOR))


def gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA, dtype: torch.dtype = torch.float64,
                    device: torch.device | str = "cpu") -> torch.Tensor:
    """The normalised 1-D Gaussian ``(size,)`` centred on the middle tap; SSIM's 2-D window is its outer product."""
    r = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    g = torch.exp(-(r ** 2) / (2 * sigma ** 2))
    return g / g.sum()


def ssim(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Per-image SSIM (B,) of images in [0, ``data_range``], computed in float64 (see the module docs).

    Local means, variances and the covariance come from one separable, per-channel, valid (unpadded) convolution
    with the 11×11 Gaussian window; the SSIM map is averaged over positions and channels.
    """
    if x.shape != y.shape or x.ndim != 4:
        raise ValueError(f"SSIM needs two (B, C, H, W) batches of the same shape, got {tuple(x.shape)} and "
                         f"{tuple(y.shape)}")
    if min(x.shape[-2:]) < SSIM_WINDOW:
        raise RectokError(f"SSIM needs images of at least {SSIM_WINDOW}×{SSIM_WINDOW} pixels, got "
                          f"{x.shape[-2]}×{x.shape[-1]}")
    x, y = x.double(), y.double()
    c = x.shape[1]
    g = gaussian_window(dtype=x.dtype, device=x.device)
    maps = torch.cat([x, y, x * x, y * y, x * y], dim=1)  # (B, 5C, H, W): one convolution for the five moments
    maps = F.conv2d(maps, g.view(1, 1, 1, -1).expand(5 * c, 1, 1, -1), groups=5 * c)
    maps = F.conv2d(maps, g.view(1, 1, -1, 1).expand(5 * c, 1, -1, 1), groups=5 * c)
    mu_x, mu_y, e_xx, e_yy, e_xy = maps.split(c, dim=1)
    var_x, var_y, cov = e_xx - mu_x ** 2, e_yy - mu_y ** 2, e_xy - mu_x * mu_y
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1) * (var_x + var_y + c2))
    return s.flatten(1).mean(1)

