"""import-official: key renames, detection, strict loading, one-line errors and safe unpickling."""
from __future__ import annotations

import json
import os
import subprocess

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

from rectok_core.checkpoints import load_dit, load_tokenizer, open_checkpoint
from rectok_core.errors import CheckpointError, RectokError
from rectok_core.interop.official import import_official, rename_tokenizer_key

pytestmark = pytest.mark.usefixtures("one_thread")


def test_rename_map_matches_rectok_names():
    model = tiny_tokenizer()
    official = official_tokenizer_state(model)
    assert "encoder.positional_embedding" in official and "encoder.patch_embed.0.weight" in official
    assert "decoder.ffn.1.weight" in official and "sem_decoders.dinov3.transformer.0.attn.qkv.weight" in official
    renamed = {rename_tokenizer_key(k): k for k in official}
    renamed.pop(None)  # the teacher is dropped
    assert set(renamed) == set(model.state_dict())
    # older files say aux where newer ones say sem
    assert rename_tokenizer_key("aux_decoders.dinov3.out.bias") == "sem_decoder.out.bias"
    assert rename_tokenizer_key("module.encoder.transformer.11.mlp.w3.weight") == "encoder.blocks.11.mlp.w3.weight"
    assert rename_tokenizer_key("aux_foundation_models.dinov3.x") is None


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    d = tmp_path_factory.mktemp("official")
    tok = tiny_tokenizer()
    raw = official_tokenizer_state(tok)
    write_official(d / "RecTok.pth", raw, perturbed(raw))
    dec = tiny_tokenizer(seed=3, semantic=False)
    draw = official_tokenizer_state(dec)
    write_official(d / "RecTok_decft.pth", draw, perturbed(draw), epoch=99)
    dit = tiny_dit()
    dsd = official_dit_state(dit)
    write_official(d / "dit.pth", dsd, perturbed(official_dit_state(dit, with_rope=False)), epoch=29)
    return d


def _reference(model_factory, state, strict_keys):
    m = model_factory()
    m.load_state_dict({k: state[k] for k in strict_keys})
    return m


def test_stage1_import_equals_source_model_for_both_weight_sets(official, tmp_path):
    res = import_official(official / "RecTok.pth", tmp_path / "tok.pt", heads=TOK_HEADS)
    assert res.kind == "stage1"
    ck = open_checkpoint(tmp_path / "tok.pt", "tokenizer")
    assert ck["stage"] == "stage1" and ck["step"] == 200 * 1251 and ck["imported"]["args"]["model"] == "rectok_BB"
    assert ck["config"]["model"]["rope"] == "official" and ck["config"]["model"]["teacher_dim"] == 24
    container = torch.load(official / "RecTok.pth", weights_only=False)
    x = torch.rand(3, 3, 32, 32) * 2 - 1
    for weights, slot in (("ema", "model_ema"), ("raw", "model")):
        out = tmp_path / f"tok-{weights}.pt"
        import_official(official / "RecTok.pth", out, weights=weights, heads=TOK_HEADS)
        got, _ = load_tokenizer(out)
        ref = tiny_tokenizer(semantic=False)
        ref.load_state_dict({rename_tokenizer_key(k): v for k, v in container[slot].items()
                             if k.startswith(("encoder.", "decoder."))})
        assert torch.equal(got.reconstruct(x), ref.reconstruct(x))
        assert torch.equal(got.encode(x).mean, ref.encode(x).mean)
    a, _ = load_tokenizer(tmp_path / "tok-ema.pt")
    b, _ = load_tokenizer(tmp_path / "tok-raw.pt")
    assert not torch.equal(a.reconstruct(x), b.reconstruct(x))  # model_ema and model really are different


def test_decoder_ft_is_told_by_its_missing_semantic_decoder(official, tmp_path):
    res = import_official(official / "RecTok_decft.pth", tmp_path / "decft.pt", heads=TOK_HEADS)
    assert res.kind == "decoder-ft"
    ck = open_checkpoint(tmp_path / "decft.pt", "tokenizer")
    assert ck["stage"] == "decoder-ft" and ck["epoch"] == 100.0
    from rectok_core.training.inherit import TokenizerSettings

    assert TokenizerSettings.of(tmp_path / "decft.pt").image_size == 32
    # a stage-1 file can be declared fine-tuned (its semantic decoder is dropped), a tokenizer is no DiT
    assert import_official(official / "RecTok.pth", tmp_path / "s.pt", kind="decoder-ft", heads=TOK_HEADS).kind == "decoder-ft"
    with pytest.raises(CheckpointError, match="--kind dit, but the file holds a tokenizer"):
        import_official(official / "RecTok.pth", tmp_path / "x.pt", kind="dit")


