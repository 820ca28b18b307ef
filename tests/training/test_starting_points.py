"""Starting points: --init CKPT (a 32 px tokenizer into a 64 px run, the DiT label-table rule), --resume-from FILE
(continued exactly in a new folder) and their one-line refusals before any training step."""
import dataclasses
import logging

import pytest
import torch
from typer.testing import CliRunner

from rectok_cli.main import app
from rectok_core.checkpoints import open_checkpoint
from rectok_core.config import build_config, from_dict
from rectok_core.data.readers import build_dataset
from rectok_core.errors import CheckpointError
from rectok_core.models.dit import build_dit
from rectok_core.models.tokenizer import RecTok, TokenizerModelConfig
from rectok_core.training.config import TOKENIZER_PRESETS, TokenizerTrainConfig
from rectok_core.training.init import dit_init, interpolate_grid, label_rows, tokenizer_init
from rectok_core.training.rundir import read_metrics
from rectok_core.training.tokenizer import train_tokenizer
from rectok_core.utils import checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")
runner = CliRunner()


@pytest.fixture(scope="module")
def source(tmp_path_factory, one_thread):
    """A 32 px tiny tokenizer trained 30 steps (no masking or flow noise, a high learning rate: it reconstructs),
    with a milestone every tenth of the run."""
    out = tmp_path_factory.mktemp("src") / "run"
    cfg = build_config(TokenizerTrainConfig, TOKENIZER_PRESETS, "tiny", dict(
        out=str(out), batch_size=8, steps=30, lr=3e-3, mask_max=0.0, gamma=0.0, teacher="none", log_every=10,
        ckpt_every=100, image_every=100, workers=0, eval_every=0))
    train_tokenizer(cfg)
    return out


def psnr(model, images):
    with torch.no_grad():
        mse = ((model.eval().reconstruct(images).clamp(-1, 1) - images) ** 2).mean()
    return float(10 * torch.log10(4 / mse))


def test_resume_from_continues_exactly_in_a_new_folder(source, tmp_path):
    """The run at step 18 (its milestone: latest.pt then), continued with --resume-from in a new folder to step 30,
    equals the same run straight to step 30, bit for bit; the source folder is not written."""
    before = sorted((p.name, p.stat().st_mtime_ns) for p in source.rglob("*"))
    out = tmp_path / "b"
    r = runner.invoke(app, ["train-tokenizer", "--resume-from", str(source / "checkpoints" / "step_0000018.pt"),
                            "--out", str(out)])
    assert r.exit_code == 0, r.output
    a = open_checkpoint(source / "checkpoints" / "latest.pt")
    b = open_checkpoint(out / "checkpoints" / "latest.pt")
    assert a["step"] == b["step"] == 30
    for part in ("model", "ema"):
        assert all(torch.equal(v, b[part][k]) for k, v in a[part].items()), part
    resume = next(m for m in read_metrics(out) if m.get("event") == "resume")
    assert resume["step"] == 18 and resume["from"].endswith("step_0000018.pt")
    assert b["config"]["run"]["out"] == str(out) and b["config"]["run"]["resume_from"].endswith("step_0000018.pt")
    assert sorted((p.name, p.stat().st_mtime_ns) for p in source.rglob("*")) == before


def test_finetune_decoder_resume_from_continues_exactly(source, tmp_path):
    ckpt = str(source / "checkpoints" / "latest.pt")
    base = ["finetune-decoder", ckpt, "--steps", "4", "--batch-size", "2", "--eval-every", "0"]
    assert runner.invoke(app, base + ["--out", str(tmp_path / "a")]).exit_code == 0
    r = runner.invoke(app, ["finetune-decoder", ckpt, "--resume-from",
                            str(tmp_path / "a" / "checkpoints" / "step_0000002.pt"), "--out", str(tmp_path / "b")])
    assert r.exit_code == 0, r.output
    a, b = (open_checkpoint(tmp_path / x / "checkpoints" / "latest.pt") for x in ("a", "b"))
    assert a["step"] == b["step"] == 4 and b["stage"] == "decoder-ft"
    for part in ("model", "ema"):
        assert all(torch.equal(v, b[part][k]) for k, v in a[part].items()), part


def test_init_from_32px_into_a_64px_run(source, tmp_path, caplog):
    ckpt = str(source / "checkpoints" / "latest.pt")
    out = tmp_path / "big"
    with caplog.at_level(logging.INFO, logger="rectok_core"):
        r = runner.invoke(app, ["train-tokenizer", "--preset", "tiny", "--teacher", "none", "--image-size", "64",
                                "--init", ckpt, "--steps", "1", "--batch-size", "2", "--out", str(out),
                                "--eval-every", "0"])
    assert r.exit_code == 0, r.output
    ours = [rec.getMessage() for rec in caplog.records if rec.name.startswith("rectok_core")]
    assert ours[0] == f"init from {ckpt}: pos_embed interpolated 8×8 → 16×16 (bicubic; image size 32 → 64)"
    ck = open_checkpoint(out / "checkpoints" / "latest.pt")
    assert ck["config"]["model"]["image_size"] == 64 and ck["model"]["encoder.pos_embed"].shape == (1, 256, 64)

    # its first reconstructions (step 0) are not noise: clearly better than a random-init model's
    M = dataclasses.replace(from_dict(TokenizerModelConfig, ck["config"]["model"]), teacher_dim=0)
    images = torch.stack([build_dataset("digits", 64, split="train")[i]["image"] for i in range(0, 320, 20)])
    start = tokenizer_init(ckpt, M)
    assert start.line == ours[0]
    torch.manual_seed(0)
    fresh, init = RecTok(M, semantic=False), RecTok(M, semantic=False)
    start.apply(init, "raw")
    assert psnr(init, images) > psnr(fresh, images) + 2.0

    # the same size: exact
    assert tokenizer_init(ckpt, dataclasses.replace(M, image_size=32)).line == f"init from {ckpt}: exact"


