"""rectok reproduce: the arms' definitions, equal budgets, and the --smoke study end to end on generated data."""
import json
import subprocess
from pathlib import Path

import pytest
from conftest import PYTHON, ROOT, cli_env, make_image_folder

from rectok_core.config import build_config
from rectok_core.errors import RectokError
from rectok_core.tools.study import STUDY_PRESETS, StudyConfig, arms, dim_arms, plan
from rectok_core.tools.study_report import collect, markdown


@pytest.fixture(scope="module")
def split_folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("study-data")
    make_image_folder(root / "train", classes=4, per_class=8, size=64, seed=0)
    make_image_folder(root / "val", classes=4, per_class=6, size=64, seed=1)
    return root


def _cfg(data: Path, out: Path, preset: str = "smoke", **overrides) -> StudyConfig:
    return build_config(StudyConfig, STUDY_PRESETS, preset, {"data": str(data), "out": str(out), **overrides})


def _flag(argv: tuple[str, ...], name: str) -> str | None:
    return argv[argv.index(name) + 1] if name in argv else None


def test_arms_are_the_paper_comparisons(split_folder, tmp_path):
    cfg = _cfg(split_folder, tmp_path, "gpu")
    by = {a.name: a for a in arms(cfg)}
    assert list(by) == ["no-distill", "x0-align", "fsd-align", "fsd-rad", "fsd-rad-c16", "fsd-rad-c64",
                        "fsd-rad-c128", "fsd-rad-seed2"]
    assert by["no-distill"].flags == ("--teacher", "none", "--mask-max", "0")
    assert by["x0-align"].flags == ("--sem-input", "clean", "--mask-max", "0")
    assert by["fsd-align"].flags == ("--mask-max", "0")
    assert by["fsd-rad"].flags == ()  # the recipe's defaults: noisy x_t input, masking on
    assert [a.dim for a in dim_arms(cfg)] == [16, 32, 64, 128]  # arm 4 (C = 32) is also arm 5's C = 32 point
    assert by["fsd-rad-seed2"].seed == 2 and by["fsd-rad-seed2"].dim == 32
    # no repeat arm when asked for none; --dim outside --dims is still arms 1-4's dim
    cfg = _cfg(split_folder, tmp_path, "gpu", repeat_seed=0, dim=24, dims="16,64")
    names = [a.name for a in arms(cfg)]
    assert "fsd-rad-seed2" not in names and "fsd-rad-c16" in names and by["fsd-rad"].dim == 32
    assert [a.dim for a in dim_arms(cfg)] == [16, 64]


def test_every_arm_gets_the_same_budget(split_folder, tmp_path):
    """The stage-1 commands differ only by the arm's own flags, its dim, seed and run folder."""
    cfg = _cfg(split_folder, tmp_path)
    steps = {s.key.split(".", 1)[1]: s.argv for s in plan(cfg) if s.key.startswith("train-tokenizer.")}
    by = {a.name: a for a in arms(cfg)}
    assert set(steps) == set(by)

    def shared(name: str) -> list[str]:
        argv = list(steps[name])
        for flag in ("--dim", "--seed", "--out"):
            i = argv.index(flag)
            del argv[i:i + 2]
        own = list(by[name].flags)
        # the arm's flags are a contiguous run after the shared ones; the teacher flag is shared unless replaced
        tail = argv[len(argv) - len(own):] if own else []
        assert tail == own
        return argv[:len(argv) - len(own)] if own else argv

    base = shared("fsd-rad")
    assert _flag(steps["fsd-rad"], "--teacher") == "inception-s"
    for name in by:
        s = shared(name)
        if name == "no-distill":  # the teacher flag is replaced by the arm's own --teacher none
            assert s == base[:base.index("--teacher")] + base[base.index("--teacher") + 2:]
        else:
            assert s == base, name
        assert _flag(steps[name], "--steps") == "300" and _flag(steps[name], "--batch-size") == "32"
    assert _flag(steps["fsd-rad-c64"], "--dim") == "64" and _flag(steps["fsd-rad-seed2"], "--seed") == "2"
    # decoder fine-tunes and generators share their budgets too
    ft = [s.argv for s in plan(cfg) if s.key.startswith("finetune-decoder.")]
    assert len({(_flag(a, "--steps"), _flag(a, "--batch-size"), _flag(a, "--blr")) for a in ft}) == 1
    dit = [s for s in plan(cfg) if s.key.startswith("train-dit.")]
    assert [s.key for s in dit] == ["train-dit.x0-align", "train-dit.fsd-rad"]
    assert len({(_flag(s.argv, "--steps"), _flag(s.argv, "--batch-size")) for s in dit}) == 1


