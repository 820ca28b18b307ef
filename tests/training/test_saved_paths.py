"""Paths in a run's saved configuration are absolute; flags naming the same place as an older relative one agree."""
from rectok_core.training.config import TOKENIZER_PRESETS, TokenizerTrainConfig
from rectok_core.training.inherit import _keep_saved_relative, absolute_paths, resolve_run


def test_new_run_config_stores_absolute_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ds").mkdir()
    (tmp_path / "w.pth").write_bytes(b"x")
    cfg = resolve_run(TokenizerTrainConfig, TOKENIZER_PRESETS, {"preset": "tiny", "data": "ds", "teacher_weights":
                                                                "w.pth", "out": "run"}, "tokenizer")
    assert cfg.run.data == str(tmp_path / "ds") and cfg.loss.teacher_weights == str(tmp_path / "w.pth")
    assert cfg.run.out == "run"  # the run folder is given again on --resume: kept as typed
    got = absolute_paths({"data": "digits", "tokenizer": "owner/name", "cache_latents": "cache", "steps": 3,
                          "ref_stats": ""})
    assert got == {"data": "digits", "tokenizer": "owner/name", "cache_latents": str(tmp_path / "cache"), "steps": 3,
                   "ref_stats": ""}


def test_resume_keeps_an_older_relative_path_that_names_the_same_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "w.pth").write_bytes(b"x")
    saved = {"loss": {"teacher_weights": "w.pth"}, "run": {"data": "elsewhere"}}
    flags = absolute_paths({"teacher_weights": "w.pth", "data": "digits"})
    _keep_saved_relative(TokenizerTrainConfig, saved, flags)
    assert flags == {"teacher_weights": "w.pth", "data": "digits"}  # same file: no change; another data: kept
    flags = absolute_paths({"teacher_weights": str(tmp_path / "w.pth")})
    _keep_saved_relative(TokenizerTrainConfig, {"loss": {"teacher_weights": "other.pth"}}, flags)
    assert flags == {"teacher_weights": str(tmp_path / "w.pth")}  # a different file stays a difference
