"""Experiment tracking (--log): TensorBoard event files and an offline W&B run, both continued by --resume."""
import importlib.util
import json

import pytest
from typer.testing import CliRunner

from rectok_cli.main import app
from rectok_core.errors import RectokError
from rectok_core.training.logging import log_results_to_run, parse_log_spec, results_run
from rectok_core.training.rundir import read_metrics

runner = CliRunner()
TINY = ["train-tokenizer", "--preset", "tiny", "--teacher", "none", "--batch-size", "8", "--log-every", "10",
        "--image-every", "10", "--device", "cpu"]


def events(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0})
    ea.Reload()
    return ea


@pytest.mark.slow
def test_tensorboard_events_hold_scalars_and_images_and_resume_continues(tmp_path):
    out = tmp_path / "run"
    r = runner.invoke(app, [*TINY, "--steps", "20", "--out", str(out), "--log", "tensorboard"])
    assert r.exit_code == 0, r.output
    ea = events(out / "tensorboard")
    tags = ea.Tags()
    assert {"train/loss", "train/rec", "train/kl", "train/lr", "train/img_per_s", "train/psnr"} <= set(tags["scalars"])
    assert [e.step for e in ea.Scalars("train/loss")] == [10, 20]
    logged = {m["step"]: m["loss"] for m in read_metrics(out) if "loss" in m}
    assert [round(e.value, 5) for e in ea.Scalars("train/loss")] == [round(logged[10], 5), round(logged[20], 5)]
    assert all(e.value > 0 for e in ea.Scalars("train/img_per_s"))
    assert [e.step for e in ea.Images("recon")] == [10, 20]
    assert "tensorboard" in r.output and "checkpoint" in r.output  # the end-of-run summary lists the files

    # --resume (the saved config keeps --log tensorboard): same folder, the steps continue
    r = runner.invoke(app, ["train-tokenizer", "--out", str(out), "--resume", "--steps", "30"])
    assert r.exit_code == 0, r.output
    assert len(list((out / "tensorboard").glob("events.out.tfevents.*"))) == 2
    ea = events(out / "tensorboard")
    assert [e.step for e in ea.Scalars("train/loss")] == [10, 20, 30]
    assert [e.step for e in ea.Images("recon")] == [10, 20, 30]

    # results of an evaluation appended to the run's event files, and a record in metrics.jsonl
    log_results_to_run(out, "eval", {"psnr": 12.5, "note": "text is skipped", "rfid": float("nan")}, 30,
                       "tensorboard")
    ea = events(out / "tensorboard")
    assert [(e.step, e.value) for e in ea.Scalars("eval/psnr")] == [(30, 12.5)]
    assert "eval/rfid" not in ea.Tags()["scalars"] and "eval/note" not in ea.Tags()["scalars"]
    assert read_metrics(out)[-1]["event"] == "eval" and read_metrics(out)[-1]["psnr"] == 12.5
    assert results_run(out / "checkpoints" / "latest.pt", "tensorboard") == out.resolve()


@pytest.mark.slow
def test_wandb_offline_run_folder_and_resume_keeps_the_id(tmp_path, monkeypatch):
    if importlib.util.find_spec("wandb") is None:
        pytest.skip("wandb is not installed (pip install rectok[wandb])")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    out = tmp_path / "run"
    r = runner.invoke(app, [*TINY, "--steps", "10", "--out", str(out), "--log", "wandb"])
    assert r.exit_code == 0, r.output
    run_id = (out / "wandb-id").read_text().strip()
    first = list((out / "wandb").glob(f"offline-run-*-{run_id}"))
    assert len(first) == 1 and list(first[0].glob(f"run-{run_id}.wandb"))
    assert json.loads((out / "config.json").read_text())["run"]["log"] == "wandb"
    r = runner.invoke(app, ["train-tokenizer", "--out", str(out), "--resume", "--steps", "20"])
    assert r.exit_code == 0, r.output
    assert (out / "wandb-id").read_text().strip() == run_id
    runs = sorted((out / "wandb").glob("offline-run-*"))
    assert len(runs) == 2 and all(p.name.endswith(run_id) for p in runs)


def test_log_spec_errors(monkeypatch):
    assert parse_log_spec("") == ("jsonl",)
    assert parse_log_spec("wandb,tensorboard,jsonl" if importlib.util.find_spec("wandb") else "tensorboard") \
        [:2] == ("jsonl", "tensorboard")
    with pytest.raises(RectokError, match="unknown tracker 'mlflow'"):
        parse_log_spec("tensorboard,mlflow")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    r = runner.invoke(app, ["train-tokenizer", "--preset", "tiny", "--log", "wandb", "--out", "unused"])
    assert r.exit_code == 1
    assert r.output.strip() == "error: --log wandb needs the wandb package: pip install rectok[wandb]"


def test_results_need_a_run_folder(tmp_path):
    (tmp_path / "tok.pt").write_bytes(b"")
    assert results_run(tmp_path / "tok.pt", "") is None
    with pytest.raises(RectokError, match="is not in a run folder"):
        results_run(tmp_path / "tok.pt", "tensorboard")


def test_tensorboard_gets_the_config_once_as_hparams_and_text(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    from rectok_core.training.logging import RunLogger

    config = {"preset": "tiny", "model": {"width": 64, "heads": 4}, "run": {"lr": 1e-3, "compile": None}}
    rl = RunLogger(tmp_path, "tensorboard", config=config)
    rl.scalars(1, {"loss": 0.5})
    rl.close()
    rl = RunLogger(tmp_path, "tensorboard", config=config, resume=True, step=1)  # a resumed session: not again
    rl.scalars(2, {"loss": 0.4})
    rl.close()
    ea = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"tensors": 0})
    ea.Reload()
    content = ea.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    hp = start.session_start_info.hparams
    assert hp["model/width"].number_value == 64 and hp["preset"].string_value == "tiny"
    assert hp["run/compile"].string_value == "None"
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    assert [m.name.tag for m in experiment.metric_infos] == ["train/loss"]
    (text,) = ea.Tensors("config/text_summary")
    assert '"width": 64' in text.tensor_proto.string_val[0].decode()


def test_probe_results_go_to_the_run_as_one_figure(tmp_path):
    from types import SimpleNamespace

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from rectok_core.metrics.probe_report import figure_array, log_to_runs

    ts = [i / 10 for i in range(11)]
    ck = SimpleNamespace(name="tok", dim=16, step=30, chance={"top1": 0.1},
                         results=[{"t": t, "top1": 0.9 - 0.8 * t, "top5": None} for t in ts])
    report = SimpleNamespace(checkpoints=[ck], teacher=None, protocol={"space": "posterior-mean"})
    fig = figure_array(report, 0)
    assert fig.ndim == 3 and fig.shape[2] == 3 and fig.dtype.name == "uint8" and fig.std() > 0
    log_to_runs(report, [tmp_path], "tensorboard")
    ea = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"images": 0, "scalars": 0})
    ea.Reload()
    assert ea.Tags()["scalars"] == [] and [e.step for e in ea.Images("probe/top1_vs_t")] == [30]
    (rec,) = read_metrics(tmp_path)
    assert rec["event"] == "probe/top1_vs_t" and rec["t"] == ts and rec["top1"][0] == 0.9
