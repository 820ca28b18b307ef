"""The ```python blocks of README.md run as written, on tiny models.

Placeholders replaced: ``models/rectok-decft.pt`` (tokenizer), ``models/ditdhxl_epoch_0599.pt`` (DiT),
``models/ditdhs_epoch_0029.pt`` (guide) and ``cat.jpg`` (an image).
"""
from __future__ import annotations

import re

import numpy as np
import pytest
from conftest import ROOT, make_image_folder
from interop_helpers import (
    DIT_HEADS,
    TOK_HEADS,
    official_dit_state,
    official_tokenizer_state,
    perturbed,
    tiny_dit,
    tiny_tokenizer,
    write_official,
)
from PIL import Image

from rectok_core.interop.official import import_official

pytestmark = pytest.mark.usefixtures("one_thread")

DOC = ROOT / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)


def test_the_doc_has_short_encode_sample_and_save_blocks():
    blocks = python_blocks()
    assert len(blocks) == 3
    assert all(len(b.strip().splitlines()) <= 4 for b in blocks)
    assert "encode" in blocks[0] and "decode" in blocks[0] and "sample" in blocks[1]
    assert all(s in blocks[2] for s in ("save_pretrained(", "push_to_hub(", "dry_run=True", ".to("))


@pytest.mark.slow
def test_python_blocks_run_on_tiny_models(tmp_path, monkeypatch):
    raw = official_tokenizer_state(tiny_tokenizer(semantic=False))
    write_official(tmp_path / "tok.pth", raw, perturbed(raw))
    dit = tiny_dit()
    write_official(tmp_path / "dit.pth", official_dit_state(dit), perturbed(official_dit_state(dit, False)))
    data = make_image_folder(tmp_path / "data", classes=3, per_class=3, size=40)
    tok = import_official(tmp_path / "tok.pth", tmp_path / "tok.pt", heads=TOK_HEADS).out
    common = dict(tokenizer=str(tok), data=str(data), stats_dir=str(tmp_path / "stats"), device="cpu", workers=0, heads=DIT_HEADS)
    xl = import_official(tmp_path / "dit.pth", tmp_path / "xl.pt", **common).out
    guide = import_official(tmp_path / "dit.pth", tmp_path / "s.pt", weights="raw", **common).out
    Image.fromarray(np.full((48, 40, 3), 120, np.uint8)).save(tmp_path / "cat.png")
    subs = {"models/rectok-decft.pt": tok, "models/ditdhxl_epoch_0599.pt": xl, "models/ditdhs_epoch_0029.pt": guide,
            "cat.jpg": tmp_path / "cat.png"}
    scope: dict = {}
    monkeypatch.chdir(tmp_path)
    for block in python_blocks():
        for placeholder, path in subs.items():
            block = block.replace(f'"{placeholder}"', repr(str(path)))
        exec(compile(block, str(DOC), "exec"), scope)
    assert scope["z"].shape == (1, 16, 8, 8) and scope["images"].shape == (8, 32, 32, 3)
    assert scope["images"].dtype == np.uint8 and scope["labels"] == [0, 1, 2, 0, 1, 2, 0, 1]
    saved = tmp_path / "export" / "my-tokenizer"
    assert sorted(p.name for p in saved.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    assert [name for name, _ in scope["files"]] == ["README.md", "config.json", "model.safetensors"]
    assert scope["gen"].device.type == "cpu" and "Generator(DiT^DH" in repr(scope["gen"])
