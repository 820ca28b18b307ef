"""import-official for SiT, LightningDiT and DiT: official containers built from the official-layout weights of
tests/data/generators (gen-arch's vectors, made by the official RecTok code at ee87aaf), detected from keys and
shapes, imported, and their outputs equal to the official networks' saved outputs."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pytest
import torch
from conftest import make_image_folder
from interop_helpers import TOK_HEADS, official_tokenizer_state, perturbed, write_official

from rectok_core.checkpoints import load_dit
from rectok_core.errors import CheckpointError
from rectok_core.interop.official import import_official
from rectok_core.interop.official_generators import FAMILIES, detect_family
from rectok_core.models.tokenizer import RecTok, TokenizerModelConfig
from rectok_core.training.config import TOKENIZER_PRESETS

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "models"))
from family_weights import state_from_manifest  # noqa: E402

DATA = Path(__file__).resolve().parents[1] / "data" / "generators"
pytestmark = pytest.mark.usefixtures("one_thread")


def vectors(family: str) -> tuple[dict, dict]:
    return json.loads((DATA / f"{family}.json").read_text()), torch.load(DATA / f"{family}.pt")


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    """An imported tiny tokenizer with 4 latent channels on an 8×8 grid (the generators' vectors' latents), and a
    small labelled folder for the latent statistics."""
    root = tmp_path_factory.mktemp("official-gen")
    torch.manual_seed(0)
    cfg = TokenizerModelConfig(**{**TOKENIZER_PRESETS["tiny"]["model"], "dim": 4}, rope="official", teacher_dim=0)
    sd = official_tokenizer_state(RecTok(cfg, semantic=False).eval())
    write_official(root / "tok.pth", sd, sd)
    import_official(root / "tok.pth", root / "tok.pt", heads=TOK_HEADS)
    return root / "tok.pt", make_image_folder(root / "data", classes=3, per_class=2, size=32)


@pytest.mark.parametrize("family", FAMILIES)
def test_import_detects_the_family_and_reproduces_the_official_output(family, tokenizer, tmp_path):
    meta, v = vectors(family)
    variant = meta["variants"][0]
    sd = state_from_manifest(variant["manifest"])
    assert detect_family(sd) == family  # from keys and shapes alone (no args)
    write_official(tmp_path / "gen.pth", perturbed(sd), sd, epoch=9)  # model_ema = the vectors' weights
    tok, data = tokenizer
    res = import_official(tmp_path / "gen.pth", tmp_path / "gen.pt", tokenizer=str(tok), data=str(data),
                          stats_dir=str(tmp_path / "stats"), device="cpu", workers=0, heads="4")
    assert res.kind == "dit" and res.description.startswith(f"{family}-")
    loaded = load_dit(tmp_path / "gen.pt")
    assert loaded.family == family and loaded.step == 10 * (1_281_167 // 1024)
    assert {k: getattr(loaded.model.config, k) for k in variant["rectok_config"]} == variant["rectok_config"]
    out = loaded.model(v["x"], v["t"], v["y"])
    torch.testing.assert_close(out, v["out"], rtol=1e-5, atol=1e-5)


def test_args_name_the_family_and_bad_input_is_one_line(tokenizer, tmp_path):
    meta, _ = vectors("dit")
    sd = state_from_manifest(meta["variants"][0]["manifest"])
    assert detect_family(sd, {"model": "SiT_xl"}) == "sit"  # the container's args decide first
    assert detect_family({"s_embedder.proj.weight": torch.zeros(1), **sd}) is None  # a DiT^DH
    write_official(tmp_path / "gen.pth", sd, sd)
    with pytest.raises(CheckpointError, match="give it with --heads N"):  # width 64 is no official size
        import_official(tmp_path / "gen.pth", tmp_path / "x.pt", tokenizer=str(tokenizer[0]),
                        data=str(tokenizer[1]), device="cpu", workers=0)
    with pytest.raises(CheckpointError, match="--kind stage1, but the file holds a dit generator"):
        import_official(tmp_path / "gen.pth", tmp_path / "x.pt", kind="stage1")
    obj = torch.load(tmp_path / "gen.pth", weights_only=False)
    assert isinstance(obj["args"], argparse.Namespace)
