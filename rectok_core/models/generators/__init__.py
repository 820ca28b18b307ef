"""Generator families (issue 19): every class-conditional latent generator ``train-dit --model`` trains, behind one
registry (:data:`GENERATORS`) and one contract (:mod:`rectok_core.models.generators.base`).

One line per family below (name, the module that registers it, its help); names and help need no torch, the
module is imported the first time the family is looked up. Adding a family = one module ending with
``register_generator(GeneratorFamily(...))`` + one ``declare`` line here.

Model names: ``FAMILY-SIZE`` in lower case (``sit-xl``, ``dit-dh-b``, ``lightningdit-tiny``) or a family's official
builder name (``SiT_xl``, ``DiTDDT_b``, ``LightningDiT_large``, ``DiT_xl``).
"""
from __future__ import annotations

from dataclasses import fields
from typing import Any

from rectok_core.errors import RectokError
from rectok_core.utils.registry import Registry

#: The generator families by name; entries are ``base.GeneratorFamily``.
GENERATORS: Registry = Registry("generator family", option="--model")
GENERATORS.declare("dit-dh", "rectok_core.models.generators.dit_dh",
                   "DiT^DH: DiT trunk + wide DDT head, shifted-t flow matching (RecTok, RAE)")
GENERATORS.declare("lightningdit", "rectok_core.models.generators.lightningdit",
                   "LightningDiT: SwiGLU, RoPE, RMSNorm transformer, log-normal t, MSE (+ cosine loss: --objective "
                   "flow-lognorm-cosine) "
                   "(official LightningDiT_models)")
GENERATORS.declare("sit", "rectok_core.models.generators.sit",
                   "SiT: DiT transformer (adaLN-Zero, sin-cos positions) trained on the linear flow "
                   "(official SiT_models)")
GENERATORS.declare("dit", "rectok_core.models.generators.dit",
                   "DiT: adaLN-Zero transformer trained with Gaussian diffusion, noise prediction "
                   "(official DiT_models)")

DEFAULT_FAMILY = "dit-dh"


def _family_of(name: str) -> tuple[str, str] | None:
    """``(family, rest)`` for a rectok name ``FAMILY-REST`` (the longest family prefix wins: ``dit-dh-b``)."""
    for family in sorted(GENERATORS.names(), key=len, reverse=True):
        if name.startswith(family + "-") and len(name) > len(family) + 1:
            return family, name[len(family) + 1:]
    return None


def model_names() -> list[str]:
    """Every model name: ``FAMILY-SIZE`` for each family and size, then the official aliases (imports the
    families)."""
    rectok, official = [], []
    for family in GENERATORS.values():
        rectok += [family.model_name(size) for size in family.sizes]
        official += list(family.official)
    return rectok + official


def parse_model_name(name: str) -> tuple[str, str]:
    """``(family, size)`` of a model name (``sit-xl``, ``SiT_xl``, ``dit-dh-tiny`` …); a one-line error listing the
    known names when there is no such model."""
    split = _family_of(name.strip().lower())
    if split is not None:
        family = GENERATORS.get(split[0])
        if split[1] in family.sizes:
            return family.name, split[1]
    else:
        for family in GENERATORS.values():
            if name in family.official:
                return family.name, family.official[name]
    raise RectokError(f"unknown --model {name!r}; choose one of {', '.join(model_names())}")


def config_fields(family: str, size: str, in_channels: int, input_size: int, num_classes: int,
                  class_dropout: float, **overrides: Any) -> dict[str, Any]:
    """The config fields of ``family`` at ``size`` for the given data, ``overrides`` replacing any other field (a
    one-line error for a field the family's config does not have)."""
    fam = GENERATORS.get(family)
    if size not in fam.sizes:
        raise RectokError(f"unknown size {size!r} of generator family {family!r}; choose one of "
                          f"{', '.join(fam.sizes)}")
    known = {f.name for f in fields(fam.config_class)}
    bad = sorted(set(overrides) - known)
    if bad:
        raise RectokError(f"generator family {family!r} has no setting {', '.join(bad)}")
    out: dict[str, Any] = dict(fam.sizes[size])
    out.update(in_channels=in_channels, input_size=input_size, num_classes=num_classes, class_dropout=class_dropout)
    out.update(overrides)
    return out


def generator_patch_size(family: str, size: str, overrides: dict[str, Any] | None = None) -> int:
    """The latent patch size of ``family`` at ``size`` (its config default when the size does not set it)."""
    fam = GENERATORS.get(family)
    chosen = {**fam.sizes.get(size, {}), **(overrides or {})}
    if "patch_size" in chosen:
        return int(chosen["patch_size"])
    default = {f.name: f.default for f in fields(fam.config_class)}.get("patch_size", 1)
    return int(default) if isinstance(default, int) else 1


def build_generator(name_or_family: str, size: str | None, in_channels: int, input_size: int, num_classes: int,
                    class_dropout: float = 0.1, **overrides: Any) -> Any:
    """A fresh network: ``name_or_family`` is a model name (``size`` None) or a family name with ``size``.

    Build under ``with torch.device("meta"):`` to inspect a large model without allocating it.
    """
    family, size = (name_or_family, size) if size is not None else parse_model_name(name_or_family)
    return generator_from_config(family, config_fields(family, size, in_channels, input_size, num_classes,
                                                       class_dropout, **overrides))


def generator_from_config(family: str, config: dict[str, Any]) -> Any:
    """Rebuild a network of ``family`` from a checkpoint's saved config (``asdict(model.config)``)."""
    fam = GENERATORS.get(family)
    return fam.model_class(fam.config_class(**config))


def family_of_config(config: Any) -> str:
    """The family name of a config dataclass instance (by its class)."""
    for family in GENERATORS.values():
        if type(config) is family.config_class:
            return family.name
    raise RectokError(f"{type(config).__name__} is not a registered generator family's config")


def family_of_model(model: Any) -> str:
    """The family name of a built network (by its exact class: a family may subclass another's network)."""
    for family in GENERATORS.values():
        if type(model) is family.model_class:
            return family.name
    raise RectokError(f"{type(model).__name__} is not a registered generator family's network")


def generator_table() -> list[dict[str, str]]:
    """One row per family for ``rectok generators``: its name, model names, official names, training objective,
    prediction, how it samples and its description (imports every family)."""
    rows = []
    for family in GENERATORS.values():
        sampling = getattr(family, "sampling", None)
        if family.prediction == "epsilon":
            how = "ddpm (its own ancestral sampler)"
        elif sampling is None:
            how = "ODE (euler/heun/ab2)"
        else:
            shift = "sqrt(h·w·C/4096)" if isinstance(sampling.shift, str) else f"{float(sampling.shift):.4g}"
            how = f"ODE (euler/heun/ab2), grid shift {shift}, guidance on t in {list(sampling.interval)}"
        rows.append({"family": family.name, "models": ", ".join(family.model_name(s) for s in family.sizes),
                     "official": ", ".join(family.official) or "-", "objective": family.objective,
                     "prediction": family.prediction, "sampling": how, "description": family.description})
    return rows