def test_dit_import_with_stats_file_and_with_data(official, tmp_path):
    import_official(official / "RecTok_decft.pth", tmp_path / "tok.pt", heads=TOK_HEADS)
    with pytest.raises(RectokError, match="needs its latent statistics"):
        import_official(official / "dit.pth", tmp_path / "dit.pt", tokenizer=str(tmp_path / "tok.pt"), heads=DIT_HEADS)
    data = make_image_folder(tmp_path / "data", classes=3, per_class=4, size=40)
    res = import_official(official / "dit.pth", tmp_path / "dit.pt", tokenizer=str(tmp_path / "tok.pt"),
                          data=str(data), stats_dir=str(tmp_path / "stats"), device="cpu", workers=0, heads=DIT_HEADS)
    assert res.kind == "dit" and "DiT^DH-tiny" in res.description
    loaded = load_dit(tmp_path / "dit.pt")
    assert loaded.classes == ["class0", "class1", "class2"] and loaded.stats.images == 12
    # the same statistics as the latent-stats command, whose file the import now reuses
    r = subprocess.run([PYTHON, "-m", "rectok_cli.main", "latent-stats", str(tmp_path / "tok.pt"), "--data", str(data),
                        "--stats-dir", str(tmp_path / "stats"), "--out", str(tmp_path / "stats.json"), "--device",
                        "cpu", "--workers", "0"], capture_output=True, text=True, env=cli_env())
    assert r.returncode == 0 and "latent statistics of 12 images" in r.stderr, r.stderr
    st = json.loads((tmp_path / "stats.json").read_text())
    assert st["mean"] == loaded.stats.mean.tolist() and st["std"] == loaded.stats.std.tolist()
    (tmp_path / "names.txt").write_text("cat\ndog\nfish\n")
    import_official(official / "dit.pth", tmp_path / "dit2.pt", tokenizer=str(tmp_path / "tok.pt"),
                    latent_stats=str(tmp_path / "stats.json"), classes=str(tmp_path / "names.txt"), heads=DIT_HEADS)
    again = load_dit(tmp_path / "dit2.pt")
    assert again.classes == ["cat", "dog", "fish"] and torch.equal(again.stats.mean, loaded.stats.mean)
    # the model: the EMA weights, persisted RoPE tables dropped, outputs equal to the source's
    src = torch.load(official / "dit.pth", weights_only=False)["model_ema"]
    ref = tiny_dit()
    ref.load_state_dict(src)
    x, t, y = torch.randn(2, 16, 8, 8), torch.tensor([0.3, 0.8]), torch.tensor([0, 2])
    assert torch.equal(again.model(x, t, y), ref(x, t, y))
    # statistics of another tokenizer are refused
    import_official(official / "RecTok.pth", tmp_path / "other.pt", heads=TOK_HEADS)
    with pytest.raises(RectokError, match="belongs to tokenizer"):
        import_official(official / "dit.pth", tmp_path / "d3.pt", tokenizer=str(tmp_path / "other.pt"),
                        latent_stats=str(tmp_path / "stats.json"), heads=DIT_HEADS)


def _one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_strict_errors_name_the_key(official, tmp_path):
    good = torch.load(official / "RecTok_decft.pth", weights_only=False)
    cases = {
        "missing": (lambda sd: sd.pop("decoder.conv_out.weight"), "1 missing (e.g. decoder.conv_out.weight)"),
        "extra": (lambda sd: sd.__setitem__("decoder.extra.weight", torch.zeros(1)),
                  "1 unexpected (e.g. decoder.extra.weight)"),
        "shape": (lambda sd: sd.__setitem__("decoder.conv_out.bias", torch.zeros(4)),
                  "decoder.conv_out.bias (4,) vs (3,)"),
    }
    for name, (edit, expected) in cases.items():
        ema = dict(good["model_ema"])
        edit(ema)
        path = write_official(tmp_path / f"{name}.pth", good["model"], ema)
        with pytest.raises(CheckpointError) as e:
            import_official(path, tmp_path / "out.pt", heads=TOK_HEADS)
        assert expected in _one_line(e), name
        assert not (tmp_path / "out.pt").exists()


