"""Every registered generator family end to end on CPU with a tiny tokenizer: ``train-dit --model FAMILY-tiny``
(the family's objective, saved family + config, exact resume for a non-DiT^DH family), ``sample`` with CFG and
AutoGuidance (byte-identical across batch sizes and 1 vs 2 processes), ``eval-samples``, and the one-line errors.
The families come from ``GENERATORS``: a new family is covered without touching this file."""
from __future__ import annotations

import json
import math
import shutil
import subprocess

import numpy as np
import pytest
import torch
from conftest import PYTHON, ROOT, cli_env, free_port, make_image_folder
from typer.testing import CliRunner

from rectok_cli.main import app
from rectok_core.checkpoints import load_dit, load_tokenizer, open_checkpoint
from rectok_core.config import build_config, resume_config
from rectok_core.data import latent_cache as latents
from rectok_core.models.generators import GENERATORS
from rectok_core.training.config import TOKENIZER_PRESETS, TokenizerTrainConfig
from rectok_core.training.dit import train_dit
from rectok_core.training.dit_config import DIT_TRAIN_PRESETS, DiTTrainConfig
from rectok_core.training.rundir import read_metrics
from rectok_core.training.tokenizer import train_tokenizer
from rectok_core.utils import distributed

runner = CliRunner()
FAMILIES = GENERATORS.names()
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("families")


@pytest.fixture(scope="module")
def tok_ckpt(work):
    cfg = build_config(TokenizerTrainConfig, TOKENIZER_PRESETS, "tiny",
                       dict(teacher="none", steps=4, batch_size=8, out=str(work / "tok"), workers=0, device="cpu"))
    return train_tokenizer(cfg)


@pytest.fixture(scope="module")
def cache_dir(work, tok_ckpt):
    """The latents of a small labelled image folder (3 classes × 4 images)."""
    data = make_image_folder(work / "data", classes=3, per_class=4, size=32)
    tokenizer, meta = load_tokenizer(tok_ckpt)
    latents.ensure_latent_cache(work / "cache", tokenizer, meta, str(data), distributed.Dist(
        0, 1, 0, torch.device("cpu")), batch_size=64, workers=0, shard_size=512)
    return work / "cache"


def dit_cfg(tok, cache, out, model, **kw):
    base = dict(tokenizer=str(tok), cache_latents=str(cache), data=str(cache.parent / "data"), out=str(out),
                steps=4, batch_size=8, log_every=2,
                ckpt_every=2, keep_every=2, image_every=1000, device="cpu", name=model)
    base.update(kw)
    return build_config(DiTTrainConfig, DIT_TRAIN_PRESETS, "tiny", base)


@pytest.fixture(scope="module")
def trained(work, tok_ckpt, cache_dir):
    """One tiny model of every family, 4 steps (checkpoints at steps 2 and 4)."""
    return {f: train_dit(dit_cfg(tok_ckpt, cache_dir, work / f, f"{f}-tiny")) for f in FAMILIES}


def test_every_family_trains_with_its_objective_and_records_its_family(trained, work):
    for family, ckpt in trained.items():
        ck = open_checkpoint(ckpt, "dit")
        assert ck["generator"]["family"] == family and ("dit_config" in ck) == (family == "dit-dh")
        start = next(m for m in read_metrics(work / family) if m.get("event") == "start")
        assert start["objective"] == GENERATORS[family].objective and start["generator"] == f"{family}-tiny"
        loaded = load_dit(ckpt)
        assert loaded.family == family and isinstance(loaded.model, GENERATORS[family].model_class)
        assert loaded.model.config == GENERATORS[family].config_class(**ck["generator"]["config"])
        steps = [m for m in read_metrics(work / family) if "loss" in m]
        assert steps and all(math.isfinite(m["loss"]) for m in steps)
        multi = {"flow-lognorm-cosine": "loss_cos", "diffusion": "loss_vb"}.get(GENERATORS[family].objective)
        if multi:
            assert all(multi in m for m in steps)


