"""Vision-foundation-model (VFM) teachers for Flow Semantic Distillation (recipe §1.8, §11.3, §11.10).

A teacher maps images in ``[-1, 1]`` to one feature vector per tokenizer token: ``(B, grid_h * grid_w, dim)``,
row-major, computed without gradients by a frozen network in eval mode.

Registry (``TEACHERS``)
-----------------------
=============  =========================================  =====  ======
name           network (timm architecture)                patch  dim
=============  =========================================  =====  ======
``dinov3``     DINOv3 ViT-L/16 LVD-1689M (official)       16     1024
``dinov3-s``   DINOv3 ViT-S/16                            16     384
``dinov3-b``   DINOv3 ViT-B/16                            16     768
``dinov3-l``   DINOv3 ViT-L/16 (same as ``dinov3``)       16     1024
``dinov2``     DINOv2 ViT-L/14 LVD-142M, no registers     14     1024
``dinov2-s/b/l``  DINOv2 ViT-S/B/L/14, no registers       14     384/768/1024
``inception``  FID InceptionV3 spatial features           --     768
``none``       no teacher (no semantic decoder)           --     0
=============  =========================================  =====  ======

``dinov2`` is the plain (no-register) ViT-L/14, ``vit_large_patch14_dinov2.lvd142m``: the teacher the official
code defines (recipe §1.8). The register variants (``*_reg4_dinov2``) are not in the registry.

Weights, in this order
----------------------
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
``resize="native"`` (default, recipe §11.3): ``[-1,1] → [0,1]`` → ImageNet mean/std → bilinear resize
(antialiased when shrinking) to ``grid * teacher_patch`` pixels: 256 px for a /16 teacher at a 16×16 grid,
224 px for a /14 one, so that each tokenizer token gets exactly one teacher patch.

``resize="official"`` (/16 teachers only) reproduces the official pipeline (recipe §1.8): ``[0,1] × 255`` →
uint8 by truncation (after clamping to [0, 255]) → the Hugging Face DINOv3 processor's 224×224 bilinear,
antialiased resize (done in float, rounded back to uint8 as torchvision does for uint8 images) → ``/255`` →
ImageNet mean/std → bilinear up-sampling to ``grid * 16`` pixels (the official code up-samples to the training
image size, 256, which is ``grid * 16`` for its 16×16 grid). There is no official round trip for /14 teachers
(the official DINOv2 path is unused and broken), so asking for one is an error.

Output: the model's ``forward_features`` (after the final LayerNorm) with the CLS and register tokens dropped
(``num_prefix_tokens``), reshaped to the teacher's patch grid. If that grid differs from the tokenizer grid
(never for the ViT teachers with the resizes above, but possible for wrapped teachers), the feature map is
resampled onto the tokenizer grid (bilinear, ``align_corners=False``).
"""
from __future__ import annotations

import logging
import os
import socket
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from .checkpoint import describe_mismatch
from .errors import CheckpointError, RectokError, WeightsNotFound

logger = logging.getLogger(__name__)

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "OFFICIAL_PROCESSOR_SIZE",
    "RESIZE_MODES",
    "TEACHERS",
    "Teacher",
    "TeacherSpec",
    "ViTTeacher",
    "WrappedTeacher",
    "build_teacher",
    "hub_offline",
    "load_state_dict_file",
    "network_available",
    "teacher_dim",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: Output size of the Hugging Face DINOv3 image processor used by the official code (its default config).
OFFICIAL_PROCESSOR_SIZE = 224
RESIZE_MODES = ("native", "official")
PRETRAINED_MODES = ("auto", "pretrained", "random")
#: ``Mixed_6e`` of InceptionV3 has 768 channels (the default layer of ``rectok_core.inception``).
INCEPTION_DIM = 768
#: ``Mixed_5d`` (the ``inception-s`` teacher) has 288 channels.
INCEPTION_S_DIM = 288
#: Per Inception layer: (name, cell stride in px, offset) — an s-px input gives floor((s − offset)/stride) cells.
INCEPTION_LAYERS = {"inception": ("mixed_6e", 16, 27), "inception-s": ("mixed_5d", 8, 19)}