def test_bad_study_config(split_folder, tmp_path):
    with pytest.raises(RectokError, match="--data is required"):
        build_config(StudyConfig, STUDY_PRESETS, "smoke", {})
    (tmp_path / "only-train" / "train").mkdir(parents=True)
    with pytest.raises(RectokError, match="no val/ folder"):
        _cfg(tmp_path / "only-train", tmp_path)
    with pytest.raises(RectokError, match="unknown arm 'fsd'"):
        _cfg(split_folder, tmp_path, dit_arms="fsd")
    with pytest.raises(RectokError, match="--dims"):
        _cfg(split_folder, tmp_path, dims="16,x")
    with pytest.raises(RectokError, match="unknown preset"):
        build_config(StudyConfig, STUDY_PRESETS, "huge", {"data": str(split_folder)})


def test_results_of_an_unrun_study_say_so(split_folder, tmp_path):
    cfg = _cfg(split_folder, tmp_path)
    result = collect(cfg)
    assert [r["arm"] for r in result["arms"]] == [a.name for a in arms(cfg)]
    assert all(r["psnr"] is None and r["probe"] is None and r["gfid"] is None for r in result["arms"])
    text = markdown(result)
    assert "(not run)" in text and "| no-distill | 1. no distillation | 32 | 1 | — |" in text


def _reproduce(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, "-m", "rectok_cli.main", "reproduce", *args], capture_output=True, text=True,
                          env=cli_env(), cwd=ROOT, timeout=600)


@pytest.mark.slow
def test_smoke_study_end_to_end(split_folder, tmp_path):
    out = tmp_path / "study"
    tiny = ["--steps", "4", "--ft-steps", "2", "--batch-size", "8", "--dims", "16,32", "--dit-steps", "3",
            "--dit-batch-size", "8", "--samples", "8", "--sample-steps", "3", "--probe-per-class", "0",
            "--probe-val-per-class", "0", "--rfid-per-class", "3", "--ref-per-class", "5"]
    r = _reproduce("--smoke", "--data", str(split_folder), "--out", str(out), *tiny)
    assert r.returncode == 0, r.stderr[-3000:]
    result = json.loads((out / "study.json").read_text())
    names = ["no-distill", "x0-align", "fsd-align", "fsd-rad", "fsd-rad-c16", "fsd-rad-seed2"]
    assert [row["arm"] for row in result["arms"]] == names
    assert result["config"]["preset"] == "smoke" and result["teacher"]["name"] == "inception-s"
    for row in result["arms"]:
        assert row["probe"]["t"][0] == 0.0 and row["probe"]["t"][-1] == 1.0
        assert row["probe"]["chance_check_passed"], row  # t = 1 sits at chance for every arm
        assert row["psnr"] > 0 and 0 < row["ssim"] <= 1 and row["rfid"] >= 0
        assert row["stage1"]["step"] == 4
        assert (row["gfid"] is not None) == (row["arm"] in ("x0-align", "fsd-rad"))
    # the rFID subset is class-balanced: 3 of each of the 4 val classes
    ev = json.loads((out / "eval" / "fsd-rad" / "eval.json").read_text())
    assert ev["num_images"] == 12 and ev["manifest"]["data"]["per_class"] == 3
    assert set(result["noise"]) >= {"arms", "psnr", "rfid", "probe_top1_max"}
    for name in ("results.md", "probe_flow.png", "dims.png", "commands.sh", "config.json"):
        assert (out / name).is_file(), name
    commands = (out / "commands.sh").read_text().splitlines()
    assert sum(c.startswith("rectok train-tokenizer ") for c in commands) == len(names)
    assert any(c.startswith("rectok probe-flow ") and c.count("latest.pt") == len(names) for c in commands)
    assert "| fsd-rad-c16 | 16 |" in (out / "results.md").read_text()
    # a rerun skips every finished step and rewrites the same numbers
    before = {row["arm"]: (row["psnr"], row["rfid"], row["gfid"]) for row in result["arms"]}
    r = _reproduce("--smoke", "--data", str(split_folder), "--out", str(out), *tiny)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stderr.count("done:") == len(commands) - 5  # every command line of commands.sh
    after = {row["arm"]: (row["psnr"], row["rfid"], row["gfid"])
             for row in json.loads((out / "study.json").read_text())["arms"]}
    assert after == before


def test_reproduce_cli_errors(tmp_path):
    r = _reproduce("--smoke")
    assert r.returncode == 1 and "--data is required" in r.stderr and "Traceback" not in r.stderr
    r = _reproduce("--smoke", "--preset", "gpu", "--data", str(tmp_path))
    assert r.returncode == 1 and "--smoke is --preset smoke" in r.stderr
