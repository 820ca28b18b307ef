"""Tokenizer families (rectok_core.models.families, the FAMILY:SOURCE front door): every family equals its reference
implementation through the FAMILY:FILE loading path — diffusers' own AutoencoderKL for the diffusers families, vectors
generated from the published (official RecTok) code for the LDM-style ones — and bad names and files are one line."""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from pathlib import Path

import pytest
import torch
from diffusers import AutoencoderKL
from family_weights import state_from_manifest
from safetensors.torch import save_file

from rectok_core.checkpoints import load_any_tokenizer, load_tokenizer
from rectok_core.checkpoints.families import family_table, split_spec
from rectok_core.errors import CheckpointError
from rectok_core.models.families import FAMILIES, LatentTokenizer, Normalization, get_family, register_family
from rectok_core.models.tokenizer import RecTok, TokenizerModelConfig
from rectok_core.training.config import TOKENIZER_PRESETS
from rectok_core.utils import checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")

DATA = Path(__file__).resolve().parents[1] / "data" / "families"

#: The published normalisation of each family (the issue's facts, from the official code).
FACTS = {"sd-vae": (4, 0.18215, 0.0), "eq-vae": (4, 0.18215, 0.0), "sd3-vae": (16, 1.5305, 0.0609),
         "flux-vae": (16, 0.3611, 0.1159), "mar-kl16": (16, 0.2325, 0.0)}


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).abs().max() / b.float().abs().max()).item()


def tiny_diffusers_vae(family: str, seed: int = 0) -> AutoencoderKL:
    """A random 2-level AutoencoderKL shaped like ``family`` (its channels; SD3/FLUX have no quant convs)."""
    channels = FACTS[family][0]
    quant = family in ("sd-vae", "eq-vae")
    torch.manual_seed(seed)
    vae = AutoencoderKL(block_out_channels=(32, 64), layers_per_block=1, latent_channels=channels,
                        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                        use_quant_conv=quant, use_post_quant_conv=quant)
    with torch.no_grad():  # non-trivial norms and biases, so a mis-wired tensor shows
        for p in vae.parameters():
            if p.dim() == 1:
                p.add_(0.1 * torch.randn_like(p))
    return vae.eval()


def ldm_reference(family: str) -> tuple[dict, dict, dict[str, torch.Tensor]]:
    stem = family.replace("-", "_")
    meta = json.loads((DATA / f"{stem}.json").read_text())
    return meta, torch.load(DATA / f"{stem}.pt"), state_from_manifest(meta["manifest"])


def ldm_file(family: str, folder: Path) -> Path:
    """The family's micro weights saved as its project saves them (MAR: {"model"}, LightningDiT: {"state_dict"} with
    the loss modules beside the model)."""
    _, _, sd = ldm_reference(family)
    path = folder / f"{family}.ckpt"
    if family == "va-vae":
        torch.save({"state_dict": {**sd, "loss.logvar": torch.zeros(())}, "global_step": 7}, path)
    else:
        torch.save({"model": sd}, path)
    return path


def detok_file(folder: Path, asymmetric: bool = False) -> Path:
    """The micro l-DeTok weights as its training saves them: ``model`` (raw, here perturbed) and ``model_ema``;
    ``asymmetric``: the encoder-tiny / decoder-small case (detok_SB-like: other decoder width, depth and heads)."""
    stem = "detok_asym" if asymmetric else "detok"
    _, _, sd = ldm_reference(stem)
    raw = {k: v + 1.0 for k, v in sd.items()}
    path = folder / f"{stem}.pth"
    torch.save({"model": raw, "model_ema": sd, "args": argparse.Namespace(model="detok_tiny"), "epoch": 3}, path)
    return path


def rectok_file(folder: Path) -> Path:
    torch.manual_seed(0)
    cfg = TokenizerModelConfig(**TOKENIZER_PRESETS["tiny"]["model"])
    state = {k: v.clone() for k, v in RecTok(cfg, semantic=False).state_dict().items()}
    path = folder / "tok.pt"
    checkpoint.save_atomic({"format": "rectok", "version": 1, "kind": "tokenizer", "stage": "stage1", "step": 3,
                            "config": {"model": dataclasses.asdict(cfg), "run": {"data": "digits"}},
                            "model": state, "ema": state}, path)
    return path


