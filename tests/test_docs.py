"""Documentation integrity: recipe citations resolve to docs/recipe.md, and nothing points at a private folder.

Code and docs cite the recipe as "recipe <section sign>4.3"; each cited number must be a numbered heading of
docs/recipe.md. Users have neither the project's shared data folder nor the official spec, so no doc, option help
or default may refer to "../shared".
"""
from __future__ import annotations

import re
from pathlib import Path

from conftest import ROOT

SECTION = "\u00a7"  # the section sign, spelled out so this file cites nothing itself
CITATION = re.compile(SECTION + r"\s?(\d+(?:\.\d+)*)")
HEADING = re.compile(r"^#{2,4} (\d+(?:\.\d+)*)\.? ", re.MULTILINE)
RECIPE = Path(ROOT) / "docs" / "recipe.md"


def _text_files(*names: str, suffixes: tuple[str, ...]) -> list[Path]:
    files: list[Path] = []
    for name in names:
        path = Path(ROOT) / name
        if path.is_file():
            files.append(path)
        else:
            files.extend(p for p in sorted(path.rglob("*")) if p.is_file() and p.suffix in suffixes
                         and "__pycache__" not in p.parts)
    return files


def recipe_sections() -> set[str]:
    return set(HEADING.findall(RECIPE.read_text(encoding="utf-8")))


def citations(paths: list[Path]) -> list[tuple[str, int, str]]:
    """(file relative to the repository, line number, cited section) of every section-sign citation."""
    found = []
    for path in paths:
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            for number in CITATION.findall(line):
                found.append((str(path.relative_to(ROOT)), lineno, number))
    return found


def test_recipe_headings_are_numbered_like_the_spec():
    sections = recipe_sections()
    # the top-level sections 0..12 and the sub-sections code cites most
    assert {str(n) for n in range(13)} <= sections
    assert {"1.2", "1.6", "1.8", "3.2", "4.1", "4.4", "4.7", "5.1", "11.6", "11.9"} <= sections
    # every sub-section sits under a top-level section that exists
    assert all(s.split(".")[0] in sections for s in sections)


def test_citation_pattern():
    text = f"recipe {SECTION}4.3, {SECTION}11.6 and {SECTION} 2; {SECTION}1–3"
    assert CITATION.findall(text) == ["4.3", "11.6", "2", "1"]


def test_every_recipe_citation_resolves():
    files = _text_files("rectok_core", "rectok_cli", "tests", suffixes=(".py",))
    files += _text_files("README.md", "docs", suffixes=(".md",))
    found = citations(files)
    assert len(found) > 30, "the citation scan found almost nothing: is the pattern broken?"
    sections = recipe_sections()
    dangling = [f"{f}:{line}: {SECTION}{n}" for f, line, n in found if n not in sections]
    assert not dangling, "citations of sections docs/recipe.md does not have:\n" + "\n".join(dangling)


def test_no_private_paths_in_docs_or_defaults():
    files = _text_files("rectok_core", "rectok_cli", suffixes=(".py",))
    files += _text_files("README.md", "docs", suffixes=(".md", ".txt", ".rst"))
    assert any(p.name == "README.md" for p in files) and any(p.name == "recipe.md" for p in files)
    offending = [f"{p.relative_to(ROOT)}:{lineno}" for p in files
                 for lineno, line in enumerate(p.read_text(encoding="utf-8").splitlines(), start=1)
                 if "../shared" in line]
    assert not offending, "references to a folder users do not have:\n" + "\n".join(offending)
