"""probe-flow over tokenizers of several families in one run: one table, one JSON, one figure, a curve each."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from rectok_cli.main import app

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "models"))
from test_families import diffusers_file, ldm_file, rectok_file  # noqa: E402

runner = CliRunner()
pytestmark = pytest.mark.usefixtures("one_thread")


def test_probe_flow_takes_tokenizers_of_several_families_at_once(tmp_path):
    specs = [f"sd-vae:{diffusers_file('sd-vae', tmp_path)}", f"mar-kl16:{ldm_file('mar-kl16', tmp_path)}"]
    out = tmp_path / "probe"
    r = runner.invoke(app, ["probe-flow", *specs, "--data", "digits", "--image-size", "32", "--per-class", "12",
                            "--val-per-class", "6", "--t-grid", "0,0.5,1", "--workers", "0", "--device", "cpu",
                            "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "sd-vae:sd-vae" in r.output and "mar-kl16:mar-kl16" in r.output and "chance" in r.output
    report = json.loads((out / "probe.json").read_text())
    a, b = report["checkpoints"]
    assert (a["family"], a["dim"], a["grid"], a["image_size"]) == ("sd-vae", 4, [16, 16], 32)
    assert (b["family"], b["dim"], b["grid"], b["image_size"]) == ("mar-kl16", 16, [2, 2], 32)
    for c in (a, b):
        assert (c["n_train"], c["n_val"], c["num_classes"]) == (120, 60, 10) and len(c["sha256"]) == 64
        assert [p["t"] for p in c["results"]] == [0.0, 0.5, 1.0] and c["chance_check"]["passed"]
        assert c["path"] == str(Path(specs[report["checkpoints"].index(c)].split(":", 1)[1]).resolve())
    with Image.open(out / "probe.png") as im:
        assert im.format == "PNG"


def test_family_tokenizers_follow_the_first_rectok_checkpoint_and_need_data_without_one(tmp_path):
    tok = rectok_file(tmp_path)
    sd = f"sd-vae:{diffusers_file('sd-vae', tmp_path)}"
    out = tmp_path / "probe"
    r = runner.invoke(app, ["probe-flow", sd, str(tok), "--per-class", "4", "--val-per-class", "2", "--t-grid",
                            "0,1", "--workers", "0", "--device", "cpu", "--out", str(out)])
    assert r.exit_code == 0, r.output  # the data comes from the RecTok checkpoint, though it is second
    fam, rec = json.loads((out / "probe.json").read_text())["checkpoints"]
    assert fam["image_size"] == rec["image_size"] and (fam["family"], rec["family"]) == ("sd-vae", "rectok")
    r = runner.invoke(app, ["probe-flow", sd, "--t-grid", "0,1", "--out", str(tmp_path / "p2")])
    assert r.exit_code == 1 and "give --data" in r.output and "Traceback" not in r.output