def test_grid_interpolation_keeps_the_layout():
    rows, cols = torch.meshgrid(torch.arange(4.0), torch.arange(4.0), indexing="ij")
    table = torch.stack([rows, cols, torch.full_like(rows, 3.0)], -1).reshape(1, 16, 3)
    assert torch.allclose(interpolate_grid(table, (4, 4), (4, 4)), table)
    big = interpolate_grid(table, (4, 4), (8, 8)).reshape(8, 8, 3)
    assert (big[1:, :, 0] > big[:-1, :, 0]).all() and torch.allclose(big[:, 1:, 0], big[:, :-1, 0])
    assert (big[:, 1:, 1] > big[:, :-1, 1]).all() and torch.allclose(big[..., 2], torch.full((8, 8), 3.0))


def test_dit_init_label_table_rule(tmp_path):
    torch.manual_seed(1)
    old = build_dit("tiny", in_channels=4, input_size=4, num_classes=3)
    ck = {"generator": {"family": "dit-dh", "config": dataclasses.asdict(old.config)}, "model": old.state_dict(),
          "ema": old.state_dict(), "classes": ["a", "b", "c"]}
    new = build_dit("tiny", in_channels=4, input_size=4, num_classes=4)
    fresh = new.y_embedder.embedding_table.weight.detach().clone()
    start = dit_init("OLD", ck, "dit-dh", dataclasses.asdict(new.config), ["c", "x", "a", "y"])
    assert start.line == "init from OLD: label table: 2 of 4 class rows kept, 2 fresh (x, y), the null row kept"
    start.apply(new)
    table, was = new.y_embedder.embedding_table.weight, old.y_embedder.embedding_table.weight
    assert torch.equal(table[0], was[2]) and torch.equal(table[2], was[0]) and torch.equal(table[4], was[3])
    assert torch.equal(table[1], fresh[1]) and torch.equal(table[3], fresh[3])
    assert torch.equal(new.final_layer.linear.weight, old.final_layer.linear.weight)
    # no recorded names: by index when the count matches, none otherwise
    assert label_rows(None, 3, ["p", "q", "r"]) == {0: 0, 1: 1, 2: 2} and label_rows(None, 3, ["p", "q"]) == {}
    same = dit_init("OLD", ck, "dit-dh", dataclasses.asdict(old.config), ["a", "b", "c"])
    assert same.line == "init from OLD: exact (the same classes)"
    wide = build_dit("tiny", in_channels=4, input_size=4, num_classes=3, width=32, heads=2)
    with pytest.raises(CheckpointError, match="--init OLD: its generator has heads 4, this run 2: --init needs the same"):
        dit_init("OLD", ck, "dit-dh", dataclasses.asdict(wide.config), ["a", "b", "c"])


def test_bad_starting_points_are_one_line_before_any_step(source, tmp_path):
    ckpt = str(source / "checkpoints" / "latest.pt")
    dit = tmp_path / "dit.pt"
    checkpoint.save_atomic({"format": "rectok", "version": 1, "kind": "dit", "config": {}}, dit)
    tok = ["train-tokenizer", "--preset", "tiny", "--teacher", "none", "--steps", "2", "--batch-size", "2"]
    cases = [
        (tok + ["--init", str(dit)], f"--init {dit} holds a"),
        (tok + ["--init", ckpt, "--patch-size", "8"], "a patch-size change cannot be interpolated"),
        (tok + ["--init", ckpt, "--width", "32", "--heads", "2"],
         "encoder.pos_embed is (1, 64, 64) in the checkpoint, (1, 64, 32) in this model (shape mismatch)"),
        (tok + ["--init", ckpt, "--resume-from", ckpt], "give one of --resume-from and --init"),
        (["train-dit", "--resume-from", ckpt], "RecTok tokenizer"),
        (["finetune-decoder", ckpt, "--resume-from", ckpt],
         "holds a train-tokenizer checkpoint (stage1), but this command continues finetune-decoder runs"),
        (["train-tokenizer", "--resume-from", str(dit)], "--resume-from needs --out"),
        (["train-tokenizer", "--resume-from", str(tmp_path / "missing.pt")], "no such file"),
    ]
    for i, (args, expect) in enumerate(cases):
        out = tmp_path / f"out{i}"
        if "--out" not in args and "needs --out" not in expect:
            args = args + ["--out", str(out)]
        r = runner.invoke(app, args)
        assert r.exit_code == 1 and expect in r.output, (args, r.output)
        assert "Traceback" not in r.output and not (out / "checkpoints").exists()
    r = runner.invoke(app, ["train-tokenizer", "--resume-from", ckpt, "--out", str(source)])
    assert r.exit_code == 1 and "give a new --out" in r.output
