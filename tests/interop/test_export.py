"""export / push / the checkpoint resolver: folders load bit for bit like their checkpoints, everywhere."""
from __future__ import annotations

import json
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
from PIL import Image

from rectok_core import Generator, Tokenizer
from rectok_core.errors import CheckpointError, RectokError
from rectok_core.interop.export import export, push
from rectok_core.interop.official import import_official
from rectok_core.utils.files import file_sha256

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Imported tiny tokenizer and DiT (with latent statistics of a small image folder) and their exports."""
    d = tmp_path_factory.mktemp("models")
    raw = official_tokenizer_state(tiny_tokenizer(semantic=False))
    write_official(d / "RecTok_decft.pth", raw, perturbed(raw))
    dit = tiny_dit()
    write_official(d / "dit.pth", official_dit_state(dit), perturbed(official_dit_state(dit, with_rope=False)))
    data = make_image_folder(d / "data", classes=3, per_class=4, size=40)
    import_official(d / "RecTok_decft.pth", d / "tok.pt", heads=TOK_HEADS)
    import_official(d / "dit.pth", d / "dit.pt", tokenizer=str(d / "tok.pt"), data=str(data),
                    stats_dir=str(d / "stats"), device="cpu", workers=0,
                    heads=DIT_HEADS)
    export(d / "tok.pt", d / "export" / "tok")
    metrics = {"fid": 12.3456, "inception_score": {"mean": 3.5, "std": 0.1}}
    (d / "eval.json").write_text(json.dumps({"metrics": metrics, "manifest": {}}))
    r = subprocess.run([PYTHON, "-m", "rectok_cli.main", "export", str(d / "dit.pt"), "--out",
                        str(d / "export" / "dit"), "--tokenizer-ref", "../tok", "--eval", str(d / "eval.json")],
                       capture_output=True, text=True, env=cli_env())
    assert r.returncode == 0, r.stderr
    return d


def test_tokenizer_folder_is_bit_identical_to_its_checkpoint(models):
    folder = models / "export" / "tok"
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["format"] == "rectok-export" and cfg["kind"] == "tokenizer" and cfg["weights"] == "ema"
    assert cfg["checkpoint_sha256"] == file_sha256(models / "tok.pt")
    assert cfg["weights_sha256"] == file_sha256(folder / "model.safetensors")
    assert (folder / "README.md").read_text().startswith("---\nlicense: apache-2.0\nlibrary_name: rectok\n")
    a, b = Tokenizer.from_pretrained(models / "tok.pt", device="cpu"), Tokenizer.from_pretrained(folder, device="cpu")
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert a.meta["sha256"] == b.meta["sha256"]  # the folder keeps its checkpoint's identity
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(a.reconstruct(x), b.reconstruct(x))
    with pytest.raises(CheckpointError, match="holds only its ema weights: use --weights ema"):
        Tokenizer.from_pretrained(folder, device="cpu", weights="raw")


def test_changed_weights_file_is_refused(models, tmp_path):
    import shutil

    folder = shutil.copytree(models / "export" / "tok", tmp_path / "tok")
    data = bytearray((folder / "model.safetensors").read_bytes())
    data[-1] ^= 1
    (folder / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="does not match the sha256"):
        Tokenizer.from_pretrained(folder, device="cpu")
    with pytest.raises(CheckpointError, match="holds a RecTok tokenizer .* but a generator"):
        Generator.from_pretrained(models / "export" / "tok", device="cpu")


def _sample(model, out, *extra):
    r = subprocess.run([PYTHON, "-m", "rectok_cli.main", "sample", str(model), "--out", str(out), "-n", "5",
                        "--steps", "4", "--device", "cpu", "--batch-size", "4", *extra],
                       capture_output=True, text=True, env={**cli_env(), "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr
    return [np.array(Image.open(out / "samples" / f"{i:06d}.png")) for i in range(5)]


@pytest.mark.slow
def test_sample_from_folder_equals_checkpoint_and_generator(models, tmp_path):
    folder = models / "export" / "dit"
    card = (folder / "README.md").read_text()
    assert "| fid | 12.35 |" in card and "| inception_score | 3.5 ± 0.1 |" in card
    guided = ("--cfg", "cfg", "--scale", "1.5")
    from_ckpt = _sample(models / "dit.pt", tmp_path / "a", *guided)
    from_folder = _sample(folder, tmp_path / "b", *guided)  # its tokenizer found through --tokenizer-ref
    assert all(np.array_equal(x, y) for x, y in zip(from_ckpt, from_folder))
    man = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert man["dit"]["sha256"] == file_sha256(models / "dit.pt")
    gen = Generator.from_pretrained(folder, tokenizer=models / "export" / "tok", device="cpu")
    images = gen.sample([i % 3 for i in range(5)], steps=4, cfg="cfg", scale=1.5, seed=0)
    assert images.dtype == np.uint8 and images.shape == (5, 32, 32, 3)
    assert all(np.array_equal(images[i], from_folder[i]) for i in range(5))
    # any subset, in any order, by sample index
    some = gen.sample([1, 0], indices=[4, 3], steps=4, cfg="cfg", scale=1.5, seed=0)
    assert np.array_equal(some[0], from_folder[4]) and np.array_equal(some[1], from_folder[3])
    floats = gen.sample([0], steps=4, cfg="cfg", scale=1.5, output="float")
    assert floats.shape == (1, 3, 32, 32) and 0 <= floats.min() and floats.max() <= 1


def test_generator_checks_its_inputs(models):
    gen = Generator.from_pretrained(models / "dit.pt", device="cpu")
    assert gen.classes == ["class0", "class1", "class2"] and gen.num_classes == 3
    for kwargs, msg in (({"labels": [3]}, r"labels must lie in \[0, 3\)"),
                        ({"labels": [0, 1], "indices": [0]}, "one sample index per label"),
                        ({"labels": [0], "cfg": "autoguidance", "scale": 1.3}, "needs --guide"),
                        ({"labels": [0], "steps": 1}, "--steps must be at least 2")):
        with pytest.raises(RectokError, match=msg) as e:
            gen.sample(**kwargs)
        assert "\n" not in str(e.value)


def test_hub_id_offline_is_one_line_naming_the_local_folder(models, monkeypatch):
    monkeypatch.setenv("RECTOK_OFFLINE", "1")
    with pytest.raises(CheckpointError) as e:
        Tokenizer.from_pretrained("someone/rectok-tiny", device="cpu")
    msg = str(e.value)
    assert "\n" not in msg and "offline" in msg and "hf download someone/rectok-tiny --local-dir" in msg
    r = subprocess.run([PYTHON, "-m", "rectok_cli.main", "sample", "someone/rectok-dit", "--out",
                        str(models / "never")], capture_output=True, text=True, env=cli_env())
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "--local-dir DIR" in r.stderr
    assert not (models / "never").exists()


def test_push_dry_run_and_refusals(models, tmp_path):
    folder = models / "export" / "dit"
    listing = push(folder, "someone/rectok-dit", dry_run=True)
    assert [n for n, _ in listing] == ["README.md", "config.json", "model.safetensors"]
    assert dict(listing)["model.safetensors"] == (folder / "model.safetensors").stat().st_size
    r = subprocess.run([PYTHON, "-m", "rectok_cli.main", "push", str(folder), "--repo", "someone/rectok-dit",
                        "--dry-run"], capture_output=True, text=True, env=cli_env())
    assert r.returncode == 0 and "would upload 3 files to someone/rectok-dit" in r.stderr
    with pytest.raises(RectokError, match="not a rectok export folder"):
        push(tmp_path, "someone/x", dry_run=True)
    with pytest.raises(RectokError, match="expected a Hub id owner/name"):
        push(folder, "no-owner", dry_run=True)
    with pytest.raises(RectokError, match="offline"):
        push(folder, "someone/x")
