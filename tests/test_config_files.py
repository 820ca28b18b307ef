"""--config FILE (YAML / JSON, a run's config.json) and --print-config: defaults → preset → file → flags."""
import json

import pytest
from typer.testing import CliRunner

from rectok_cli.main import app
from rectok_core.config import file_overrides, resolve
from rectok_core.errors import RectokError
from rectok_core.training.config import TOKENIZER_PRESETS, TokenizerTrainConfig

runner = CliRunner()


def printed(args):
    r = runner.invoke(app, [*args, "--print-config"])
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def test_order_defaults_preset_file_flags(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("preset: tiny\nmodel:\n  dim: 24\nbatch-size: 6\nrun:\n  resume: true\n")
    cfg = resolve(TokenizerTrainConfig, TOKENIZER_PRESETS, {"steps": 7, "dim": None}, f)
    assert cfg.preset == "tiny" and cfg.model.width == 64      # the file's preset
    assert cfg.model.dim == 24 and cfg.run.batch_size == 6     # the file's values, nested or flat
    assert cfg.run.steps == 7 and cfg.run.resume is False      # flags; a saved 'resume' never carries over
    cfg = resolve(TokenizerTrainConfig, TOKENIZER_PRESETS, {"dim": 8, "preset": "small64"}, f)
    assert cfg.model.dim == 8 and cfg.preset == "small64" and cfg.model.width == 256
    with pytest.raises(RectokError, match="unknown key 'model.dims'"):
        file_overrides(TokenizerTrainConfig, {"model": {"dims": 3}})
    with pytest.raises(RectokError, match="unknown key 'colour'"):
        file_overrides(TokenizerTrainConfig, {"colour": "red"})


def test_config_json_of_a_run_reproduces_it_and_flags_override(tmp_path):
    x = tmp_path / "x"
    r = runner.invoke(app, ["train-tokenizer", "--preset", "tiny", "--teacher", "none", "--steps", "2",
                            "--batch-size", "4", "--dim", "8", "--mask-max", "0.2", "--out", str(x)])
    assert r.exit_code == 0, r.output
    saved = json.loads((x / "config.json").read_text())
    y = tmp_path / "y"
    shown = printed(["train-tokenizer", "--config", str(x / "config.json"), "--out", str(y)])
    derived = lambda c: {**c, "model": {k: v for k, v in c["model"].items() if k != "teacher_dim"}}  # noqa: E731
    assert derived(shown) == derived({**saved, "run": {**saved["run"], "out": str(y)}})  # teacher_dim: set at start
    r = runner.invoke(app, ["train-tokenizer", "--config", str(x / "config.json"), "--out", str(y)])
    assert r.exit_code == 0, r.output
    again = json.loads((y / "config.json").read_text())
    assert again["run"].pop("out") == str(y) and saved["run"].pop("out") == str(x)
    assert again == saved
    over = printed(["train-tokenizer", "--config", str(x / "config.json"), "--out", str(y), "--dim", "4",
                    "--preset", "tiny"])
    assert over["model"]["dim"] == 4 and over["loss"]["mask_max"] == 0.2


def test_print_config_exits_without_running(tmp_path):
    cfg = printed(["train-tokenizer", "--preset", "tiny", "--out", str(tmp_path / "never")])
    assert cfg["preset"] == "tiny" and cfg["model"]["image_size"] == 32 and cfg["run"]["log"] == "jsonl"
    assert not (tmp_path / "never").exists()
    r = runner.invoke(app, ["train-tokenizer", "--config", str(tmp_path / "missing.yaml"), "--print-config"])
    assert r.exit_code == 1 and "no such file" in r.output
    bad = tmp_path / "bad.json"
    bad.write_text('{"run": {"batchsize": 3}}')
    r = runner.invoke(app, ["train-tokenizer", "--preset", "tiny", "--config", str(bad), "--print-config"])
    assert r.exit_code == 1 and "unknown key 'run.batchsize'" in r.output


def test_version():
    r = runner.invoke(app, ["--version"])
    assert r.exit_code == 0 and r.stdout.strip() == "rectok 0.1.0"


# --- typed values (issue 22 item 6): YAML 1.1 reads ``1e-4`` as a string, a quoted number is a string -----------
def test_hand_written_values_are_coerced_to_their_field_types(tmp_path):
    f = tmp_path / "hand.yaml"
    f.write_text('preset: tiny\nblr: 1e-4\noptim:\n  lr: "0.001"\n  warmup: 0\nrun:\n  steps: 1e1\n'
                 '  compile: off\n  strict-data: "yes"\nmodel:\n  dim: "8"\nlog_every: 5.0\n')
    cfg = resolve(TokenizerTrainConfig, TOKENIZER_PRESETS, {}, f)
    assert cfg.optim.blr == 1e-4 and type(cfg.optim.blr) is float
    assert cfg.optim.lr == 0.001 and type(cfg.optim.lr) is float
    assert cfg.optim.warmup == 0.0 and type(cfg.optim.warmup) is float
    assert cfg.run.steps == 10 and type(cfg.run.steps) is int
    assert cfg.run.log_every == 5 and type(cfg.run.log_every) is int
    assert cfg.run.compile is False and cfg.run.strict_data is True
    assert cfg.model.dim == 8 and type(cfg.model.dim) is int
    shown = printed(["train-tokenizer", "--config", str(f), "--out", str(tmp_path / "never")])
    assert shown["optim"]["blr"] == 1e-4 and shown["run"]["steps"] == 10 and shown["model"]["dim"] == 8


@pytest.mark.parametrize("text, message", [
    ("batch_size: abc", "batch_size expects an integer, got 'abc'"),
    ("run:\n  batch_size: 1.5", "run.batch_size expects an integer, got 1.5 (not a whole number)"),
    ("blr: fast", "blr expects a number, got 'fast'"),
    ("precision: off", "precision expects a string, got False (YAML reads an unquoted"),
    ("compile: maybe", "compile expects true or false or null, got 'maybe'"),
    ("run:\n  steps: [1, 2]", "run.steps expects an integer, got [1, 2]"),
])
def test_a_wrongly_typed_value_is_one_line_naming_key_and_type(tmp_path, text, message):
    f = tmp_path / "bad.yaml"
    f.write_text("preset: tiny\n" + text + "\n")
    with pytest.raises(RectokError) as e:
        resolve(TokenizerTrainConfig, TOKENIZER_PRESETS, {}, f)
    assert str(e.value).startswith(f"--config {f}: {message}") and "\n" not in str(e.value)
    r = runner.invoke(app, ["train-tokenizer", "--config", str(f), "--print-config"])
    assert r.exit_code == 1 and message in r.output and "Traceback" not in r.output
    assert len(r.output.strip().splitlines()) == 1


def test_coerce_covers_optional_literal_sequences_and_nested_dataclasses():
    import dataclasses
    from typing import Literal

    from rectok_core.config_values import coerce, coerce_mapping

    @dataclasses.dataclass
    class Inner:
        rate: float = 0.1

    @dataclasses.dataclass
    class Outer:
        n: int | None = None
        mode: Literal["a", "b"] = "a"
        sizes: tuple[int, ...] = (1,)
        pair: tuple[int, float] = (1, 1.0)
        names: list[str] = dataclasses.field(default_factory=list)
        inner: Inner = dataclasses.field(default_factory=Inner)

    got = coerce_mapping(Outer, {"n": None, "mode": "b", "sizes": "1, 2,3", "pair": ["2", "1e-3"], "names": [1, "x"],
                                 "inner": {"rate": "2e-1"}, "other": "kept"})
    assert got == {"n": None, "mode": "b", "sizes": (1, 2, 3), "pair": (2, 0.001), "names": ["1", "x"],
                   "inner": Inner(0.2), "other": "kept"}
    assert coerce("n", int | None, "7") == 7
    for key, tp, value, expected in [("n", int | None, "x", "an integer or null"), ("mode", Literal["a", "b"], "c",
                                     "one of a, b"), ("pair", tuple[int, float], [1], "expected 2 values"),
                                     ("inner.rate", float, True, "a number"), ("n", int, float("inf"), "an integer")]:
        with pytest.raises(RectokError, match=f"^src: {key} expects .*{expected}"):
            coerce(key, tp, value, "src")
    with pytest.raises(RectokError, match=r"^--config: inner\.rate expects a number, got 'x'$"):
        coerce_mapping(Outer, {"inner": {"rate": "x"}})


def test_resuming_a_run_saved_before_lr_scale_accum_keeps_its_learning_rate_rule():
    """Runs saved before ``lr_scale_accum`` existed scaled the learning rate with --grad-accum: a resume keeps that;
    a run that saved the field keeps its own value."""
    import dataclasses

    from rectok_core.config import resume_config
    from rectok_core.training.config import TokenizerTrainConfig

    saved = dataclasses.asdict(TokenizerTrainConfig())
    assert saved["optim"]["lr_scale_accum"] is False
    assert resume_config(TokenizerTrainConfig, saved, {}).optim.lr_scale_accum is False
    del saved["optim"]["lr_scale_accum"]
    assert resume_config(TokenizerTrainConfig, saved, {}).optim.lr_scale_accum is True
