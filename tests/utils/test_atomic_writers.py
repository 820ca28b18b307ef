"""Every file a command writes goes through the one atomic writer, ``rectok_core.utils.files.atomic_open`` (or the
helpers built on it), so that no output is ever left half-written: checked on the source of ``rectok_core``."""
from __future__ import annotations

import ast
from pathlib import Path

from conftest import ROOT

#: Calls that write a file (attribute or function names).
WRITERS = {"save", "savefig", "savez", "savez_compressed", "write_text", "write_bytes", "tofile"}

#: Writes that are not whole output files, with the reason (file, a fragment of the line).
ALLOWED = {
    ("rectok_core/utils/files.py", 'probe.write_text("ok")'): "the writability probe of a folder, removed at once",
    ("rectok_core/training/logging.py", 'open(self.path, "a")'): "metrics.jsonl: a log appended one line at a time",
    ("rectok_core/tools/acceptance.py", 'open(log, "w")'): "the live log of a child process, streamed as it runs",
    ("rectok_core/models/inception_weights.py", "torch.save({}, empty)"): "into an in-memory buffer",
}


def _is_atomic(call: ast.expr) -> bool:
    return isinstance(call, ast.Call) and (getattr(call.func, "id", None) == "atomic_open"
                                           or getattr(call.func, "attr", None) == "atomic_open")


def _writes(call: ast.Call) -> bool:
    func = call.func
    if isinstance(func, ast.Attribute) and func.attr in WRITERS:
        return not (isinstance(func.value, ast.Name) and func.value.id == "self")
    if isinstance(func, ast.Name) and func.id == "open":
        mode = call.args[1] if len(call.args) > 1 else next((k.value for k in call.keywords if k.arg == "mode"), None)
        return isinstance(mode, ast.Constant) and any(c in str(mode.value) for c in "wax")
    return False


def direct_writes(path: Path) -> list[tuple[int, str]]:
    """``(line, source line)`` of each file write in ``path`` that is not inside a ``with atomic_open(...)``."""
    source = path.read_text(encoding="utf-8")
    lines = source.splitlines()
    found = []

    def visit(node: ast.AST, atomic: bool) -> None:
        if isinstance(node, (ast.With, ast.AsyncWith)):
            atomic = atomic or any(_is_atomic(item.context_expr) for item in node.items)
        if isinstance(node, ast.Call) and not atomic and _writes(node):
            found.append((node.lineno, lines[node.lineno - 1].strip()))
        for child in ast.iter_child_nodes(node):
            visit(child, atomic)

    visit(ast.parse(source), False)
    return found


def test_every_output_file_is_written_atomically() -> None:
    root = Path(ROOT)
    offenders = []
    for path in sorted((root / "rectok_core").rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        for lineno, line in direct_writes(path):
            if not any(rel == f and fragment in line for f, fragment in ALLOWED):
                offenders.append(f"{rel}:{lineno}: {line}")
    assert not offenders, "write these through rectok_core.utils.files.atomic_open:\n" + "\n".join(offenders)


def test_the_scan_finds_direct_writes(tmp_path: Path) -> None:
    src = tmp_path / "m.py"
    src.write_text("def f(p, fig, im):\n"
                   "    fig.savefig(p)\n"
                   "    with atomic_open(p, 'wb') as f:\n"
                   "        im.save(f, format='PNG')\n"
                   "    with open(p, 'w') as g:\n"
                   "        g.write('x')\n"
                   "    with open(p) as h:\n"
                   "        h.read()\n"
                   "    p.write_text('y')\n")
    assert [n for n, _ in direct_writes(src)] == [2, 5, 9]
