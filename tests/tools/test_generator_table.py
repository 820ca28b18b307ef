"""README's table of generator families and sizes equals what ``tools/generator_table.py`` prints: one row per
registered family and size, in the script's order and format, with the parameters and forward GFLOPs of each model.

Counting an XL model's forward pass takes seconds even on the meta device, so every row is checked from two cheap
builds: parameters and FLOPs are affine in the trunk depth (identical blocks), so the counts at depth 1 and 2
give them at any depth exactly. The tiny rows are also made by the script itself."""
from __future__ import annotations

import importlib.util
import re

import pytest
from conftest import ROOT

from rectok_core.models.generators import GENERATORS, config_fields

pytestmark = pytest.mark.usefixtures("one_thread")


def _script():
    spec = importlib.util.spec_from_file_location("generator_table", ROOT / "tools" / "generator_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gt = _script()


def readme_block() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert text.count(gt.BEGIN) == 1 and text.count(gt.END) == 1, "README lacks the generator-table markers"
    return text.split(gt.BEGIN)[1].split(gt.END)[0].strip().splitlines()


def test_readme_has_one_row_per_family_and_size_in_the_scripts_order():
    lines = readme_block()
    assert "\n".join(lines[:2]) == gt.HEADER
    names = [re.match(r"\| `([^`]+)` \|", line).group(1) for line in lines[2:]]
    expected = [GENERATORS[f].model_name(s) for f, s in gt.models()]
    assert names == expected
    assert {n.rsplit("-", 1)[0] for n in names} == set(GENERATORS.names())
    assert {"dit-dh-xl", "lightningdit-xl", "sit-xl", "dit-xl"} <= set(names)


def test_readme_rows_equal_the_counts():
    rows = dict(zip([GENERATORS[f].model_name(s) for f, s in gt.models()], readme_block()[2:]))
    C, h, _ = gt.LATENT
    for family, size in gt.models():
        fields = config_fields(family, size, C, h, gt.NUM_CLASSES, 0.1)
        one, two = gt.row(family, size, depth=1), gt.row(family, size, depth=2)
        d = fields["depth"]
        made = {**one, "shape": gt.shape(GENERATORS[family].config_class(**fields)),
                "params": one["params"] + (d - 1) * (two["params"] - one["params"]),
                "flops": one["flops"] + (d - 1) * (two["flops"] - one["flops"])}
        assert gt.format_row(made) == rows[made["model"]], made["model"]
    for family in GENERATORS.names():  # the script's own rows, at full depth
        assert gt.format_row(gt.row(family, "tiny")) == rows[f"{family}-tiny"]


def test_table_and_write_round_trip(tmp_path):
    rows = [gt.row("sit", "tiny")]
    doc = tmp_path / "README.md"
    doc.write_text(f"intro\n{gt.BEGIN}\nold\n{gt.END}\noutro\n", encoding="utf-8")
    gt.write(doc, gt.table(rows))
    assert doc.read_text(encoding="utf-8") == f"intro\n{gt.table(rows)}\noutro\n"
    assert rows[0]["official"] == [] and gt.format_row(rows[0]).startswith("| `sit-tiny` | — | 32 × 2, 2 |")
    assert gt.row("sit", "xl", depth=1)["official"] == ["SiT_xl"]
