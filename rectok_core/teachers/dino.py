"""DINOv2 / DINOv3 ViT teachers through timm."""
from __future__ import annotations

import logging

from rectok_core.errors import RectokError, WeightsNotFound
from rectok_core.teachers.base import TeacherSpec, ViTTeacher
from rectok_core.teachers.weights import (
    _create,
    _dinov3_nonzero_qv_bias,
    _drop_zero_qkv_bias,
    _hf_cached_file,
    _hf_dinov3_to_timm,
    _is_hf_dinov3,
    _load_into,
    load_state_dict_file,
)
from rectok_core.utils.env import network_available

logger = logging.getLogger(__name__)


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