def diffusers_file(family: str, folder: Path) -> Path:
    path = folder / f"{family}.safetensors"
    save_file(tiny_diffusers_vae(family).state_dict(), str(path))
    return path


#: A tiny file of each registered family and the image size it encodes.
FACTORIES = {**{f: (lambda folder, f=f: diffusers_file(f, folder), 16) for f in ("sd-vae", "eq-vae", "sd3-vae",
                                                                                   "flux-vae")},
             "mar-kl16": (lambda folder: ldm_file("mar-kl16", folder), 64),
             "va-vae": (lambda folder: ldm_file("va-vae", folder), 64),
             "detok": (detok_file, None),
             "rectok": (rectok_file, None)}


def test_every_registered_family_has_a_case_and_a_row():
    assert set(FACTORIES) == set(FAMILIES), "a new family needs a tiny-file writer here"
    rows = {r["family"]: r for r in family_table()}
    assert set(rows) == set(FAMILIES)
    for name, (channels, scale, shift) in FACTS.items():
        norm = FAMILIES[name].normalization
        assert (norm.kind, norm.scale, norm.shift) == ("global", scale, shift)
        assert rows[name]["latent"].startswith(f"{channels} x ")
    assert FAMILIES["va-vae"].normalization.kind == "per-channel"


@pytest.mark.parametrize("family", sorted(FACTORIES))
def test_every_family_loads_encodes_and_decodes_through_family_file(family, tmp_path):
    write, size = FACTORIES[family]
    model, meta = load_any_tokenizer(f"{family}:{write(tmp_path)}", image_size=size)
    assert meta["family"] == family and len(meta["sha256"]) == 64
    s = model.cfg.image_size
    x = torch.rand(2, 3, s, s) * 2 - 1
    with torch.no_grad():
        post = model.encode(x)
        h, w = model.cfg.grid
        assert post.mean.shape == (2, h * w, model.cfg.dim)
        assert model.decode(post.mean).shape == (2, 3, s, s)
    assert not any(p.requires_grad for p in model.parameters()) and not model.training
    if isinstance(model, LatentTokenizer):
        assert model.latent_shape() == (model.cfg.dim, h, w)
        z = torch.randn(2, model.cfg.dim, h, w)
        assert torch.allclose(model.denormalize(model.normalize(z)), z, atol=1e-6)


@pytest.mark.parametrize("family", ["sd-vae", "eq-vae", "sd3-vae", "flux-vae"])
@pytest.mark.parametrize("form", ["file", "folder"])
def test_diffusers_families_equal_diffusers_autoencoderkl(family, form, tmp_path):
    ref = tiny_diffusers_vae(family, seed=3)
    if form == "file":
        save_file(ref.state_dict(), str(tmp_path / "vae.safetensors"))
        spec = f"{family}:{tmp_path / 'vae.safetensors'}"
    else:
        ref.save_pretrained(tmp_path / "repo" / "vae")  # a pipeline folder: the VAE in vae/
        spec = f"{family}:{tmp_path / 'repo'}"
    model, _ = load_any_tokenizer(spec, image_size=32)
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        dist = ref.encode(x).latent_dist
        post = model.encode(x)
        assert rel(model.latent_grid(post.mean), dist.mean) < 1e-5
        assert rel(model.latent_grid(post.logvar), dist.logvar) < 1e-5
        z = torch.randn(dist.mean.shape, generator=torch.Generator().manual_seed(1))
        assert rel(model.decode(model.latent_tokens(z)), ref.decode(z).sample) < 1e-5
        _, scale, shift = FACTS[family]
        assert rel(model.normalize(dist.mean), (dist.mean - shift) * scale) < 1e-6


