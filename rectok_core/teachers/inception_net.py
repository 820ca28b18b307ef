"""The InceptionV3 feature network behind the ``inception`` and ``inception-s`` teachers (torch; imported when one
of them is built, not when they are registered)."""
from __future__ import annotations

import os

import torch
import torch.nn as nn
import torch.nn.functional as F

from rectok_core.errors import RectokError
from rectok_core.models.inception import _STAGES, INPUT_SIZE, MIXED_CHANNELS, _build_extractor


class InceptionTeacher(nn.Module):
    """Frozen ImageNet-pretrained InceptionV3 features on the tokenizer's token grid (offline stand-in for DINO).

    Input: (B,3,H,W) images in [-1, 1]. They are mapped to torch-fidelity's pixel scale, resized to
    ``input_size`` (default 299, the FID resolution) with its TF1.x-exact bilinear resize and normalised
    ``(x - 128) / 128`` (``INCEPTION_MEAN/STD``) -- the preprocessing the weights were trained with -- then run
    up to ``layer``; the feature map is brought onto ``grid`` by adaptive average pooling (map at least as large
    as the grid) or bilinear interpolation (smaller map) and returned as (B, grid_h * grid_w, dim) tokens in
    row-major order.

    Default layer ``mixed_6e``: the last 17x17 block (768 channels, ~17.6 px receptive-field stride at 299) --
    semantic (ImageNet-class level, 15 of the network's 18 stages) yet still spatial: 17x17 pools onto a 16x16
    grid almost one-to-one, whereas ``mixed_7c`` (2048 channels, 8x8) would have to be upsampled 2x, i.e.
    interpolated rather than measured, and costs more to run. ``mixed_5d`` (288 ch, 35x35) is the low-level
    option. Any ``mixed_*`` block name is accepted; :attr:`dim` is its channel count.

    The teacher never trains: parameters have ``requires_grad=False``, ``train()`` keeps eval mode and the
    forward runs under ``torch.no_grad()``. Only the stages up to ``layer`` are kept.
    """

    def __init__(
        self,
        weights: str | os.PathLike[str] | None = None,
        grid: tuple[int, int] = (16, 16),
        layer: str = "mixed_6e",
        input_size: int | None = None,
    ):
        super().__init__()
        self.input_size = int(input_size or INPUT_SIZE)
        if self.input_size < 75:
            raise ValueError(f"InceptionV3 needs inputs of at least 75 px, got {self.input_size}")
        layer = layer.lower()
        if layer not in MIXED_CHANNELS:
            choices = ", ".join(MIXED_CHANNELS)
            raise RectokError(f"unknown Inception teacher layer {layer!r}; choose one of {choices}")
        if len(grid) != 2 or min(grid) < 1:
            raise ValueError(f"grid must be two positive ints, got {grid}")
        extractor, self.weights_path, _ = _build_extractor(weights, need_logits=False)
        last = [s.lower() for s in _STAGES].index(layer)
        self.stages = nn.Sequential(*(getattr(extractor, name) for name in _STAGES[: last + 1]))
        self.layer = layer
        self.grid = (int(grid[0]), int(grid[1]))
        self.dim = MIXED_CHANNELS[layer]
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> InceptionTeacher:
        """Stay in eval mode: the teacher's batch-norm statistics are pretrained and fixed."""
        return super().train(False)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, grid_h * grid_w, dim) float32 teacher tokens for (B,3,H,W) images in [-1, 1]."""
        from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x

        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(x.shape)}")
        weight_dtype = next(self.parameters()).dtype
        pixels = (x.to(weight_dtype).clamp(-1, 1) + 1) * 127.5  # [0, 255], torch-fidelity's pixel scale
        size = (self.input_size, self.input_size)
        if pixels.shape[-2:] != size:
            pixels = interpolate_bilinear_2d_like_tensorflow1x(pixels, size=size, align_corners=False)
        fmap = self.stages((pixels - 128) / 128)
        gh, gw = self.grid
        if fmap.shape[-2] >= gh and fmap.shape[-1] >= gw:
            fmap = F.adaptive_avg_pool2d(fmap, (gh, gw))
        else:
            fmap = F.interpolate(fmap, size=(gh, gw), mode="bilinear", align_corners=False)
        return fmap.flatten(2).transpose(1, 2).float()

