"""Turn a config dataclass into Typer options, so every flag is a config field with one default.

Options default to ``None`` ("not given"): the command builds its config as defaults → preset → the flags the
user actually typed, and ``--help`` shows each field's default (and where a preset changes it).
"""
from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, Optional

import typer

from rectok_core.config import dumps, flag_of, flat_fields, from_flags, get_path, merge_file
from rectok_core.config import resolve as resolve_config_core


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
        flag = flag_of(name, f)
        help_text = f.metadata.get("help", "")
        choices = f.metadata.get("choices")
        if choices:
            help_text += f" {{{'|'.join(map(str, choices))}}}"
        shown = repr(default) if isinstance(default, str) else "auto" if default is None else default
        if f.metadata.get("required"):
            notes = ["required"]
        else:
            notes = [] if "(default" in help_text else [f"default: {shown if default != '' else 'none'}"]
        if presets and name != "preset":
            notes += [f"{p}: {v}" for p, v in _preset_values(presets, path).items()]
        if notes:
            help_text += " (" + "; ".join(notes) + ")"
        decl = [f"{flag}/--no-{flag[2:]}"] if typ is bool else [flag, *f.metadata.get("aliases", ())]
        option = typer.Option(None, *decl, help=help_text, show_default=False)
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option,
                                        annotation=Optional[typ]))
    return params


def _file_parameters() -> list[inspect.Parameter]:
    kw = inspect.Parameter.KEYWORD_ONLY
    return [
        inspect.Parameter("config_file", kw, annotation=str | None, default=typer.Option(
            None, "--config", show_default=False, help="YAML or JSON file of option values (e.g. a run's "
            "config.json; its 'preset' key picks the preset): defaults → preset → file → the flags given here")),
        inspect.Parameter("print_config", kw, annotation=bool, default=typer.Option(
            False, "--print-config", show_default=False, help="print the resolved configuration as JSON and exit")),
    ]


def with_config_options(cls: type, presets: dict[str, dict] | None = None,
                        extra: list[inspect.Parameter] | None = None,
                        resolve: Callable[..., Any] | None = None) -> Callable[[Callable], Callable]:
    """Decorator: give ``fn(**kwargs)`` a signature of ``extra`` parameters followed by the config's options and
    ``--config FILE`` / ``--print-config``.

    ``--config`` is applied here, for every command: the file's values fill the options not given on the command
    line, so whatever ``fn`` builds from its flags sees defaults → preset → file → flags. ``--print-config`` prints
    ``resolve(*args, **kwargs)`` (the command's own config builder, taking ``fn``'s arguments; default: defaults →
    preset → file → flags) as JSON and exits 0 without running ``fn``.
    """

    def default_resolve(*_args, **kwargs):
        return resolve_config_core(cls, presets, split_overrides(cls, kwargs)[0])

    def wrap(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def run(*args, config_file: str | None = None, print_config: bool = False, **kwargs):
            if config_file:
                given = {k: v for k, v in kwargs.items() if v is not None}
                kwargs.update(merge_file(cls, {k: v for k, v in given.items() if k in flat_fields(cls)},
                                         config_file))
            if print_config:
                typer.echo(dumps((resolve or default_resolve)(*args, **kwargs)))
                raise typer.Exit(0)
            return fn(*args, **kwargs)

        run.__signature__ = inspect.Signature([*(extra or []), *config_parameters(cls, presets), *_file_parameters()])
        return run

    return wrap


def split_overrides(cls: type, kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(config overrides, other arguments)."""
    names = set(flat_fields(cls))
    return ({k: v for k, v in kwargs.items() if k in names},
            {k: v for k, v in kwargs.items() if k not in names})


TOKENIZER_ARG = ("tokenizer checkpoint (train-tokenizer / finetune-decoder), export folder or Hub id, or FAMILY:SOURCE "
                 "of another family (rectok tokenizers)")


def argument(name: str, help: str, required: bool = True, annotation: Any = str) -> inspect.Parameter:
    """A positional command argument (the generated options follow it)."""
    return inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=annotation,
                             default=typer.Argument(... if required else None, help=help))


def make_config(cls: type, overrides: dict[str, Any]) -> Any:
    """The config of a command without presets: defaults, then the flags the user typed, validated."""
    return from_flags(cls, overrides)
