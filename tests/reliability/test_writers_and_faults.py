"""Issue 22: every writer owns its output (and takes --overwrite), full disks and out-of-memory are one line, a
resume may change the optimiser settings (said and recorded), the last few finite checkpoints are kept, the first
row after a resume averages the whole window, empty folders are not foreign data, float images are not clipped."""
from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import signal
import stat

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image
from typer.testing import CliRunner

from rectok_cli.main import app
from rectok_core.checkpoints import open_checkpoint
from rectok_core.errors import RectokError, out_of_memory
from rectok_core.training.rundir import read_metrics
from rectok_core.utils.files import atomic_open, check_own_file, claim_output_dir, is_disk_full

pytestmark = pytest.mark.usefixtures("one_thread")
runner = CliRunner()
TINY = ["--preset", "tiny", "--teacher", "none", "--batch-size", "8", "--workers", "0", "--device", "cpu"]


def error_lines(output: str) -> list[str]:
    """The ``error:`` lines of ``output`` (a progress bar may share the line, ended by a carriage return)."""
    assert "Traceback" not in output, output
    return [ln[ln.index("error:"):] for ln in output.replace("\r", "\n").splitlines() if "error:" in ln]


# ---------------------------------------------------------------------------------------------------------
# Files: permissions, full disks, ownership
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_files_get_the_mode_a_plain_open_gives(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        with atomic_open(tmp_path / "f.bin") as f:
            f.write(b"x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "f.bin").stat().st_mode) == mode


def test_full_disk_is_recognised_behind_torchs_zip_writer():
    assert is_disk_full(OSError(errno.ENOSPC, "No space left on device"))
    assert is_disk_full(RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 4544 vs 4480"))
    assert is_disk_full(RuntimeError("PytorchStreamWriter failed writing file data/3: file write failed"))
    assert not is_disk_full(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    assert not is_disk_full(OSError(errno.EACCES, "Permission denied"))


def test_a_failed_atomic_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "latest.pt"
    target.write_bytes(b"old")
    with pytest.raises(RectokError, match=f"disk full writing {target} .*MB free"):
        with atomic_open(target) as f:
            f.write(b"half")
            raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 64 vs 32")
    assert target.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["latest.pt"]


def test_empty_folders_are_not_foreign_data(tmp_path):
    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    (out / "images" / "deeper").mkdir(parents=True)
    assert claim_output_dir(out, "train-tokenizer") == out
    (out / "images" / "deeper" / "theirs.png").write_bytes(b"png")
    other = tmp_path / "other"
    (other / "images").mkdir(parents=True)
    (other / "images" / "theirs.png").write_bytes(b"png")
    with pytest.raises(RectokError, match="did not write .*images.*or add --overwrite"):
        claim_output_dir(other, "export", overwrite=False)
    assert claim_output_dir(other, "export", overwrite=True) == other
    assert (other / "images" / "theirs.png").read_bytes() == b"png"


def test_an_output_file_is_replaced_only_when_the_command_wrote_it(tmp_path):
    theirs = tmp_path / "notes.npz"
    theirs.write_bytes(b"someone's")
    with pytest.raises(RectokError, match="was not written by `rectok fid-stats`.*--overwrite"):
        check_own_file(theirs, "--out", "fid-stats", lambda p: False)
    assert theirs.read_bytes() == b"someone's"
    assert check_own_file(theirs, "--out", "fid-stats", lambda p: False, overwrite=True) == theirs
    assert check_own_file(tmp_path / "new.npz", "--out", "fid-stats", lambda p: False) == tmp_path / "new.npz"


def test_statistics_files_are_told_from_other_npz_files(tmp_path):
    from rectok_core.data.latent_stats import is_stats_json
    from rectok_core.metrics.fid import is_stats_file, save_stats

    save_stats(tmp_path / "mine.npz", np.zeros(3), np.eye(3), source="rectok eval")
    np.savez(tmp_path / "theirs.npz", mu=np.zeros(3), sigma=np.eye(3))
    (tmp_path / "text.npz").write_text("not a zip")
    assert is_stats_file(tmp_path / "mine.npz")
    assert not is_stats_file(tmp_path / "theirs.npz") and not is_stats_file(tmp_path / "text.npz")
    (tmp_path / "s.json").write_text(json.dumps({"format": "rectok-latent-stats"}))
    (tmp_path / "o.json").write_text(json.dumps({"format": "other"}))
    assert is_stats_json(tmp_path / "s.json") and not is_stats_json(tmp_path / "o.json")


# ---------------------------------------------------------------------------------------------------------
# Memory
# ---------------------------------------------------------------------------------------------------------
def test_out_of_memory_is_one_line_on_what_to_change():
    cpu = out_of_memory(RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't "
                                     "allocate memory: you tried to allocate 2147483648 bytes. Error code 12"))
    assert cpu is not None and "out of host (CPU) memory (an allocation of 2.00 GiB failed)" in str(cpu)
    gpu = out_of_memory(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB. GPU 0 ..."))
    assert gpu is not None and "out of GPU memory (an allocation of 20.00 GiB failed)" in str(gpu)
    for text in (str(cpu), str(gpu)):
        assert "\n" not in text and all(w in text for w in ("--batch-size", "--grad-accum", "--precision",
                                                             "--preset"))
    assert out_of_memory(RuntimeError("mat1 and mat2 shapes cannot be multiplied")) is None


def test_memory_precheck_counts_activations(monkeypatch):
    from rectok_core.training import memory

    def build():
        return nn.Sequential(nn.Linear(64, 256), nn.GELU(), nn.Linear(256, 64))

    n = 64 * 256 + 256 + 256 * 64 + 64
    monkeypatch.setattr(memory, "available_bytes", lambda device: n * 4 * memory.TRAIN_COPIES + 4096)
    assert memory.check_fits("m", build, torch.device("cpu")) == n  # the weights alone fit
    assert memory.activation_bytes(build, 64, 256) == (256 + 64) * 64 * 256 * 4
    with pytest.raises(RectokError, match="activations of a micro-batch of 64: .*lower --batch-size .*--grad-accum"):
        memory.check_fits("m", build, torch.device("cpu"), batch=64, tokens=256)


def test_out_of_memory_in_a_training_step_is_one_line(tmp_path, monkeypatch):
    from rectok_core.training import tokenizer as module

    def oom(self, *a, **k):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: "
                           "you tried to allocate 123456789 bytes. Error code 12 (Cannot allocate memory)")

    monkeypatch.setattr(module.TokenizerTrainer, "step", oom)
    r = runner.invoke(app, ["train-tokenizer", *TINY, "--steps", "2", "--out", str(tmp_path / "r")])
    assert r.exit_code == 1, r.output
    [line] = error_lines(r.output)
    assert "out of host (CPU) memory" in line and "--batch-size" in line


# ---------------------------------------------------------------------------------------------------------
# Bad files: never PyTorch's advice to load unsafely; float images
# ---------------------------------------------------------------------------------------------------------
def test_weight_files_with_objects_are_refused_without_pytorchs_advice(tmp_path):
    from rectok_core.models.inception_weights import _load_state_dict
    from rectok_core.teachers.weights import load_state_dict_file

    path = tmp_path / "w.pth"
    torch.save({"w": torch.ones(2), "args": argparse.Namespace(a=1)}, path)
    for read in (_load_state_dict, load_state_dict_file):
        with pytest.raises(RectokError) as e:
            read(path)
        assert "weights_only" not in str(e.value) and "could run code" in str(e.value), str(e.value)


def test_a_float_tiff_is_read_by_its_range_and_said_once(tmp_path, caplog):
    from rectok_core.data import transforms

    arr = np.linspace(0, 255, 64, dtype=np.float32).reshape(8, 8)
    Image.fromarray(arr).save(tmp_path / "f.tif")
    transforms._WARNED.clear()
    with caplog.at_level(logging.WARNING), Image.open(tmp_path / "f.tif") as im:
        assert im.mode == "F"
        rgb = np.asarray(transforms.to_rgb(im))
    assert rgb[0, 0, 0] == 0 and rgb[-1, -1, 0] == 255 and 100 < rgb[4, 0, 0] < 160  # not all white
    assert "float pixels up to 255" in caplog.text and "0 … 255" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING), Image.open(tmp_path / "f.tif") as im:
        transforms.to_rgb(im)
    assert "float pixels" not in caplog.text  # once
    unit = Image.fromarray(np.full((2, 2), 0.5, dtype=np.float32))
    assert np.asarray(transforms.to_rgb(unit))[0, 0, 0] == 128  # [0, 1] data as before


# ---------------------------------------------------------------------------------------------------------
# Training runs (end to end, tiny)
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_full_disk_in_torchs_zip_writer_keeps_the_checkpoint(tmp_path, monkeypatch):
    out = tmp_path / "r"
    assert runner.invoke(app, ["train-tokenizer", *TINY, "--steps", "1", "--milestones", "none",
                               "--out", str(out)]).exit_code == 0
    latest = out / "checkpoints" / "latest.pt"
    before = latest.read_bytes()
    real = torch.save

    def full(obj, f, *a, **k):
        if not isinstance(f, (str, os.PathLike)):  # the temporary file of an atomic save
            f.write(b"PK\x03\x04 half a zip")
            raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 4544 vs 4480")
        return real(obj, f, *a, **k)

    monkeypatch.setattr(torch, "save", full)
    r = runner.invoke(app, ["train-tokenizer", *TINY, "--steps", "3", "--resume", "--out", str(out)])
    assert r.exit_code == 1, r.output
    [line] = error_lines(r.output)
    assert f"disk full writing {latest} (" in line and "MB free" in line
    assert latest.read_bytes() == before
    assert sorted(p.name for p in latest.parent.iterdir()) == ["latest.pt"]  # no temporary, no extra link


@pytest.mark.slow
def test_an_empty_checkpoints_folder_does_not_block_a_run(tmp_path):
    out = tmp_path / "r"
    (out / "checkpoints").mkdir(parents=True)
    r = runner.invoke(app, ["train-tokenizer", *TINY, "--steps", "1", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert (out / "checkpoints" / "latest.pt").is_file()


@pytest.mark.slow
def test_the_advice_after_divergence_works(tmp_path, caplog):
    """`--lr 1e6`: after step 2 the weights are finite but exploded (|w| ~ 1e6), so they are not saved and step 1
    is kept; `--resume --lr 1e-3`, as advised, continues from it, says so and records the change."""
    out = tmp_path / "r"
    r = runner.invoke(app, ["train-tokenizer", *TINY, "--lr", "1e6", "--steps", "30", "--ckpt-every", "1",
                            "--milestones", "none", "--out", str(out)])
    assert r.exit_code == 1, r.output
    [line] = error_lines(r.output)
    assert "exploding weights at step 2" in line and "--resume with a smaller --lr" in line
    assert f"{out / 'checkpoints' / 'latest.pt'} (step 1)" in line
    ck = open_checkpoint(out / "checkpoints" / "latest.pt", "tokenizer")
    assert ck["step"] == 1
    assert all(torch.isfinite(v).all() and v.abs().max() < 1e4 for part in ("model", "ema")
               for v in ck[part].values() if v.is_floating_point())
    with caplog.at_level(logging.INFO):
        r = runner.invoke(app, ["train-tokenizer", *TINY, "--resume", "--lr", "1e-3", "--steps", "4",
                                "--ckpt-every", "1", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "resuming" in caplog.text and "optim.lr 1000000.0 -> 0.001" in caplog.text
    [entry] = [json.loads(x) for x in (out / "config_history.jsonl").read_text().splitlines()]
    assert entry["step"] == 1 and entry["changed"]["optim.lr"] == [1e6, 1e-3]
    assert json.loads((out / "config.json").read_text())["optim"]["lr"] == 1e-3
    resume = next(x for x in read_metrics(out) if x.get("event") == "resume")
    assert resume["changed"]["optim.lr"] == [1e6, 1e-3]
    # the last RECENT_KEPT finite checkpoints: latest.pt (step 4) and the two before it
    names = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert names == ["latest.pt", "recent_0000002.pt", "recent_0000003.pt"]
    assert open_checkpoint(out / "checkpoints" / "recent_0000003.pt", "tokenizer")["step"] == 3
    r = runner.invoke(app, ["train-tokenizer", *TINY, "--resume", "--dim", "7", "--out", str(out)])
    assert r.exit_code == 1 and "cannot change on --resume" in r.output  # the model still cannot change


@pytest.mark.slow
def test_the_first_row_after_a_resume_averages_the_whole_window(tmp_path, monkeypatch):
    from rectok_core.training import tokenizer as module

    args = [*TINY, "--steps", "4", "--log-every", "4", "--ckpt-every", "100"]
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    assert runner.invoke(app, ["train-tokenizer", *args, "--out", str(whole)]).exit_code == 0
    real, calls = module.TokenizerTrainer.step, {"n": 0}

    def step(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            os.kill(os.getpid(), signal.SIGTERM)  # stops after step 2, in the middle of the logging window
        return real(self, *a, **k)

    monkeypatch.setattr(module.TokenizerTrainer, "step", step)
    assert runner.invoke(app, ["train-tokenizer", *args, "--out", str(parts)]).exit_code == 143
    monkeypatch.undo()
    r = runner.invoke(app, ["train-tokenizer", *args, "--resume", "--out", str(parts)])
    assert r.exit_code == 0, r.output

    def row(folder):
        return next(x for x in read_metrics(folder) if x.get("step") == 4 and "event" not in x)

    a, b = row(whole), row(parts)
    assert b["loss"] == pytest.approx(a["loss"], rel=1e-6) and b["rec"] == pytest.approx(a["rec"], rel=1e-6)
    assert "steps_averaged" not in b
