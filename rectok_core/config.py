"""Typed run configuration: one source of defaults, named presets, validation, JSON round trip.

Every command's configuration is a dataclass whose fields carry their help text and allowed values in
``metadata``; the CLI turns the (flattened) fields into options, so a flag can never exist without a field
that the code reads, and a default is written in exactly one place.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import field
from typing import Any

from rectok_core.errors import RectokError


def section(cls: type, cli: bool = True, **defaults: Any) -> Any:
    """A nested config section; ``defaults`` override the section's own field defaults for this command."""
    return field(default_factory=lambda: cls(**defaults), metadata={"section": cls, "cli": cli})


def opt(default: Any, help: str, choices: tuple | None = None, cli: bool = True, flag_type: type | None = None,
        **kw) -> Any:
    """A dataclass field with its CLI help, allowed values and whether it is exposed as a flag; ``flag_type``
    names the flag's type when the default is None (e.g. a bool whose None means "auto")."""
    md = {"help": help, "choices": choices, "cli": cli, "type": flag_type}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=md, **kw)
    return field(default=default, metadata=md, **kw)


# ---------------------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------------------
def positive(name: str, v: float) -> None:
    if not v > 0:
        raise RectokError(f"--{name.replace('_', '-')} must be positive, got {v}")


def nonneg(name: str, v: float) -> None:
    if not v >= 0:
        raise RectokError(f"--{name.replace('_', '-')} must be >= 0, got {v}")


def fraction(name: str, v: float) -> None:
    if not 0 <= v <= 1:
        raise RectokError(f"--{name.replace('_', '-')} must be in [0, 1], got {v}")


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def from_dict(cls: type, d: dict) -> Any:
    """Rebuild a (nested) config dataclass from ``to_dict`` output; unknown keys are an error."""
    kwargs = {}
    names = {f.name: f for f in dataclasses.fields(cls)}
    for k, v in d.items():
        if k not in names:
            raise RectokError(f"unknown config key {k!r} for {cls.__name__} (written by a newer rectok?)")
        sub = _nested_type(cls, k)
        kwargs[k] = from_dict(sub, v) if sub is not None else v
    return cls(**kwargs)


def _nested_type(cls: type, name: str) -> type | None:
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    return f.metadata.get("section")


def flat_fields(cls: type) -> dict[str, tuple[tuple[str, ...], dataclasses.Field]]:
    """Map each CLI-exposed leaf field name to its path inside the nested config (names are unique)."""
    out: dict[str, tuple[tuple[str, ...], dataclasses.Field]] = {}

    def walk(c: type, prefix: tuple[str, ...]) -> None:
        for f in dataclasses.fields(c):
            sub = _nested_type(c, f.name)
            if sub is not None:
                if f.metadata.get("cli", True):
                    walk(sub, prefix + (f.name,))
            elif f.metadata.get("cli", True):
                if f.name in out:
                    raise AssertionError(f"duplicate config field name {f.name}")
                out[f.name] = (prefix + (f.name,), f)

    walk(cls, ())
    return out


def get_path(cfg: Any, path: tuple[str, ...]) -> Any:
    for p in path:
        cfg = getattr(cfg, p)
    return cfg


def set_path(cfg: Any, path: tuple[str, ...], value: Any) -> None:
    for p in path[:-1]:
        cfg = getattr(cfg, p)
    setattr(cfg, path[-1], value)


def build_config(cls: type, presets: dict[str, dict], preset: str, overrides: dict[str, Any]) -> Any:
    """Defaults → preset → explicit overrides (flat names), then validation of allowed values."""
    if preset not in presets:
        raise RectokError(f"unknown preset {preset!r}; choose one of {', '.join(presets)}")
    cfg = cls()
    cfg.preset = preset
    for section, values in presets[preset].items():
        for k, v in values.items():
            setattr(getattr(cfg, section), k, v)
    fields = flat_fields(cls)
    for k, v in overrides.items():
        if v is None:
            continue
        if k not in fields:
            raise RectokError(f"unknown option {k!r}")
        set_path(cfg, fields[k][0], v)
    check_choices(cfg)
    cfg.validate()
    return cfg


def check_choices(cfg: Any) -> None:
    for name, (path, f) in flat_fields(type(cfg)).items():
        choices = f.metadata.get("choices")
        v = get_path(cfg, path)
        if choices and v not in choices:
            raise RectokError(f"--{name.replace('_', '-')} {v!r}: choose one of {', '.join(map(str, choices))}")


RESUME_MUTABLE = {"resume", "data", "steps", "epochs", "workers", "device", "log_every", "ckpt_every",
                  "keep_every", "image_every", "strict_data", "compile"}


def resume_config(cls: type, saved: dict, overrides: dict[str, Any]) -> Any:
    """The configuration saved with a run, plus the explicit flags that may change when resuming.

    Any other explicit flag that differs from the saved run is an error rather than silently ignored.
    """
    cfg = from_dict(cls, saved)
    fields = flat_fields(cls)
    for k, v in overrides.items():
        if v is None or k not in fields:
            continue
        old = get_path(cfg, fields[k][0])
        if k in RESUME_MUTABLE:
            set_path(cfg, fields[k][0], v)
        elif v != old:
            raise RectokError(f"--{k.replace('_', '-')} {v!r} differs from the run being resumed ({old!r}); "
                              f"it cannot change on --resume")
    check_choices(cfg)
    cfg.validate()
    return cfg


def dumps(cfg: Any) -> str:
    return json.dumps(to_dict(cfg), indent=2, sort_keys=False)

