"""``rectok --help`` and ``--version`` need no torch: importing the CLI loads none of the heavy stacks, and the
top-level help still lists every command (the modules register them when imported)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import typer

from rectok_cli.main import app

HEAVY = ("torch", "numpy", "PIL", "scipy", "sklearn", "timm", "torchvision", "lpips", "torch_fidelity")


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_importing_the_cli_loads_no_torch():
    r = _python("import json, sys, rectok_cli.main; print(json.dumps(sorted(sys.modules)))")
    assert r.returncode == 0, r.stderr
    loaded = set(json.loads(r.stdout))
    assert "rectok_cli.main" in loaded
    assert not [m for m in HEAVY if m in loaded]


def test_help_and_version_run_without_torch_and_list_every_command():
    code = ("import sys\nfrom rectok_cli.main import main\nsys.argv = ['rectok'] + sys.argv[1:]\n"
            "try:\n    main()\nexcept SystemExit as e:\n    code = e.code\n"
            "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH', code)\n")
    names = [c.name for c in app.registered_commands]
    assert len(set(names)) == len(names)
    assert {"train-tokenizer", "finetune-decoder", "probe-flow", "cache-latents", "train-dit", "sample", "eval-samples",
            "fid-stats", "eval", "bench", "reproduce", "import-official", "latent-stats", "export", "push"} <= set(names)
    for args in (["--help"], ["--version"], ["train-tokenizer", "--help"], ["sample", "--help"]):
        r = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120,
                           env={**os.environ, "COLUMNS": "200"})
        assert r.returncode == 0, r.stderr
        assert r.stdout.rstrip().endswith("NO-TORCH 0"), (args, r.stdout[-300:])
        if args == ["--help"]:
            listed = r.stdout.split("Commands")[1]
            assert [n for n in names if f" {n} " not in listed] == []
        if args == ["--version"]:
            assert r.stdout.startswith("rectok ")
    group = typer.main.get_command(app)
    assert sorted(group.commands) == sorted(names)
