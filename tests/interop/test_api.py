"""The Python API's Tokenizer: preprocessing like the data pipeline, encode/decode, statistics, input checks."""
from __future__ import annotations

import subprocess

import numpy as np
import pytest
import torch
from conftest import PYTHON, ROOT, make_image_folder
from interop_helpers import TOK_HEADS, official_tokenizer_state, tiny_tokenizer, write_official
from PIL import Image

from rectok_core.api import Tokenizer
from rectok_core.data.transforms import _to_tensor, center_crop_arr
from rectok_core.errors import RectokError
from rectok_core.interop.official import import_official

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tok_path(tmp_path_factory):
    d = tmp_path_factory.mktemp("api")
    raw = official_tokenizer_state(tiny_tokenizer(semantic=False))
    write_official(d / "RecTok_decft.pth", raw, raw)
    return import_official(d / "RecTok_decft.pth", d / "tok.pt", heads=TOK_HEADS).out


def test_import_rectok_core_loads_no_torch():
    code = "import sys, rectok_core; assert 'torch' not in sys.modules; from rectok_core import Tokenizer; print(1)"
    r = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr


def test_preprocess_matches_the_data_pipeline(tok_path, tmp_path):
    tok = Tokenizer.from_pretrained(tok_path, device="cpu")
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (50, 70, 3), dtype=np.uint8))
    img.save(tmp_path / "a.png")
    x = tok.preprocess([img, str(tmp_path / "a.png")])
    assert x.shape == (2, 3, 32, 32) and torch.equal(x[0], x[1])
    ref = _to_tensor(center_crop_arr(img, 32))  # what training/eval feed the model, in [-1, 1]
    assert torch.equal(x[0].sub(0.5).div(0.5), ref)
    # encode of [0, 1] images is the model's posterior mean of the [-1, 1] images, as a latent map
    z = tok.encode(x)
    assert z.shape == (2, 16, 8, 8)
    assert torch.equal(z[0], tok.model.latent_grid(tok.model.encode(ref[None]).mean)[0])
    rec = tok.decode(z)
    assert rec.shape == (2, 3, 32, 32) and rec.min() >= 0 and rec.max() <= 1
    assert torch.equal(tok.reconstruct(x), rec)
    expected = tok.model.decode(tok.model.latent_tokens(z)).clamp(-1, 1).add(1).div(2)
    assert torch.equal(rec, expected)


def test_sampling_the_posterior_and_normalising(tok_path, tmp_path):
    tok = Tokenizer.from_pretrained(tok_path, device="cpu")
    x = torch.rand(2, 3, 32, 32)
    with pytest.raises(RectokError, match="no latent statistics"):
        tok.encode(x, normalize=True)
    data = make_image_folder(tmp_path / "data", classes=2, per_class=3, size=40)
    stats = tok.compute_latent_stats(str(data), stats_dir=str(tmp_path / "stats"))
    assert stats.images == 6 and tok.latent_stats is stats
    z, zn = tok.encode(x), tok.encode(x, normalize=True)
    assert torch.allclose(zn, (z - stats.mean.float().view(1, -1, 1, 1)) / stats.std.float().view(1, -1, 1, 1))
    assert torch.allclose(tok.decode(zn, normalized=True), tok.decode(z), atol=1e-5)
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    s1, s2 = tok.encode(x, sample=True, generator=g1), tok.encode(x, sample=True, generator=g2)
    assert torch.equal(s1, s2) and not torch.equal(s1, z)


@pytest.mark.parametrize("bad, msg", [
    (torch.rand(2, 3, 16, 16), r"expected images of shape \(B, 3, 32, 32\)"),
    (torch.rand(3, 32, 32), r"expected images of shape"),
    (torch.rand(1, 3, 32, 32) * 2 - 1, r"in \[0, 1\]"),
])
def test_wrong_inputs_are_one_line_errors(tok_path, bad, msg):
    tok = Tokenizer.from_pretrained(tok_path, device="cpu")
    with pytest.raises(RectokError, match=msg) as e:
        tok.encode(bad)
    assert "\n" not in str(e.value)
    with pytest.raises(RectokError, match=r"expected latents of shape \(B, 16, 8, 8\)"):
        tok.decode(torch.zeros(1, 8, 8, 8))
    with pytest.raises(RectokError, match="PIL images or paths"):
        tok.preprocess([np.zeros((4, 4, 3))])

