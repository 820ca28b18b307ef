"""Perceptual losses: LPIPS-VGG16 with a real ImageNet backbone, plus the optional ConvNeXt-S logit term.

The official loss (recipe §2) is ``(1.0 · LPIPS_VGG16 + 0.1 · MSE(ConvNeXt-S logits)) / 1.1``
(``"lpips-convnext_s-1.0-0.1"``).

LPIPS
-----
Network definition and the linear calibration layers come from the ``lpips`` package (v0.1 VGG weights, shipped
inside the package; byte-identical to the taming-transformers ``vgg.pth`` that the official code md5-checks:
``d507d7349b931f0638a25a48a722f98a``): scaling layer (shift [−.030, −.088, −.188], scale [.458, .448, .450]),
five VGG16 slices (relu1_2 … relu5_3), channel-unit normalisation, squared difference, 1×1 linear layers,
spatial mean, summed over the five layers.

The VGG16 backbone needs torchvision's ImageNet weights (``vgg16-397923af.pth``), looked up in this order:
explicit file (``--lpips-vgg``) → the torch hub cache (``$TORCH_HOME/hub/checkpoints/vgg16-397923af.pth``,
default ``~/.cache/torch/hub/checkpoints``) → a download into that cache when download.pytorch.org is reachable
→ :class:`~rectok_core.errors.WeightsNotFound`. torchvision's ``features.N.*`` tensors are mapped onto
lpips's slices (``slice1`` = features 0–3, ``slice2`` = 4–8, ``slice3`` = 9–15, ``slice4`` = 16–22,
``slice5`` = 23–29; module names keep torchvision's indices, so ``features.5.weight`` → ``slice2.5.weight``) and
loaded strictly; the classifier is ignored.

LPIPS is never computed silently with a random backbone: ``build_lpips(..., allow_random=True)`` (tests and
benchmarks only) falls back to one with a loud warning and marks the instance ``real = False`` so that metric
code can refuse to report it.

ConvNeXt-S term
---------------
torchvision ``convnext_small`` with ImageNet-1k weights (``convnext_small-0c510722.pth``; explicit file
``--convnext-weights`` → hub cache → download when online). Both images are mapped to [0, 1], resized to
224×224 (bilinear, antialias), ImageNet-normalised, and the MSE is taken over the 1000 logits.

All modules here are frozen and stay in eval mode (``train()`` is a no-op: the lpips linear layers carry
dropout and ConvNeXt stochastic depth, which must never be active). Inputs are images in [−1, 1]; outputs are
per-sample ``(B,)`` distances (the caller takes ``.mean()``). Gradients flow to the inputs.
"""
from __future__ import annotations

import logging
import warnings
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from rectok_core.errors import CheckpointError, RectokError, WeightsNotFound
from rectok_core.teachers.weights import load_state_dict_file
from rectok_core.utils.checkpoint import describe_mismatch
from rectok_core.utils.env import network_available

logger = logging.getLogger(__name__)


VGG16_FILE = "vgg16-397923af.pth"


VGG16_URL = "https://download.pytorch.org/models/vgg16-397923af.pth"


CONVNEXT_S_FILE = "convnext_small-0c510722.pth"


CONVNEXT_S_URL = "https://download.pytorch.org/models/convnext_small-0c510722.pth"


TORCH_DOWNLOAD_HOST = "download.pytorch.org"


#: torchvision ``vgg16().features`` index ranges of lpips's five slices (end exclusive).
LPIPS_VGG_SLICES = ((0, 4), (4, 9), (9, 16), (16, 23), (23, 30))


LPIPS_LIN_KEYS = tuple(f"lin{i}.model.1.weight" for i in range(5))


PERCEPTUAL_KINDS = ("lpips", "lpips+convnext", "auto")


#: Official weights of "lpips-convnext_s-1.0-0.1".
OFFICIAL_WEIGHTS = (1.0, 0.1)