def test_non_official_files_are_refused(official, tmp_path):
    import_official(official / "RecTok_decft.pth", tmp_path / "tok.pt", heads=TOK_HEADS)
    torch.save({"state_dict": {"a": torch.zeros(1)}}, tmp_path / "other.pth")
    torch.save({"model": {"fc.weight": torch.zeros(2, 2)}}, tmp_path / "mlp.pth")
    (tmp_path / "text.pth").write_text("hello")
    expected = {"tok.pt": "already a rectok checkpoint", "other.pth": "not an official RecTok checkpoint",
                "mlp.pth": "neither an official RecTok tokenizer nor a DiT", "text.pth": "cannot read",
                "absent.pth": "not found"}
    for name, msg in expected.items():
        with pytest.raises(CheckpointError) as e:
            import_official(tmp_path / name, tmp_path / "out.pt")
        assert msg in _one_line(e), name
    write_official(tmp_path / "noema.pth", torch.load(official / "RecTok.pth", weights_only=False)["model"], None)
    with pytest.raises(CheckpointError, match="no 'model_ema' weights: use --weights raw"):
        import_official(tmp_path / "noema.pth", tmp_path / "out.pt")


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_that_runs_code_is_refused_and_runs_nothing(official, tmp_path):
    marker = tmp_path / "pwned"
    good = torch.load(official / "RecTok_decft.pth", weights_only=False)
    write_official(tmp_path / "evil.pth", good["model"], good["model_ema"], payload=_RunsCode(marker))
    with pytest.raises(CheckpointError) as e:
        import_official(tmp_path / "evil.pth", tmp_path / "out.pt")
    assert "system" in _one_line(e) and "nothing in it was run" in str(e.value)
    assert not marker.exists() and not (tmp_path / "out.pt").exists()
    # the same through the CLI: exit 1, one line on stderr, still nothing run
    r = subprocess.run([PYTHON, "-m", "rectok_cli.main", "import-official", str(tmp_path / "evil.pth"), "--out",
                        str(tmp_path / "out.pt")], capture_output=True, text=True, env=cli_env())
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "refused" in r.stderr
    assert not marker.exists()


def test_cli_imports_a_tokenizer(official, tmp_path):
    r = subprocess.run([PYTHON, "-m", "rectok_cli.main", "import-official", str(official / "RecTok.pth"), "--out",
                        str(tmp_path / "tok.pt"), "--heads", TOK_HEADS], capture_output=True, text=True, env=cli_env())
    assert r.returncode == 0, r.stderr
    assert "stage-1 tokenizer, 32 px" in r.stderr
    assert json.loads(json.dumps(open_checkpoint(tmp_path / "tok.pt")["imported"]))["kind"] == "stage1"


# ------------------------------------------------------------------------------ attention heads are never guessed


def _width64_two_heads(seed: int = 5):
    """A decoder-fine-tuned tokenizer 64 wide with 2 heads: outside the official size table, and unlike the tiny
    preset's 4 heads at the same width (the case that used to be imported with 4 heads, silently)."""
    from rectok_core.models.tokenizer import RecTok, TokenizerModelConfig

    torch.manual_seed(seed)
    model = RecTok(TokenizerModelConfig(image_size=32, patch_size=4, width=64, depth=2, heads=2, dim=16,
                                        rope="official", teacher_dim=0), semantic=False)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return model.eval()


def test_width_outside_the_size_table_needs_heads(tmp_path):
    src = _width64_two_heads()
    raw = official_tokenizer_state(src)
    path = write_official(tmp_path / "w64.pth", raw, raw)
    with pytest.raises(CheckpointError) as e:
        import_official(path, tmp_path / "no.pt")
    msg = _one_line(e)
    assert "64 wide" in msg and "outside the official size table" in msg and msg.endswith("--heads N")
    assert "its args name size base, 768 wide" in msg  # the file's args say rectok_BB: not this model
    assert not (tmp_path / "no.pt").exists()
    res = import_official(path, tmp_path / "w64.pt", heads="2")
    got, _ = load_tokenizer(res.out)
    assert got.cfg.heads == 2
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        assert torch.equal(got.reconstruct(x), src.reconstruct(x))
        assert torch.equal(got.encode(x).mean, src.encode(x).mean)
    # the same weights read with the wrong number of heads compute something else: the option matters
    wrong, _ = load_tokenizer(import_official(path, tmp_path / "w64-4.pt", heads="4").out)
    with torch.no_grad():
        assert not torch.allclose(wrong.reconstruct(x), src.reconstruct(x), atol=1e-5)
    for bad, expected in (("3", "do not split"), ("a", "expected N or N,S"), ("2,2,2", "expected N or N,S")):
        with pytest.raises(RectokError, match=expected):
            import_official(path, tmp_path / "bad.pt", heads=bad)
    # through the CLI: exit 1 and one line naming the option; with it, the import succeeds
    cmd = [PYTHON, "-m", "rectok_cli.main", "import-official", str(path), "--out", str(tmp_path / "cli.pt")]
    r = subprocess.run(cmd, capture_output=True, text=True, env=cli_env())
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "--heads N" in r.stderr, r.stderr
    r = subprocess.run(cmd + ["--heads", "2"], capture_output=True, text=True, env=cli_env())
    assert r.returncode == 0, r.stderr


