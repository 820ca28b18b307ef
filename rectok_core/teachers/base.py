"""Vision-foundation-model (VFM) teachers for Flow Semantic Distillation (recipe §1.8, §11.3, §11.10).

A teacher maps images in ``[-1, 1]`` to one feature vector per tokenizer token: ``(B, grid_h * grid_w, dim)``,
row-major, computed without gradients by a frozen network in eval mode.

Registry
--------
``rectok_core.teachers.registry`` holds every name ``--teacher`` accepts (``available_teachers()``), each declared
by one line in ``rectok_core/teachers/__init__.py``; each family module registers its entries and builder
(``dino.py``: ``dinov3``, ``dinov3-s/b/l``, ``dinov2``, ``dinov2-s/b/l``; ``inception.py``: ``inception``,
``inception-s``; ...); ``none`` (no teacher, no semantic decoder) is built in. ``dinov2`` is the plain
(no-register) ViT-L/14, ``vit_large_patch14_dinov2.lvd142m``: the teacher the official code defines (recipe §1.8).
The register variants (``*_reg4_dinov2``) are not registered.

Weights of the timm ViT teachers, in this order
-----------------------------------------------
1. ``weights``: a local file (``.safetensors``, ``.pth``, ``.pt``, ``.bin``) or a Hugging Face snapshot folder
   holding one. Accepted layouts: timm's (what ``Teacher.model.state_dict()`` or the timm hub files hold), Meta's
   original DINOv2/DINOv3 release checkpoints (converted by timm's checkpoint filter), and, for DINOv3, the
   Hugging Face ``transformers`` layout (``facebook/dinov3-vitl16-pretrain-lvd1689m``, what the official code
   loads with ``AutoModel``), converted here. Common wrappers (``model_state_dict``, ``state_dict``, ``model``,
   ``module``; ``module.`` / ``_orig_mod.`` / ``model.`` key prefixes) are unwrapped. Loading is strict: any
   missing, unexpected or mis-shaped tensor is a :class:`~rectok_core.errors.CheckpointError`.
2. The timm files already in the local Hugging Face cache (works offline).
3. The hub via timm ``pretrained=True``, only when huggingface.co is reachable.
4. Otherwise :class:`~rectok_core.errors.WeightsNotFound`, within about two seconds.

``pretrained="random"`` builds the architecture with random initialisation (tests, benchmarks, GPU speed
checks); it logs a loud warning, because the features are meaningless.

Offline detection (:func:`network_available`): ``RECTOK_OFFLINE=1`` or ``HF_HUB_OFFLINE=1`` in the environment
means offline without probing; otherwise one TCP connection to ``huggingface.co:443`` is attempted with a 2 s
limit (in a daemon thread, so a slow DNS lookup cannot stall either), and the answer is cached for the process.
When offline, ``HF_HUB_OFFLINE=1`` is set (``os.environ.setdefault``, and huggingface_hub's already-imported
constant) before timm or huggingface_hub can make hub calls, so nothing sits in retry loops.

Preprocessing
-------------
``resize="native"`` (rectok's choice, recipe §11.3; every teacher has it): ``[-1,1] → [0,1]`` → the teacher's
``TeacherSpec.mean/std`` (ImageNet's for DINO) → bilinear resize (antialiased when shrinking) to
``grid * teacher_patch`` pixels: 256 px for a /16 teacher at a 16×16 grid, 224 px for a /14 one, so that each
tokenizer token gets exactly one teacher patch.

``resize="official"`` (/16 DINOv3 teachers only; the ``train-tokenizer`` default, ``--teacher-resize``) is the
official pipeline (recipe §1.8): ``[0,1] × 255`` → uint8 by truncation (after clamping to [0, 255]) → the Hugging
Face DINOv3 processor's 224×224 bilinear, antialiased resize (done in float, rounded back to uint8 as torchvision
does for uint8 images) → ``/255`` → the teacher's mean/std → bilinear up-sampling to ``grid * 16`` pixels (the
official code up-samples to the training image size, 256, which is ``grid * 16`` for its 16×16 grid). There is no
official round trip for /14 teachers (the official DINOv2 path is unused and broken), so asking for one is an
error.

Output: the model's ``forward_features`` (after the final LayerNorm) with the CLS and register tokens dropped
(``num_prefix_tokens``), reshaped to the teacher's patch grid. If that grid differs from the tokenizer grid
(never for the ViT teachers with the resizes above, but possible for wrapped teachers), the feature map is
resampled onto the tokenizer grid (bilinear, ``align_corners=False``).
"""
from __future__ import annotations

import logging

import torch
import torch.nn as nn
import torch.nn.functional as F

from rectok_core.errors import RectokError
from rectok_core.teachers.spec import (  # noqa: F401 - re-exported: the spec vocabulary lives without torch
    IMAGENET_MEAN,
    IMAGENET_STD,
    OFFICIAL_PROCESSOR_SIZE,
    PRETRAINED_MODES,
    RESIZE_MODES,
    TeacherBuilder,
    TeacherSpec,
)

logger = logging.getLogger(__name__)


def _resample_tokens(tokens: torch.Tensor, src: tuple[int, int], dst: tuple[int, int]) -> torch.Tensor:
    """(B, h*w, D) row-major tokens on grid ``src`` → (B, H*W, D) on grid ``dst`` (bilinear, align_corners=False)."""
    if src == dst:
        return tokens
    b, n, d = tokens.shape
    fmap = tokens.transpose(1, 2).reshape(b, d, src[0], src[1])
    fmap = F.interpolate(fmap.float(), size=dst, mode="bilinear", align_corners=False).to(tokens.dtype)
    return fmap.flatten(2).transpose(1, 2)