_IMAGENET_MEAN = (0.485, 0.456, 0.406)


_IMAGENET_STD = (0.229, 0.224, 0.225)


_VGG_MISSING = ("the perceptual loss (LPIPS) needs VGG16 ImageNet weights: pass --lpips-vgg FILE "
                "(vgg16-397923af.pth) or use --perceptual none")


_CONVNEXT_MISSING = ("--perceptual lpips+convnext (the official loss, the default) needs ConvNeXt-S ImageNet "
                     "weights: pass --convnext-weights FILE (convnext_small-0c510722.pth) or use --perceptual lpips")


def _hub_checkpoint(fname: str) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / fname


def _read_torch_state_dict(path: Path, flag: str) -> dict[str, torch.Tensor]:
    return load_state_dict_file(str(path), flag)


def _locate_weights(explicit: str | None, fname: str, url: str, flag: str, missing_msg: str,
                    download: bool = True) -> Path | None:
    """Explicit file → hub cache → download (online only) → None. An explicit path that does not exist raises."""
    if explicit:
        p = Path(explicit).expanduser()
        if not p.is_file():
            raise WeightsNotFound(f"{flag} {explicit}: no such file")
        return p
    cached = _hub_checkpoint(fname)
    if cached.is_file():
        return cached
    if not download:
        return None

    if not network_available(TORCH_DOWNLOAD_HOST):  # RECTOK_OFFLINE=1 or a failed 2 s probe
        return None
    try:
        logger.info("downloading %s to %s", url, cached.parent)
        torch.hub.load_state_dict_from_url(url, progress=False, check_hash=True, map_location="cpu")
    except Exception as e:  # noqa: BLE001 - any download failure is a one-line user error
        raise WeightsNotFound(f"{missing_msg} (download of {url} failed: {type(e).__name__})") from None
    return cached if cached.is_file() else None


def vgg16_to_lpips_state_dict(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """torchvision VGG16 state dict (``features.N.weight/bias``; ``classifier.*`` ignored) → lpips ``net`` keys
    (``sliceS.N.weight/bias``). A state dict already in lpips layout (``sliceS.N.*``) passes through."""
    if sd and all(k.startswith("slice") for k in sd):
        return dict(sd)
    out: dict[str, torch.Tensor] = {}
    for k, v in sd.items():
        if k.startswith("classifier."):
            continue
        parts = k.split(".")
        if len(parts) != 3 or parts[0] != "features" or not parts[1].isdigit():
            out[k] = v  # left for the strict load to report
            continue
        idx = int(parts[1])
        for s, (lo, hi) in enumerate(LPIPS_VGG_SLICES, start=1):
            if lo <= idx < hi:
                out[f"slice{s}.{idx}.{parts[2]}"] = v
                break
        else:
            out[k] = v
    return out


def _strict_load(module: nn.Module, sd: dict[str, torch.Tensor], what: str, source: str) -> None:
    problem = describe_mismatch(module, sd)
    if problem:
        raise CheckpointError(f"{source} is not a {what} state dict: {problem}")
    module.load_state_dict(sd, strict=True)


class _Frozen(nn.Module):
    """Frozen, always-eval base."""

    def _freeze(self) -> None:
        self.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> _Frozen:
        return super().train(False)


class LPIPS(_Frozen):
    """LPIPS-VGG16 (v0.1). ``forward(x, y)`` with images in [−1, 1] → per-sample distance ``(B,)``.

    ``real`` is False when the VGG16 backbone is random (``build_lpips(allow_random=True)`` without weights):
    such distances must never be reported. ``source`` says where the backbone came from.
    """

    def __init__(self, vgg_state_dict: dict[str, torch.Tensor] | None, source: str = "random init"):
        super().__init__()
        import lpips as lpips_pkg

        with warnings.catch_warnings():  # lpips calls torchvision's deprecated vgg16(pretrained=False)
            warnings.simplefilter("ignore")
            self.model = lpips_pkg.LPIPS(net="vgg", version="0.1", lpips=True, pretrained=False, pnet_rand=True,
                                         use_dropout=True, verbose=False)
        lin_path = Path(lpips_pkg.__file__).parent / "weights" / "v0.1" / "vgg.pth"
        lin = torch.load(str(lin_path), map_location="cpu", weights_only=True)
        if set(lin) != set(LPIPS_LIN_KEYS):
            raise CheckpointError(f"{lin_path}: unexpected LPIPS linear-layer keys {sorted(lin)}")
        result = self.model.load_state_dict(lin, strict=False)
        if result.unexpected_keys or any(k in result.missing_keys for k in LPIPS_LIN_KEYS):
            raise CheckpointError(f"{lin_path}: LPIPS linear layers did not load")
        self.real = vgg_state_dict is not None
        self.source = source
        if vgg_state_dict is not None:
            _strict_load(self.model.net, vgg16_to_lpips_state_dict(vgg_state_dict), "torchvision VGG16", source)
        self._freeze()

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if x.shape != y.shape or x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"LPIPS needs two (B, 3, H, W) batches of the same shape, got {tuple(x.shape)} "
                             f"and {tuple(y.shape)}")
        dtype = self.model.lin0.model[-1].weight.dtype  # e.g. bf16 reconstructions vs fp32 targets
        return self.model(x.to(dtype), y.to(dtype)).reshape(x.shape[0])

    def extra_repr(self) -> str:
        return f"real={self.real}, source={self.source}"