# --------------------------------------------------------------------------------------------------------------
# Offline detection
# --------------------------------------------------------------------------------------------------------------

_TRUE = {"1", "true", "yes", "on"}
_PROBE_CACHE: dict[tuple[str, int], bool] = {}
HF_HOST = "huggingface.co"


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in _TRUE


def hub_offline() -> bool:
    """True when the environment declares the machine offline (``RECTOK_OFFLINE=1`` or ``HF_HUB_OFFLINE=1``)."""
    return _env_true("RECTOK_OFFLINE") or _env_true("HF_HUB_OFFLINE")


def _mark_hf_offline() -> None:
    """Make huggingface_hub (and timm through it) skip the network instead of retrying."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None and _env_true("HF_HUB_OFFLINE"):
        constants.HF_HUB_OFFLINE = True  # read once at import; patch the live value too


def _probe(host: str, port: int, timeout: float) -> bool:
    result = [False]

    def connect() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            result[0] = True
        except OSError:
            result[0] = False

    thread = threading.Thread(target=connect, name=f"rectok-probe-{host}", daemon=True)
    thread.start()
    thread.join(timeout + 0.5)  # getaddrinfo ignores the socket timeout; never wait longer than this
    return result[0] and not thread.is_alive()


def network_available(host: str = HF_HOST, port: int = 443, timeout: float = 2.0) -> bool:
    """Whether ``host:port`` accepts a TCP connection (at most ~``timeout`` s; the answer is cached).

    ``RECTOK_OFFLINE=1`` answers False for every host without probing, ``HF_HUB_OFFLINE=1`` for huggingface.co.
    A failed probe of huggingface.co (or either variable) sets ``HF_HUB_OFFLINE=1`` so later hub calls fail fast
    instead of retrying.
    """
    if _env_true("RECTOK_OFFLINE") or (host == HF_HOST and _env_true("HF_HUB_OFFLINE")):
        _mark_hf_offline()
        return False
    key = (host, port)
    if key not in _PROBE_CACHE:
        _PROBE_CACHE[key] = _probe(host, port, timeout)
        if not _PROBE_CACHE[key]:
            logger.info("%s:%d is unreachable: working offline", host, port)
    if not _PROBE_CACHE[key] and host == HF_HOST:
        _mark_hf_offline()
    return _PROBE_CACHE[key]


# --------------------------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TeacherSpec:
    """One registry entry.

    ``kind`` is ``"vit"`` (a timm DINO model), ``"inception"`` (``rectok_core.inception``) or ``"none"``.
    ``arch`` is the timm architecture, ``tag`` its pretrained tag on the hub; ``example_file`` names a typical
    weights file for error messages.
    """

    name: str
    kind: str
    dim: int
    family: str = ""
    arch: str = ""
    tag: str = ""
    patch: int = 0
    example_file: str = ""
    description: str = ""


def _dinov3(name: str, size: str, dim: int, desc: str) -> TeacherSpec:
    return TeacherSpec(name, "vit", dim, "dinov3", f"vit_{size}_patch16_dinov3", "lvd1689m", 16,
                       f"dinov3_vit{size[0]}16.safetensors", desc)


def _dinov2(name: str, size: str, dim: int, desc: str) -> TeacherSpec:
    return TeacherSpec(name, "vit", dim, "dinov2", f"vit_{size}_patch14_dinov2", "lvd142m", 14,
                       f"dinov2_vit{size[0]}14_pretrain.pth", desc)


TEACHERS: dict[str, TeacherSpec] = {
    "dinov3": _dinov3("dinov3", "large", 1024, "DINOv3 ViT-L/16 (LVD-1689M), the official RecTok teacher"),
    "dinov3-s": _dinov3("dinov3-s", "small", 384, "DINOv3 ViT-S/16 (LVD-1689M)"),
    "dinov3-b": _dinov3("dinov3-b", "base", 768, "DINOv3 ViT-B/16 (LVD-1689M)"),
    "dinov3-l": _dinov3("dinov3-l", "large", 1024, "DINOv3 ViT-L/16 (LVD-1689M)"),
    "dinov2": _dinov2("dinov2", "large", 1024, "DINOv2 ViT-L/14 (LVD-142M, no registers)"),
    "dinov2-s": _dinov2("dinov2-s", "small", 384, "DINOv2 ViT-S/14 (LVD-142M, no registers)"),
    "dinov2-b": _dinov2("dinov2-b", "base", 768, "DINOv2 ViT-B/14 (LVD-142M, no registers)"),
    "dinov2-l": _dinov2("dinov2-l", "large", 1024, "DINOv2 ViT-L/14 (LVD-142M, no registers)"),
    "inception": TeacherSpec("inception", "inception", INCEPTION_DIM, "inception", example_file="pt_inception.pth",
                             description="FID InceptionV3 Mixed_6e features, an offline stand-in (results must "
                                         "say so)"),
    "inception-s": TeacherSpec("inception-s", "inception", INCEPTION_S_DIM, "inception",
                               example_file="pt_inception.pth",
                               description="FID InceptionV3 Mixed_5d features: ~7x cheaper, lower-level (CPU demos)"),
    "none": TeacherSpec("none", "none", 0, description="no teacher: no semantic decoder, no distillation"),
}


def _spec(name: str) -> TeacherSpec:
    try:
        return TEACHERS[name]
    except KeyError:
        raise RectokError(f"unknown --vfm {name!r}; choose one of {', '.join(TEACHERS)}") from None


def teacher_dim(name: str) -> int:
    """Feature width of teacher ``name`` without building it (0 for ``"none"``)."""
    return _spec(name).dim


# --------------------------------------------------------------------------------------------------------------
# Teachers
# --------------------------------------------------------------------------------------------------------------


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

    def train(self, mode: bool = True) -> "Teacher":
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
    """A timm DINOv2/DINOv3 ViT teacher (see the module docstring for preprocessing and output)."""

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
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
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
        super().__init__(name, int(getattr(module, "dim")), grid, image_size, real, source)
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


# --------------------------------------------------------------------------------------------------------------
# Weights files
# --------------------------------------------------------------------------------------------------------------

_WRAPPER_KEYS = ("model_state_dict", "state_dict", "model", "module")
_WEIGHT_NAMES = ("model.safetensors", "pytorch_model.bin", "model.pth", "model.pt")
_STRIP_PREFIXES = ("module.", "_orig_mod.", "model.")


def _resolve_weights_path(path: str, flag: str) -> Path:
    p = Path(path).expanduser()
    if p.is_dir():
        for fname in _WEIGHT_NAMES:
            if (p / fname).is_file():
                return p / fname
        raise WeightsNotFound(f"{flag} {path}: folder holds none of {', '.join(_WEIGHT_NAMES)}")
    if not p.is_file():
        raise WeightsNotFound(f"{flag} {path}: no such file")
    return p


def load_state_dict_file(path: str, flag: str = "--vfm-weights") -> dict[str, torch.Tensor]:
    """Read a state dict from ``.safetensors`` or a torch pickle (``weights_only=True``), unwrapping common
    containers (``model_state_dict``/``state_dict``/``model``/``module``) and ``module.``/``_orig_mod.``/``model.``
    key prefixes. ``flag`` names the option that supplied the file, for one-line error messages."""
    p = _resolve_weights_path(path, flag)
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj: Any = load_file(str(p), device="cpu")
        else:
            obj = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any reader failure is a user-facing one-liner
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{flag} {path}: cannot read weights ({first})") from None
    for _ in range(3):
        if isinstance(obj, dict) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
            inner = next((obj[k] for k in _WRAPPER_KEYS if isinstance(obj.get(k), dict)), None)
            if inner is None:
                break
            obj = inner
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{flag} {path}: not a state dict of tensors")
    sd: dict[str, torch.Tensor] = dict(obj)
    changed = True
    while changed:
        changed = False
        for prefix in _STRIP_PREFIXES:
            if all(k.startswith(prefix) for k in sd):
                sd = {k[len(prefix):]: v for k, v in sd.items()}
                changed = True
    return sd


def _is_hf_dinov3(sd: dict[str, torch.Tensor]) -> bool:
    return "embeddings.patch_embeddings.weight" in sd or "layer.0.attention.q_proj.weight" in sd


def _hf_dinov3_to_timm(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Hugging Face ``transformers`` DINOv3ViTModel keys → timm Eva (``vit_*_patch16_dinov3[_qkvb]``) keys."""
    out: dict[str, torch.Tensor] = {}
    simple = {
        "embeddings.cls_token": "cls_token",
        "embeddings.register_tokens": "reg_token",
        "embeddings.patch_embeddings.weight": "patch_embed.proj.weight",
        "embeddings.patch_embeddings.bias": "patch_embed.proj.bias",
        "norm.weight": "norm.weight",
        "norm.bias": "norm.bias",
    }
    layer_map = {
        "norm1.weight": "norm1.weight", "norm1.bias": "norm1.bias",
        "norm2.weight": "norm2.weight", "norm2.bias": "norm2.bias",
        "attention.o_proj.weight": "attn.proj.weight", "attention.o_proj.bias": "attn.proj.bias",
        "attention.q_proj.bias": "attn.q_bias", "attention.v_proj.bias": "attn.v_bias",
        "layer_scale1.lambda1": "gamma_1", "layer_scale2.lambda1": "gamma_2",
        "mlp.up_proj.weight": "mlp.fc1.weight", "mlp.up_proj.bias": "mlp.fc1.bias",
        "mlp.down_proj.weight": "mlp.fc2.weight", "mlp.down_proj.bias": "mlp.fc2.bias",
    }
    qkv: dict[int, dict[str, torch.Tensor]] = {}
    for k, v in sd.items():
        if k in simple:
            out[simple[k]] = v
        elif k == "embeddings.mask_token" or "rope" in k:
            continue  # pre-training only / computed buffers
        elif k.startswith("layer."):
            _, idx, rest = k.split(".", 2)
            i = int(idx)
            if rest in ("attention.q_proj.weight", "attention.k_proj.weight", "attention.v_proj.weight"):
                qkv.setdefault(i, {})[rest.split(".")[1][0]] = v
            elif rest in layer_map:
                out[f"blocks.{i}.{layer_map[rest]}"] = v
            else:
                out[k] = v  # left for the strict check to report
        else:
            out[k] = v
    for i, parts in qkv.items():
        if set(parts) != {"q", "k", "v"}:
            raise CheckpointError(f"DINOv3 weights: layer {i} lacks some of q/k/v projections")
        out[f"blocks.{i}.attn.qkv.weight"] = torch.cat([parts["q"], parts["k"], parts["v"]], dim=0)
    return out


