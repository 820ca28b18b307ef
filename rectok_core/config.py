"""Typed run configuration: one source of defaults, named presets, validation, JSON round trip.

Every command's configuration is a dataclass whose fields carry their help text and allowed values in
``metadata``; the CLI turns the (flattened) fields into options, so a flag can never exist without a field
that the code reads, and a default is written in exactly one place.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from dataclasses import field
from pathlib import Path
from typing import Any

from rectok_core.config_values import coerce, field_types
from rectok_core.errors import RectokError
from rectok_core.utils.env import WORKERS_DEFAULT, default_workers
from rectok_core.utils.runtime import PRECISIONS

#: Which weights of a checkpoint a command uses (``--weights``): the EMA copy (what evaluation uses) or the raw trained ones.
WEIGHTS = ("ema", "raw")


def section(cls: type, cli: bool = True, **defaults: Any) -> Any:
    """A nested config section; ``defaults`` override the section's own field defaults for this command."""
    return field(default_factory=lambda: cls(**defaults), metadata={"section": cls, "cli": cli})


def opt(default: Any, help: str, choices: tuple | None = None, cli: bool = True, flag_type: type | None = None,
        aliases: tuple[str, ...] = (), required: bool = False, flag: str | None = None, **kw) -> Any:
    """A dataclass field with its CLI help, allowed values and whether it is exposed as a flag; ``flag_type``
    names the flag's type when the default is None (e.g. a bool whose None means "auto"); ``aliases`` are extra
    flag spellings (e.g. ``--vfm`` for ``--teacher``); a ``required`` option must be given a non-empty value;
    ``flag`` is the flag when it is not the field's name (``--eval`` for ``eval_file``: see :func:`flag_of`)."""
    md = {"help": help, "choices": choices, "cli": cli, "type": flag_type, "aliases": tuple(aliases),
          "required": required, "flag": flag}
    if "default_factory" in kw:  # computed when the config is made (e.g. from the machine); ``default`` unused
        return field(metadata=md, **kw)
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=md, **kw)
    return field(default=default, metadata=md, **kw)


# ---------------------------------------------------------------------------------------------------------
# Runtime options: --device, --precision, --workers and --strict-data are defined once here and reused by every
# command's config (one help text, one set of allowed values); a command states only its default and purpose.
# ---------------------------------------------------------------------------------------------------------
def device_option(what: str = "") -> Any:
    """``--device``: ``cuda``, ``cuda:N``, ``cpu`` or ``auto`` (CUDA when there is one)."""
    return opt("auto", "cuda, cuda:N, cpu or auto" + (f" ({what})" if what else ""))


def precision_option(default: str = "auto", choices: tuple[str, ...] = PRECISIONS, what: str = "autocast") -> Any:
    """``--precision``: the autocast dtype (``auto``: bf16 on CUDA, fp32 on CPU)."""
    return opt(default, f"{what} precision (auto: bf16 on CUDA, fp32 on CPU)" if "auto" in choices
               else f"{what} precision", choices)


def workers_option(default: int | None = None, what: str = "data-loading worker processes per rank") -> Any:
    """``--workers``: ``None`` means auto (``min(4, CPUs available)``, computed when the config is made)."""
    if default is None:
        return opt(None, f"{what} ({WORKERS_DEFAULT})", flag_type=int, default_factory=default_workers)
    return opt(default, what)


def strict_data_option() -> Any:
    """``--strict-data``: stop at the first unreadable image instead of skipping and counting it."""
    return opt(False, "fail on the first unreadable image instead of skipping it")


def check_runtime(cfg: Any) -> None:
    """Validate the allowed values and the shared runtime options a config has (``device``, ``workers``,
    ``batch_size``): the checks every command's ``validate`` starts with."""
    check_choices(cfg)
    if hasattr(cfg, "device"):
        device_spec("device", cfg.device)
    if getattr(cfg, "batch_size", None) is not None:
        positive("batch_size", cfg.batch_size)
    if getattr(cfg, "workers", None) is not None:
        nonneg("workers", cfg.workers)


