"""``rectok bench`` over the generator families (issue 19): every family's tiny size on CPU through the CLI, the
FLOP counts against the forward pass, ``--models`` names and bad input, and the acceptance's LightningDiT part."""
from __future__ import annotations

import json
import math

import pytest
import torch
from rich.console import Console
from typer.testing import CliRunner

from rectok_cli.acceptance import show_acceptance
from rectok_cli.main import app
from rectok_core.flow.objectives import OBJECTIVES
from rectok_core.models.generators import GENERATORS, build_generator
from rectok_core.sampling.eta import forward_flops
from rectok_core.tools import acceptance as acc
from rectok_core.tools.config import BenchConfig

runner = CliRunner()

pytestmark = pytest.mark.usefixtures("one_thread")


def finite_positive(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def test_cli_bench_times_every_family_on_cpu(tmp_path):
    """Default --models on CPU: each family's tiny size, a training and a sampling record each, finite rates and
    counted FLOPs; a CFG step is exactly two forward passes per image (8 images = 16 rows, no padding), a training
    step about three (backward ≈ 2 forwards; attention's backward counts 2.5 of its forward)."""
    out = tmp_path / "b.json"
    r = runner.invoke(app, ["bench", "--device", "cpu", "--workloads", "generators", "--batch-size", "8",
                            "--timed-steps", "1", "--warmup", "0", "--out", str(out)], terminal_width=200)
    assert r.exit_code == 0, r.output
    assert "generator-train sit-tiny" in r.output and "generator-sample dit-tiny" in r.output
    res = json.loads(out.read_text())
    tiny = [f"{name}-tiny" for name in GENERATORS.names()]
    assert res["models"] == tiny and len(tiny) >= 4
    assert [(x["workload"], x["model"]) for x in res["records"]] == [
        (w, m) for m in tiny for w in ("generator-train", "generator-sample")]
    for rec in res["records"]:
        assert "error" not in rec, rec
        for key in ("img_per_s", "flops_per_step", "flops_per_image", "tflops_per_s", "mfu", "params"):
            assert finite_positive(rec[key]), (rec["workload"], rec["model"], key, rec[key])
        family, size = rec["settings"]["family"], rec["settings"]["size"]
        assert rec["model"] == f"{family}-{size}" and rec["batch_size"] == 8
        C, h, _ = rec["settings"]["latent_shape"]
        fwd = forward_flops(build_generator(family, size, C, h, 10).config)
        if rec["workload"] == "generator-train":
            assert rec["flops_counted"] == "forward+backward"
            assert OBJECTIVES[rec["settings"]["objective"]].prediction == GENERATORS[family].prediction
            assert 2.5 * fwd < rec["flops_per_image"] < 3.5 * fwd
        else:
            assert rec["flops_counted"] == "forward" and rec["settings"]["guidance"] == "cfg"
            assert rec["flops_per_image"] == pytest.approx(2 * fwd)
            ddpm = GENERATORS[family].prediction == "epsilon"
            assert rec["settings"]["sampler"].startswith("ddpm" if ddpm else "euler")


def test_models_names_and_auto():
    cfg = BenchConfig(workloads="generators", models=" SiT_xl, dit-dh-XL,sit-xl , LightningDiT_base")
    cfg.validate()
    assert cfg.model_list(cuda=False) == ["sit-xl", "dit-dh-xl", "lightningdit-b"]
    auto = BenchConfig()
    assert auto.model_list(cuda=True) == [f"{f}-xl" for f in GENERATORS.names()]
    assert auto.model_list(cuda=False) == [f"{f}-tiny" for f in GENERATORS.names()]
    assert BenchConfig(workloads="encode,generators,all").workload_list()[:3] == [
        "encode", "generator-train", "generator-sample"]
    assert "generator-train" not in BenchConfig().workload_list()  # "all" stays the DiT^DH / tokenizer set


@pytest.mark.parametrize("args,expect", [
    (["--workloads", "generators", "--models", "sit-huge"], "unknown --models entry 'sit-huge'; choose from "),
    (["--workloads", "generator-train", "--models", "dit-dh-xl,NoSuch_xl"], "unknown --models entry 'NoSuch_xl'"),
    (["--models", "sit-xl"], "--models sets the models of the generator workloads"),
    (["--workloads", "generator"], "unknown workload 'generator'"),
    (["--workloads", "generators", "--models", " , "], "--models is empty"),
])
def test_bad_models_give_one_line_errors(tmp_path, args, expect):
    r = runner.invoke(app, ["bench", "--device", "cpu", "--out", str(tmp_path / "b.json"), *args],
                      terminal_width=4000)
    assert r.exit_code == 1, r.output
    lines = [line for line in r.output.splitlines() if line.strip()]
    assert len(lines) == 1 and expect in lines[0] and "Traceback" not in r.output
    if "unknown --models" in expect:  # the known names, rectok and official
        assert all(name in lines[0] for name in ("dit-dh-xl", "lightningdit-xl", "sit-tiny", "dit-b", "SiT_xl",
                                                 "LightningDiT_xl", "DiTDDT_xl", "DiT_xl"))
    assert not (tmp_path / "b.json").exists()


def test_acceptance_bench_part_runs_lightningdit_beside_the_targets(monkeypatch):
    """The CPU path of the acceptance's bench part for its generator models (the target workloads are the slow
    test's): lightningdit-tiny's training and sampling steps, recorded without a target."""
    assert acc.CUDA_BENCH["generators"] == ("lightningdit-xl",)
    assert acc.bench_items(acc.CPU_BENCH)[3:] == [("generator-train", "lightningdit-tiny"),
                                                  ("generator-sample", "lightningdit-tiny")]
    monkeypatch.setattr(acc, "TARGETS", {})
    cfg = acc._defaults(acc.AcceptanceConfig(device="cpu", timed_steps=1, warmup=1), False)
    seen = []
    part = acc.part_bench(cfg, torch.device("cpu"), float("inf"), lambda state: seen.append(len(state["records"])))
    assert part["status"] == "ok", part.get("error")
    assert part["generators"] == ["lightningdit-tiny"] and seen == [1, 2]
    for r, name in zip(part["records"], ("generator-train", "generator-sample")):
        assert (r["workload"], r["model"], r["status"]) == (name, "lightningdit-tiny", "ok")
        assert r["target"] is None and r["passed"] is None and "ratio" not in r
        assert r["batch_size"] == acc.CPU_BENCH["batch"][name] and finite_positive(r["img_per_s"])
        assert finite_positive(r["flops_per_image"]) and r["settings"]["family"] == "lightningdit"
    assert part["records"][1]["unit"] == "image-steps/s"


def test_acceptance_targets_ignore_the_records_without_one():
    recs = [{"workload": "dit-cached", "batch_size": 64, "status": "ok", "target": 450.0, "ratio": 1.1,
             "passed": True, "img_per_s": 495.0, "unit": "img/s", "mfu": 0.5, "peak_memory_bytes": 2 ** 30,
             "warmup_s": 3.0},
            {"workload": "generator-train", "model": "lightningdit-xl", "batch_size": 64, "status": "ok",
             "target": None, "passed": None, "img_per_s": 10.0, "unit": "img/s", "mfu": 0.1,
             "peak_memory_bytes": 2 ** 30, "warmup_s": 3.0}]
    doc = {"device": {"name": "gpu"}, "torch": "x", "elapsed_s": 1.0, "budget_s": 5.0, "targets_judged": True,
           "parts": {"bench": {"status": "ok", "wall_s": 1.0, "records": recs}}}
    assert acc.summary(doc)["targets_met"] is True
    recs[0]["passed"] = False
    assert acc.summary(doc)["targets_met"] is False
    console = Console(record=True, width=200)
    show_acceptance(doc, console)
    text = console.export_text()
    assert "generator-train lightningdit-xl b64" in text and "no target" in text and "≥ 450 (×1.10)" in text
