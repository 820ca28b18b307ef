"""Teacher weight files: local files, the Hugging Face cache, key conversions, strict loading."""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from rectok_core.errors import CheckpointError, WeightsNotFound
from rectok_core.teachers.base import TeacherSpec
from rectok_core.utils.checkpoint import (
    describe_mismatch,
    read_error,  # never PyTorch's advice to load unsafely
)

logger = logging.getLogger(__name__)


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


def load_state_dict_file(path: str, flag: str = "--teacher-weights") -> dict[str, torch.Tensor]:
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

        raise CheckpointError(f"{flag} {path}: cannot read weights ({read_error(e)})") from None
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
    """Convert ``sd`` to timm's layout for ``model`` (the ``checkpoint_filter_fn`` of the timm module that defines
    the model's class: Eva for DINOv3, VisionTransformer for DINOv2/SigLIP) and load it strictly."""
    import importlib

    checkpoint_filter_fn = getattr(importlib.import_module(type(model).__module__), "checkpoint_filter_fn",
                                   lambda state, _model: state)
    try:
        filtered = checkpoint_filter_fn(dict(sd), model)
    except Exception as e:  # noqa: BLE001
        raise CheckpointError(f"{flag} {path} does not fit --teacher {spec.name} ({arch}): "
                              f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
    problem = describe_mismatch(model, filtered)
    if problem:
        raise CheckpointError(f"{flag} {path} does not fit --teacher {spec.name} ({arch}): {problem}")
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