def flag_of(name: str, f: dataclasses.Field) -> str:
    """The command-line flag of the flat option ``name`` (its field ``f``): ``--name-with-dashes`` unless the field
    names another."""
    return f.metadata.get("flag") or "--" + name.replace("_", "-")


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


def open_unit(name: str, v: float) -> None:
    """A value in [0, 1): AdamW betas (beta = 1 never forgets, and divides by zero in the bias correction)."""
    if not 0 <= v < 1:
        raise RectokError(f"--{name.replace('_', '-')} must be in [0, 1), got {v}")


SEED_MAX = 2 ** 63


def seed_range(name: str, v: int) -> None:
    """A random seed: an integer in [0, 2^63) (what torch.Generator.manual_seed accepts)."""
    if not 0 <= v < SEED_MAX:
        raise RectokError(f"--{name.replace('_', '-')} must be an integer in [0, 2^63), got {v}")


def finite(name: str, v: float) -> None:
    if not math.isfinite(v):
        raise RectokError(f"--{name.replace('_', '-')} must be a finite number, got {v}")


def check_numbers(cfg: Any) -> None:
    """The ranges every command shares: each float option finite, each seed option in [0, 2^63)."""
    for name, (path, _f) in flat_fields(type(cfg)).items():
        v = get_path(cfg, path)
        if isinstance(v, float):
            finite(name, v)
        if (name == "seed" or name.endswith("_seed")) and isinstance(v, int) and not isinstance(v, bool):
            seed_range(name, v)


def choice(name: str, v: Any, choices: tuple | list | dict) -> None:
    """``v`` must be one of ``choices`` (a flag value such as ``--weights``)."""
    if v not in choices:
        raise RectokError(f"--{name.replace('_', '-')} {v!r}: choose one of {', '.join(map(str, choices))}")


def device_spec(name: str, v: str) -> None:
    """A ``--device`` value: auto, cpu, cuda or cuda:N."""
    if v not in ("auto", "cpu", "cuda") and not re.fullmatch(r"cuda:\d+", v):
        raise RectokError(f"--{name.replace('_', '-')} {v!r}: use auto, cpu, cuda or cuda:N")


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
    """Defaults → recipe (configs with ``apply_recipe``) → preset → explicit overrides (flat names), then
    validation of allowed values."""
    if preset not in presets:
        raise RectokError(f"unknown preset {preset!r}; choose one of {', '.join(presets)}")
    cfg = cls()
    cfg.preset = preset
    if hasattr(cfg, "apply_recipe"):  # a config with a --recipe: defaults → recipe → preset → flags
        cfg.apply_recipe(overrides.get("recipe") or cfg.recipe)
    for section, values in presets[preset].items():
        for k, v in values.items():
            setattr(getattr(cfg, section), k, v)
    return apply_flags(cfg, overrides)


def from_flags(cls: type, overrides: dict[str, Any]) -> Any:
    """Defaults → explicit overrides (flat names) for a command without presets, then validation."""
    return apply_flags(cls(), overrides)


def apply_flags(cfg: Any, overrides: dict[str, Any]) -> Any:
    """Set the explicitly given options (flat names; None = not given) on ``cfg``, then validate it."""
    fields = flat_fields(type(cfg))
    for k, v in overrides.items():
        if v is None:
            continue
        if k not in fields:
            raise RectokError(f"unknown option {k!r}")
        set_path(cfg, fields[k][0], v)
    for name, (path, f) in fields.items():
        if f.metadata.get("required") and get_path(cfg, path) in ("", None):
            raise RectokError(f"--{name.replace('_', '-')} is required: {f.metadata['help']}")
    check_choices(cfg)
    check_numbers(cfg)
    cfg.validate()
    return cfg