@pytest.mark.parametrize("family", ["mar-kl16", "va-vae"])
def test_ldm_families_equal_the_published_code(family, tmp_path):
    """Reference vectors computed by the official RecTok ``models/autoencoder.py`` (tools/make_family_vectors.py):
    posterior moments, ``tokenize``, ``decode`` and ``detokenize`` (the official normalisation included)."""
    meta, ref, _ = ldm_reference(family)
    assert len(meta["commit"]) == 40 and meta["source"].endswith("Shi-qingyu/RecTok")
    model, _ = load_any_tokenizer(f"{family}:{ldm_file(family, tmp_path)}", image_size=meta["image_size"])
    with torch.no_grad():
        post = model.encode(ref["x"])
        mean = model.latent_grid(post.mean)
        # 1e-6, not 1e-5: with the LDM order of swish and attention (ldm_numerics) the difference is rounding only
        # (0 on the machine that made the vectors; 3e-6 in the decode without ldm_numerics)
        assert rel(mean, ref["mean"]) < 1e-6
        assert rel(model.latent_grid(post.logvar), ref["logvar"]) < 1e-6
        decoded = model.decode_latents(ref["z"])
        assert rel(decoded, ref["decode"]) < 1e-6
        if family == "mar-kl16":  # the official tokenize/detokenize use the global scale; VA-VAE's is 1 + data stats
            assert meta["scale_factor"] == FACTS[family][1]
            assert rel(model.normalize(mean), ref["tokenize"]) < 1e-5
            detok = model.decode_latents(model.denormalize(ref["z"])).mul(0.5).add(0.5).clamp(0, 1)
        else:
            assert rel(mean, ref["tokenize"]) < 1e-5
            detok = decoded.mul(0.5).add(0.5).clamp(0, 1)
        assert rel(detok, ref["detokenize"]) < 1e-5


@pytest.mark.parametrize("asymmetric", [False, True], ids=["symmetric", "asymmetric"])
def test_detok_equals_the_published_code(asymmetric, tmp_path):
    """Reference vectors of the official ``models/detok.py`` (l-DeTok's DeTok class: encoder and decoder ``tiny``, and
    encoder ``tiny`` / decoder ``small`` at micro depth): the posterior, ``tokenize`` (mean 0, std 1: the identity
    normalisation before data statistics), the decoder and ``detokenize``; sizes read from the file."""
    meta, ref, _ = ldm_reference("detok_asym" if asymmetric else "detok")
    assert len(meta["commit"]) == 40 and meta["factory"].endswith(
        "vit_dec_model_size='small', token_channels=16)" if asymmetric else "'tiny', token_channels=16)")
    model, m = load_any_tokenizer(f"detok:{detok_file(tmp_path, asymmetric)}")
    assert (m["family"], model.cfg.image_size, model.cfg.grid, model.cfg.dim) == ("detok", 32, (2, 2), 16)
    assert (len(model.encoder.blocks), model.encoder.pos_embed.shape[-1]) == (3, 192)
    assert (len(model.decoder.blocks), model.decoder.pos_embed.shape[-1]) == ((2, 512) if asymmetric else (3, 192))
    assert model.name == ("detok_TS" if asymmetric else "detok_TT")
    with torch.no_grad():
        post = model.encode(ref["x"])  # model_ema, not the perturbed raw weights
        assert rel(post.mean, ref["mean"]) < 1e-5 and rel(post.logvar, ref["logvar"]) < 1e-5
        assert rel(model.latent_grid(post.mean), ref["tokenize"]) < 1e-5
        assert rel(model.decode(ref["z"]), ref["decode"]) < 1e-5
        assert rel(model.decode(ref["z"]).mul(0.5).add(0.5).clamp(0, 1), ref["detokenize"]) < 1e-5


def test_detok_sizes_are_named_from_the_widths_and_an_unknown_width_is_one_line(tmp_path):
    from rectok_core.models.families.detok import configs

    def fake(enc_w: int, dec_w: int, enc_depth: int, dec_depth: int) -> dict[str, torch.Tensor]:
        sd = {"encoder.pos_embed": torch.zeros(1, 256, enc_w), "decoder.pos_embed": torch.zeros(1, 256, dec_w),
              "encoder.patch_embed.weight": torch.zeros(enc_w, 3, 16, 16),
              "encoder.latent_head.weight": torch.zeros(32, enc_w)}
        sd.update({f"encoder.blocks.{i}.norm1.weight": torch.zeros(1) for i in range(enc_depth)})
        sd.update({f"decoder.blocks.{i}.norm1.weight": torch.zeros(1) for i in range(dec_depth)})
        return sd

    official = {"SS": (512, 512, 8, 8), "SB": (512, 768, 8, 12), "SL": (512, 1024, 8, 24), "BS": (768, 512, 12, 8),
                "BB": (768, 768, 12, 12), "BL": (768, 1024, 12, 24), "LS": (1024, 512, 24, 8),
                "LB": (1024, 768, 24, 12), "LL": (1024, 1024, 24, 24), "XLXL": (1152, 1152, 28, 28)}
    heads = {512: 8, 768: 12, 1024: 16, 1152: 16}
    for name, (ew, dw, ed, dd) in official.items():  # the ten DeTok_models sizes (models/detok.py, model_utils.py)
        enc, dec, got = configs(fake(ew, dw, ed, dd), "x")
        assert got == f"detok_{name}" and (enc.image_size, enc.patch_size, enc.dim) == (256, 16, 16)
        assert (enc.width, enc.depth, enc.heads, dec.width, dec.depth, dec.heads) == (ew, ed, heads[ew], dw, dd, heads[dw])
    torch.save({"model_ema": fake(512, 640, 1, 1)}, tmp_path / "odd.pth")
    _one_line(f"detok:{tmp_path / 'odd.pth'}", "decoder width 640", "small 512")


