"""Typed values for config files: each value is coerced to its dataclass field's annotated type.

A hand-written ``--config`` file is read by YAML 1.1, which leaves ``1e-4`` (no dot) a *string*, reads ``off`` and
``no`` as booleans and ``"0.001"`` stays a string when quoted. :func:`coerce` turns such values into the field's
type (``bool``, ``int``, ``float``, ``str``, ``X | None``, ``Literal[...]``, ``tuple``/``list`` of those, nested
dataclasses) and raises a one-line :class:`~rectok_core.errors.RectokError` naming the key and the expected type
otherwise (``run.batch_size: expected an integer, got 'abc'``).

Why not pydantic (``TypeAdapter`` validates dataclasses): it is not a dependency of rectok (it would add pydantic-core
for ~80 lines of code), its lax mode rejects values a config file legitimately holds (``steps: 1e3`` for an int,
``t_grid: 0.5`` for a string), and its multi-line messages would have to be re-worded into one line anyway. The
configs' field types are a closed, small set, so a small coercer with our own messages is the simpler choice.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from typing import Any

from rectok_core.errors import RectokError

_TRUE = {"true", "yes", "on", "1", "y"}
_FALSE = {"false", "no", "off", "0", "n"}


class _Mismatch(Exception):
    """A value that does not fit a type; carries the expected type in words."""

    def __init__(self, expected: str, detail: str = ""):
        super().__init__(expected)
        self.expected, self.detail = expected, detail


@functools.cache
def field_types(cls: type) -> dict[str, Any]:
    """The resolved annotation of every field of dataclass ``cls`` (string annotations evaluated)."""
    return typing.get_type_hints(cls)


def describe(tp: Any) -> str:
    """A type in words, as error messages name it (``an integer``, ``a number or null``)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is bool:
        return "true or false"
    if tp is int:
        return "an integer"
    if tp is float:
        return "a number"
    if tp is str:
        return "a string"
    if origin is typing.Literal:
        return "one of " + ", ".join(map(str, args))
    if origin in (typing.Union, types.UnionType):
        kinds = [describe(a) for a in args if a is not type(None)]
        return " or ".join(kinds) + (" or null" if type(None) in args else "")
    if origin in (list, tuple):
        return f"a list of {describe(args[0]).removeprefix('an ').removeprefix('a ')}s" if args else "a list"
    if dataclasses.is_dataclass(tp):
        return f"a mapping of {tp.__name__} settings"
    return getattr(tp, "__name__", str(tp))


def _number(v: Any) -> float:
    if isinstance(v, bool):
        raise ValueError
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, str):
        return float(v.strip().replace("_", ""))
    raise ValueError


def _to(tp: Any, v: Any, ctx: tuple[str, str] = ("", "--config")) -> Any:
    """``v`` as ``tp``; ``ctx`` is (key, source) for the messages of nested dataclasses."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return v
    if origin in (typing.Union, types.UnionType):
        if v is None and type(None) in args:
            return None
        for a in (a for a in args if a is not type(None)):
            try:
                return _to(a, v, ctx)
            except _Mismatch:
                continue
        raise _Mismatch(describe(tp))
    if origin is typing.Literal:
        for a in args:
            try:
                if _to(type(a), v) == a:
                    return a
            except _Mismatch:
                continue
        raise _Mismatch(describe(tp))
    if tp is bool:
        if isinstance(v, bool):
            return v
        if isinstance(v, int) and v in (0, 1):
            return bool(v)
        if isinstance(v, str) and v.strip().lower() in _TRUE | _FALSE:
            return v.strip().lower() in _TRUE
        raise _Mismatch(describe(tp))
    if tp is int:
        if isinstance(v, int) and not isinstance(v, bool):
            return v
        try:
            x = _number(v)
        except ValueError:
            raise _Mismatch(describe(tp)) from None
        if not math.isfinite(x) or x != int(x):
            raise _Mismatch(describe(tp), "not a whole number")
        return int(x)
    if tp is float:
        try:
            return _number(v)
        except ValueError:
            raise _Mismatch(describe(tp)) from None
    if tp is str:
        if isinstance(v, str):
            return v
        if isinstance(v, bool):  # YAML 1.1 reads off/no/yes/on unquoted as booleans
            raise _Mismatch(describe(tp), "YAML reads an unquoted yes/no/on/off as true/false: quote the value")
        if isinstance(v, (int, float)):
            return str(v)
        raise _Mismatch(describe(tp))
    if origin in (list, tuple):
        items = [s.strip() for s in v.split(",") if s.strip()] if isinstance(v, str) else v
        if not isinstance(items, (list, tuple)):
            raise _Mismatch(describe(tp))
        item_type = args[0] if args else Any
        if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
            if len(items) != len(args):
                raise _Mismatch(describe(tp), f"expected {len(args)} values")
            return tuple(_to(a, x, ctx) for a, x in zip(args, items))
        out = [_to(item_type, x, ctx) for x in items]
        return tuple(out) if origin is tuple else out
    if dataclasses.is_dataclass(tp):
        if not isinstance(v, dict):
            raise _Mismatch(describe(tp))
        return tp(**coerce_mapping(tp, v, ctx[1], f"{ctx[0]}." if ctx[0] else ""))
    return v


def coerce(key: str, tp: Any, value: Any, source: str = "--config") -> Any:
    """``value`` as type ``tp``; a one-line :class:`RectokError` naming ``key`` (and ``source``) when it does not fit."""
    try:
        return _to(tp, value, (key, source))
    except _Mismatch as m:
        detail = f" ({m.detail})" if m.detail else ""
        raise RectokError(f"{source}: {key} expects {m.expected}, got {value!r}{detail}") from None


def coerce_mapping(cls: type, values: dict[str, Any], source: str = "--config", prefix: str = "") -> dict[str, Any]:
    """The entries of ``values`` that name fields of dataclass ``cls``, each coerced to its field's type (other
    keys pass through unchanged; checking them is the caller's job)."""
    hints = field_types(cls)
    return {k: coerce(prefix + k, hints[k], v, source) if k in hints else v for k, v in values.items()}
