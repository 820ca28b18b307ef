"""``rectok bench --acceptance``: the CPU-sized run end to end, the time-boxing, the pieces."""
from __future__ import annotations

import json
import sys
import time

import numpy as np
import pytest
from conftest import ROOT
from PIL import Image
from typer.testing import CliRunner

from rectok_core.tools import acceptance as acc
from rectok_core.tools.acceptance import AcceptanceConfig, junit_counts, make_shapes_folder, run_command

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.slow
def test_cpu_acceptance_runs_every_part_and_writes_one_json(tmp_path):
    cfg = AcceptanceConfig(out=str(tmp_path / "acc"), device="cpu", budget_s=110, timed_steps=1, warmup=1,
                           train_steps=4, dit_steps=2, sample_images=8)
    doc = acc.run_acceptance(cfg)
    saved = json.loads((tmp_path / "acc" / "acceptance.json").read_text())
    assert saved == json.loads(json.dumps(doc, default=str))
    assert saved["format"] == "rectok-acceptance" and saved["finished"] and saved["targets_judged"] is False
    tests = saved["parts"]["cuda_tests"]
    n_cuda_tests = sum(1 for _ in (ROOT / "tests" / "cuda").glob("test_*.py"))
    assert n_cuda_tests >= 1 and tests["status"] == "skipped"
    assert tests["counts"]["passed"] == tests["counts"]["failed"] == 0 and tests["counts"]["skipped"] > 0
    assert all("CUDA" in reason for reason in tests["skip_reasons"])
    bench = saved["parts"]["bench"]
    assert bench["status"] == "ok", bench.get("error")
    assert [(r["workload"], r.get("model")) for r in bench["records"]] == [
        *((name, None) for name in acc.TARGETS), ("generator-train", "lightningdit-tiny"),
        ("generator-sample", "lightningdit-tiny")]
    for r in bench["records"]:
        if r["target"] is not None:
            assert r["ratio"] == pytest.approx(r["img_per_s"] / r["target"])
        assert r["passed"] is None and r["img_per_s"] > 0 and r["flops_per_image"] > 0
        assert r["batch_size"] == acc.CPU_BENCH["batch"][r["workload"]] and r["peak_memory_bytes"] > 0
    real = saved["parts"]["real_run"]
    assert real["status"] == "ok" and list(real["steps"]) == ["train-tokenizer", "train-dit", "sample"]
    assert real["steps"]["train-tokenizer"]["adamw"] == "fused" and real["steps"]["sample"]["images"] == 8
    assert all((tmp_path / "acc" / s["log"]).is_file() for s in real["steps"].values())
    assert saved["summary"] == {"parts": {"cuda_tests": "skipped", "bench": "ok", "real_run": "ok"},
                                "targets_met": None, "ok": True}


def test_a_failing_part_is_recorded_and_the_next_part_still_runs(tmp_path, monkeypatch):
    out = tmp_path / "acc"
    seen = {}

    def broken(*args):
        raise RuntimeError("boom")

    def real_run(cfg, dev, deadline, logs):
        seen["on_disk"] = json.loads((out / "acceptance.json").read_text())["parts"]["bench"]
        seen["left"] = deadline - time.monotonic()
        return {"status": "ok", "steps": {}}

    monkeypatch.setattr(acc, "part_bench", broken)
    monkeypatch.setattr(acc, "part_real_run", real_run)
    doc = acc.run_acceptance(AcceptanceConfig(out=str(out), device="cpu", budget_s=50, parts="bench,real_run"))
    assert doc["parts"]["bench"]["status"] == "failed" and "RuntimeError: boom" in doc["parts"]["bench"]["error"]
    assert seen["on_disk"]["status"] == "failed"  # written before the next part started
    assert 0 < seen["left"] <= 50  # the last part gets what is left of the budget
    assert doc["parts"]["real_run"]["status"] == "ok" and doc["summary"]["ok"] is False
    with pytest.raises(acc.RectokError, match="unknown acceptance part 'gpu'"):
        acc.run_acceptance(AcceptanceConfig(out=str(out), device="cpu", parts="gpu"))


def test_bench_part_stops_at_its_deadline(monkeypatch):
    doc = acc.part_bench(acc._defaults(AcceptanceConfig(device="cpu"), False), acc.torch.device("cpu"),
                         time.monotonic() - 1, lambda state: None)
    assert doc["status"] == "timeout" and [r["status"] for r in doc["records"]] == ["timeout"] * 5