def test_export_folder_of_a_new_family_loads_the_same_model(trained, tmp_path):
    from rectok_core.interop.export import export

    family = [f for f in FAMILIES if f != "dit-dh"][0]
    folder = export(trained[family], tmp_path / "export")
    a, b = load_dit(trained[family]), load_dit(folder)
    assert b.family == family and b.model.config == a.model.config
    assert family in (folder / "README.md").read_text()
    for k, v in a.model.state_dict().items():
        assert torch.equal(v, b.model.state_dict()[k]), k


def test_old_dit_checkpoint_without_family_loads_as_dit_dh(trained, tmp_path):
    ck = torch.load(trained["dit-dh"], weights_only=False)
    del ck["generator"]
    torch.save(ck, tmp_path / "old.pt")
    assert load_dit(tmp_path / "old.pt").family == "dit-dh"


@pytest.mark.parametrize("family", [f for f in FAMILIES if f != "dit-dh"][-1:])
def test_resume_is_exact_for_a_new_family(tmp_path, tok_ckpt, cache_dir, family):
    """4 steps straight == 2 steps, stop, resume, 2 more (the objective's draws all come from the step)."""
    train_dit(dit_cfg(tok_ckpt, cache_dir, tmp_path / "a", f"{family}-tiny"))
    train_dit(dit_cfg(tok_ckpt, cache_dir, tmp_path / "b", f"{family}-tiny"))
    ckpts = tmp_path / "b" / "checkpoints"
    shutil.copy(ckpts / "step_0000002.pt", ckpts / "latest.pt")
    saved = open_checkpoint(ckpts / "latest.pt", "dit")
    train_dit(resume_config(DiTTrainConfig, saved["config"], {"resume": True}))
    a = open_checkpoint(tmp_path / "a" / "checkpoints" / "latest.pt", "dit")
    b = open_checkpoint(ckpts / "latest.pt", "dit")
    assert a["step"] == b["step"] == 4
    for part in ("model", "ema"):
        for k, v in a[part].items():
            torch.testing.assert_close(v, b[part][k], rtol=1e-5, atol=1e-6, msg=f"{part} {k}")


def sample_args(ckpt, out, *extra):
    return ["sample", str(ckpt), "-n", "6", "--steps", "3", "--out", str(out), "--device", "cpu", *extra]


def guide_of(ckpt):
    return ckpt.parent / "step_0000002.pt"


def _cases(trained, root):
    """(name, CLI args) of every family × {CFG, AutoGuidance} (the guide: the same run at step 2)."""
    out = []
    for f, ckpt in trained.items():
        out.append((f"{f}-cfg", sample_args(ckpt, root / f"{f}-cfg", "--cfg", "cfg", "--scale", "2.5",
                                            "--interval", "0.1,1")))
        out.append((f"{f}-ag", sample_args(ckpt, root / f"{f}-ag", "--cfg", "autoguidance", "--scale", "1.5",
                                           "--guide", str(guide_of(ckpt)), "--interval", "0,1")))
    return out


@pytest.fixture(scope="module")
def samples_ref(work, trained):
    for name, args in _cases(trained, work / "ref"):
        r = runner.invoke(app, [*args, "--batch-size", "4"])
        assert r.exit_code == 0, f"{name}: {r.output}"
    return work / "ref"


