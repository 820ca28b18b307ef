"""InceptionV3 teachers: the offline FID network's mid-level features as a teacher; registers ``inception`` and
``inception-s``.

torch, torch-fidelity and the network (:mod:`rectok_core.teachers.inception_net`) are imported only when a teacher is
built: registering the entries (on every ``rectok_core.teachers`` import, e.g. for the CLI help) imports no torch.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from rectok_core.errors import RectokError
from rectok_core.teachers.base import WrappedTeacher
from rectok_core.teachers.inception_net import InceptionTeacher
from rectok_core.teachers.registry import register_teacher
from rectok_core.teachers.spec import TeacherSpec

if TYPE_CHECKING:
    from rectok_core.teachers.base import WrappedTeacher

logger = logging.getLogger(__name__)


#: ``Mixed_6e`` of InceptionV3 has 768 channels (the default layer of ``InceptionTeacher``).
INCEPTION_DIM = 768


#: ``Mixed_5d`` (the ``inception-s`` teacher) has 288 channels.
INCEPTION_S_DIM = 288


#: Per Inception layer: (name, cell stride in px, offset) — an s-px input gives floor((s − offset)/stride) cells.
INCEPTION_LAYERS = {"inception": ("mixed_6e", 16, 27), "inception-s": ("mixed_5d", 8, 19)}


#: The network's input normalisation, ``(255·x − 128) / 128`` for ``x ∈ [0, 1]``, as a mean/std.
INCEPTION_MEAN = INCEPTION_STD = (128 / 255,) * 3


def _build_inception(spec: TeacherSpec, weights: str | None, grid: tuple[int, int], image_size: int, resize: str,
                     pretrained: str) -> WrappedTeacher:
    if resize != "native":
        raise RectokError(f"--teacher-resize official applies to DINOv3 teachers only, not --teacher {spec.name}")
    # "native" (recipe §11.3): one feature-map cell per token. Mixed_6e's map is floor((s − 27)/16) cells wide for an
    # s-px input, so s = 16·g + 27 (283 px for the paper's 16×16 grid, close to the FID resolution of 299; 155 px
    # for 8×8); Mixed_5d's is floor((s − 19)/8), so s = 8·g + 19.

    layer, stride, offset = INCEPTION_LAYERS[spec.name]
    module = InceptionTeacher(weights=weights or None, grid=grid, layer=layer,
                              input_size=max(75, stride * max(grid) + offset))
    dim = int(module.dim)
    if dim != spec.dim:
        raise RuntimeError(f"InceptionTeacher has dim {dim} but the teacher registry says {spec.dim} for {spec.name}")
    return WrappedTeacher(spec.name, module, grid, image_size, real=True,
                          source=str(weights) if weights else "inception default weights")


for _name, _dim in (("inception", INCEPTION_DIM), ("inception-s", INCEPTION_S_DIM)):
    register_teacher(TeacherSpec(_name, _dim, "", INCEPTION_MEAN, INCEPTION_STD, _build_inception,
                                 random_init=False, family="inception", example_file="pt_inception.pth"))