class Teacher(nn.Module):
    """A frozen feature extractor: images in ``[-1, 1]`` → ``(B, grid_h * grid_w, dim)`` patch tokens.

    Always in eval mode (``train()`` is a no-op), every parameter has ``requires_grad=False`` and ``forward``
    runs under ``torch.no_grad()`` (not ``inference_mode``, so the features can be used as constants in a loss
    that is back-propagated).

    Attributes: ``name`` (registry name), ``dim``, ``grid`` (tokenizer grid), ``image_size`` (expected input
    side), ``real`` (False for random initialisation: features are meaningless), ``source`` (where the weights
    came from).
    """

    def __init__(self, name: str, dim: int, grid: tuple[int, int], image_size: int, real: bool, source: str):
        super().__init__()
        self.name = name
        self.dim = int(dim)
        self.grid = (int(grid[0]), int(grid[1]))
        self.image_size = int(image_size)
        self.real = bool(real)
        self.source = source

    def _freeze(self) -> None:
        self.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> Teacher:
        """Teachers stay in eval mode whatever the parent module does."""
        return super().train(False)

    def _check_input(self, x: torch.Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"teacher {self.name}: expected images (B, 3, H, W), got {tuple(x.shape)}")
        if tuple(x.shape[-2:]) != (self.image_size, self.image_size):
            raise ValueError(f"teacher {self.name} was built for {self.image_size}px images, "
                             f"got {tuple(x.shape[-2:])}")

    def _check_output(self, tokens: torch.Tensor, batch: int) -> torch.Tensor:
        expected = (batch, self.grid[0] * self.grid[1], self.dim)
        if tuple(tokens.shape) != expected:
            raise RuntimeError(f"teacher {self.name} returned {tuple(tokens.shape)}, expected {expected}")
        return tokens

    def extra_repr(self) -> str:
        return f"name={self.name}, dim={self.dim}, grid={self.grid}, real={self.real}, source={self.source}"


class ViTTeacher(Teacher):
    """A timm ViT teacher (DINOv2/v3, SigLIP; see the module docstring for preprocessing and output)."""

    def __init__(self, spec: TeacherSpec, model: nn.Module, grid: tuple[int, int], image_size: int,
                 resize: str, real: bool, source: str):
        super().__init__(spec.name, spec.dim, grid, image_size, real, source)
        if resize not in RESIZE_MODES:
            raise RectokError(f"unknown teacher resize {resize!r}; choose one of {', '.join(RESIZE_MODES)}")
        self.spec = spec
        self.model = model
        self.patch = spec.patch
        self.resize = resize
        self.num_prefix_tokens = int(getattr(model, "num_prefix_tokens", 1))
        self.input_size = (self.grid[0] * self.patch, self.grid[1] * self.patch)
        self.register_buffer("mean", torch.tensor(spec.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(spec.std).view(1, 3, 1, 1), persistent=False)
        self._freeze()

    def _resize(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        if tuple(x.shape[-2:]) == tuple(size):
            return x
        shrink = x.shape[-2] > size[0] or x.shape[-1] > size[1]
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=shrink)

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] → the normalised float32 model input, ``(B, 3, grid_h*patch, grid_w*patch)``."""
        x01 = (x.float() + 1.0) * 0.5
        if self.resize == "official":
            q = (x01 * 255.0).clamp(0.0, 255.0).floor()  # .to(torch.uint8) truncates
            q = self._resize(q, (OFFICIAL_PROCESSOR_SIZE, OFFICIAL_PROCESSOR_SIZE))
            x01 = q.round().clamp(0.0, 255.0) / 255.0  # the processor resizes uint8 images, then rescales 1/255
            return self._resize((x01 - self.mean) / self.std, self.input_size)
        return (self._resize(x01, self.input_size) - self.mean) / self.std

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``(B, 3, image_size, image_size)`` in [-1, 1] → ``(B, grid_h*grid_w, dim)`` patch tokens."""
        self._check_input(x)
        inp = self.preprocess(x)  # float32; cast to the weights' dtype in case the teacher was converted (bf16)
        feats = self.model.forward_features(inp.to(self.model.patch_embed.proj.weight.dtype))
        feats = feats[:, self.num_prefix_tokens:]
        src = (inp.shape[-2] // self.patch, inp.shape[-1] // self.patch)
        if feats.shape[1] != src[0] * src[1]:
            raise RuntimeError(f"teacher {self.name}: {feats.shape[1]} patch tokens for a {src} grid")
        return self._check_output(_resample_tokens(feats, src, self.grid), x.shape[0])


class WrappedTeacher(Teacher):
    """Adapts a module that already maps [-1, 1] images to ``(B, N, dim)`` tokens (e.g. ``InceptionTeacher``).

    ``module_grid`` is the module's own token grid; tokens are resampled onto ``grid`` when they differ.
    """

    def __init__(self, name: str, module: nn.Module, grid: tuple[int, int], image_size: int, real: bool,
                 source: str, module_grid: tuple[int, int] | None = None):
        super().__init__(name, int(module.dim), grid, image_size, real, source)
        self.module = module
        self.module_grid = tuple(module_grid) if module_grid is not None else self.grid
        self._freeze()

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        tokens = self.module(x)
        if tokens.ndim != 3 or tokens.shape[1] != self.module_grid[0] * self.module_grid[1]:
            raise RuntimeError(f"teacher {self.name} returned {tuple(tokens.shape)} for a {self.module_grid} grid")
        return self._check_output(_resample_tokens(tokens, self.module_grid, self.grid), x.shape[0])

