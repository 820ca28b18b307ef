"""The catalogue of bad inputs (docs/reliability.md): each one, run in-process through the CLI, gives one line naming
the problem (never a traceback), a non-zero exit where the command cannot go on, and touches no file outside the
command's own folder."""
from __future__ import annotations

import errno
import json
import os
import pickle
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from rectok_cli.main import app
from rectok_core.checkpoints import open_checkpoint
from rectok_core.config import build_config
from rectok_core.training.config import TOKENIZER_PRESETS, TokenizerTrainConfig
from rectok_core.training.dit import train_dit
from rectok_core.training.dit_config import DIT_TRAIN_PRESETS, DiTTrainConfig
from rectok_core.training.tokenizer import train_tokenizer
from rectok_core.utils import checkpoint

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]
runner = CliRunner()
TINY = ["--preset", "tiny", "--teacher", "none", "--batch-size", "8", "--workers", "0", "--device", "cpu"]


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """Shared inputs: a tokenizer and a DiT checkpoint, broken files, a foreign folder."""
    w = tmp_path_factory.mktemp("catalogue")
    tok = train_tokenizer(build_config(TokenizerTrainConfig, TOKENIZER_PRESETS, "tiny", dict(
        teacher="none", steps=2, batch_size=8, out=str(w / "tok"), workers=0, device="cpu", log_every=1)))
    dit = train_dit(build_config(DiTTrainConfig, DIT_TRAIN_PRESETS, "tiny", dict(
        tokenizer=str(tok), out=str(w / "dit"), steps=2, batch_size=8, log_every=1, device="cpu", workers=0,
        stats_dir=str(w / "stats"))))
    (w / "zero.pt").write_bytes(b"")
    blob = Path(tok).read_bytes()
    (w / "trunc.pt").write_bytes(blob[: len(blob) // 3])
    (w / "pickle.pt").write_bytes(pickle.dumps({"format": "rectok"}))
    torch.save({"weights": torch.ones(2)}, w / "plain.pt")
    np.savez(w / "object.npz", mu=np.array([{"a": 1}], dtype=object), sigma=np.zeros((1, 1)))
    nan = open_checkpoint(dit, "dit")
    nan["ema"] = {k: v * float("nan") if v.is_floating_point() else v for k, v in nan["ema"].items()}
    checkpoint.save_atomic(nan, w / "dit_nan.pt")
    noisy, g = open_checkpoint(dit, "dit"), torch.Generator().manual_seed(0)  # labels matter: guidance can blow up
    noisy["ema"] = {k: v + 0.1 * torch.randn(v.shape, generator=g) if v.is_floating_point() else v
                    for k, v in noisy["ema"].items()}
    checkpoint.save_atomic(noisy, w / "dit_noisy.pt")
    (w / "afile").write_text("x")
    return {"tok": str(tok), "dit": str(dit), "w": w}


def snapshot(*roots: Path) -> dict[str, tuple[int, int]]:
    out = {}
    for root in roots:
        for dirpath, dirs, files in os.walk(root):
            for name in files + dirs:
                p = Path(dirpath) / name
                st = p.lstat()
                out[str(p)] = (st.st_size, st.st_mtime_ns) if p.is_file() else (-1, 0)
    return out


def foreign(folder: Path) -> Path:
    """A folder of someone else's files with the names a run writes."""
    (folder / "images").mkdir(parents=True)
    (folder / "config.json").write_text('{"mine": true}')
    (folder / "metrics.jsonl").write_text('{"x": 1}\n')
    (folder / "images" / "a.png").write_bytes(b"png")
    return folder


def owned_by(folder: Path, command: str) -> Path:
    folder.mkdir(parents=True)
    (folder / ".rectok-owner.json").write_text(json.dumps({"command": command}))
    return folder


# Each case: (id, args builder(work, tmp) -> (argv, own folder or None), expected text, exit code)
CASES = [
    # --- numeric ranges (rectok_core.config validators) ---
    ("beta1-one", lambda W, T: (["train-tokenizer", *TINY, "--beta1", "1.0", "--out", T / "r"], None),
     "--beta1 must be in [0, 1)", 1),
    ("beta2-negative", lambda W, T: (["train-tokenizer", *TINY, "--beta2", "-0.1", "--out", T / "r"], None),
     "--beta2 must be in [0, 1)", 1),
    ("seed-negative", lambda W, T: (["train-tokenizer", *TINY, "--seed", "-1", "--out", T / "r"], None),
     "--seed must be an integer in [0, 2^63)", 1),
    ("seed-too-big", lambda W, T: (["train-tokenizer", *TINY, "--seed", str(2 ** 63), "--out", T / "r"], None),
     "--seed must be an integer in [0, 2^63)", 1),
    ("lr-inf", lambda W, T: (["train-tokenizer", *TINY, "--lr", "inf", "--out", T / "r"], None),
     "--lr must be a finite number", 1),
    ("lr-nan", lambda W, T: (["train-tokenizer", *TINY, "--lr", "nan", "--out", T / "r"], None),
     "--lr must be a finite number", 1),
    ("dim-zero", lambda W, T: (["train-tokenizer", *TINY, "--dim", "0", "--out", T / "r"], None),
     "--dim must be positive", 1),
    ("batch-zero", lambda W, T: (["train-tokenizer", *TINY, "--batch-size", "0", "--out", T / "r"], None),
     "--batch-size must be positive", 1),
    ("width-too-large", lambda W, T: (["train-tokenizer", *TINY, "--width", "65536", "--heads", "1", "--depth", "64",
                                       "--steps", "1", "--out", T / "r"], T / "r"), "choose a smaller size", 1),
    ("unknown-preset", lambda W, T: (["train-tokenizer", "--preset", "nope", "--out", T / "r"], None),
     "unknown preset 'nope'", 1),
    ("bad-device", lambda W, T: (["train-tokenizer", *TINY, "--device", "gpu7", "--out", T / "r"], None),
     "--device 'gpu7'", 1),
    ("bad-tracker", lambda W, T: (["train-tokenizer", *TINY, "--log", "mlflow", "--out", T / "r"], None),
     "unknown tracker 'mlflow'", 1),
    ("dit-beta1", lambda W, T: (["train-dit", "--preset", "tiny", "--tokenizer", W["tok"], "--beta1", "1",
                                 "--out", T / "r"], None), "--beta1 must be in [0, 1)", 1),
    ("sample-seed", lambda W, T: (["sample", W["dit"], "--seed", "-5", "--out", T / "s"], None),
     "--seed must be an integer in [0, 2^63)", 1),
    ("sample-scale-inf", lambda W, T: (["sample", W["dit"], "--scale", "inf", "--out", T / "s"], None),
     "--scale must be a finite number", 1),
    # --- config files ---
    ("config-missing", lambda W, T: (["train-tokenizer", "--config", T / "none.yaml", "--out", T / "r"], None),
     "no such file", 1),
    ("config-bad-json", lambda W, T: ((T / "c.json").write_text("{oops") and
                                      ["train-tokenizer", "--config", T / "c.json", "--out", T / "r"], None),
     "not valid JSON", 1),
    ("config-unknown-key", lambda W, T: ((T / "c.yaml").write_text("nonsense: 3\n") and
                                         ["train-tokenizer", *TINY, "--config", T / "c.yaml", "--out", T / "r"], None),
     "unknown key 'nonsense'", 1),
    # --- output folders ---
    ("out-empty-string", lambda W, T: (["train-tokenizer", *TINY, "--out", ""], None), "--out '': give a folder", 1),
    ("out-foreign-folder", lambda W, T: (["train-tokenizer", *TINY, "--out", foreign(T / "theirs")], None),
     "already holds files that `rectok train-tokenizer` did not write", 1),
    ("out-is-a-file", lambda W, T: (["train-tokenizer", *TINY, "--out", W["w"] / "afile"], None),
     "is a file, not a folder", 1),
    ("out-under-a-file", lambda W, T: (["train-tokenizer", *TINY, "--out", W["w"] / "afile" / "run"], None),
     "cannot write to --out", 1),
    ("out-other-command", lambda W, T: (["train-tokenizer", *TINY, "--out", owned_by(T / "ev", "eval")], None),
     "belongs to `rectok eval`", 1),
    ("dit-out-tokenizer-run", lambda W, T: (["train-dit", "--preset", "tiny", "--tokenizer", W["tok"],
                                             "--out", owned_by(T / "tk", "train-tokenizer")], None),
     "belongs to `rectok train-tokenizer`", 1),
    ("eval-out-foreign", lambda W, T: (["eval", W["tok"], "--device", "cpu", "--out", foreign(T / "theirs")], None),
     "did not write", 1),
    ("eval-save-stats-unwritable", lambda W, T: (["eval", W["tok"], "--device", "cpu", "--out", T / "e",
                                                  "--save-stats", W["w"] / "afile" / "s.npz"], None),
     "cannot write --save-stats", 1),
    ("eval-samples-out-unwritable", lambda W, T: (["eval-samples", T, "--ref-stats", W["w"] / "object.npz",
                                                   "--out", W["w"] / "afile" / "e.json"], None),
     "cannot write --out", 1),
    ("eval-samples-out-foreign-file", lambda W, T: ((T / "notes.json").write_text("[1, 2]") and
                                                    ["eval-samples", T, "--ref-stats", W["w"] / "object.npz",
                                                     "--out", T / "notes.json"], None),
     "is not a `rectok eval-samples` result", 1),
    ("fid-stats-out-unwritable", lambda W, T: (["fid-stats", T, "--out", W["w"] / "afile" / "s.npz"], None),
     "cannot write --out", 1),
    ("bench-out-foreign-file", lambda W, T: ((T / "b.json").write_text('{"x": 1}') and
                                             ["bench", "--out", T / "b.json"], None), "not a `rectok bench` result", 1),
    # --- writers own their output (--overwrite to replace another's) ---
    ("eval-save-stats-foreign", lambda W, T: ((T / "s.npz").write_bytes(b"my data") and
                                              ["eval", W["tok"], "--device", "cpu", "--out", T / "e",
                                               "--save-stats", T / "s.npz"], None),
     "was not written by `rectok eval`", 1),
    ("fid-stats-out-foreign", lambda W, T: ((T / "s.npz").write_bytes(b"my data") and
                                            ["fid-stats", T, "--out", T / "s.npz"], None),
     "was not written by `rectok fid-stats`", 1),
    ("latent-stats-out-foreign", lambda W, T: ((T / "st.json").write_text('{"mine": 1}') and
                                               ["latent-stats", W["tok"], "--data", "digits", "--device", "cpu",
                                                "--out", T / "st.json"], None),
     "was not written by `rectok latent-stats`", 1),
    ("export-out-foreign", lambda W, T: ((foreign(T / "hub") / "README.md").write_text("mine") and
                                         ["export", W["tok"], "--out", T / "hub"], None),
     "already holds files that `rectok export` did not write", 1),
    # --- checkpoints ---
    ("finetune-zero-byte", lambda W, T: (["finetune-decoder", W["w"] / "zero.pt", "--out", T / "r"], None),
     "the file is empty", 1),
    ("finetune-truncated", lambda W, T: (["finetune-decoder", W["w"] / "trunc.pt", "--out", T / "r"], None),
     "truncated or corrupt", 1),
    ("finetune-pickle", lambda W, T: (["finetune-decoder", W["w"] / "pickle.pt", "--out", T / "r"], None),
     "refused: loading them could run code", 1),
    ("finetune-not-rectok", lambda W, T: (["finetune-decoder", W["w"] / "plain.pt", "--out", T / "r"], None),
     "is not a rectok checkpoint", 1),
    ("finetune-missing", lambda W, T: (["finetune-decoder", T / "nope.pt", "--out", T / "r"], None),
     "checkpoint not found", 1),
    ("finetune-dit-checkpoint", lambda W, T: (["finetune-decoder", W["dit"], "--out", T / "r"], None),
     "holds a generator (train-dit)", 1),
    ("eval-zero-byte", lambda W, T: (["eval", W["w"] / "zero.pt", "--out", T / "e"], None), "the file is empty", 1),
    ("cache-latents-truncated", lambda W, T: (["cache-latents", W["w"] / "trunc.pt", "--out", T / "c"], None),
     "truncated or corrupt", 1),
    ("train-dit-zero-byte", lambda W, T: (["train-dit", "--preset", "tiny", "--tokenizer", W["w"] / "zero.pt",
                                           "--out", T / "r"], None), "the file is empty", 1),
    ("sample-zero-byte", lambda W, T: (["sample", W["w"] / "zero.pt", "--out", T / "s"], None),
     "the file is empty", 1),
    ("sample-nan-weights", lambda W, T: (["sample", W["w"] / "dit_nan.pt", "-n", "2", "--steps", "2",
                                          "--device", "cpu", "--out", T / "s"], T / "s"), "hold NaN/inf", 1),
    ("resume-nothing", lambda W, T: (["train-tokenizer", *TINY, "--resume", "--out", T / "r"], None),
     "no checkpoint to resume from", 1),
    ("resume-other-preset", lambda W, T: (["train-tokenizer", "--preset", "small64", "--resume", "--out",
                                           W["w"] / "tok"], None), "--preset 'small64' differs", 1),
    ("resume-zero-byte", lambda W, T: ((T / "r" / "checkpoints").mkdir(parents=True) or
                                       (T / "r" / "checkpoints" / "latest.pt").write_bytes(b"") or
                                       ["train-tokenizer", *TINY, "--resume", "--out", T / "r"], None),
     "the file is empty", 1),
    # --- statistics files ---
    ("eval-ref-stats-object-array", lambda W, T: (["eval", W["tok"], "--device", "cpu", "-n", "8", "--out", T / "e",
                                                   "--ref-stats", W["w"] / "object.npz"], T / "e"),
     "pickled object arrays", 1),
    # --- user text with rich markup ---
    ("markup-in-path", lambda W, T: (["train-tokenizer", *TINY, "--data", T / "[bold]x[/]", "--out", T / "r"],
                                     T / "r"), "[bold]x[/]", 1),
    ("markup-in-out", lambda W, T: (["train-tokenizer", *TINY, "--out", foreign(T / "[label]")], None),
     "[label]", 1),
    # --- generated outputs ---
    ("sample-scale-huge", lambda W, T: (["sample", W["w"] / "dit_noisy.pt", "--cfg", "cfg", "--scale", "1e30",
                                         "-n", "2", "--steps", "3", "--device", "cpu", "--out", T / "s"], T / "s"),
     "non-finite latents", 1),
    ("train-lr-huge-nan", lambda W, T: (["train-tokenizer", *TINY, "--lr", "1e6", "--steps", "30", "--ckpt-every",
                                         "1", "--out", T / "r"], T / "r"), "the last finite checkpoint is", 1),
]


@pytest.mark.parametrize("name,build,expect,code", CASES, ids=[c[0] for c in CASES])
def test_bad_input(work, tmp_path, name, build, expect, code):
    argv, own = build(work, tmp_path)
    before = snapshot(tmp_path, work["w"])
    r = runner.invoke(app, [str(a) for a in argv])
    out = r.output
    assert "Traceback" not in out and r.exception is None or isinstance(r.exception, SystemExit), out
    assert r.exit_code == code, out
    lines = [ln for ln in out.splitlines() if expect in ln]
    assert lines, out  # the message is on one line
    assert sum(ln.startswith("error:") for ln in out.splitlines()) <= 1, out
    assert "weights_only" not in out
    after = snapshot(tmp_path, work["w"])
    changed = {p for p in set(before) | set(after) if before.get(p) != after.get(p)}
    assert all(own is not None and Path(p).is_relative_to(own) for p in changed), sorted(changed)


def test_catalogue_is_large_and_distinct():
    assert len({c[0] for c in CASES}) == len(CASES) >= 40


def test_disk_full_during_checkpoint_save(tmp_path, monkeypatch):
    """ENOSPC while saving: a one-line message naming the file, no temporary file left, exit 1."""
    real = torch.save

    def full(obj, f, *a, **k):
        if not isinstance(f, (str, os.PathLike)):  # the temporary file of an atomic save
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(obj, f, *a, **k)

    monkeypatch.setattr(torch, "save", full)
    out = tmp_path / "r"
    r = runner.invoke(app, ["train-tokenizer", *TINY, "--steps", "2", "--out", str(out)])
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert "disk full writing" in r.output and "latest.pt" in r.output and "MB free" in r.output
    assert not list((out / "checkpoints").glob(".*.tmp"))


def test_stale_temporary_checkpoints_are_removed_at_start(tmp_path):
    out = tmp_path / "r"
    r = runner.invoke(app, ["train-tokenizer", *TINY, "--steps", "1", "--out", str(out)])
    assert r.exit_code == 0, r.output
    stale = out / "checkpoints" / ".latest.pt.abc123.tmp"
    stale.write_bytes(b"half a checkpoint")
    r = runner.invoke(app, ["train-tokenizer", *TINY, "--steps", "2", "--resume", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert not stale.exists()


def test_failed_run_leaves_no_empty_checkpoint_or_image_folders(tmp_path):
    out = tmp_path / "r"
    r = runner.invoke(app, ["train-tokenizer", *TINY, "--data", str(tmp_path / "missing"), "--out", str(out)])
    assert r.exit_code == 1
    assert not (out / "checkpoints").exists() and not (out / "images").exists()


def test_sigterm_stops_at_a_safe_point_with_a_checkpoint(tmp_path, monkeypatch):
    from rectok_core.training import tokenizer as module

    real, calls = module.TokenizerTrainer.step, {"n": 0}

    def step(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            os.kill(os.getpid(), signal.SIGTERM)  # arrives in the middle of step 2
        return real(self, *a, **k)

    monkeypatch.setattr(module.TokenizerTrainer, "step", step)
    out = tmp_path / "r"
    r = runner.invoke(app, ["train-tokenizer", *TINY, "--steps", "10", "--ckpt-every", "100", "--out", str(out)])
    assert r.exit_code == 143, r.output
    assert "SIGTERM: stopped after step 2" in r.output and "latest.pt (step 2) written" in r.output
    assert open_checkpoint(out / "checkpoints" / "latest.pt", "tokenizer")["step"] == 2
    r = runner.invoke(app, ["train-tokenizer", *TINY, "--steps", "3", "--resume", "--out", str(out)])
    assert r.exit_code == 0, r.output


def test_ctrl_c_during_start_up_is_one_line_exit_130(tmp_path, monkeypatch):
    from rectok_core.training import tokenizer as module

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(module, "build_dataset", interrupted)
    r = runner.invoke(app, ["train-tokenizer", *TINY, "--out", str(tmp_path / "r")])
    assert r.exit_code == 130 and r.output.strip().splitlines()[-1] == "interrupted"


def test_diverging_run_keeps_a_finite_checkpoint_that_resumes(tmp_path, monkeypatch):
    """A NaN gradient norm at step 3 (the loss still finite): training stops, step 2 is kept, and `--resume` with a
    smaller `--lr`, as the message advises, continues from it. (An exploding but finite run, `--lr 1e6`, is
    tests/reliability/test_writers_and_faults.py.)"""
    from rectok_core.training import tokenizer as module

    real, calls = module.TokenizerTrainer.step, {"n": 0}

    def step(self, *a, **k):
        terms, n = real(self, *a, **k)
        calls["n"] += 1
        if calls["n"] == 3:
            terms = {**terms, "grad_norm": terms["grad_norm"] * float("nan")}
        return terms, n

    monkeypatch.setattr(module.TokenizerTrainer, "step", step)
    out = tmp_path / "r"
    r = runner.invoke(app, ["train-tokenizer", *TINY, "--steps", "30", "--ckpt-every", "1", "--out", str(out)])
    assert r.exit_code == 1 and "non-finite gradient norm at step 3" in r.output, r.output
    ck = open_checkpoint(out / "checkpoints" / "latest.pt", "tokenizer")
    assert ck["step"] == 2 and f"{out / 'checkpoints' / 'latest.pt'} (step 2)" in " ".join(r.output.split())
    assert "--resume with a smaller --lr" in " ".join(r.output.split())
    assert all(torch.isfinite(v).all() for part in ("model", "ema") for v in ck[part].values())
    monkeypatch.undo()
    r = runner.invoke(app, ["train-tokenizer", *TINY, "--resume", "--lr", "1e-4", "--steps", "3", "--out", str(out)])
    assert r.exit_code == 0, r.output
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert {"event": "resume", "step": 2}.items() <= next(x for x in rows if x.get("event") == "resume").items()


def test_disk_full_while_sampling_names_the_folder_and_leaves_nothing(work, tmp_path, monkeypatch):
    from PIL import Image

    def full(self, fp, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", full)
    out = tmp_path / "s"
    r = runner.invoke(app, ["sample", work["dit"], "-n", "2", "--steps", "2", "--device", "cpu", "--out", str(out)])
    assert r.exit_code == 1 and "Traceback" not in r.output, r.output
    text = r.output.replace("\r", "\n")
    [line] = [ln[ln.index("error:"):] for ln in text.splitlines() if "error:" in ln]
    assert f"disk full writing {out / 'samples'}" in line and "MB free" in line
    assert not [p.name for p in (out / "samples").iterdir() if p.name.startswith(".")]


def test_writers_replace_their_own_files_and_take_overwrite(work, tmp_path):
    """`export --out` into an earlier export folder works, into someone's folder only with --overwrite (their
    other files stay); the weights file is readable like the rest (0644 under umask 022)."""
    out = tmp_path / "exp"
    assert runner.invoke(app, ["export", work["tok"], "--out", str(out)]).exit_code == 0
    assert runner.invoke(app, ["export", work["tok"], "--out", str(out)]).exit_code == 0  # its own folder
    modes = {p.name: p.stat().st_mode & 0o777 for p in out.iterdir()}
    assert len(set(modes.values())) == 1 and modes["model.safetensors"] & 0o044 == 0o044, modes
    theirs = foreign(tmp_path / "theirs")
    (theirs / "README.md").write_text("my notes")
    r = runner.invoke(app, ["export", work["tok"], "--out", str(theirs), "--overwrite"])
    assert r.exit_code == 0, r.output
    assert (theirs / "images" / "a.png").read_bytes() == b"png"
