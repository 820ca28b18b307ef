"""The generator half on CPU: latent statistics and cache, DiT^DH training (exact resume), sampling (guidance
wiring, batch/process independence, resume, bad input), and the CLI pipeline down to a finite FID."""
from __future__ import annotations

import json
import math
import shutil
import subprocess

import numpy as np
import pytest
import torch
from conftest import PYTHON, ROOT, cli_env, free_port
from typer.testing import CliRunner

from rectok_cli.main import app
from rectok_core.checkpoints import load_dit, load_tokenizer, open_checkpoint
from rectok_core.config import build_config, resume_config
from rectok_core.data import latent_cache as latents
from rectok_core.data import latent_stats
from rectok_core.data.datasets import digits
from rectok_core.errors import RectokError
from rectok_core.flow.noise import timestep_shift
from rectok_core.flow.transport import time_grid
from rectok_core.models.dit import build_dit
from rectok_core.sampling import folder as sampling
from rectok_core.sampling import generate
from rectok_core.training.config import TOKENIZER_PRESETS, TokenizerTrainConfig
from rectok_core.training.dit import train_dit
from rectok_core.training.dit_config import DIT_TRAIN_PRESETS, DiTTrainConfig
from rectok_core.training.engine import NonFiniteLoss
from rectok_core.training.rundir import read_metrics
from rectok_core.training.tokenizer import train_tokenizer
from rectok_core.utils import checkpoint, distributed, files
from rectok_core.utils.images import class_caption, grid_captions

runner = CliRunner()
CPU = distributed.Dist(0, 1, 0, torch.device("cpu"))
SHAPE = (16, 8, 8)  # the tiny tokenizer's latents: 16 channels on an 8×8 grid


pytestmark = pytest.mark.usefixtures("one_thread")


