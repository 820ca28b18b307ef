"""``rectok bench`` on CPU: the JSON of a tiny run, FLOP counting against hand-computed values, the timing
helpers, bad input."""
from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn as nn
from typer.testing import CliRunner

from rectok_cli.main import app
from rectok_core.models.layers import Block, swiglu_hidden
from rectok_core.tools import bench, bench_workloads

runner = CliRunner()


pytestmark = pytest.mark.usefixtures("one_thread")


def positive_finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def test_cli_bench_tiny_cpu_writes_every_workload(tmp_path):
    out = tmp_path / "sub" / "bench.json"
    r = runner.invoke(app, ["bench", "--tokenizer-preset", "tiny", "--dit-preset", "tiny", "--device", "cpu",
                            "--timed-steps", "2", "--warmup", "1", "--batch-size", "4", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "img/s" in r.output and "MFU" in r.output
    res = json.loads(out.read_text())
    assert res["format"] == "rectok-bench" and res["device"]["type"] == "cpu"
    assert res["precision"] == "fp32" and res["compile"] is False and res["torch"] == torch.__version__
    assert res["presets"] == {"tokenizer": "tiny", "dit": "tiny", "guide": "tiny"}
    assert positive_finite(res["ceiling"]["tflops"]) and res["ceiling"]["dtype"] == "float32"
    assert res["peak_memory"].startswith("cpu_max_rss")
    assert [rec["workload"] for rec in res["records"]] == list(bench.WORKLOADS)
    for rec in res["records"]:
        assert "error" not in rec, rec
        assert rec["batch_size"] == 4 and rec["timed_steps"] == 2 and rec["warmup_steps"] == 1
        for key in ("img_per_s", "median_step_s", "peak_memory_bytes", "flops_per_step", "flops_per_image",
                    "tflops_per_s", "mfu", "params"):
            assert positive_finite(rec[key]), (rec["workload"], key, rec[key])
        assert rec["img_per_s"] == pytest.approx(4 / rec["median_step_s"])
        assert rec["tflops_per_s"] == pytest.approx(rec["flops_per_step"] / rec["median_step_s"] / 1e12)
        assert rec["mfu"] == pytest.approx(rec["tflops_per_s"] / res["ceiling"]["tflops"])
        assert rec["flops_counted"] == ("forward+backward" if rec["workload"] in bench_workloads.TRAINING else "forward")
    by = {rec["workload"]: rec for rec in res["records"]}
    # what the workloads are: the GAN adds work, AutoGuidance adds a second model, CFG doubles the batch
    assert by["tokenizer-gan"]["settings"]["gan"] and not by["tokenizer-nogan"]["settings"]["gan"]
    assert by["tokenizer-gan"]["flops_per_image"] > by["tokenizer-nogan"]["flops_per_image"]
    assert by["tokenizer-gan"]["settings"]["teacher"] == "inception-s (real)"
    assert by["dit-online"]["flops_per_image"] > by["dit-cached"]["flops_per_image"]
    assert by["sample-autoguidance"]["params"] > by["sample-cfg"]["params"] / 2
    assert by["decoder-ft"]["settings"]["frozen"] == ["encoder."]


def test_bench_batch_list_and_workload_subset(tmp_path):
    out = tmp_path / "b.json"
    r = runner.invoke(app, ["bench", "--device", "cpu", "--workloads", "encode, decode", "--batch-sizes", "2,3",
                            "--timed-steps", "1", "--warmup", "0", "--out", str(out)])
    assert r.exit_code == 0, r.output
    recs = json.loads(out.read_text())["records"]
    assert [(x["workload"], x["batch_size"]) for x in recs] == [("encode", 2), ("encode", 3), ("decode", 2),
                                                                 ("decode", 3)]


def test_flops_of_a_linear_forward_and_backward():
    lin = nn.Linear(32, 48)
    x = torch.randn(5, 32, requires_grad=True)
    assert bench.count_flops(lambda: lin(x)) == 2 * 5 * 32 * 48
    # backward: grad wrt input and wrt weight, each another B·in·out multiply-adds
    assert bench.count_flops(lambda: lin(x).sum().backward()) == 3 * 2 * 5 * 32 * 48


def test_flops_of_a_transformer_block_forward():
    """One pre-norm block (width d, N tokens, SwiGLU hidden H): qkv 2·N·d·3d, attention scores and values
    2·2·N²·d, projection 2·N·d², SwiGLU 2·N·d·2H + 2·N·H·d — per sample. The CPU attention kernel is counted
    too (PyTorch's FlopCounterMode leaves it out)."""
    B, N, d, heads = 3, 10, 64, 4
    H = swiglu_hidden(d)
    blk = Block(d, heads)
    x = torch.randn(B, N, d)
    per_sample = 2 * N * d * 3 * d + 2 * 2 * N * N * d + 2 * N * d * d + 2 * N * d * 2 * H + 2 * N * H * d
    with torch.no_grad():
        assert bench.count_flops(lambda: blk(x)) == B * per_sample


def test_median_and_timing_helpers():
    assert bench.median([3.0, 1.0, 2.0]) == 2.0
    assert bench.median([4.0, 1.0, 3.0, 2.0]) == 2.5
    assert bench.median([0.7]) == 0.7
    assert bench.median([5, 1, 1, 9, 2]) == 2
    with pytest.raises(ValueError):
        bench.median([])
    calls = []
    times, warm = bench.time_steps(lambda: calls.append(1), steps=4, warmup=2, device=torch.device("cpu"))
    assert len(calls) == 6 and len(times) == 4 and all(t >= 0 for t in times) and warm >= 0
    c = bench.matmul_ceiling(torch.device("cpu"), "fp32", n=64, reps=2)
    assert positive_finite(c["tflops"]) and c["n"] == 64 and c["dtype"] == "float32"


@pytest.mark.parametrize("args,expect", [
    (["--workloads", "tokenizer,encode"], "unknown workload 'tokenizer'"),
    (["--workloads", ""], "--workloads is empty"),
    (["--tokenizer-preset", "huge"], "unknown --tokenizer-preset 'huge'"),
    (["--dit-preset", "XXL"], "unknown --dit-preset 'XXL'"),
    (["--batch-size", "0"], "every batch size must be positive, got 0"),
    (["--batch-sizes", "8,x"], "expected comma-separated integers"),
    (["--timed-steps", "0"], "--timed-steps must be positive"),
    (["--warmup", "-1"], "--warmup must be >= 0"),
    (["--precision", "fp8"], "--precision 'fp8'"),
    (["--device", "tpu"], "--device 'tpu'"),
])
def test_bad_input_gives_one_line_errors(tmp_path, args, expect):
    r = runner.invoke(app, ["bench", "--out", str(tmp_path / "b.json"), *args])
    assert r.exit_code == 1, r.output
    assert expect in r.output and "Traceback" not in r.output
    assert len([line for line in r.output.splitlines() if line.strip()]) == 1
    assert not (tmp_path / "b.json").exists()


def test_help_lists_every_workload():
    r = runner.invoke(app, ["bench", "--help"], terminal_width=200)
    assert r.exit_code == 0
    text = " ".join(r.output.split())
    for name in bench.WORKLOADS:
        assert name in text
    assert "--compile" in text and "--no-compile" in text and "--batch-size" in text


def test_every_dit_size_has_a_default_guide():
    from rectok_core.models.dit import DIT_PRESETS
    from rectok_core.tools.bench_workloads import GUIDE_FOR
    from rectok_core.training.dit_config import DIT_SIZES

    assert set(GUIDE_FOR) == set(DIT_SIZES) == set(DIT_PRESETS)
    assert all(g in DIT_PRESETS for g in GUIDE_FOR.values())
