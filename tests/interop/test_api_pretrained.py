"""The diffusers-style API: save_pretrained, push_to_hub(dry_run), Hub options of from_pretrained, .to(), repr, and
the one-line error for a mistyped path that looks like a Hub id."""
from __future__ import annotations

import importlib
import shutil
import subprocess

import numpy as np
import pytest
import torch
from conftest import PYTHON, cli_env, make_image_folder
from interop_helpers import (
    DIT_HEADS,
    TOK_HEADS,
    official_dit_state,
    official_tokenizer_state,
    perturbed,
    tiny_dit,
    tiny_tokenizer,
    write_official,
)

from rectok_core import Generator, Tokenizer
from rectok_core.errors import CheckpointError, RectokError
from rectok_core.interop.official import import_official

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """An imported tiny tokenizer and a DiT on it (with latent statistics of a small image folder)."""
    d = tmp_path_factory.mktemp("api")
    raw = official_tokenizer_state(tiny_tokenizer(semantic=False))
    write_official(d / "tok.pth", raw, perturbed(raw))
    dit = tiny_dit()
    write_official(d / "dit.pth", official_dit_state(dit), perturbed(official_dit_state(dit, with_rope=False)))
    data = make_image_folder(d / "data", classes=3, per_class=3, size=40)
    import_official(d / "tok.pth", d / "tok.pt", heads=TOK_HEADS)
    import_official(d / "dit.pth", d / "dit.pt", tokenizer=str(d / "tok.pt"), data=str(data),
                    stats_dir=str(d / "stats"), device="cpu", workers=0, heads=DIT_HEADS)
    return d


def test_save_pretrained_round_trips_and_push_dry_run_lists_it(models, tmp_path):
    tok = Tokenizer.from_pretrained(models / "tok.pt", device="cpu")
    folder = tok.save_pretrained(tmp_path / "tok")
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    again = Tokenizer.from_pretrained(folder, device="cpu")
    x = torch.rand(2, 3, tok.image_size, tok.image_size, generator=torch.Generator().manual_seed(0))
    assert torch.equal(tok.encode(x), again.encode(x))
    assert again.meta["sha256"] == tok.meta["sha256"]  # the folder keeps its checkpoint's identity

    gen = Generator.from_pretrained(models / "dit.pt", device="cpu")
    gen.save_pretrained(tmp_path / "dit", tokenizer_ref=str(folder))
    gen2 = Generator.from_pretrained(tmp_path / "dit", device="cpu")
    assert np.array_equal(gen.sample([0, 1, 2], steps=3, seed=4), gen2.sample([0, 1, 2], steps=3, seed=4))

    listing = gen.push_to_hub("someone/rectok-dit", dry_run=True)
    assert [n for n, _ in listing] == ["README.md", "config.json", "model.safetensors"]
    assert dict(listing)["model.safetensors"] == (tmp_path / "dit" / "model.safetensors").stat().st_size
    with pytest.raises(RectokError, match="expected a Hub id owner/name"):
        tok.push_to_hub("no-owner", dry_run=True)


def test_save_pretrained_refuses_weights_changed_in_memory(models, tmp_path):
    tok = Tokenizer.from_pretrained(models / "tok.pt", device="cpu")
    with torch.no_grad():
        next(tok.model.parameters()).add_(1.0)
    with pytest.raises(RectokError, match="weights in memory differ") as e:
        tok.save_pretrained(tmp_path / "changed")
    assert "\n" not in str(e.value) and not (tmp_path / "changed").exists()


def test_to_returns_self_and_repr_describes_the_model(models):
    gen = Generator.from_pretrained(models / "dit.pt", guide=models / "dit.pt", device="cpu")
    assert gen.to("cpu") is gen and gen.device == torch.device("cpu")
    text = repr(gen)
    c = gen.dit.model.config
    n = sum(p.numel() for p in gen.dit.model.parameters()) / 1e6
    assert text.startswith("Generator(DiT^DH") and f"latents {c.in_channels}×{c.input_size}×{c.input_size}" in text
    assert f"{n:.2f}M params" in text and "device=cpu" in text and "guide" in text
    tok = Tokenizer.from_pretrained(models / "tok.pt", device="cpu")
    assert tok.to(torch.device("cpu")) is tok
    C, h, w = tok.latent_shape
    assert repr(tok).startswith("Tokenizer(RecTok") and f"latents {C}×{h}×{w}" in repr(tok)
    assert "device=cpu" in repr(tok) and "params" in repr(tok)
    with pytest.raises(RectokError):
        tok.to("tpu")


def test_mistyped_local_path_is_no_such_folder_or_hub_repo(models, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    shutil.copy(models / "tok.pt", tmp_path / "runs" / "tok.pt")
    called = []
    resolver = importlib.import_module("rectok_core.checkpoints.resolve")  # the module, not the function
    monkeypatch.setattr(resolver, "network_available", lambda: called.append(1) or True)
    with pytest.raises(CheckpointError) as e:
        Tokenizer.from_pretrained("runs/tok-typo", device="cpu")
    msg = str(e.value)
    assert "no such folder or Hub repo" in msg and "runs/tok-typo" in msg and "\n" not in msg
    assert not called  # a path beside an existing folder is never looked up on the Hub


def _hub_cache(cache, repo: str, folder, revision: str = "main") -> str:
    """A Hugging Face Hub cache holding ``folder`` as the snapshot of ``repo`` at ``revision``."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    root = cache / f"models--{repo.replace('/', '--')}"
    (root / "refs").mkdir(parents=True)
    (root / "refs" / revision).write_text(commit)
    shutil.copytree(folder, root / "snapshots" / commit)
    return commit


def test_hub_options_reach_the_resolver(models, tmp_path, monkeypatch):
    monkeypatch.setenv("RECTOK_OFFLINE", "1")
    tok = Tokenizer.from_pretrained(models / "tok.pt", device="cpu")
    folder = tok.save_pretrained(tmp_path / "export")
    _hub_cache(tmp_path / "hub", "someone/rectok-tiny", folder, revision="v1")
    cached = Tokenizer.from_pretrained("someone/rectok-tiny", revision="v1", cache_dir=tmp_path / "hub",
                                       local_files_only=True, device="cpu")
    assert cached.meta["sha256"] == tok.meta["sha256"] and str(tmp_path / "hub") in cached.meta["path"]
    with pytest.raises(CheckpointError) as e:  # another revision is not in the cache
        Tokenizer.from_pretrained("someone/rectok-tiny", revision="v2", cache_dir=tmp_path / "hub",
                                  local_files_only=True, device="cpu")
    assert "no such folder or Hub repo at revision v2" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(CheckpointError, match="offline"):  # without local_files_only, offline is still one line
        Tokenizer.from_pretrained("someone/rectok-tiny", cache_dir=tmp_path / "hub", device="cpu")


@pytest.mark.slow
def test_sample_prints_the_estimated_time_first(models, tmp_path):
    r = subprocess.run([PYTHON, "-m", "rectok_cli.main", "sample", str(models / "dit.pt"), "-n", "6", "--steps",
                        "4", "--out", str(tmp_path / "s"), "--device", "cpu"], capture_output=True, text=True,
                       env={**cli_env(), "OMP_NUM_THREADS": "1"}, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    first = next(line for line in r.stderr.splitlines() if line.strip() and not line.startswith("using"))
    assert "estimated time: about" in first and "6 samples × 4 steps" in first and "3 DiT evaluations" in first