def test_run_command_kills_the_process_group_at_the_deadline(tmp_path):
    marker = tmp_path / "child-alive"
    child = tmp_path / "child.py"
    child.write_text(f"import time\ntime.sleep(3)\nopen({str(marker)!r}, 'w').close()\n")
    parent = tmp_path / "parent.py"
    parent.write_text(f"import subprocess, sys, time\nsubprocess.Popen([sys.executable, {str(child)!r}])\n"
                      "time.sleep(30)\n")
    res = run_command([sys.executable, str(parent)], 1.5, tmp_path / "logs" / "x.log")
    assert res["status"] == "timeout" and "killed after 2 s" in res["error"]
    time.sleep(3.5)
    assert not marker.exists()  # the grandchild went with its group
    ok = run_command([sys.executable, "-c", "print('hi')"], 20, tmp_path / "logs" / "y.log")
    assert ok["status"] == "ok" and ok["log"] == "logs/y.log" and "hi" in (tmp_path / "logs" / "y.log").read_text()
    bad = run_command([sys.executable, "-c", "raise SystemExit(3)"], 20, tmp_path / "logs" / "z.log")
    assert bad["status"] == "failed" and bad["error"] == "exit status 3"
    assert run_command(["true"], 0.5, tmp_path / "logs" / "w.log")["status"] == "timeout"


def test_junit_counts(tmp_path):
    xml = tmp_path / "j.xml"
    xml.write_text("""<?xml version="1.0"?><testsuites><testsuite name="pytest">
      <testcase classname="t" name="a"/><testcase classname="t" name="b"><failure message="assert 1 == 2"/></testcase>
      <testcase classname="t" name="c"><skipped message="needs a CUDA GPU"/></testcase>
      <testcase classname="t" name="d"><skipped message="needs a CUDA GPU"/></testcase>
      <testcase classname="t" name="e"><error message="fixture"/></testcase></testsuite></testsuites>""")
    res = junit_counts(xml)
    assert res["counts"] == {"passed": 1, "failed": 1, "errors": 1, "skipped": 2}
    assert res["failures"][0] == {"test": "t::b", "message": "assert 1 == 2"}
    assert res["skip_reasons"] == {"needs a CUDA GPU": 2}


def test_shapes_folder(tmp_path):
    root = make_shapes_folder(tmp_path / "d", size=64, classes=4, per_class=3)
    files = sorted(root.rglob("*.png"))
    assert len(files) == 12 and sorted(p.name for p in root.iterdir()) == [f"class{c}" for c in range(4)]
    imgs = [np.asarray(Image.open(f)) for f in files]
    assert all(a.shape == (64, 64, 3) for a in imgs) and all(a.std() > 5 for a in imgs)
    stripes = np.asarray(Image.open(root / "class2" / "img000.png")).astype(float)
    assert stripes.std(axis=1).mean() < stripes.std(axis=0).mean()  # horizontal stripes: rows are near-constant


def test_cli_flag_runs_the_acceptance(tmp_path, monkeypatch):
    from rectok_cli.main import app

    got = {}

    def fake(cfg, on_part=None):
        got["cfg"] = cfg
        return {"device": {"name": "cpu"}, "torch": "x", "elapsed_s": 1.0, "budget_s": 5.0, "targets_judged": False,
                "parts": {"bench": {"status": "ok", "wall_s": 1.0, "records": [
                    {"workload": "dit-cached", "batch_size": 8, "status": "ok", "img_per_s": 10.0, "unit": "img/s",
                     "mfu": 0.5, "peak_memory_bytes": 2 ** 30, "warmup_s": 0.1, "target": 450.0, "ratio": 0.02,
                     "passed": None}]}}}

    monkeypatch.setattr(acc, "run_acceptance", fake)
    r = CliRunner().invoke(app, ["bench", "--acceptance", "--out", str(tmp_path / "a"), "--device", "cpu",
                                 "--acceptance-budget", "5", "--acceptance-parts", "bench"])
    assert r.exit_code == 0, r.output
    assert (got["cfg"].out, got["cfg"].device, got["cfg"].budget_s, got["cfg"].parts) == (
        str(tmp_path / "a"), "cpu", 5.0, "bench")
    assert "dit-cached b8" in r.output and "≥ 450 (×0.02)" in r.output
    r = CliRunner().invoke(app, ["bench", "--acceptance", "--acceptance-parts", "gpu"])
    assert r.exit_code == 1 and "unknown acceptance part 'gpu'" in r.output
