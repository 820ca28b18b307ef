"""The ``dit-dh`` generator family: rectok's DiT^DH (:mod:`rectok_core.models.dit`), sizes from ``DIT_PRESETS``,
trained with shifted-t flow matching (recipe §4.2)."""
from __future__ import annotations

from rectok_core.models.config import DIT_PRESETS, DiTConfig
from rectok_core.models.dit import DiTDH
from rectok_core.models.generators.base import RESOLUTION_SHIFT, GeneratorFamily, SamplingDefaults, register_generator

DIT_DH = register_generator(GeneratorFamily(
    name="dit-dh",
    model_class=DiTDH,
    config_class=DiTConfig,
    sizes={preset.lower(): dict(fields) for preset, fields in DIT_PRESETS.items()},
    objective="flow-shifted",
    prediction="velocity",
    official={"DiTDDT_s": "s", "DiTDDT_b": "b", "DiTDDT_l": "l", "DiTDDT_xl": "xl"},
    description="DiT^DH: DiT trunk + wide DDT head, shifted-t flow matching (RecTok, RAE)",
    sampling=SamplingDefaults(RESOLUTION_SHIFT, (0.0, 1.0),
                              "official DiTDDT: grid shifted by sqrt(h*w*C/4096), guidance at every t"),
))