def env1() -> dict:
    return {**cli_env(), "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("generator")


@pytest.fixture(scope="module")
def tok_ckpt(work):
    cfg = build_config(TokenizerTrainConfig, TOKENIZER_PRESETS, "tiny",
                       dict(teacher="none", steps=20, batch_size=16, out=str(work / "tok"), workers=0, device="cpu"))
    return train_tokenizer(cfg)


@pytest.fixture(scope="module")
def cache_dir(work, tok_ckpt):
    tokenizer, meta = load_tokenizer(tok_ckpt)
    latents.ensure_latent_cache(work / "cache", tokenizer, meta, "digits", CPU, batch_size=256, workers=0,
                                shard_size=512)
    return work / "cache"


def dit_cfg(tok, out, **kw):
    base = dict(tokenizer=str(tok), out=str(out), steps=12, batch_size=16, log_every=4, ckpt_every=6,
                image_every=1000, device="cpu")
    base.update(kw)
    return build_config(DiTTrainConfig, DIT_TRAIN_PRESETS, "tiny", base)


@pytest.fixture(scope="module")
def dit_ckpt(work, tok_ckpt, cache_dir):
    return train_dit(dit_cfg(tok_ckpt, work / "dit", cache_latents=str(cache_dir)))


# ---------------------------------------------------------------------------------------------------------
# Latent statistics and cache
# ---------------------------------------------------------------------------------------------------------
def test_latent_stats_hand_checked_and_keyed_by_checkpoint_hash(tmp_path, tok_ckpt, monkeypatch):
    tokenizer, meta = load_tokenizer(tok_ckpt)
    data = digits(32, "val").subset(range(24))
    stats = latent_stats.compute_latent_stats(tokenizer, meta, data, CPU, batch_size=5, workers=0)
    with torch.no_grad():
        img = torch.stack([data[i]["image"] for i in range(24)])
        m = tokenizer.encode(img).mean.double()  # (B, tokens, C) posterior means
    torch.testing.assert_close(stats.mean, m.mean(dim=(0, 1)), rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(stats.std, m.reshape(-1, m.shape[-1]).std(dim=0, unbiased=False), rtol=1e-5, atol=1e-9)
    assert stats.images == 24 and stats.tokens == 24 * 64 and stats.tokenizer_sha256 == meta["sha256"]
    x = torch.randn(3, *SHAPE)
    torch.testing.assert_close(stats.denormalize(stats.normalize(x)), x, rtol=1e-5, atol=1e-5)

    calls = []
    real = latent_stats.compute_latent_stats
    monkeypatch.setattr(latent_stats, "compute_latent_stats", lambda *a, **k: calls.append(1) or real(*a, **k))
    first = latent_stats.load_or_compute_stats(tokenizer, meta, data, tmp_path, CPU, 8, 0)
    again = latent_stats.load_or_compute_stats(tokenizer, meta, data, tmp_path, CPU, 8, 0)
    assert len(calls) == 1 and torch.equal(first.mean, again.mean) and torch.equal(first.std, again.std)
    (only,) = tmp_path.glob("latent-stats-*.json")
    assert only.name.startswith(f"latent-stats-{meta['sha256'][:16]}-ema-")
    assert json.loads(only.read_text())["tokenizer_sha256"] == meta["sha256"]

    # a changed checkpoint (one weight nudged) has another content hash → another file, recomputed
    ck = open_checkpoint(tok_ckpt)
    ck["ema"]["encoder.latent_head.bias"] += 0.5
    changed = tmp_path / "changed.pt"
    checkpoint.save_atomic(ck, changed)
    tok2, meta2 = load_tokenizer(changed)
    other = latent_stats.load_or_compute_stats(tok2, meta2, data, tmp_path, CPU, 8, 0)
    assert len(calls) == 2 and meta2["sha256"] != meta["sha256"]
    assert len(list(tmp_path.glob("latent-stats-*.json"))) == 2
    assert not torch.allclose(other.mean, first.mean)


def test_latent_cache_contents_flips_and_stats(cache_dir, tok_ckpt):
    cache = latents.LatentCache(cache_dir)
    data = digits(32, "train")
    assert len(cache) == len(data) == 1437 and cache.classes == data.classes
    assert cache.index["num_shards"] == 3 and cache.index["dtype"] == "float16"
    tokenizer, meta = load_tokenizer(tok_ckpt)
    assert cache.index["tokenizer_sha256"] == meta["sha256"]
    for i in (0, 700, 1436):
        img = data[i]["image"][None]
        for flip in (False, True):
            mean, logvar = latent_stats.encode_moments(tokenizer, img.flip(-1) if flip else img, "fp32")
            item = cache[(i, flip)]
            torch.testing.assert_close(item["mean"], mean[0], rtol=2e-3, atol=2e-3)
            torch.testing.assert_close(item["logvar"], logvar[0], rtol=2e-3, atol=2e-3)
            assert item["label"] == data.items[i][1] and item["ok"]
    direct = latent_stats.compute_latent_stats(tokenizer, meta, data, CPU, batch_size=256, workers=0)
    torch.testing.assert_close(cache.stats.mean, direct.mean, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(cache.stats.std, direct.std, rtol=1e-5, atol=1e-7)
    assert cache.stats.data_fingerprint == latent_stats.dataset_fingerprint(data)


def test_latent_cache_resumes_and_refuses_foreign_folders(tmp_path, cache_dir, tok_ckpt):
    part = tmp_path / "cache"
    shutil.copytree(cache_dir, part)
    index = json.loads((part / "index.json").read_text())
    (part / "index.json").write_text(json.dumps({**index, "complete": False}))  # as left by a killed build
    (part / "shard_00001.npy").unlink()
    (part / "shard_00001.json").unlink()
    (part / ".shard_00001.tmp").write_bytes(b"half-written")
    untouched = (part / "shard_00000.npy").stat().st_mtime_ns
    tokenizer, meta = load_tokenizer(tok_ckpt)
    cache = latents.ensure_latent_cache(part, tokenizer, meta, "digits", CPU, batch_size=256, workers=0,
                                        shard_size=512)
    assert (part / "shard_00000.npy").stat().st_mtime_ns == untouched  # done shards are not redone
    assert not (part / ".shard_00001.tmp").exists()
    for k in range(3):
        assert np.array_equal(np.load(part / f"shard_{k:05d}.npy"), np.load(cache_dir / f"shard_{k:05d}.npy"))
    assert cache.index["stats"] == json.loads((cache_dir / "index.json").read_text())["stats"]

    other = tmp_path / "other.pt"
    ck = open_checkpoint(tok_ckpt)
    ck["step"] += 1
    checkpoint.save_atomic(ck, other)
    tok2, meta2 = load_tokenizer(other)
    before = (part / "index.json").read_text()
    with pytest.raises(latents.LatentCacheError, match="made with tokenizer"):
        latents.ensure_latent_cache(part, tok2, meta2, "digits", CPU, shard_size=512)
    (part / "index.json").write_text(json.dumps({**json.loads(before), "complete": False}))
    with pytest.raises(latents.LatentCacheError, match="tokenizer_sha256"):
        latents.ensure_latent_cache(part, tok2, meta2, "digits", CPU, shard_size=512, workers=0)
    with pytest.raises(latents.LatentCacheError, match="shard_size"):
        latents.ensure_latent_cache(part, tokenizer, meta, "digits", CPU, shard_size=256, workers=0)
    assert np.array_equal(np.load(part / "shard_00001.npy"), np.load(cache_dir / "shard_00001.npy"))


# ---------------------------------------------------------------------------------------------------------
# DiT training
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["cache", "online"])
def test_dit_resume_is_exact(tmp_path, tok_ckpt, cache_dir, mode):
    """6 steps straight == 3 steps, stop, resume, 3 more (ε, drop mask, t and x0 all come from the step)."""
    kw = dict(steps=6, batch_size=8, ckpt_every=3, keep_every=3, log_every=3, stats_dir=str(tmp_path / "stats"))
    if mode == "cache":
        kw["cache_latents"] = str(cache_dir)
    train_dit(dit_cfg(tok_ckpt, tmp_path / "a", **kw))
    train_dit(dit_cfg(tok_ckpt, tmp_path / "b", **kw))
    ckpts = tmp_path / "b" / "checkpoints"
    shutil.copy(ckpts / "step_0000003.pt", ckpts / "latest.pt")
    saved = open_checkpoint(ckpts / "latest.pt", "dit")
    assert saved["step"] == 3
    train_dit(resume_config(DiTTrainConfig, saved["config"], {"resume": True}))
    a = open_checkpoint(tmp_path / "a" / "checkpoints" / "latest.pt", "dit")
    b = open_checkpoint(ckpts / "latest.pt", "dit")
    assert a["step"] == b["step"] == 6
    for part in ("model", "ema"):
        for k, v in a[part].items():
            torch.testing.assert_close(v, b[part][k], rtol=1e-5, atol=1e-6, msg=f"{part} {k}")
    assert "resume" in [m.get("event") for m in read_metrics(tmp_path / "b")]
    start = next(m for m in read_metrics(tmp_path / "a") if m.get("event") == "start")
    assert start["latents"] == mode and start["latent_shape"] == list(SHAPE) and start["num_classes"] == 10
    assert a["tokenizer"]["sha256"] == files.file_sha256(tok_ckpt)
    assert a["latent_stats"]["mean"].shape == (16,) and a["classes"] == [str(c) for c in range(10)]


def test_dit_nan_stops_and_keeps_last_good_checkpoint(tmp_path, tok_ckpt, cache_dir, monkeypatch):
    import dataclasses

    from rectok_core.flow.objectives import OBJECTIVES

    real, calls = OBJECTIVES["flow-shifted"], {"n": 0}  # the DiT^DH's objective

    def poisoned(*args, **kwargs):
        calls["n"] += 1
        loss, per, terms = real.loss(*args, **kwargs)
        return (loss * float("nan"), per, terms) if calls["n"] > 4 else (loss, per, terms)

    monkeypatch.setitem(OBJECTIVES._entries, "flow-shifted", dataclasses.replace(real, loss=poisoned))
    with pytest.raises(NonFiniteLoss, match="non-finite loss \\(loss\\).* at step 5"):
        train_dit(dit_cfg(tok_ckpt, tmp_path / "run", steps=8, ckpt_every=2, cache_latents=str(cache_dir)))
    ck = open_checkpoint(tmp_path / "run" / "checkpoints" / "latest.pt", "dit")
    assert ck["step"] == 4 and all(torch.isfinite(v).all() for v in ck["model"].values())


def test_train_dit_cli_resume_with_moved_tokenizer_and_errors(tmp_path, tok_ckpt, cache_dir):
    out = tmp_path / "run"
    base = ["train-dit", "--preset", "tiny", "--steps", "2", "--batch-size", "8", "--out", str(out),
            "--device", "cpu", "--cache-latents", str(cache_dir), "--image-every", "1000"]
    r = runner.invoke(app, ["train-dit", "--preset", "tiny", "--out", str(out)])
    assert r.exit_code == 1 and "--tokenizer is required" in r.output
    assert runner.invoke(app, base + ["--tokenizer", str(tok_ckpt)]).exit_code == 0
    moved = tmp_path / "moved.pt"
    shutil.copy(tok_ckpt, moved)
    r = runner.invoke(app, ["train-dit", "--preset", "tiny", "--out", str(out), "--resume", "--steps", "3",
                            "--tokenizer", str(moved)])
    assert r.exit_code == 0, r.output
    assert open_checkpoint(out / "checkpoints" / "latest.pt", "dit")["step"] == 3
    ck = open_checkpoint(tok_ckpt)
    ck["step"] += 1
    checkpoint.save_atomic(ck, tmp_path / "other.pt")
    r = runner.invoke(app, ["train-dit", "--preset", "tiny", "--out", str(out), "--resume", "--steps", "4",
                            "--tokenizer", str(tmp_path / "other.pt")])
    assert r.exit_code == 1 and "is not the one the run" in r.output
    r = runner.invoke(app, ["train-dit", "--preset", "tiny", "--out", str(out), "--resume", "--ema", "0.5"])
    assert r.exit_code == 1 and "--ema 0.5 differs from the run being resumed" in r.output


@pytest.mark.slow
def test_two_process_cache_and_training(tmp_path, tok_ckpt, cache_dir):
    """torchrun (gloo): shards dealt over 2 ranks give the single-process cache byte for byte; online training
    all-reduces the latent statistics and runs DDP."""
    def torchrun(port, *args):
        cmd = [PYTHON, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
               "-m", "rectok_cli.main", *map(str, args), "--device", "cpu"]
        p = subprocess.run(cmd, cwd=ROOT, env=env1(), capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, p.stderr[-3000:]

    torchrun(free_port(), "cache-latents", tok_ckpt, "--out", tmp_path / "cache", "--shard-size", "512",
             "--batch-size", "256", "--workers", "0")
    for k in range(3):
        assert np.array_equal(np.load(tmp_path / "cache" / f"shard_{k:05d}.npy"),
                              np.load(cache_dir / f"shard_{k:05d}.npy"))
    ours, ref = (json.loads((d / "index.json").read_text())["stats"] for d in (tmp_path / "cache", cache_dir))
    np.testing.assert_allclose(ours["mean"], ref["mean"], rtol=1e-9)
    np.testing.assert_allclose(ours["std"], ref["std"], rtol=1e-9)

    torchrun(free_port(), "train-dit", "--preset", "tiny", "--tokenizer", tok_ckpt, "--steps", "4", "--batch-size", "8",
             "--out", tmp_path / "dit", "--stats-dir", tmp_path / "stats", "--image-every", "4")
    start = next(m for m in read_metrics(tmp_path / "dit") if m.get("event") == "start")
    assert start["world_size"] == 2 and start["global_batch"] == 16 and start["latents"] == "online"
    (stats_file,) = (tmp_path / "stats").glob("latent-stats-*.json")
    single = latent_stats.LatentStats.from_json(ref)  # the same images (digits train), one process, via the cache
    online = latent_stats.LatentStats.from_json(json.loads(stats_file.read_text()))
    torch.testing.assert_close(online.mean, single.mean, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(online.std, single.std, rtol=1e-6, atol=1e-9)
    assert open_checkpoint(tmp_path / "dit" / "checkpoints" / "latest.pt", "dit")["step"] == 4


# ---------------------------------------------------------------------------------------------------------
# Guidance and integration wiring (stand-in models)
# ---------------------------------------------------------------------------------------------------------
class Recorder:
    """Velocity ``fn(x, t, y)`` that records each call's t and labels."""

    def __init__(self, fn):
        self.fn, self.calls = fn, []

    def __call__(self, x, t, y):
        self.calls.append((t.clone(), y.clone(), x.shape[0]))
        return self.fn(x, t, y)


def _label_velocity(w: float):
    return lambda x, t, y: w * (1 + y.float()).view(-1, 1, 1, 1).expand_as(x)


def test_guidance_scale_one_is_plain_conditional_with_one_pass():
    model = Recorder(_label_velocity(1.0))
    x, t, y = torch.randn(3, *SHAPE), torch.rand(3), torch.tensor([0, 4, 9])
    for method in ("none", "cfg", "autoguidance"):
        guide = Recorder(_label_velocity(5.0))
        v = generate.build_velocity(model, method, 1.0, 10, guide)
        torch.testing.assert_close(v(x, t, y), _label_velocity(1.0)(x, t, y))
        assert guide.calls == [] and model.calls[-1][2] == 3 and torch.equal(model.calls[-1][1], y)
    cfg2 = generate.build_velocity(model, "cfg", 2.0, 10)
    out = cfg2(x, t, y)  # one doubled pass: v_u + 2 (v_c − v_u) with v_u the null class (label 10)
    assert model.calls[-1][2] == 6 and torch.equal(model.calls[-1][1], torch.tensor([0, 4, 9, 10, 10, 10]))
    torch.testing.assert_close(out, 11.0 + 2 * (_label_velocity(1.0)(x, t, y) - 11.0))


def test_cfg_scale_one_equals_no_guidance_on_the_dit(dit_ckpt):
    dit = load_dit(dit_ckpt, "raw")  # the EMA of 12 steps is still close to the zero-output init
    idx, labels = torch.arange(5), torch.tensor([0, 1, 2, 3, 4])
    runs = {}
    for method, scale in (("none", 1.0), ("cfg", 1.0), ("cfg", 1.5)):
        v = generate.build_velocity(generate.RowPadded(dit.model), method, scale, dit.model.null_class)
        runs[(method, scale)] = generate.generate_latents(v, idx, labels, 0, SHAPE, 5, "euler", torch.device("cpu"),
                                                          "fp32")
    assert torch.equal(runs[("none", 1.0)], runs[("cfg", 1.0)])
    assert (runs[("none", 1.0)] - runs[("cfg", 1.5)]).abs().max() > 1e-4


def test_autoguidance_formula_interval_and_euler_grid():
    main = Recorder(lambda x, t, y: 2.0 * x + (1 + y.float()).view(-1, 1, 1, 1))
    guide = Recorder(lambda x, t, y: 0.5 * x)
    w, interval = 1.29, (0.3, 0.8)
    v = generate.build_velocity(main, "autoguidance", w, 10, guide, interval)
    x, y = torch.randn(4, *SHAPE), torch.tensor([1, 2, 3, 4])
    t = torch.tensor([0.1, 0.3, 0.5, 0.9])
    vm, vg = 2.0 * x + (1 + y.float()).view(-1, 1, 1, 1), 0.5 * x
    inside = torch.tensor([False, True, True, False]).view(-1, 1, 1, 1)
    torch.testing.assert_close(v(x, t, y), torch.where(inside, vg + w * (vm - vg), vm))
    assert torch.equal(main.calls[-1][1], y) and torch.equal(guide.calls[-1][1], y)  # same label, no null class

    N = 7
    main.calls.clear()
    guide.calls.clear()
    generate.generate_latents(v, torch.arange(4), y, 0, SHAPE, N, "euler", torch.device("cpu"), "fp32")
    grid = time_grid(N, timestep_shift(8, 8, 16))
    for rec in (main, guide):
        assert len(rec.calls) == N - 1
        torch.testing.assert_close(torch.stack([c[0][0] for c in rec.calls]), grid[:-1])
    main.calls.clear()
    generate.generate_latents(generate.build_velocity(main, "none", 1.0, 10), torch.arange(4), y, 0, SHAPE, N,
                              "heun", torch.device("cpu"), "fp32")
    assert len(main.calls) == 2 * (N - 1)


def test_row_padding_makes_batches_bit_identical(dit_ckpt):
    dit = load_dit(dit_ckpt)
    padded = generate.RowPadded(dit.model)
    x, t, y = torch.randn(20, *SHAPE), torch.rand(20), torch.arange(20) % 10
    full = padded(x, t, y)
    parts = torch.cat([padded(x[i:i + 3], t[i:i + 3], y[i:i + 3]) for i in range(0, 20, 3)])
    assert torch.equal(full, parts)


# ---------------------------------------------------------------------------------------------------------
# rectok sample
# ---------------------------------------------------------------------------------------------------------
def sample_args(dit, out, *extra):
    return ["sample", str(dit), "-n", "20", "--steps", "6", "--out", str(out), "--device", "cpu", *extra]


@pytest.fixture(scope="module")
def samples_ref(work, dit_ckpt):
    """An uninterrupted single-process run (batch size 7)."""
    r = runner.invoke(app, sample_args(dit_ckpt, work / "ref", "--batch-size", "7"))
    assert r.exit_code == 0, r.output
    return work / "ref"


def _same_samples(a, b, n=20):
    assert np.array_equal(np.load(a / "samples.npz")["arr_0"], np.load(b / "samples.npz")["arr_0"])
    for i in range(n):
        name = f"samples/{i:06d}.png"
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_sample_folder_contents(samples_ref, dit_ckpt):
    npz = np.load(samples_ref / "samples.npz")
    assert npz["arr_0"].shape == (20, 32, 32, 3) and npz["arr_0"].dtype == np.uint8
    assert npz["arr_1"].tolist() == [i % 10 for i in range(20)]
    m = json.loads((samples_ref / "manifest.json").read_text())
    assert m["complete"] and m["n"] == 20 and m["seed"] == 0 and m["steps"] == 6 and m["sampler"] == "euler"
    assert m["dit"]["sha256"] == files.file_sha256(dit_ckpt) and m["labels"]["per_class"] == "2"
    assert m["image_size"] == 32 and (samples_ref / "grid.png").is_file()
    # grid.png: one class per row (classes 0-7), each row its class's first samples i, i+10 (labels are i mod 10)
    from PIL import Image
    caps = grid_captions(samples_ref / "grid.png")
    assert caps["rows"] == [class_caption(c, m["classes"]) for c in range(8)]
    assert "one class per row" in caps["title"] and "6 steps" in caps["title"]
    def png(i):
        with Image.open(samples_ref / f"samples/{i:06d}.png") as im:
            return np.array(im.convert("RGB"))

    with Image.open(samples_ref / "grid.png") as g:
        grid = np.array(g.convert("RGB"))
    top = grid.shape[0] - 4 * (8 * 34 + 2) + 8  # 32 px shown 4x, 2 px padding; the title bar is above
    left = [x for x in range(grid.shape[1] - 128) if np.array_equal(grid[top:top + 128:4, x:x + 128:4], png(0))]
    # sample 0 (class 0) opens the first row, right of the label column (each pixel shown as a 4x4 block)
    assert len(left) == 4 and left == list(range(left[0], left[0] + 4))

    def tile(r, c):
        y, x = top + 4 * 34 * r, left[0] + 4 * 34 * c
        return grid[y:y + 128:4, x:x + 128:4]

    assert np.array_equal(tile(1, 0), png(1)) and np.array_equal(tile(1, 1), png(11))  # class 1: samples 1, 11
    assert np.array_equal(tile(7, 1), png(17))
    assert m["compile"] is False  # auto: off on CPU; recorded, not part of the folder's identity


def test_samples_do_not_depend_on_processes_or_batch_size(tmp_path, samples_ref, dit_ckpt):
    cmd = [PYTHON, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
           "-m", "rectok_cli.main", *sample_args(dit_ckpt, tmp_path / "ddp", "--batch-size", "4")]
    p = subprocess.run(cmd, cwd=ROOT, env=env1(), capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    assert json.loads((tmp_path / "ddp" / "manifest.json").read_text())["world_size"] == 2
    _same_samples(samples_ref, tmp_path / "ddp")


def test_interrupted_sampling_resumes_to_the_same_set(tmp_path, samples_ref, dit_ckpt, monkeypatch):
    out = tmp_path / "killed"
    real, written = sampling.write_png, []

    def dies_after_five(path, image):
        if len(written) == 5:
            raise KeyboardInterrupt  # the process is killed while writing sample 6
        real(path, image)
        written.append(path)

    monkeypatch.setattr(sampling, "write_png", dies_after_five)
    r = runner.invoke(app, sample_args(dit_ckpt, out, "--batch-size", "3"))
    assert r.exit_code == 130
    assert len(list((out / "samples").glob("*.png"))) == 5 and not (out / "samples.npz").exists()
    assert json.loads((out / "manifest.json").read_text())["complete"] is False
    (out / "samples" / ".tmp-000009.png").write_bytes(b"\x89PNG half")  # a temp file left by the kill
    monkeypatch.setattr(sampling, "write_png", real)
    r = runner.invoke(app, sample_args(dit_ckpt, out, "--batch-size", "6"))
    assert r.exit_code == 0, r.output
    assert "15 new, 5 already there" in r.output
    assert not list((out / "samples").glob(".tmp-*"))
    _same_samples(samples_ref, out)
    r = runner.invoke(app, sample_args(dit_ckpt, out))  # complete: nothing to do
    assert r.exit_code == 0 and "0 new, 20 already there" in r.output


def _guide_with(dit_ckpt, path, **arch):
    """A DiT checkpoint like ``dit_ckpt`` but with another architecture (fresh weights)."""
    ck = open_checkpoint(dit_ckpt)
    cfg = {**ck["dit_config"], **arch}
    model = build_dit("tiny", **{k: cfg[k] for k in ("in_channels", "input_size", "num_classes")})
    ck.update(dit_config=cfg, generator={"family": "dit-dh", "config": cfg}, model=model.state_dict(),
              ema=model.state_dict())
    checkpoint.save_atomic(ck, path)
    return path


@pytest.mark.parametrize("case", ["tokenizer_as_dit", "guide_classes", "guide_shape", "n0", "no_guide",
                                  "other_seed", "other_model", "foreign_folder", "bad_interval"])
def test_sample_bad_input_gives_one_line_errors(tmp_path, case, dit_ckpt, tok_ckpt, samples_ref):
    out = tmp_path / "out"
    args = sample_args(dit_ckpt, out)
    expect = {"tokenizer_as_dit": "holds a RecTok tokenizer", "guide_classes": "has 7 classes, the DiT 10",
              "guide_shape": "latents of shape 8×8×8", "n0": "-n must be positive", "no_guide": "needs --guide",
              "other_seed": "seed = 0 (this run: 1)", "other_model": "dit.sha256",
              "foreign_folder": "holds no rectok sample manifest", "bad_interval": "--interval"}[case]
    if case == "tokenizer_as_dit":
        args = sample_args(tok_ckpt, out)
    elif case == "guide_classes":
        args += ["--cfg", "autoguidance", "--scale", "1.29", "--guide",
                 str(_guide_with(dit_ckpt, tmp_path / "g.pt", num_classes=7))]
    elif case == "guide_shape":
        args += ["--cfg", "autoguidance", "--guide", str(_guide_with(dit_ckpt, tmp_path / "g.pt", in_channels=8))]
    elif case == "n0":
        args[args.index("-n") + 1] = "0"
    elif case == "no_guide":
        args += ["--cfg", "autoguidance"]
    elif case == "bad_interval":
        args += ["--cfg", "cfg", "--scale", "2", "--interval", "0.5"]
    elif case in ("other_seed", "other_model"):
        shutil.copytree(samples_ref, out)
        if case == "other_seed":
            args += ["--seed", "1"]
        else:
            other = tmp_path / "other.pt"
            ck = open_checkpoint(dit_ckpt)
            ck["step"] += 1
            checkpoint.save_atomic(ck, other)
            args = sample_args(other, out)
    elif case == "foreign_folder":
        out.mkdir()
        (out / "notes.txt").write_text("mine")
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} if out.exists() else {}
    r = runner.invoke(app, args)
    assert r.exit_code == 1, r.output
    assert expect in r.output and "Traceback" not in r.output
    after = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} if out.exists() else {}
    assert after == before  # nothing overwritten or added


# ---------------------------------------------------------------------------------------------------------
# Evaluation and the whole pipeline through the CLI
# ---------------------------------------------------------------------------------------------------------
def _reference_folder(path, n):
    from PIL import Image

    data = digits(32, "val")
    path.mkdir(parents=True)
    for i in range(n):
        x = ((data[i]["image"].permute(1, 2, 0) + 1) * 127.5).round().clamp(0, 255).byte().numpy()
        Image.fromarray(x).save(path / f"{i:04d}.png")
    return path


def test_eval_samples_with_reference_images_and_npz(tmp_path, samples_ref):
    ref = _reference_folder(tmp_path / "ref", 20)
    r = runner.invoke(app, ["eval-samples", str(samples_ref / "samples.npz"), "--ref-data", str(ref), "--kid",
                            "--device", "cpu", "--out", str(tmp_path / "eval.json")])
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "eval.json").read_text())
    m, man = res["metrics"], res["manifest"]
    assert math.isfinite(m["fid"]) and 0 <= m["precision"] <= 1 and 0 <= m["recall"] <= 1 and "kid" in m
    assert "inception_score" in m or "logits" in res["unavailable"]["inception_score"]
    assert man["reference"]["kind"] == "folder" and man["reference"]["num_images"] == 20
    assert man["samples"]["kind"] == "npz" and man["samples"]["num_images"] == 20
    assert man["generator"]["known"] and man["label_scheme"]["per_class"] == "2"
    r = runner.invoke(app, ["eval-samples", str(samples_ref), "--device", "cpu"])
    assert r.exit_code == 1 and "exactly one reference" in r.output


@pytest.mark.slow
def test_eval_samples_against_an_adm_reference_batch(tmp_path, samples_ref):
    """An ADM-style reference batch (arr_0 images, mu/sigma, mu_s/sigma_s): precision/recall against its images
    (the same as against a folder of those images) and sFID against its spatial statistics."""
    from rectok_core.metrics.fid import feature_stats
    from rectok_core.metrics.inception import extract_inception_outputs
    from rectok_core.models.inception import SPATIAL_DIM, InceptionFeatures

    def adm_batch(path, images):
        pool, _, spatial = extract_inception_outputs(images, InceptionFeatures(), "cpu", False, spatial=True)
        assert spatial.shape == (len(images), SPATIAL_DIM)
        (mu, sigma), (mu_s, sigma_s) = feature_stats(pool), feature_stats(spatial)
        np.savez(path, arr_0=images, mu=mu, sigma=sigma, mu_s=mu_s, sigma_s=sigma_s)
        return path

    def evaluate(*ref):
        out = tmp_path / f"eval{len(list(tmp_path.glob('eval*.json')))}.json"
        r = runner.invoke(app, ["eval-samples", str(samples_ref / "samples.npz"), *map(str, ref), "--device", "cpu",
                                "--out", str(out)])
        assert r.exit_code == 0, r.output
        return json.loads(out.read_text())

    samples = np.load(samples_ref / "samples.npz")["arr_0"]
    same = evaluate("--ref-stats", adm_batch(tmp_path / "same.npz", samples))
    m = same["metrics"]
    assert abs(m["fid"]) < 1e-3 and abs(m["sfid"]) < 1e-3 and (m["precision"], m["recall"]) == (1.0, 1.0)
    assert same["manifest"]["reference"]["images"] == 20 and same["manifest"]["reference"]["spatial_statistics"]
    assert "sfid" not in same["unavailable"] and "precision_recall" not in same["unavailable"]

    folder = _reference_folder(tmp_path / "ref", 20)
    from PIL import Image
    digits_imgs = np.stack([np.array(Image.open(folder / f"{i:04d}.png")) for i in range(20)])
    other = evaluate("--ref-stats", adm_batch(tmp_path / "digits.npz", digits_imgs))["metrics"]
    by_folder = evaluate("--ref-data", folder)
    assert other["sfid"] > 1.0 and other["fid"] == pytest.approx(by_folder["metrics"]["fid"], rel=1e-6)
    assert (other["precision"], other["recall"]) == (by_folder["metrics"]["precision"],
                                                     by_folder["metrics"]["recall"])
    assert "spatial statistics" in by_folder["unavailable"]["sfid"]


@pytest.mark.slow
def test_cli_pipeline_digits_to_fid(tmp_path):
    """train-tokenizer → cache-latents → train-dit → sample -n 100 → fid-stats → eval-samples, all via the CLI."""
    def ok(*args):
        r = runner.invoke(app, [str(a) for a in args])
        assert r.exit_code == 0, r.output
        return r

    tok = tmp_path / "tok" / "checkpoints" / "latest.pt"
    ok("train-tokenizer", "--preset", "tiny", "--teacher", "none", "--steps", "20", "--batch-size", "16",
       "--out", tmp_path / "tok", "--device", "cpu")
    ok("cache-latents", tok, "--data", "digits", "--out", tmp_path / "cache", "--workers", "0",
       "--batch-size", "256", "--device", "cpu")
    ok("train-dit", "--preset", "tiny", "--tokenizer", tok, "--cache-latents", tmp_path / "cache", "--steps", "30",
       "--batch-size", "16", "--out", tmp_path / "dit", "--device", "cpu", "--image-every", "30")
    caps = grid_captions(tmp_path / "dit" / "images" / "samples_0000030.png")  # one class per row: digits 0-7
    assert caps["rows"] == [class_caption(c, [str(d) for d in range(10)]) for c in range(8)]
    assert caps["title"].startswith("step 30: EMA samples, one class per row")
    losses = [m["loss"] for m in read_metrics(tmp_path / "dit") if "loss" in m]
    assert len(losses) == 3 and all(math.isfinite(v) for v in losses)
    ok("sample", tmp_path / "dit" / "checkpoints" / "latest.pt", "-n", "100", "--steps", "10",
       "--out", tmp_path / "samples", "--batch-size", "50", "--device", "cpu")
    ok("fid-stats", _reference_folder(tmp_path / "ref", 20), "--out", tmp_path / "ref.npz", "--device", "cpu")
    ok("eval-samples", tmp_path / "samples", "--ref-stats", tmp_path / "ref.npz", "--device", "cpu")
    res = json.loads((tmp_path / "samples" / "eval.json").read_text())
    assert math.isfinite(res["metrics"]["fid"]) and res["metrics"]["fid"] > 0
    man = res["manifest"]
    assert man["reference"]["kind"] == "statistics"
    assert man["reference"]["sha256"] == files.file_sha256(tmp_path / "ref.npz")
    assert man["samples"]["num_images"] == 100 and man["label_scheme"]["per_class"] == "10"
    gen = man["generator"]
    assert gen["steps"] == 10 and gen["sampler"] == "euler" and gen["seed"] == 0 and gen["precision"] == "fp32"
    assert gen["guidance"]["method"] == "none" and gen["tokenizer"]["sha256"] == files.file_sha256(tok)
    assert "precision_recall" in res["unavailable"]


def test_cache_latents_cli_validates_flags(tmp_path, tok_ckpt):
    base = ["cache-latents", str(tok_ckpt), "--out", str(tmp_path / "c"), "--device", "cpu", "--workers", "0"]
    for extra, expect in ((["--dtype", "int8"], "--dtype 'int8'"), (["--weights", "best"], "--weights 'best'"),
                          (["--shard-size", "0"], "--shard-size must be positive"),
                          (["--precision", "fp16"], "--precision 'fp16'")):
        r = runner.invoke(app, base + extra)
        assert r.exit_code == 1 and expect in r.output, r.output
    assert not (tmp_path / "c").exists()
    with pytest.raises(RectokError, match="unlabelled"):
        flat = tmp_path / "flat"
        flat.mkdir()
        from PIL import Image
        for i in range(3):
            Image.new("RGB", (40, 40), (i * 50, 0, 0)).save(flat / f"{i}.png")
        tokenizer, meta = load_tokenizer(tok_ckpt)
        latents.ensure_latent_cache(tmp_path / "c2", tokenizer, meta, str(flat), CPU, workers=0)
    assert not (tmp_path / "c2").exists()
