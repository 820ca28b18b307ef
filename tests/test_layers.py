"""rectok_core is a stack of layers, measured from the source: no import from a lower layer to a higher one, no
import cycle, and only a handful of function-level imports of project modules, each with a one-line reason.
The README's architecture table lists the same layers (checked too)."""
from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "rectok_core"

#: Bottom to top: a module may import its own layer (without cycles) and the layers below it.
LAYERS = [
    ["errors", "config", "config_values", "utils"],
    ["flow", "models"],
    ["data", "losses", "teachers"],
    ["checkpoints"],
    ["training", "metrics", "sampling"],
    ["interop", "api", "tools"],
]
MAX_FUNCTION_LEVEL = 8


def _modules() -> dict[str, Path]:
    mods = {}
    for p in PKG.rglob("*.py"):
        parts = p.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        mods[name] = p
    return mods


def _layer(module: str) -> int | None:
    parts = module.split(".")
    if len(parts) < 2:
        return None  # the package root: the lazy facade over api (rectok_core.Tokenizer)
    top = parts[1]
    for i, names in enumerate(LAYERS):
        if top in names:
            return i
    raise AssertionError(f"{module} belongs to no layer: add its package to LAYERS and to the README table")


def _imports(mods: dict[str, Path]):
    """(module, line, imported module, function-level?, source line) for every project import."""
    for m, p in mods.items():
        src = p.read_text(encoding="utf-8")
        lines = src.splitlines()
        tree = ast.parse(src)
        pkg = m if p.name == "__init__.py" else m.rsplit(".", 1)[0]
        in_fn = set()
        for fn in ast.walk(tree):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                in_fn.update(id(n) for n in ast.walk(fn))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(pkg.split(".")[: len(pkg.split(".")) - node.level + 1] + ([base] if base else []))
                names = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
            for n in names:
                if n.startswith("rectok_cli"):
                    yield m, node.lineno, n, id(node) in in_fn, lines[node.lineno - 1]
                while n and n not in mods:
                    n = n.rsplit(".", 1)[0] if "." in n else ""
                if n and n != m:
                    yield m, node.lineno, n, id(node) in in_fn, lines[node.lineno - 1]


def test_no_upward_import_no_cli_import():
    mods = _modules()
    bad = []
    for m, line, n, _, _ in _imports(mods):
        if n.startswith("rectok_cli"):
            bad.append(f"{m}:{line} imports the CLI ({n})")
            continue
        if n == "rectok_core":
            continue
        lm, ln = _layer(m), _layer(n)
        if lm is not None and ln > lm:
            bad.append(f"{m}:{line} (layer {lm}) imports {n} (layer {ln})")
    assert not bad, "\n".join(bad)


def test_no_import_cycle():
    mods = _modules()
    edges: dict[str, set[str]] = {m: set() for m in mods}
    for m, _, n, _, _ in _imports(mods):
        if n in mods and n != "rectok_core":
            edges[m].add(n)
    state: dict[str, int] = {}
    cycles = []

    def visit(v: str, path: list[str]) -> None:
        state[v] = 1
        for w in sorted(edges[v]):
            if state.get(w) == 1:
                cycles.append(" -> ".join(path[path.index(w):] + [w]) if w in path else f"{v} -> {w}")
            elif w not in state:
                visit(w, path + [w])
        state[v] = 2

    for m in sorted(mods):
        if m not in state:
            visit(m, [m])
    assert not cycles, "\n".join(cycles)


def test_function_level_project_imports_are_few_and_explained():
    mods = _modules()
    found = sorted({(m, line, text.strip()) for m, line, n, fn, text in _imports(mods) if fn})
    unexplained = [f"{m}:{line}: {text}" for m, line, text in found if "#" not in text]
    assert not unexplained, "a function-level import needs a one-line reason (a trailing comment):\n" + "\n".join(
        unexplained)
    assert len(found) <= MAX_FUNCTION_LEVEL, "\n".join(f"{m}:{line}" for m, line, _ in found)


def test_readme_architecture_table_lists_the_layers():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| (\d) \| ([^|]+)\|", readme, flags=re.M)
    assert rows, "README has no layer table ('| N | packages |')"
    table = {int(i): set(re.findall(r"`([a-z_]+)`", names)) for i, names in rows}
    for i, names in enumerate(LAYERS):
        assert table.get(i) == set(names), (i, table.get(i), names)
