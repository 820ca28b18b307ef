"""The README's set-up block is two complete commands, and CI runs the second one exactly as printed.

The first code block of README.md holds one line that installs rectok and runs the main job, and one that installs
it with the test extras and runs the suite. ``.ci/run`` must run that second line verbatim (same extras, same
runner), so what CI proves is what the README promises.
"""
from __future__ import annotations

import re
import shlex
from pathlib import Path

from conftest import ROOT

README = Path(ROOT) / "README.md"
CI = Path(ROOT) / ".ci" / "run"
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)


def first_block_commands(text: str) -> list[str]:
    """The commands of the first fenced code block of ``text``: its non-blank lines, comments left out."""
    match = FENCE.search(text)
    assert match, "README.md has no fenced code block"
    return [line.strip() for line in match.group(1).splitlines() if line.strip() and not line.lstrip().startswith("#")]


def ci_commands(text: str) -> list[str]:
    """The command lines of a shell script (blank lines and comments left out)."""
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_first_block_is_two_complete_commands() -> None:
    commands = first_block_commands(README.read_text(encoding="utf-8"))
    assert len(commands) == 2, commands
    main, tests = (shlex.split(c) for c in commands)
    # each line installs the project itself, then runs something: complete on a fresh machine
    for words in (main, tests):
        assert words[:5] == ["python3", "-m", "pip", "install", "-e"] and "&&" in words, words
        assert words[5].startswith("."), words
    assert main[5] == "." and main[main.index("&&") + 1:] == ["rectok", "train-tokenizer", "--preset", "tiny"]
    extras = re.fullmatch(r"\.\[(.*)\]", tests[5])
    assert extras and "test" in extras.group(1).split(","), tests
    assert tests[tests.index("&&") + 1:] == ["python3", "-m", "pytest", "-q"]


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    readme_test = first_block_commands(README.read_text(encoding="utf-8"))[1]
    script = ci_commands(CI.read_text(encoding="utf-8"))
    # the suite runs once, as the last step, through exactly the README's line
    assert script[-1] == readme_test
    assert sum("pytest" in line for line in script) == 1
    assert "set -euo pipefail" in script  # a failing lint or install stops CI before the line runs


def test_first_block_parser_sees_comments_and_blank_lines() -> None:
    text = "intro\n\n```bash\n# a comment\npip install x && run\n\n   \npytest -q\n```\n\n```bash\nlater\n```\n"
    assert first_block_commands(text) == ["pip install x && run", "pytest -q"]
    assert ci_commands("#!/bin/sh\n# c\n\nset -e\n  a && b\n") == ["set -e", "a && b"]
