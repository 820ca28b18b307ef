"""``--help`` at 80 columns: every option name, flag and choice appears whole, and no line is wider than 80."""
from __future__ import annotations

import re

import typer
from typer.testing import CliRunner

from rectok_cli.main import app

runner = CliRunner()


def whole(word: str, text: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(word)}(?![\w-])", text) is not None


def test_help_at_80_columns_keeps_every_option_name_and_choice_whole():
    group = typer.main.get_command(app)
    checked = 0
    for name, cmd in sorted(group.commands.items()):
        r = runner.invoke(app, [name, "--help"], env={"COLUMNS": "80"})
        assert r.exit_code == 0, (name, r.output[-500:])
        lines = r.output.splitlines()
        assert max(len(line) for line in lines) <= 80, (name, max(lines, key=len))
        # a choice list {a|b|c} may continue on the next line after a "|": join those lines back
        text = re.sub(r"\|\n\s+", "|", r.output)
        for param in cmd.params:
            for flag in [*param.opts, *param.secondary_opts]:
                if flag.startswith("-"):
                    assert whole(flag, r.output), (name, flag)
                    checked += 1
            lists = re.findall(r"\{([^{}]+)\}", param.help or "")
            for choice in (c for lst in lists for c in lst.split("|")):
                assert whole(choice, text), (name, param.name, choice)
    assert checked > 200
    dit = runner.invoke(app, ["train-dit", "--help"], env={"COLUMNS": "80"}).output
    assert all(whole(f, dit) for f in ("--width", "--depth", "--heads", "--head-width", "--head-depth",
                                       "--head-heads"))
    assert "tiny: 64" in dit  # the shape options show each preset's value