def test_sampling_with_cfg_and_autoguidance_is_world_size_invariant(tmp_path, samples_ref, trained):
    """One torchrun of 2 processes samples every family and guidance (batch size 2) into new folders: the same
    bytes as the single-process batch-4 folders."""
    script = tmp_path / "ddp_sample.py"
    script.write_text("import sys, json\nfrom rectok_cli.main import app\nfrom rectok_core.utils import distributed\n"
                      "done, distributed.cleanup = distributed.cleanup, lambda: None  # one process group for all\n"
                      "for args in json.loads(sys.argv[1]):\n"
                      "    try:\n        app(args, standalone_mode=False)\n"
                      "    except SystemExit as e:\n        assert not e.code, e.code\n"
                      "done()\n")
    cases = _cases(trained, tmp_path)
    p = subprocess.run([PYTHON, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                        str(free_port()), str(script), json.dumps([[*a, "--batch-size", "2"] for _, a in cases])],
                       cwd=ROOT, env={**cli_env(), "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    for name, _ in cases:
        a, b = samples_ref / name, tmp_path / name
        m = json.loads((b / "manifest.json").read_text())
        assert m["world_size"] == 2 and m["complete"]
        family = m["dit"]["family"]
        assert m["sampler"] == ("ddpm" if GENERATORS[family].prediction == "epsilon" else "euler")
        assert np.array_equal(np.load(a / "samples.npz")["arr_0"], np.load(b / "samples.npz")["arr_0"]), name
        for i in range(6):
            assert (a / f"samples/{i:06d}.png").read_bytes() == (b / f"samples/{i:06d}.png").read_bytes()


def test_guidance_changes_the_samples(samples_ref, trained):
    for f in trained:
        cfg = np.load(samples_ref / f"{f}-cfg" / "samples.npz")["arr_0"]
        ag = np.load(samples_ref / f"{f}-ag" / "samples.npz")["arr_0"]
        assert cfg.shape == ag.shape == (6, 32, 32, 3) and not np.array_equal(cfg, ag)


def test_api_generator_samples_what_the_sample_command_wrote(samples_ref, trained):
    """``Generator.from_pretrained(...).sample`` of every family reproduces the CFG folder's pixels."""
    from rectok_core.api import Generator

    for f, ckpt in trained.items():
        gen = Generator.from_pretrained(str(ckpt), device="cpu")
        assert f in repr(gen) or f == "dit-dh"
        img = gen.sample([i % 3 for i in range(6)], steps=3, cfg="cfg", scale=2.5, interval=(0.1, 1.0), batch_size=4)
        assert np.array_equal(img, np.load(samples_ref / f"{f}-cfg" / "samples.npz")["arr_0"]), f


def test_eval_samples_on_a_new_family_folder(tmp_path, samples_ref):
    from PIL import Image

    ref = tmp_path / "ref"
    ref.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(ref / f"{i}.png")
    folder = samples_ref / f"{[f for f in FAMILIES if f != 'dit-dh'][-1]}-cfg"
    r = runner.invoke(app, ["eval-samples", str(folder / "samples.npz"), "--ref-data", str(ref), "--device", "cpu",
                            "--out", str(tmp_path / "eval.json")])
    assert r.exit_code == 0, r.output
    assert math.isfinite(json.loads((tmp_path / "eval.json").read_text())["metrics"]["fid"])


def test_bad_input_gives_one_line_errors(tmp_path, trained, tok_ckpt, cache_dir):
    r = runner.invoke(app, ["train-dit", "--model", "sit-xxl", "--tokenizer", str(tok_ckpt), "--device", "cpu",
                            "--out", str(tmp_path / "x")])
    assert r.exit_code == 1 and "unknown --model 'sit-xxl'" in r.output and "SiT_xl" in r.output
    r = runner.invoke(app, ["train-dit", "--model", "sit-tiny", "--objective", "diffusion", "--tokenizer",
                            str(tok_ckpt), "--device", "cpu", "--out", str(tmp_path / "y")])
    assert r.exit_code == 1 and "--objective diffusion trains a model that predicts epsilon; sit predicts velocity" in r.output
    families = list(trained)
    a, b = trained[families[0]], trained[families[1]]
    r = runner.invoke(app, sample_args(a, tmp_path / "s", "--cfg", "autoguidance", "--scale", "2", "--guide",
                                       str(b)))
    assert r.exit_code == 1 and "same family" in r.output
    eps = next(f for f in families if GENERATORS[f].prediction == "epsilon")
    r = runner.invoke(app, sample_args(trained[eps], tmp_path / "h", "--sampler", "heun"))
    assert r.exit_code == 1 and "ddpm" in r.output
