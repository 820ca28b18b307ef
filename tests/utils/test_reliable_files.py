import errno
import json
import os

import numpy as np
import pytest
import torch

from rectok_core.errors import RectokError
from rectok_core.training.engine import FiniteGuard, NonFiniteLoss
from rectok_core.training.logging import JsonlSink
from rectok_core.utils import files
from rectok_core.utils.files import DiskFull, claim_output_dir, dumps_finite, write_json_atomic


def test_json_writers_never_write_nan(tmp_path):
    p = write_json_atomic(tmp_path / "r.json", {"fid": float("nan"), "x": [1.0, float("inf")], "ok": 2})
    doc = json.loads(p.read_text(), parse_constant=lambda c: pytest.fail(f"invalid JSON constant {c}"))
    assert doc == {"fid": None, "x": [1.0, None], "ok": 2, "nonfinite": ["fid", "x[1]"]}
    sink = JsonlSink(tmp_path / "metrics.jsonl")
    sink.record({"step": 3, "loss": torch.tensor(float("nan")), "psnr": np.float32(20.5)})
    rec = json.loads((tmp_path / "metrics.jsonl").read_text(), parse_constant=lambda c: pytest.fail(c))
    assert rec["loss"] is None and rec["psnr"] == 20.5 and rec["nonfinite"] == ["loss"]
    assert dumps_finite(float("-inf")) == "null"


def test_claim_output_dir(tmp_path):
    new = claim_output_dir(tmp_path / "a", "eval")
    assert json.loads((new / ".rectok-owner.json").read_text()) == {"command": "eval"}
    (new / "eval.json").write_text("{}")
    assert claim_output_dir(new, "eval") == new  # its own folder again
    with pytest.raises(RectokError, match="belongs to `rectok eval`"):
        claim_output_dir(new, "probe-flow")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "config.json").write_text("{}")
    with pytest.raises(RectokError, match=r"already holds files .*\(config.json\)"):
        claim_output_dir(tmp_path / "b", "train-tokenizer")
    (tmp_path / "b" / "checkpoints").mkdir()
    (tmp_path / "b" / "checkpoints" / "latest.pt").write_bytes(b"x")
    assert claim_output_dir(tmp_path / "b", "train-tokenizer", own=("checkpoints/latest.pt",))
    with pytest.raises(RectokError, match="give a folder"):
        claim_output_dir("", "eval")
    assert claim_output_dir(tmp_path / "empty", "eval").is_dir()


def test_disk_full_removes_the_temporary_file(tmp_path, monkeypatch):
    (tmp_path / "r.json").write_text('{"old": 1}')

    real = os.fdopen

    class Full:  # a file on a full disk: every write fails with ENOSPC
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fdopen", lambda fd, mode: Full(real(fd, mode)))
    with pytest.raises(DiskFull, match=r"disk full writing .*r.json \(.* MB free\): nothing was half-written"):
        write_json_atomic(tmp_path / "r.json", {"x": "y" * 100_000})
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]
    assert json.loads((tmp_path / "r.json").read_text()) == {"old": 1}  # the previous file is intact


def test_stale_temps_removed(tmp_path):
    (tmp_path / ".latest.pt.x1.tmp").write_bytes(b"half")
    (tmp_path / "latest.pt").write_bytes(b"whole")
    files.remove_stale_temps(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["latest.pt"]


def test_shard_preallocation_turns_enospc_into_one_line(tmp_path, monkeypatch):
    from rectok_core.data import latent_cache

    p = tmp_path / ".shard_00000.tmp"
    np.lib.format.open_memmap(p, mode="w+", dtype=np.float16, shape=(4, 2, 2, 8, 4, 4))

    def full(fd, offset, size):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", full)
    with pytest.raises(DiskFull, match=r"0\.0 MB needed"):
        latent_cache.reserve_space(p)
    assert not p.exists()


def test_guard_checks_gradient_norm_and_state_before_save():
    g = FiniteGuard(torch.device("cpu"))
    g.observe(1, {"loss": torch.tensor(1.5e25), "grad_norm": torch.tensor(1.0)})
    g.check(1)
    g.check_state(1, {"weights": [torch.ones(3)], "EMA weights": [torch.ones(2), torch.arange(3)]})
    with pytest.raises(NonFiniteLoss, match="non-finite EMA weights at step 1 .*no finite checkpoint"):
        g.check_state(1, {"weights": [torch.ones(3)], "EMA weights": [torch.tensor([1.0, float("inf")])]})
    g.saved("run/checkpoints/latest.pt", 1)
    g.observe(2, {"loss": torch.tensor(1.5e25), "grad_norm": torch.tensor(float("nan"))})
    g.observe(3, {"loss": torch.tensor(float("nan")), "grad_norm": torch.tensor(float("nan"))})
    with pytest.raises(NonFiniteLoss, match=r"non-finite gradient norm at step 2: .*latest.pt \(step 1\)"):
        g.check(3)