def test_semantic_decoder_and_dit_outside_the_tables_need_heads(official, tmp_path):
    with pytest.raises(CheckpointError) as e:  # the tiny semantic decoder is 32 wide
        import_official(official / "RecTok.pth", tmp_path / "s.pt", heads="4")
    assert "the semantic decoder is 32 wide" in _one_line(e) and _one_line(e).endswith("--heads 4,S")
    with pytest.raises(CheckpointError) as e:
        import_official(official / "RecTok.pth", tmp_path / "s.pt")
    assert "the encoder is 64 wide" in _one_line(e)
    import_official(official / "RecTok_decft.pth", tmp_path / "tok.pt", heads=TOK_HEADS)
    stats = dict(tokenizer=str(tmp_path / "tok.pt"), latent_stats=str(tmp_path / "none.json"))
    with pytest.raises(CheckpointError) as e:
        import_official(official / "dit.pth", tmp_path / "d.pt", **stats)
    assert "no official size (S, B, L, XL)" in _one_line(e) and "--heads A,B (trunk, head)" in _one_line(e)
    with pytest.raises(RectokError, match="needs two numbers"):
        import_official(official / "dit.pth", tmp_path / "d.pt", heads="4", **stats)


def test_official_sizes_need_no_heads_option():
    """Full-size shapes (on the meta device: nothing allocated) resolve from the args' model name or the tables."""
    from rectok_core.interop.official import dit_config, tokenizer_config, tokenizer_state
    from rectok_core.models.dit import build_dit
    from rectok_core.models.tokenizer import RecTok, TokenizerModelConfig

    with torch.device("meta"):
        tok = RecTok(TokenizerModelConfig(), semantic=True)  # the official ViT-B/16, C = 128, DINOv3-L width
        xl = build_dit("XL", in_channels=128, input_size=16, num_classes=1000)
        s = build_dit("S", in_channels=128, input_size=16, num_classes=1000)
    state = tokenizer_state(official_tokenizer_state(tok))
    for args in ({"model": "rectok_BB", "vit_sem_model_size": "tiny"}, {}):
        cfg = tokenizer_config(state, args)
        assert (cfg.width, cfg.depth, cfg.heads, cfg.sem_width, cfg.sem_heads, cfg.dim) == (768, 12, 12, 192, 4, 128)
    assert tokenizer_config(state, {}, heads="6").heads == 6  # an explicit --heads wins
    for model, name, args, heads in ((xl, "XL", {"model": "DiTDDT_xl"}, (16, 16)), (s, "S", {}, (6, 16))):
        preset, cfg = dit_config(official_dit_state(model), args)
        assert preset == name and (cfg.heads, cfg.head_heads) == heads and cfg.width == model.config.width


def test_decoder_finetune_of_an_imported_stage1_starts_as_the_official_run(official, tmp_path):
    """The import keeps `model` beside `model_ema`, so finetune-decoder's default start (recipe §3.3) gives a
    tokenizer whose encoder, raw and EMA, is the official file's raw stage-1 encoder."""
    from rectok_core.config import build_config
    from rectok_core.training.config import FINETUNE_PRESETS, FinetuneConfig
    from rectok_core.training.tokenizer import finetune_decoder

    import_official(official / "RecTok.pth", tmp_path / "tok.pt", heads=TOK_HEADS)
    container = torch.load(official / "RecTok.pth", weights_only=False)
    raw = {rename_tokenizer_key(k): v for k, v in container["model"].items()}
    ema = {rename_tokenizer_key(k): v for k, v in container["model_ema"].items()}
    ck = open_checkpoint(tmp_path / "tok.pt", "tokenizer")
    assert all(torch.equal(v, raw[k]) for k, v in ck["model"].items())
    assert all(torch.equal(v, ema[k]) for k, v in ck["ema"].items())
    cfg = build_config(FinetuneConfig, FINETUNE_PRESETS, "tiny",
                       dict(steps=1, batch_size=8, device="cpu", out=str(tmp_path / "ft")))
    cfg.tokenizer = str(tmp_path / "tok.pt")
    ft = open_checkpoint(finetune_decoder(cfg), "tokenizer")
    enc = [k for k in ft["model"] if k.startswith("encoder.")]
    assert enc and any(not torch.equal(raw[k], ema[k]) for k in enc)
    for weights in ("model", "ema"):
        assert all(torch.equal(ft[weights][k], raw[k]) for k in enc), weights


def test_a_dit_dh_with_trunk_and_head_equally_wide_is_one_line_not_a_wrong_split():
    from rectok_core.interop.official import dit_config

    w, c = 64, 4
    state = {"s_embedder.proj.weight": torch.zeros(w, c, 1, 1), "x_embedder.proj.weight": torch.zeros(w, c, 1, 1),
             "pos_embed": torch.zeros(1, 16, w)}
    state.update({f"blocks.{i}.adaLN_modulation.1.weight": torch.zeros(6 * w, w) for i in range(3)})
    with pytest.raises(CheckpointError) as e:
        dit_config(state, heads="4,4")
    msg = _one_line(e)
    assert "both 64 wide" in msg and "3 blocks" in msg
