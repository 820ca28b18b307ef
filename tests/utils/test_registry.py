"""The shared registry (``rectok_core.utils.registry``): unique names, one-line errors, lazy declared entries, and
every plug-in table of the library built on it."""
from __future__ import annotations

import sys
import types

import pytest

from rectok_core.errors import RectokError
from rectok_core.utils.registry import Registry


def test_names_are_unique_and_ordered() -> None:
    reg: Registry[int] = Registry("widget", option="--widget")
    assert reg.add("a", 1, "first") == 1
    reg.add("b", 2, "second")
    assert reg.names() == ("a", "b") == tuple(reg) and len(reg) == 2 and "a" in reg and "c" not in reg
    assert reg["b"] == 2 and reg.items() == [("a", 1), ("b", 2)] and reg.values() == [1, 2]
    assert reg.help("widgets") == "widgets: a = first; b = second"
    assert reg.help("only", ["b"]) == "only: b = second"
    with pytest.raises(ValueError, match="widget 'a' is registered twice"):
        reg.add("a", 3)
    with pytest.raises(ValueError, match="non-empty word"):
        reg.add("two words", 3)
    with pytest.raises(RectokError, match=r"^unknown --widget 'c'; choose one of a, b$"):
        reg.get("c")
    with pytest.raises(RectokError, match="unknown --widget 'c'"):
        reg.description("c")


def test_declared_entries_load_their_module_on_first_lookup(monkeypatch: pytest.MonkeyPatch) -> None:
    reg: Registry[str] = Registry("gadget")
    module = types.ModuleType("fake_gadgets")
    imports = []

    def exec_module() -> None:  # what importing the module does, once per process: register its entries
        if not imports:
            reg.add("g1", "entry one")
        imports.append(1)

    monkeypatch.setitem(sys.modules, "fake_gadgets", module)
    monkeypatch.setattr("importlib.import_module", lambda name: exec_module() or module)
    reg.declare("g1", "fake_gadgets", "the first gadget")
    reg.declare("g2", "fake_gadgets", "declared, never registered")
    with pytest.raises(ValueError, match="registered twice"):
        reg.declare("g1", "elsewhere", "again")
    # names, descriptions and help need no import
    assert reg.names() == ("g1", "g2") and reg.description("g2") == "declared, never registered" and not imports
    assert reg["g1"] == "entry one" and imports == [1] and reg.description("g1") == "the first gadget"
    assert reg["g1"] == "entry one" and imports == [1]  # loaded: no second import
    with pytest.raises(ValueError, match="fake_gadgets does not register the gadget 'g2' it declares"):
        reg.get("g2")


def test_a_registration_keeps_its_declared_description() -> None:
    reg: Registry[int] = Registry("thing")
    reg.declare("t", "nowhere", "declared help")
    with pytest.raises(ValueError, match="description differs from its declaration"):
        reg.add("t", 1, "other help")
    reg.add("t", 1)
    assert reg.description("t") == "declared help" and reg["t"] == 1
    with pytest.raises(ValueError, match="registered twice"):
        reg.add("t", 2)


def test_copy_is_independent() -> None:
    reg: Registry[int] = Registry("thing")
    reg.add("x", 1, "x help")
    other = reg.copy()
    other.add("y", 2, "y help")
    assert other.names() == ("x", "y") and reg.names() == ("x",) and other.description("x") == "x help"


def test_every_library_registry_uses_the_shared_shape() -> None:
    from rectok_core.checkpoints import KINDS
    from rectok_core.data import READERS
    from rectok_core.flow import SOLVERS
    from rectok_core.models.families import FAMILIES
    from rectok_core.teachers import TEACHERS

    for reg in (TEACHERS, SOLVERS, READERS, KINDS, FAMILIES):
        assert isinstance(reg, Registry) and len(reg) > 0
        for name, entry in reg.items():  # every declared entry is registered by the module its line names
            assert entry.name == name and reg.description(name)