def test_rectok_family_is_the_plain_checkpoint_unchanged(tmp_path):
    path = rectok_file(tmp_path)
    plain, meta = load_tokenizer(str(path))
    for spec in (str(path), f"rectok:{path}"):
        model, m = load_any_tokenizer(spec)
        assert type(model) is RecTok and m["family"] == "rectok"
        assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), plain.state_dict().values()))
        assert {k: m[k] for k in meta} == meta


def test_plain_names_stay_rectok_and_a_path_with_a_colon_is_a_path(tmp_path):
    assert split_spec("runs/tok/checkpoints/latest.pt") == ("rectok", "runs/tok/checkpoints/latest.pt")
    assert split_spec("owner/name@main") == ("rectok", "owner/name@main")
    assert split_spec("sd-vae:stabilityai/sd-vae-ft-ema") == ("sd-vae", "stabilityai/sd-vae-ft-ema")
    odd = tmp_path / "sd-vae:x.pt"
    odd.write_bytes(b"")
    assert split_spec(str(odd)) == ("rectok", str(odd))


def test_registry_refuses_duplicates_and_names_known_families_for_unknown_ones():
    with pytest.raises(ValueError, match="registered twice"):
        register_family("sd-vae", "x", "x", "x", Normalization())(lambda source, **kw: None)
    for bad in (lambda: get_family("sdxl-vae"), lambda: split_spec("sdxl-vae:foo.pt")):
        with pytest.raises(CheckpointError) as e:
            bad()
        msg = str(e.value)
        assert "\n" not in msg and "'sdxl-vae'" in msg and all(f in msg for f in FAMILIES)


def _one_line(spec: str, *words: str, **kw) -> str:
    with pytest.raises(CheckpointError) as e:
        load_any_tokenizer(spec, **kw)
    msg = str(e.value)
    assert "\n" not in msg and all(w in msg for w in words), msg
    return msg


def test_wrong_family_files_are_one_line(tmp_path):
    tok = rectok_file(tmp_path)
    _one_line(f"sd-vae:{tok}", "no KL autoencoder", "rectok:FILE")
    _one_line(f"mar-kl16:{ldm_file('va-vae', tmp_path)}", "32 latent channels", "what fits: va-vae:")
    _one_line(f"rectok:{diffusers_file('sd-vae', tmp_path)}")  # a KL file is no rectok checkpoint
    _one_line(f"mar-kl16:{diffusers_file('sd-vae', tmp_path)}", "4 latent channels", "mar-kl16 has 16 channels",
              "what fits: sd-vae:, eq-vae:")
    _one_line(f"va-vae:{ldm_file('mar-kl16', tmp_path)}", "16 latent channels", "va-vae has 32", "mar-kl16:")
    _one_line(f"detok:{ldm_file('va-vae', tmp_path)}", "no l-DeTok encoder", "a KL autoencoder")
    _one_line(f"detok:{tok}", "a rectok checkpoint", "rectok:FILE")
    gen = tmp_path / "gen.pt"  # a train-dit checkpoint is no tokenizer of any family
    torch.save({"format": "rectok", "generator": {"family": "sit", "config": {}},
                "model": {"t_embedder.mlp.0.weight": torch.zeros(2, 2), "blocks.0.attn.qkv.weight": torch.zeros(6, 2)}}, gen)
    _one_line(f"sd-vae:{gen}", "no KL autoencoder", "a generator checkpoint, not a tokenizer")
    _one_line(f"detok:{gen}", "a rectok generator checkpoint, not an l-DeTok one")
    _one_line(f"sd-vae:{detok_file(tmp_path)}", "no KL autoencoder", "detok:FILE")
    _one_line(f"rectok:{ldm_file('va-vae', tmp_path)}", "not a rectok checkpoint", "32 latent channels: va-vae:FILE")
    _one_line(str(detok_file(tmp_path)), "an l-DeTok file: detok:FILE")
    (tmp_path / "notes.pt").write_bytes(b"not a pickle")
    _one_line(f"sd-vae:{tmp_path / 'notes.pt'}", "cannot read")


