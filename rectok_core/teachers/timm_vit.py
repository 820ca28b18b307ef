"""Building a timm ViT teacher (random init, local file, hub cache or hub), shared by the ViT teacher families.

A family module (``dino.py``, ...) checks its own options, then calls :func:`build_timm_teacher` with its
``TeacherSpec`` (``arch``, ``tag``, ``patch``, ``mean``/``std``) and, if its checkpoints need it, a ``prepare`` hook
that converts a loaded state dict to timm's layout and picks the architecture variant it fits.
"""
from __future__ import annotations

import logging
from collections.abc import Callable

import torch

from rectok_core.errors import RectokError, WeightsNotFound
from rectok_core.teachers import weights as W
from rectok_core.teachers.base import TeacherSpec, ViTTeacher
from rectok_core.utils.env import network_available

logger = logging.getLogger(__name__)

#: ``prepare(spec, state_dict) -> (timm architecture, state dict in timm's layout)``.
PrepareFn = Callable[[TeacherSpec, dict[str, torch.Tensor]], tuple[str, dict[str, torch.Tensor]]]


def build_timm_teacher(spec: TeacherSpec, weights: str | None, grid: tuple[int, int], image_size: int, resize: str,
                       pretrained: str, prepare: PrepareFn | None = None) -> ViTTeacher:
    """The frozen :class:`ViTTeacher` of ``spec`` on a ``grid`` token grid, its weights from (in this order)
    ``weights``, the local hub cache (offline), or the hub (online); random init for ``pretrained="random"``.

    Without weights and without network this raises :class:`WeightsNotFound` within the probe's ~2 s.
    """
    input_size = (grid[0] * spec.patch, grid[1] * spec.patch)
    flag = "--teacher-weights"

    if pretrained == "random":
        if weights:
            raise RectokError(f"--teacher-init random contradicts --teacher-weights {weights}: drop one of them")
        model = W._create(spec.arch, input_size)
        logger.warning("!!! teacher %s (%s) is RANDOMLY INITIALISED: its features are meaningless; use this only "
                       "for tests and speed checks, never for training or reported numbers !!!", spec.name,
                       spec.arch)
        return ViTTeacher(spec, model, grid, image_size, resize, real=False, source="random init")

    repo_id = f"timm/{spec.arch}.{spec.tag}"
    if not weights:
        online = network_available()
        cached = W._hf_cached_file(repo_id)
        if cached is not None and not online:
            weights, flag = cached, f"(hub cache of {repo_id})"
        elif online:
            try:
                model = W._create(f"{spec.arch}.{spec.tag}", input_size, pretrained=True)
            except Exception as e:  # noqa: BLE001 - network/hub failures become one line
                msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
                raise WeightsNotFound(f"--teacher {spec.name}: fetching {repo_id} from the hub failed "
                                      f"({type(e).__name__}: {msg}); pass --teacher-weights FILE") from None
            logger.info("teacher %s: loaded %s from the hub", spec.name, repo_id)
            return ViTTeacher(spec, model, grid, image_size, resize, real=True, source=f"hub:{repo_id}")
        else:
            raise WeightsNotFound(f"--teacher {spec.name} needs pretrained weights: no network and no "
                                  f"--teacher-weights FILE given (e.g. --teacher-weights /path/{spec.example_file})")

    sd = W.load_state_dict_file(weights, flag)
    arch, sd = prepare(spec, sd) if prepare is not None else (spec.arch, sd)
    model = W._create(arch, input_size)
    W._load_into(model, spec, arch, sd, str(weights), flag)
    logger.info("teacher %s: loaded %s weights from %s", spec.name, arch, weights)
    return ViTTeacher(spec, model, grid, image_size, resize, real=True, source=str(weights))
