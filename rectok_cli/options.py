"""Turn a config dataclass into Typer options, so every flag is a config field with one default.

Options default to ``None`` ("not given"): the command builds its config as defaults → preset → the flags the
user actually typed, and ``--help`` shows each field's default (and where a preset changes it).
"""
from __future__ import annotations

import inspect
from typing import Any, Callable, Optional

import typer

from rectok_core.config import flat_fields, get_path


def _preset_values(presets: dict[str, dict], path: tuple[str, ...]) -> dict[str, Any]:
    out = {}
    for preset, sections in presets.items():
        if len(path) == 2 and path[1] in sections.get(path[0], {}):
            out[preset] = sections[path[0]][path[1]]
    return out


def config_parameters(cls: type, presets: dict[str, dict] | None = None) -> list[inspect.Parameter]:
    """One keyword-only Typer option per CLI-exposed leaf field of ``cls``."""
    base = cls()
    params = []
    for name, (path, f) in flat_fields(cls).items():
        default = get_path(base, path)
        typ = f.metadata.get("type") or type(default)
        flag = "--" + name.replace("_", "-")
        help_text = f.metadata.get("help", "")
        choices = f.metadata.get("choices")
        if choices:
            help_text += f" {{{'|'.join(map(str, choices))}}}"
        shown = repr(default) if isinstance(default, str) else "auto" if default is None else default
        help_text += f" (default: {shown if default != '' else 'none'}"
        if presets and name != "preset":
            pv = _preset_values(presets, path)
            if pv:
                help_text += "; " + ", ".join(f"{p}: {v}" for p, v in pv.items())
        help_text += ")"
        decl = [f"{flag}/--no-{flag[2:]}"] if typ is bool else [flag]
        option = typer.Option(None, *decl, help=help_text, show_default=False)
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option,
                                        annotation=Optional[typ]))
    return params


def with_config_options(cls: type, presets: dict[str, dict] | None = None,
                        extra: list[inspect.Parameter] | None = None) -> Callable[[Callable], Callable]:
    """Decorator: give ``fn(**kwargs)`` a signature of ``extra`` parameters followed by the config's options."""

    def wrap(fn: Callable) -> Callable:
        fn.__signature__ = inspect.Signature([*(extra or []), *config_parameters(cls, presets)])
        return fn

    return wrap


def split_overrides(cls: type, kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(config overrides, other arguments)."""
    names = set(flat_fields(cls))
    return ({k: v for k, v in kwargs.items() if k in names},
            {k: v for k, v in kwargs.items() if k not in names})


def with_flags(fn: Callable, name: str, *decls: str) -> Callable:
    """Give the generated option ``name`` of ``fn`` the flags ``decls`` (e.g. ``-n``, or ``--batch-size`` for
    ``--batch-sizes``), keeping its help."""
    sig = fn.__signature__
    params = []
    for p in sig.parameters.values():
        if p.name == name:
            p = p.replace(default=typer.Option(None, *decls, help=p.default.help, show_default=False))
        params.append(p)
    fn.__signature__ = sig.replace(parameters=params)
    return fn