def build_lpips(vgg_weights: str | None = None, allow_random: bool = False) -> LPIPS:
    """LPIPS with a real VGG16 backbone: ``vgg_weights`` file → torch hub cache → download when online.

    Without any of these: :class:`WeightsNotFound`, or, with ``allow_random=True`` (tests/benchmarks only), a
    random backbone with a loud warning and ``.real = False``.
    """
    path = _locate_weights(vgg_weights, VGG16_FILE, VGG16_URL, "--lpips-vgg", _VGG_MISSING)
    if path is None:
        if not allow_random:
            raise WeightsNotFound(_VGG_MISSING)
        logger.warning("!!! LPIPS uses a RANDOMLY INITIALISED VGG16 backbone: distances are meaningless; tests "
                       "and speed checks only, never training or reported numbers !!!")
        return LPIPS(None)
    sd = _read_torch_state_dict(path, "--lpips-vgg")
    module = LPIPS(sd, source=str(path))
    logger.info("LPIPS: VGG16 backbone from %s", path)
    return module


class ConvNeXtLogits(_Frozen):
    """torchvision ConvNeXt-S: images in [−1, 1] → [0, 1] → 224² (bilinear, antialias) → ImageNet norm → logits."""

    def __init__(self, state_dict: dict[str, torch.Tensor] | None, source: str = "random init"):
        super().__init__()
        from torchvision.models import convnext_small

        self.model = convnext_small(weights=None)
        self.real = state_dict is not None
        self.source = source
        if state_dict is not None:
            _strict_load(self.model, state_dict, "torchvision ConvNeXt-S", source)
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self._freeze()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x01 = (x.float() + 1.0) * 0.5
        x01 = F.interpolate(x01, size=(224, 224), mode="bilinear", align_corners=False, antialias=True)
        inp = (x01 - self.mean.float()) / self.std.float()
        return self.model(inp.to(self.model.classifier[-1].weight.dtype))


