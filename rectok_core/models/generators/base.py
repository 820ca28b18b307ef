"""The generator-family contract (issue 19): :class:`GeneratorFamily`, :func:`register_generator` and the
:class:`ClassConditional` mixin every family's network uses.

A family is one module of this package that defines its network (``model_class`` built as
``model_class(config_class(**fields))``) and ends with ``register_generator(GeneratorFamily(...))``; its name is
declared with one line in ``rectok_core/models/generators/__init__.py``.

Model contract: ``model.config`` is the config dataclass (``in_channels``, ``input_size``, ``num_classes``,
``class_dropout``, ``patch_size`` and the family's shape fields; ``asdict(config)`` is saved in checkpoints);
``forward(x, t, y, drop_mask=None)`` with latents ``x (B, C, H, W)``, times ``t`` ((B,) or a scalar) and labels
``y (B,)`` long, label ``num_classes`` being the null (unconditional) label. ``prediction`` says what comes out:

* ``"velocity"``: t ∈ [0, 1] in rectok's transport convention (t = 1 data, ``x_t = t·x1 + (1 − t)·x0``), output
  the velocity ``x1 − x0`` (families with another time convention convert inside ``forward``);
* ``"epsilon"``: t is the diffusion timestep index in [0, 1000) as a float, output the noise prediction
  (``in_channels`` channels) followed, when the family learns the variance, by ``in_channels`` variance channels.

Each family also owns its official sampling recipe (:class:`SamplingDefaults`): the time grid of the velocity ODE
and the guidance interval that ``rectok sample --time-shift auto --interval auto``, train-dit's evaluation and its
previews use.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from rectok_core.flow.noise import timestep_shift
from rectok_core.models.generators import GENERATORS

PREDICTIONS = ("velocity", "epsilon")


#: ``SamplingDefaults.shift`` of the DiT^DH rule: the shift depends on the latent shape.
RESOLUTION_SHIFT = "resolution"


@dataclass(frozen=True)
class SamplingDefaults:
    """A family's official sampling recipe, in rectok's conventions (t = 0 noise, t = 1 data).

    ``shift``: the time grid ``t_k = 1 − shift_time(1 − k/(N−1), s)`` (``flow.transport.time_grid``) of the
    velocity families, either a number ``s`` (1 = uniform) or :data:`RESOLUTION_SHIFT`, the DiT^DH rule
    ``s = sqrt(h·w·C/4096)`` of the latent shape; unused by the diffusion family (its own respacing).
    ``interval``: the guidance interval ``(lo, hi)``: guided where ``lo <= t <= hi``, conditional elsewhere.
    ``note``: where the recipe comes from (CLI help, README)."""

    shift: float | str = RESOLUTION_SHIFT
    interval: tuple[float, float] = (0.0, 1.0)
    note: str = ""

    def __post_init__(self) -> None:
        if isinstance(self.shift, str) and self.shift != RESOLUTION_SHIFT:
            raise ValueError(f"SamplingDefaults.shift: a number or {RESOLUTION_SHIFT!r}, got {self.shift!r}")
        if not isinstance(self.shift, str) and not self.shift > 0:
            raise ValueError(f"SamplingDefaults.shift must be positive, got {self.shift}")
        lo, hi = self.interval
        if not 0.0 <= lo <= hi <= 1.0:
            raise ValueError(f"SamplingDefaults.interval must satisfy 0 <= lo <= hi <= 1, got {self.interval}")

    def grid_shift(self, shape: tuple[int, int, int]) -> float:
        """The grid shift ``s`` for latents of ``shape`` ``(C, h, w)``."""
        if self.shift == RESOLUTION_SHIFT:
            return timestep_shift(shape[1], shape[2], shape[0])
        return float(self.shift)


@dataclass(frozen=True)
class GeneratorFamily:
    """One generator family: its network, config, sizes, training objective and the official builder names."""

    name: str                  # "sit", "lightningdit", "dit", "dit-dh"
    model_class: type          # nn.Module subclass, built as model_class(config_class(**fields))
    config_class: type         # a dataclass; asdict(config) is saved in checkpoints
    sizes: dict[str, dict]     # rectok size name ("s", "b", "l", "xl", "h", "tiny", "mini") -> config fields
    objective: str             # a training objective name (rectok_core.flow.objectives.OBJECTIVES)
    prediction: str            # "velocity" or "epsilon"
    official: dict[str, str] = field(default_factory=dict)  # official builder name -> rectok size
    description: str = ""
    sampling: SamplingDefaults = field(default_factory=SamplingDefaults)  # the official time grid and interval

    def __post_init__(self) -> None:
        if self.prediction not in PREDICTIONS:
            raise ValueError(f"generator family {self.name!r}: prediction must be one of {PREDICTIONS}, "
                             f"got {self.prediction!r}")
        unknown = sorted(set(self.official.values()) - set(self.sizes))
        if unknown:
            raise ValueError(f"generator family {self.name!r}: official names map to unknown sizes {unknown}")

    def model_name(self, size: str) -> str:
        """The rectok name of ``size`` in this family, e.g. ``sit-xl``."""
        return f"{self.name}-{size}"


def register_generator(family: GeneratorFamily) -> GeneratorFamily:
    """Register ``family`` in :data:`GENERATORS` under ``family.name`` (declared in the package ``__init__``)."""
    return GENERATORS.add(family.name, family, family.description)


class ClassConditional:
    """Mixin for class-conditional networks whose ``config`` has ``num_classes`` and ``class_dropout``: the null
    label and a reproducible label-drop mask."""

    config: object

    @property
    def num_classes(self) -> int:
        return int(self.config.num_classes)  # type: ignore[attr-defined]

    @property
    def null_class(self) -> int:
        """The label index of the unconditional (dropped) class."""
        return int(self.config.num_classes)  # type: ignore[attr-defined]

    def draw_drop_mask(self, n: int, generator: torch.Generator | None = None,
                       device: torch.device | str | None = None) -> torch.Tensor:
        """Bernoulli(``class_dropout``) label-drop mask ``(n,)`` drawn from ``generator`` (on its device), moved to
        ``device``; pass it to ``forward(..., drop_mask=)`` to make label dropout reproducible."""
        gen_device = generator.device if generator is not None else device
        u = torch.rand(n, generator=generator, device=gen_device)
        return (u < self.config.class_dropout).to(device if device is not None else u.device)  # type: ignore
