"""Named registries: the one shape of every plug-in table (teachers, ODE solvers, dataset readers).

A :class:`Registry` maps unique names to entries; registering a name twice is an error. A package declares its
entries in its ``__init__``, one line each (:meth:`Registry.declare`: the name, the module that registers it, a
one-line description), so the names and descriptions -- the CLI's choices and help -- are known without importing
those modules, which may need torch. A declared module is imported the first time one of its entries is looked
up; when imported it registers its entries with :meth:`Registry.add`. This module imports nothing heavy.
"""
from __future__ import annotations

import importlib
from collections.abc import Iterable, Iterator
from typing import Generic, TypeVar

from rectok_core.errors import RectokError

T = TypeVar("T")


class Registry(Generic[T]):
    """Entries of one ``kind`` by name, in declaration/registration order.

    ``option`` names the user-facing setting in the error for an unknown name (``--teacher``); it defaults to
    ``kind``. Iterating, ``in``, ``len``, :meth:`names`, :meth:`description` and :meth:`help` import nothing;
    :meth:`get` (also ``registry[name]``), :meth:`items` and :meth:`values` import the declaring modules.
    """

    def __init__(self, kind: str, option: str = "") -> None:
        self.kind = kind
        self.option = option or kind
        self._entries: dict[str, T] = {}
        self._modules: dict[str, str] = {}
        self._about: dict[str, str] = {}

    def _check_new(self, name: str) -> None:
        if not name or name != name.strip() or " " in name:
            raise ValueError(f"{self.kind} name must be a non-empty word, got {name!r}")
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is registered twice")

    def declare(self, name: str, module: str, description: str) -> None:
        """Declare entry ``name``, registered by ``module`` when that module is imported; ``description`` is its
        one-line help."""
        self._check_new(name)
        if name in self._about:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._modules[name] = module
        self._about[name] = description

    def add(self, name: str, entry: T, description: str = "") -> T:
        """Register ``entry`` as ``name`` and return it. A declared name keeps its declared description
        (``description``, if given, must match it); an undeclared one is appended with ``description``."""
        self._check_new(name)
        if name in self._about and name not in self._modules:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        if name in self._modules and description and description != self._about[name]:
            raise ValueError(f"{self.kind} {name!r}: description differs from its declaration")
        self._about.setdefault(name, description)
        self._entries[name] = entry
        return entry

    def names(self) -> tuple[str, ...]:
        """Every name, declared or registered, in order (imports nothing)."""
        return tuple(self._about)

    def description(self, name: str) -> str:
        """The one-line description of ``name`` (imports nothing)."""
        if name not in self._about:
            raise self._unknown(name)
        return self._about[name]

    def help(self, lead: str, names: Iterable[str] | None = None) -> str:
        """A help text: ``lead``, then ``name = description`` for ``names`` (default: all), ``; ``-separated."""
        return f"{lead}: " + "; ".join(f"{n} = {self.description(n)}" for n in (self.names() if names is None
                                                                               else names))

    def get(self, name: str) -> T:
        """The entry ``name``, importing its declaring module on first use; a one-line :class:`RectokError`
        listing the known names when ``name`` is unknown."""
        if name not in self._entries:
            if name not in self._modules:
                raise self._unknown(name)
            importlib.import_module(self._modules[name])
            if name not in self._entries:
                raise ValueError(f"{self._modules[name]} does not register the {self.kind} {name!r} it declares")
        return self._entries[name]

    def _unknown(self, name: str) -> RectokError:
        return RectokError(f"unknown {self.option} {name!r}; choose one of {', '.join(self._about)}")

    def items(self) -> list[tuple[str, T]]:
        """``(name, entry)`` for every name, in order (imports every declaring module)."""
        return [(n, self.get(n)) for n in self.names()]

    def values(self) -> list[T]:
        """Every entry, in order (imports every declaring module)."""
        return [entry for _, entry in self.items()]

    def copy(self) -> Registry[T]:
        """An independent registry with the same entries, all loaded (e.g. to register temporary ones)."""
        other: Registry[T] = Registry(self.kind, self.option)
        for name, entry in self.items():
            other.add(name, entry, self._about[name])
        return other

    def __getitem__(self, name: str) -> T:
        return self.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._about

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._about)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self._about)})"