def test_missing_and_extra_keys_are_one_line(tmp_path):
    sd = tiny_diffusers_vae("sd-vae").state_dict()
    missing = {k: v for k, v in sd.items() if k != "decoder.conv_norm_out.weight"}
    save_file(missing, str(tmp_path / "missing.safetensors"))
    _one_line(f"sd-vae:{tmp_path / 'missing.safetensors'}", "1 missing", "decoder.conv_norm_out.weight")
    save_file({**sd, "decoder.extra.weight": torch.zeros(2)}, str(tmp_path / "extra.safetensors"))
    _one_line(f"sd-vae:{tmp_path / 'extra.safetensors'}", "1 extra", "decoder.extra.weight")
    _, _, ldm = ldm_reference("mar-kl16")
    torch.save({"model": {**ldm, "encoder.foo.weight": torch.zeros(1)}}, tmp_path / "odd.ckpt")
    _one_line(f"mar-kl16:{tmp_path / 'odd.ckpt'}", "encoder.foo.weight", "LDM-layout")


def test_sources_that_do_not_exist_and_offline_hub_ids_are_one_line_at_once(monkeypatch, tmp_path):
    _one_line(f"mar-kl16:{tmp_path / 'kl16.ckpt'}", "no such file", "mar-kl16:PATH")
    _one_line("va-vae:hustvl/vavae", "no such file", "va-vae:PATH")  # no library download for LDM files
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)  # restored after the test (the check sets it)
    monkeypatch.setenv("RECTOK_OFFLINE", "1")
    start = time.monotonic()
    msg = _one_line("sd-vae:stabilityai/sd-vae-ft-ema", "offline", "sd-vae:DIR", "hf download stabilityai/sd-vae-ft-ema")
    assert time.monotonic() - start < 5, msg
    assert os.environ.get("HF_HUB_OFFLINE") == "1"


def test_image_size_must_fit_the_down_sampling(tmp_path):
    _one_line(f"sd-vae:{diffusers_file('sd-vae', tmp_path)}", "down-samples by 2", "multiple of 2", image_size=15)


def test_tokenizers_command_lists_every_family():
    from typer.testing import CliRunner

    from rectok_cli.main import app

    r = CliRunner().invoke(app, ["tokenizers"], env={"COLUMNS": "240"})
    assert r.exit_code == 0, r.output
    for f in FAMILIES.values():
        assert f"{f.name}:" in r.output and f.latent in r.output


def test_python_api_takes_family_names_in_0_1(tmp_path):
    from rectok_core import Tokenizer

    ref = tiny_diffusers_vae("flux-vae", seed=5)
    save_file(ref.state_dict(), str(tmp_path / "flux.safetensors"))
    tok = Tokenizer.from_pretrained(f"flux-vae:{tmp_path / 'flux.safetensors'}", device="cpu", image_size=32)
    assert tok.latent_shape == (16, 16, 16) and tok.image_size == 32
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        z_ref = ref.encode(x * 2 - 1).latent_dist.mean
        img_ref = ref.decode(z_ref).sample.clamp(-1, 1).add(1).div(2)
    z = tok.encode(x)
    assert rel(z, z_ref) < 1e-5 and rel(tok.decode(z), img_ref) < 1e-5
    # normalize=True uses the family's published normalisation, (z − 0.1159)·0.3611, with no data pass
    assert rel(tok.encode(x, normalize=True), (z_ref - 0.1159) * 0.3611) < 1e-5
    assert rel(tok.decode((z_ref - 0.1159) * 0.3611, normalized=True), img_ref) < 1e-5


