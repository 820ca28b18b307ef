"""The checkpoint front door (rectok_core.checkpoints): every registered kind opens, is told and builds from a
file and from an export-style dict; kind mismatches and duplicate registrations are one-line errors."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from rectok_core import checkpoints
from rectok_core.checkpoints import KINDS, describe, kind_of, load_model, open_checkpoint, register_kind
from rectok_core.data.latent_stats import LatentStats
from rectok_core.errors import CheckpointError
from rectok_core.models.dit import DiTDH, build_dit
from rectok_core.models.tokenizer import RecTok, TokenizerModelConfig
from rectok_core.training.config import TOKENIZER_PRESETS
from rectok_core.utils import checkpoint
from rectok_core.utils.files import file_sha256

pytestmark = pytest.mark.usefixtures("one_thread")


def _tokenizer_file(folder: Path) -> Path:
    torch.manual_seed(0)
    cfg = TokenizerModelConfig(**TOKENIZER_PRESETS["tiny"]["model"])
    model = RecTok(cfg, semantic=False)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    path = folder / "tok.pt"
    checkpoint.save_atomic({"format": "rectok", "version": 1, "kind": "tokenizer", "stage": "stage1", "step": 3,
                            "config": {"model": dataclasses.asdict(cfg), "run": {"data": "digits"}},
                            "model": state, "ema": state}, path)
    return path


def _dit_file(folder: Path) -> Path:
    tok = _tokenizer_file(folder)
    torch.manual_seed(1)
    model = build_dit("tiny", in_channels=16, input_size=8, num_classes=3)
    sha = file_sha256(tok)
    stats = LatentStats(torch.zeros(16, dtype=torch.float64), torch.ones(16, dtype=torch.float64), 64, 1, sha,
                        "ema", "x")
    path = folder / "dit.pt"
    checkpoint.save_atomic({"format": "rectok", "version": 1, "kind": "dit", "step": 5, "config": {},
                            "dit_config": dataclasses.asdict(model.config), "model": model.state_dict(),
                            "ema": model.state_dict(), "latent_stats": stats.state(), "classes": ["a", "b", "c"],
                            "num_classes": 3, "tokenizer": {"path": str(tok), "sha256": sha, "weights": "ema"}},
                           path)
    return path


#: One tiny checkpoint writer and the model type its loader returns, per registered kind.
FACTORIES = {
    "tokenizer": (_tokenizer_file, lambda built: isinstance(built[0], RecTok)),
    "dit": (_dit_file, lambda built: isinstance(built.model, DiTDH)),
}


def test_every_registered_kind_has_a_case():
    assert set(FACTORIES) == set(KINDS), "a new checkpoint kind needs a tiny-file writer here"


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_kind_opens_is_told_and_builds(kind, tmp_path):
    write, is_model = FACTORIES[kind]
    path = write(tmp_path)
    assert kind_of(path) == kind
    assert open_checkpoint(path, kind)["kind"] == kind
    assert is_model(load_model(path))
    assert is_model(load_model(str(path), kind))
    for other in set(KINDS) - {kind}:
        with pytest.raises(CheckpointError) as e:
            open_checkpoint(path, other)
        msg = str(e.value)
        assert "\n" not in msg and describe(kind) in msg and describe(other) in msg


def test_loaded_weights_are_the_files(tmp_path):
    path = _tokenizer_file(tmp_path)
    model, meta = checkpoints.load_tokenizer(path)
    saved = open_checkpoint(path)["ema"]
    assert all(torch.equal(v, saved[k]) for k, v in model.state_dict().items())
    assert meta["sha256"] == file_sha256(path) and meta["weights"] == "ema"


def test_a_kind_registered_twice_is_refused():
    with pytest.raises(ValueError, match="registered twice"):
        register_kind("tokenizer", "again")(lambda spec: spec)


def test_unknown_kind_and_missing_files_are_one_line(tmp_path):
    p = tmp_path / "odd.pt"
    checkpoint.save_atomic({"format": "rectok", "kind": "vocoder"}, p)
    with pytest.raises(CheckpointError, match="none of the known kinds"):
        kind_of(p)
    with pytest.raises(CheckpointError, match="not found"):
        open_checkpoint(tmp_path / "missing.pt")
    with pytest.raises(CheckpointError, match="not a rectok export folder"):
        open_checkpoint(tmp_path)


def test_pt_layer_reads_files_only(tmp_path):
    """utils.checkpoint is the .pt layer: folders and Hub ids are the front door's."""
    with pytest.raises(CheckpointError):
        checkpoint.read(tmp_path)
    assert not hasattr(checkpoint, "load")