def _dinov3_nonzero_qv_bias(sd: dict[str, torch.Tensor]) -> bool:
    """Whether a DINOv3 checkpoint (any layout) carries non-zero query/value biases."""
    for k, v in sd.items():
        if k.endswith("attn.qkv.bias"):
            q, _, vv = v.chunk(3, dim=-1)  # the key bias is masked out (fixed at 0) in DINOv3
            if q.abs().max() > 0 or vv.abs().max() > 0:
                return True
        elif k.endswith(("attention.q_proj.bias", "attention.v_proj.bias", "attn.q_bias", "attn.v_bias")):
            if v.abs().max() > 0:
                return True
    return False


def _drop_zero_qkv_bias(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    drop = ("attn.qkv.bias", "attn.qkv.bias_mask", "attention.q_proj.bias", "attention.v_proj.bias",
            "attn.q_bias", "attn.v_bias")
    return {k: v for k, v in sd.items() if not k.endswith(drop)}


def _load_into(model: nn.Module, spec: TeacherSpec, arch: str, sd: dict[str, torch.Tensor], path: str,
               flag: str) -> None:
    """Convert ``sd`` to timm's layout for ``model`` and load it strictly."""
    if spec.family == "dinov3":
        from timm.models.eva import checkpoint_filter_fn
    else:
        from timm.models.vision_transformer import checkpoint_filter_fn
    try:
        filtered = checkpoint_filter_fn(dict(sd), model)
    except Exception as e:  # noqa: BLE001
        raise CheckpointError(f"{flag} {path} does not fit --vfm {spec.name} ({arch}): "
                              f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
    problem = describe_mismatch(model, filtered)
    if problem:
        raise CheckpointError(f"{flag} {path} does not fit --vfm {spec.name} ({arch}): {problem}")
    model.load_state_dict(filtered, strict=True)


def _hf_cached_file(repo_id: str) -> str | None:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    for fname in ("model.safetensors", "pytorch_model.bin"):
        try:
            hit = try_to_load_from_cache(repo_id, fname)
        except Exception:  # noqa: BLE001 - a broken cache is simply a miss
            hit = None
        if isinstance(hit, str) and os.path.isfile(hit):
            return hit
    return None


def _create(arch: str, input_size: tuple[int, int], pretrained: bool = False) -> nn.Module:
    import timm

    return timm.create_model(arch, pretrained=pretrained, img_size=input_size, num_classes=0)


def _build_vit(spec: TeacherSpec, weights: str | None, grid: tuple[int, int], image_size: int, resize: str,
               pretrained: str) -> ViTTeacher:
    if resize == "official" and spec.patch != 16:
        raise RectokError(f"--vfm-resize official (the 256→224→256 round trip) exists only for /16 DINOv3 "
                          f"teachers, not --vfm {spec.name}; use --vfm-resize native")
    input_size = (grid[0] * spec.patch, grid[1] * spec.patch)
    flag = "--vfm-weights"

    if pretrained == "random":
        if weights:
            raise RectokError(f"--vfm-init random contradicts --vfm-weights {weights}: drop one of them")
        model = _create(spec.arch, input_size)
        logger.warning("!!! teacher %s (%s) is RANDOMLY INITIALISED: its features are meaningless; use this only "
                       "for tests and speed checks, never for training or reported numbers !!!", spec.name,
                       spec.arch)
        return ViTTeacher(spec, model, grid, image_size, resize, real=False, source="random init")

    repo_id = f"timm/{spec.arch}.{spec.tag}"
    if not weights:
        online = network_available()
        cached = _hf_cached_file(repo_id)
        if cached is not None and not online:
            weights, flag = cached, f"(hub cache of {repo_id})"
        elif online:
            try:
                model = _create(f"{spec.arch}.{spec.tag}", input_size, pretrained=True)
            except Exception as e:  # noqa: BLE001 - network/hub failures become one line
                msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
                raise WeightsNotFound(f"--vfm {spec.name}: fetching {repo_id} from the hub failed "
                                      f"({type(e).__name__}: {msg}); pass --vfm-weights FILE") from None
            logger.info("teacher %s: loaded %s from the hub", spec.name, repo_id)
            return ViTTeacher(spec, model, grid, image_size, resize, real=True, source=f"hub:{repo_id}")
        else:
            raise WeightsNotFound(f"--vfm {spec.name} needs pretrained weights: no network and no --vfm-weights "
                                  f"FILE given (e.g. --vfm-weights /path/{spec.example_file})")

    sd = load_state_dict_file(weights, flag)
    arch = spec.arch
    if spec.family == "dinov3":
        if _dinov3_nonzero_qv_bias(sd):
            arch = spec.arch + "_qkvb"  # checkpoints with real q/v biases need timm's bias-carrying variant
        else:
            sd = _drop_zero_qkv_bias(sd)
        if _is_hf_dinov3(sd):
            sd = _hf_dinov3_to_timm(sd)
    model = _create(arch, input_size)
    _load_into(model, spec, arch, sd, str(weights), flag)
    logger.info("teacher %s: loaded %s weights from %s", spec.name, arch, weights)
    return ViTTeacher(spec, model, grid, image_size, resize, real=True, source=str(weights))


def _build_inception(spec: TeacherSpec, weights: str | None, grid: tuple[int, int], image_size: int, resize: str,
                     pretrained: str) -> WrappedTeacher:
    if resize != "native":
        raise RectokError("--vfm-resize official applies to DINOv3 teachers only, not --vfm inception")
    if pretrained == "random":
        raise RectokError("--vfm-init random is not available for --vfm inception (it is a small network: "
                          "use its real weights)")
    try:
        from .inception import InceptionTeacher  # lazy: written separately, optional for the other teachers
    except ImportError as e:
        raise RectokError(f"--vfm inception is unavailable: rectok_core.inception cannot be imported ({e})") from None
    # "native" (§11.3): one feature-map cell per token. Mixed_6e's map is floor((s − 27)/16) cells wide for an
    # s-px input, so s = 16·g + 27 (283 px for the paper's 16×16 grid, close to the FID resolution of 299; 155 px
    # for 8×8); Mixed_5d's is floor((s − 19)/8), so s = 8·g + 19.
    layer, stride, offset = INCEPTION_LAYERS[spec.name]
    module = InceptionTeacher(weights=weights or None, grid=grid, layer=layer,
                              input_size=max(75, stride * max(grid) + offset))
    dim = int(getattr(module, "dim"))
    if dim != spec.dim:
        raise RuntimeError(f"InceptionTeacher has dim {dim} but the teacher registry says {spec.dim}: "
                           f"update TEACHERS[{spec.name!r}]")
    return WrappedTeacher(spec.name, module, grid, image_size, real=True,
                          source=str(weights) if weights else "inception default weights")


def build_teacher(name: str, weights: str | None, grid: tuple[int, int], image_size: int,
                  resize: str = "native", pretrained: str = "auto") -> Teacher | None:
    """Build the frozen teacher ``name`` (a ``TEACHERS`` key) for a ``grid = (rows, cols)`` tokenizer grid and
    ``image_size``-pixel square inputs; ``None`` for ``"none"``.

    ``weights``: local weights file or folder (``--vfm-weights``); ``None``/``""`` = hub cache, then the hub.
    ``resize``: ``"native"`` or ``"official"`` (see the module docstring). ``pretrained``: ``"auto"`` (alias
    ``"pretrained"``) loads real weights or raises :class:`WeightsNotFound`; ``"random"`` = random init (loud
    warning, ``teacher.real is False``).
    """
    spec = _spec(name)
    if resize not in RESIZE_MODES:
        raise RectokError(f"unknown --vfm-resize {resize!r}; choose one of {', '.join(RESIZE_MODES)}")
    if pretrained not in PRETRAINED_MODES:
        raise RectokError(f"unknown --vfm-init {pretrained!r}; choose one of auto, pretrained, random")
    if len(grid) != 2 or min(int(grid[0]), int(grid[1])) < 1 or int(image_size) < 1:
        raise RectokError(f"teacher needs a positive grid and image size, got grid={grid}, image_size={image_size}")
    grid = (int(grid[0]), int(grid[1]))
    if spec.kind == "none":
        return None
    if spec.kind == "inception":
        return _build_inception(spec, weights, grid, int(image_size), resize, pretrained)
    return _build_vit(spec, weights or None, grid, int(image_size), resize, pretrained)
