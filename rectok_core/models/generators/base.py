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
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from rectok_core.models.generators import GENERATORS

PREDICTIONS = ("velocity", "epsilon")


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