def test_hub_ids_load_with_diffusers_from_pretrained_and_the_family_subfolder(monkeypatch):
    import diffusers

    from rectok_core.checkpoints import families as front

    calls = []

    def fake_from_pretrained(repo, subfolder=None, revision=None, **kw):
        calls.append((repo, subfolder, revision))
        return tiny_diffusers_vae("sd3-vae")

    monkeypatch.setattr(front, "network_available", lambda *a, **k: True)
    monkeypatch.setattr(diffusers.AutoencoderKL, "from_pretrained", fake_from_pretrained)
    model, meta = load_any_tokenizer("sd3-vae:stabilityai/stable-diffusion-3-medium-diffusers@v2", image_size=32)
    assert calls == [("stabilityai/stable-diffusion-3-medium-diffusers", "vae", "v2")]
    assert (model.cfg.dim, meta["path"], len(meta["sha256"])) == (16, "stabilityai/stable-diffusion-3-medium-diffusers", 64)


def test_export_of_another_family_is_one_line_and_writes_nothing(tmp_path):
    from rectok_core.errors import RectokError
    from rectok_core.interop.export import export

    write, _ = FACTORIES["sd-vae"]
    spec = f"sd-vae:{write(tmp_path)}"
    with pytest.raises(RectokError, match="take .* as it is") as e:
        export(spec, tmp_path / "out")
    assert "\n" not in str(e.value) and not (tmp_path / "out").exists()


def test_family_normalisation_is_the_official_one_and_data_statistics_are_opt_in(tmp_path):
    """``--latent-norm family`` (default): the published global scale/shift of each family as the generator's
    LatentStats (mean = shift, std = 1/scale); per-channel families (and ``--latent-norm data``) use data statistics."""
    from rectok_core.data.latent_stats import LatentStats, choose_stats, family_stats

    data = LatentStats(torch.zeros(4), torch.ones(4), 1, 1, "x", "published", "fp")
    for family in FAMILIES:
        write, size = FACTORIES[family]
        model, meta = load_any_tokenizer(f"{family}:{write(tmp_path)}", image_size=size)
        stats = family_stats(model, meta)
        if family not in FACTS:  # rectok, va-vae, detok: their own normalisation is per-channel data statistics
            assert stats is None and choose_stats(model, meta, "family", lambda: data) is data
            continue
        _, scale, shift = FACTS[family]
        assert stats.kind == "family" and stats.mean.shape == (model.cfg.dim,)
        assert torch.equal(stats.mean, torch.full((model.cfg.dim,), shift, dtype=torch.float64))
        assert torch.allclose(1 / stats.std, torch.full_like(stats.std, scale), rtol=1e-12, atol=0)
        chosen = choose_stats(model, meta, "family", lambda: pytest.fail("no data pass"))
        assert chosen.kind == "family" and torch.equal(chosen.std, stats.std) and chosen.tokenizer_sha256 == meta["sha256"]
        assert choose_stats(model, meta, "data", lambda: data) is data
        z = torch.randn(2, model.cfg.dim, 3, 3)
        assert torch.allclose(stats.normalize(z), model.normalize(z), rtol=1e-6, atol=1e-6)
        for back in (LatentStats.from_state(stats.state()), LatentStats.from_json(stats.to_json())):
            assert back.kind == "family" and torch.equal(back.std, stats.std) and torch.equal(back.mean, stats.mean)
    with pytest.raises(Exception, match="--latent-norm 'z'"):
        choose_stats(model, meta, "z", lambda: data)


def test_a_latent_grid_the_generator_cannot_take_is_one_line():
    from rectok_core.checkpoints.families import check_latent_fits

    check_latent_fits("sd-vae:v.pt", (4, 32, 32), "DiT^DH-XL", 1, 256)
    check_latent_fits("sd-vae:v.pt", (4, 32, 32), "SiT-XL/2", 2, 256)
    for shape, patch, words in (((4, 33, 33), 2, ("4x33x33", "patchifies by 2", "patch size of 1, 3", "multiple of 16",
                                                   "e.g. 272")),
                                ((16, 16, 8), 1, ("16x16x8", "square latent grid"))):
        with pytest.raises(CheckpointError) as e:
            check_latent_fits("mar-kl16:k.ckpt", shape, "SiT-XL/2", patch, 264)
        msg = str(e.value)
        assert "\n" not in msg and "mar-kl16:k.ckpt" in msg and all(w in msg for w in words), msg