def build_convnext_small(weights: str | None = None, allow_random: bool = False,
                         required: bool = True) -> ConvNeXtLogits | None:
    """ConvNeXt-S logits: ``weights`` file → hub cache → download when online. Missing weights raise
    :class:`WeightsNotFound` when ``required``, else return None; ``allow_random`` gives a random network
    (``.real = False``, loud warning) instead."""
    path = _locate_weights(weights, CONVNEXT_S_FILE, CONVNEXT_S_URL, "--convnext-weights", _CONVNEXT_MISSING,
                           download=required)
    if path is None:
        if allow_random:
            logger.warning("!!! ConvNeXt-S perceptual term uses a RANDOMLY INITIALISED network: meaningless; tests "
                           "and speed checks only !!!")
            return ConvNeXtLogits(None)
        if required:
            raise WeightsNotFound(_CONVNEXT_MISSING)
        return None
    module = ConvNeXtLogits(_read_torch_state_dict(path, "--convnext-weights"), source=str(path))
    logger.info("perceptual: ConvNeXt-S weights from %s", path)
    return module


class PerceptualLoss(_Frozen):
    """Per-sample perceptual distance ``(B,)`` between images in [−1, 1] (``forward(x, y)``; caller takes ``.mean()``).

    ``kind="lpips+convnext"`` (the default; the official loss of both tokenizer stages):
    ``(w_lpips · LPIPS + w_cnx · mean_k (logit_k(x) − logit_k(y))²) / (w_lpips + w_cnx)`` with ``weights`` =
    (1.0, 0.1); ConvNeXt-S weights are then required. ``kind="lpips"``: LPIPS-VGG16 alone (rectok's choice).
    ``kind="auto"``: the combination when ConvNeXt-S weights are found (file, hub cache, or a download when online),
    else LPIPS alone.

    Weights: ``vgg_weights`` (``--lpips-vgg``) and ``convnext_weights`` (``--convnext-weights``) files, else the
    torch hub cache, else a download when online, else :class:`WeightsNotFound`. ``allow_random=True`` (tests,
    benchmarks) substitutes random networks instead, flagged by ``real = False``. Prebuilt ``lpips_module`` /
    ``convnext_module`` instances may be passed instead of building them.

    After construction ``kind`` is what actually runs (``"lpips"`` or ``"lpips+convnext"``).
    """

    def __init__(self, kind: str = "lpips+convnext", vgg_weights: str | None = None,
                 convnext_weights: str | None = None, allow_random: bool = False,
                 weights: tuple[float, float] = OFFICIAL_WEIGHTS, *,
                 lpips_module: LPIPS | None = None, convnext_module: ConvNeXtLogits | None = None):
        super().__init__()
        if kind not in PERCEPTUAL_KINDS:
            raise RectokError(f"unknown --perceptual {kind!r}; choose one of lpips, lpips+convnext, none")
        if weights[0] < 0 or weights[1] < 0 or weights[0] + weights[1] <= 0:
            raise RectokError(f"perceptual weights must be non-negative with a positive sum, got {weights}")
        self.lpips = lpips_module if lpips_module is not None else build_lpips(vgg_weights, allow_random)
        convnext = convnext_module
        if convnext is None and kind == "lpips+convnext":
            convnext = build_convnext_small(convnext_weights, allow_random=allow_random, required=True)
        elif convnext is None and kind == "auto":
            convnext = build_convnext_small(convnext_weights, allow_random=False, required=False)
            if convnext is None:
                logger.info("perceptual: no ConvNeXt-S weights found, using LPIPS alone")
        self.convnext = convnext
        self.w_lpips = float(weights[0])
        self.w_convnext = float(weights[1]) if convnext is not None else 0.0
        if self.w_lpips + self.w_convnext <= 0:
            raise RectokError(f"perceptual weights {weights} leave nothing to compute")
        self.kind = "lpips+convnext" if convnext is not None else "lpips"
        self.real = bool(self.lpips.real and (convnext is None or convnext.real))
        self._freeze()

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        total = self.w_lpips * self.lpips(x, y)
        if self.convnext is not None:
            mse = (self.convnext(x) - self.convnext(y)).pow(2).mean(dim=1)
            total = total + self.w_convnext * mse
        return total / (self.w_lpips + self.w_convnext)

    def extra_repr(self) -> str:
        return f"kind={self.kind}, weights=({self.w_lpips}, {self.w_convnext}), real={self.real}"