def settings(cls: type, cfg: Any = None, **given: Any) -> Any:
    """``cfg`` (default: ``cls()``) with the settings ``given`` by name (None: not given; paths may be
    ``os.PathLike``), checked: what an entry point does with its ``cfg`` and keyword arguments."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(given) - names)
    if unknown:
        raise RectokError(f"unknown {cls.__name__} setting {unknown[0]!r}; choose from {', '.join(sorted(names))}")
    values = {k: os.fspath(v) if isinstance(v, os.PathLike) else v for k, v in given.items() if v is not None}
    return apply_flags(dataclasses.replace(cfg if cfg is not None else cls(), **values), {})


def to_argv(cls: type, options: dict[str, Any]) -> tuple[str, ...]:
    """The command-line flags that set ``options`` (flat option names of the config ``cls`` → values; None: left
    out) on the command whose options ``cls`` generates: ``--name value``, or ``--name`` / ``--no-name`` for a bool.
    A name ``cls`` does not have is an error here, when the command line is built, not when it runs."""
    fields = flat_fields(cls)
    argv: list[str] = []
    for name, value in options.items():
        if name not in fields:
            raise RectokError(f"{cls.__name__} has no option {name!r}")
        if value is None:
            continue
        flag = flag_of(name, fields[name][1])
        if isinstance(value, bool):
            argv.append(flag if value else "--no-" + flag[2:])
        else:
            argv += [flag, str(value)]
    return tuple(argv)


def check_choices(cfg: Any) -> None:
    for name, (path, f) in flat_fields(type(cfg)).items():
        choices = f.metadata.get("choices")
        v = get_path(cfg, path)
        if choices:
            choice(name, v, choices)


RESUME_MUTABLE = {"resume", "data", "steps", "epochs", "workers", "device", "log_every", "ckpt_every",
                  "keep_every", "milestones", "image_every", "strict_data", "compile", "log", "eval_every",
                  # evaluation settings (they do not change the trained weights): train-dit's DiTEvalConfig
                  "eval_images", "eval_cfg", "eval_cfg_scale", "eval_steps", "eval_guide", "ref_stats",
                  "eval_ref_images"}


#: Fields added after runs had been saved without them, with the value that reproduces what those runs did
#: (``lr_scale_accum``: before it existed the learning rate always scaled with ``--grad-accum``).
LEGACY_VALUES = {"lr_scale_accum": True}


def _saved_has(saved: dict, path: tuple[str, ...]) -> bool:
    for p in path:
        if not isinstance(saved, dict) or p not in saved:
            return False
        saved = saved[p]
    return True


def resume_config(cls: type, saved: dict, overrides: dict[str, Any]) -> Any:
    """The configuration saved with a run, plus the explicit flags that may change when resuming.

    Any other explicit flag that differs from the saved run is an error rather than silently ignored.
    """
    cfg = from_dict(cls, saved)
    fields = flat_fields(cls)
    for name, value in LEGACY_VALUES.items():  # a run saved before the field existed keeps its old behaviour
        if name in fields and not _saved_has(saved, fields[name][0]):
            set_path(cfg, fields[name][0], value)
    for k, v in overrides.items():
        if v is None or k not in fields:
            continue
        old = get_path(cfg, fields[k][0])
        if k in RESUME_MUTABLE:
            set_path(cfg, fields[k][0], v)
        elif v != old:
            raise RectokError(f"{flag_of(k, fields[k][1])} {v!r} differs from the run being resumed ({old!r}); "
                              f"it cannot change on --resume")
    check_choices(cfg)
    check_numbers(cfg)
    cfg.validate()
    return cfg


def dumps(cfg: Any) -> str:
    return json.dumps(to_dict(cfg), indent=2, sort_keys=False)


# ---------------------------------------------------------------------------------------------------------
# Config files (--config FILE): defaults → preset → file → flags
# ---------------------------------------------------------------------------------------------------------
FILE_IGNORED = {"resume"}  # what a run did, not what it is: a saved config.json of a resumed run still starts fresh


def load_config_file(path: str | Path) -> dict:
    """A YAML or JSON mapping (a run's saved ``config.json`` is one)."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise RectokError(f"--config {path}: no such file")
    try:
        data = json.loads(p.read_text()) if p.suffix == ".json" else yaml.safe_load(p.read_text())
    except (ValueError, yaml.YAMLError) as e:
        raise RectokError(f"--config {path}: not valid {'JSON' if p.suffix == '.json' else 'YAML'} "
                          f"({str(e).splitlines()[0]})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise RectokError(f"--config {path}: expected a mapping of option names to values, got {type(data).__name__}")
    return data


def file_overrides(cls: type, data: dict, source: str = "--config") -> dict[str, Any]:
    """The flat option values of a config-file mapping: nested sections as a saved ``config.json`` has them, or flat
    option names (``dim: 128``), or both. Each value is coerced to its field's type (``blr: 1e-4``, a string to
    YAML, is a float; :mod:`rectok_core.config_values`); a value that does not fit is a one-line error. Unknown keys
    are an error; derived fields (not options, e.g. the width of the teacher or the checkpoint being fine-tuned) and
    ``resume`` are accepted and ignored."""
    fields = flat_fields(cls)
    out: dict[str, Any] = {}

    def walk(c: type, d: dict, prefix: tuple[str, ...], cli: bool) -> None:
        names = {f.name: f for f in dataclasses.fields(c)}
        for k, v in d.items():
            key = k.replace("-", "_") if isinstance(k, str) else k
            if key not in names:
                if not prefix and key in fields:  # a flat option name at the top level
                    out[key] = coerce(str(k), _leaf_type(cls, fields[key][0]), v, source)
                    continue
                where = ".".join(prefix + (str(k),))
                raise RectokError(f"{source}: unknown key {where!r} for {cls.__name__}")
            f = names[key]
            sub = f.metadata.get("section")
            on_cli = cli and f.metadata.get("cli", True)
            if sub is not None:
                if not isinstance(v, dict):
                    raise RectokError(f"{source}: {'.'.join(prefix + (key,))!r} must be a mapping")
                walk(sub, v, prefix + (key,), on_cli)
            elif on_cli and key not in FILE_IGNORED and fields.get(key, ((),))[0] == prefix + (key,):
                out[key] = coerce(".".join(prefix + (str(k),)), field_types(c)[key], v, source)

    walk(cls, data, (), True)
    return out


def _leaf_type(cls: type, path: tuple[str, ...]) -> Any:
    """The annotated type of the field at ``path`` inside the nested config ``cls``."""
    for name in path[:-1]:
        cls = _nested_type(cls, name)
    return field_types(cls)[path[-1]]


def merge_file(cls: type, overrides: dict[str, Any], config_file: str | Path | None) -> dict[str, Any]:
    """``overrides`` (explicit flags; None = not given) on top of the values of ``config_file``."""
    if not config_file:
        return dict(overrides)
    merged = file_overrides(cls, load_config_file(config_file), f"--config {config_file}")
    merged.update({k: v for k, v in overrides.items() if v is not None})
    return merged


def resolve(cls: type, presets: dict[str, dict] | None, overrides: dict[str, Any],
            config_file: str | Path | None = None, default_preset: str | None = None) -> Any:
    """A new configuration: defaults → preset → ``config_file`` → ``overrides`` (flat option names; None = not
    given). The preset is the flag's, else the file's ``preset`` key, else ``default_preset`` or the class default.
    Without presets the config is a flat dataclass built from the values."""
    merged = merge_file(cls, overrides, config_file)
    if presets is None:
        return from_flags(cls, merged)
    preset = merged.pop("preset", None) or default_preset or cls().preset
    return build_config(cls, presets, preset, merged)

