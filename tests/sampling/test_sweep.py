"""`rectok sweep` (issue 20): one sample folder per guidance scale, each evaluated; the table, the plot and the best
scale; a rerun regenerates and re-evaluates nothing; --final-n samples the full set at the best scale."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from conftest import make_image_folder
from PIL import Image
from typer.testing import CliRunner

from rectok_cli.main import app
from rectok_core.checkpoints import open_checkpoint
from rectok_core.config import build_config, from_flags
from rectok_core.errors import RectokError
from rectok_core.metrics.fid import save_stats
from rectok_core.models.inception import FEATURE_DIM
from rectok_core.sampling.sweep import sweep
from rectok_core.sampling.sweep_config import SweepConfig
from rectok_core.training.config import TOKENIZER_PRESETS, TokenizerTrainConfig
from rectok_core.training.dit import train_dit
from rectok_core.training.dit_config import DIT_TRAIN_PRESETS, DiTTrainConfig
from rectok_core.training.tokenizer import train_tokenizer
from rectok_core.utils import checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")
runner = CliRunner()


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("sweep")


@pytest.fixture(scope="module")
def dit_ckpt(work):
    data = make_image_folder(work / "data", classes=2, per_class=8, size=32)
    tok = train_tokenizer(build_config(TokenizerTrainConfig, TOKENIZER_PRESETS, "tiny", dict(
        teacher="none", steps=2, batch_size=8, data=str(data), out=str(work / "tok"), workers=0, device="cpu",
        eval_every=0)))
    tok = _randomised(tok, "ema", work / "random-tok.pt")  # a decoder whose images depend on the latents
    path = train_dit(build_config(DiTTrainConfig, DIT_TRAIN_PRESETS, "tiny", dict(
        tokenizer=str(tok), data=str(data), out=str(work / "dit"), steps=2, batch_size=8, device="cpu", workers=0,
        stats_dir=str(work / "stats"), eval_every=0)))
    return _randomised(path, "ema", work / "random-dit.pt")  # two steps leave the class conditioning at ~0


def _randomised(path, part, out):
    """A copy of checkpoint ``path`` with noise added to its ``part`` weights (a tiny random model)."""
    ck = open_checkpoint(path)
    gen = torch.Generator().manual_seed(0)
    for v in ck[part].values():
        if v.is_floating_point():
            v += 0.05 * torch.randn(v.shape, generator=gen)
    checkpoint.save_atomic(ck, out)
    return out


@pytest.fixture(scope="module")
def ref_stats(work):
    feats = np.random.default_rng(1).gamma(1.0, 0.3, (12, FEATURE_DIM))  # low rank: a cheap FID
    return save_stats(work / "ref.npz", feats.mean(0), np.cov(feats, rowvar=False))


def settings(out, ref, **kw):
    return from_flags(SweepConfig, dict(scales="1.0,1.5,3", n=4, steps=3, out=str(out), ref_stats=str(ref),
                                        device="cpu", batch_size=4, **kw))


def test_sweep_writes_folders_table_plot_and_resumes(work, dit_ckpt, ref_stats):
    out = work / "sweep"
    res = sweep(str(dit_ckpt), settings(out, ref_stats))
    folders = [out / "scale_1", out / "scale_1.5", out / "scale_3"]
    assert [r.folder for r in res.rows] == [str(f) for f in folders] and [r.scale for r in res.rows] == [1, 1.5, 3]
    for f, r in zip(folders, res.rows):
        assert sorted(p.name for p in (f / "samples").iterdir()) == [f"{i:06d}.png" for i in range(4)]
        ev = json.loads((f / "eval.json").read_text())
        assert ev["metrics"]["fid"] == r.fid and ev["manifest"]["generator"]["guidance"]["scale"] == r.scale
        assert r.generated == 4 and r.evaluated
    assert len({r.fid for r in res.rows}) == 3  # the scales change the samples
    assert res.best.fid == min(r.fid for r in res.rows)
    doc = json.loads((out / "sweep.json").read_text())
    assert doc["best"] == {"scale": res.best.scale, "fid": res.best.fid} and len(doc["rows"]) == 3
    table = list(csv.DictReader((out / "sweep.csv").open()))
    assert [float(t["fid"]) for t in table] == pytest.approx([r.fid for r in res.rows], abs=1e-4)
    md = (out / "sweep.md").read_text()
    assert "**best**" in next(line for line in md.splitlines() if line.startswith(f"| {res.best.scale:g} |"))
    with Image.open(out / "sweep.png") as im:
        assert im.size[0] > 300 and im.size[1] > 200

    stamps = {p: p.stat().st_mtime_ns for f in folders for p in [*(f / "samples").iterdir(), f / "eval.json"]}
    r = runner.invoke(app, ["sweep", str(dit_ckpt), "--scales", "1.0,1.5,3", "-n", "4", "--steps", "3", "--out",
                            str(out), "--ref-stats", str(ref_stats), "--device", "cpu", "--batch-size", "4",
                            "--final-n", "5"], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # nothing regenerated or re-evaluated
    assert f"best scale {res.best.scale:g}" in r.output and "final" in r.output
    again = json.loads((out / "sweep.json").read_text())
    assert [row["generated"] for row in again["rows"]] == [0, 0, 0]
    assert [row["evaluated"] for row in again["rows"]] == [False, False, False]
    final = out / f"final_scale_{res.best.scale:g}"
    assert again["final"]["n"] == 5 and again["final"]["folder"] == str(final)
    assert len(list((final / "samples").glob("*.png"))) == 5 and (final / "eval.json").is_file()


@pytest.mark.parametrize("flags, message", [
    (dict(scales="1.0,abc"), "'abc' is not a number"),
    (dict(scales=""), "--scales is empty"),
    (dict(scales="1,-2"), "must be a finite number >= 0"),
    (dict(scales="1,inf"), "must be a finite number >= 0"),
    (dict(scales="1.2,1.20"), "are the same scale"),
    (dict(cfg="none"), "--cfg none has no guidance scale"),
    (dict(cfg="autoguidance"), "--cfg autoguidance needs --guide"),
    (dict(ref_stats=""), "give exactly one reference"),
    (dict(ref_data="imgs"), "give exactly one reference"),
    (dict(final_n=-1), "--final-n"),
    (dict(eval_batch_size=0), "--eval-batch-size"),
])
def test_bad_sweep_settings_are_one_line_errors(tmp_path, flags, message):
    base = dict(scales="1,1.5", ref_stats="ref.npz")
    with pytest.raises(RectokError) as e:
        from_flags(SweepConfig, {**base, **flags})
    assert message in str(e.value) and "\n" not in str(e.value)


def test_cli_bad_scale_list_is_one_line(tmp_path):
    r = runner.invoke(app, ["sweep", "dit.pt", "--scales", "1.0,x", "--ref-stats", "ref.npz", "--out",
                            str(tmp_path / "s")])
    assert r.exit_code != 0
    lines = [line for line in r.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "--scales" in lines[0], r.output
