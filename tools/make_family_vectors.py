"""Generate the reference vectors of the LDM-style and l-DeTok tokenizer families (tests/data/families/) from the
published code.

Runs the official RecTok code offline on the CPU: ``models/autoencoder.py`` (``VAE_models`` ``marvae`` and ``vavae``:
the LDM KL autoencoders as MAR and LightningDiT define them) at a micro width (the encoder/decoder base channel count
``ch`` 128 → 32; levels, blocks and attention placement as published), and ``models/detok.py`` (l-DeTok's ``DeTok``
class, 32 px: its own ``tiny`` ViT size for encoder and decoder, and an asymmetric case as ``detok_SB`` … are built:
encoder ``tiny``, decoder ``small`` at a micro depth of 2 blocks, width and heads as published), with the deterministic weights of
``tests/models/family_weights.py``; saves small input/output tensors plus the parameter manifest and the source
commit. Never imported by the package or the tests; needs ``einops`` and a checkout of the official code::

    git clone https://github.com/Shi-qingyu/RecTok /tmp/RecTok
    python tools/make_family_vectors.py --official /tmp/RecTok --commit $(git -C /tmp/RecTok rev-parse HEAD)
"""
from __future__ import annotations

import argparse
import json
import sys
import types
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "models"))
from family_weights import state_from_manifest  # noqa: E402

IMAGE_SIZE = 64
MICRO_CH = 32


def official_autoencoders(checkout: Path):
    """``models.autoencoder`` of the checkout, without its package ``__init__`` (which imports the generators)
    and with the auxiliary-decoder imports (transformers, unused without ``aux_model_type``) stubbed."""
    sys.path.insert(0, str(checkout))
    for name in ("models", "utils"):
        pkg = types.ModuleType(name)
        pkg.__path__ = [str(checkout / name)]
        sys.modules[name] = pkg
    stub = types.ModuleType("utils.foundation_models")
    stub.create_foundation_model = None
    sys.modules["utils.foundation_models"] = stub
    aux = types.ModuleType("models.rectok")
    aux.TransformerDecoder = aux.MLPDecoder = None
    sys.modules["models.rectok"] = aux
    import models.autoencoder as ae
    import models.detok as detok

    ae.Encoder.__init__.__kwdefaults__["ch"] = MICRO_CH  # the micro width; everything else as published
    ae.Decoder.__init__.__kwdefaults__["ch"] = MICRO_CH
    return ae, detok


#: The micro asymmetric l-DeTok: encoder ``tiny`` (192 wide, 3 blocks), decoder ``small`` (512 wide, 8 heads) with
#: its depth 8 → 2 blocks (everything else as published).
ASYM_DECODER_DEPTH = 2


def detok_vectors(detok, out: Path, commit: str, stem: str, enc: str, dec: str) -> None:
    sizes = {name: dict(v) for name, v in detok.SIZE_DICT.items()}
    if enc != dec:
        detok.SIZE_DICT[dec] = {**detok.SIZE_DICT[dec], "layers": ASYM_DECODER_DEPTH}
    try:
        model = detok.DeTok(img_size=32, vit_enc_model_size=enc, vit_dec_model_size=dec, token_channels=16).eval()
    finally:
        detok.SIZE_DICT.update(sizes)
    manifest = {k: list(v.shape) for k, v in model.state_dict().items()}
    model.load_state_dict(state_from_manifest(manifest), strict=True)
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    post = model.encode_into_posteriors(x)
    z = torch.randn(post.mean.shape, generator=torch.Generator().manual_seed(2))  # (B, N, C) tokens
    vectors = {"x": x, "mean": post.mean, "logvar": post.logvar, "tokenize": model.tokenize(x), "z": z,
               "decode": model.decoder(z), "detokenize": model.detokenize(z.transpose(1, 2).reshape(1, -1, 2, 2))}
    torch.save({k: v.contiguous().clone() for k, v in vectors.items()}, out / f"{stem}.pt")
    meta = {"family": "detok", "source": "https://github.com/Shi-qingyu/RecTok", "commit": commit,
            "file": "models/detok.py", "factory": f"DeTok(img_size=32, vit_enc_model_size={enc!r}, "
                                                  f"vit_dec_model_size={dec!r}, token_channels=16)",
            "weights": "tests/models/family_weights.py state_from_manifest(manifest, seed=0)", "image_size": 32,
            "file_layout": "{'model', 'model_ema', 'args'} (what the official training saves)", "manifest": manifest}
    if enc != dec:
        meta["micro"] = {"decoder_layers": ASYM_DECODER_DEPTH, "note": f"SIZE_DICT[{dec!r}] layers -> "
                         f"{ASYM_DECODER_DEPTH}; widths and heads as published"}
    (out / f"{stem}.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(f"{stem}: {sum(v.numel() for v in vectors.values())} numbers, latents {tuple(post.mean.shape)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--official", type=Path, required=True, help="checkout of github.com/Shi-qingyu/RecTok")
    ap.add_argument("--commit", required=True, help="the checkout's commit (recorded in the JSON)")
    ap.add_argument("--out", type=Path, default=ROOT / "tests" / "data" / "families")
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    ae, detok = official_autoencoders(args.official)
    args.out.mkdir(parents=True, exist_ok=True)
    for family, factory, kwargs in (("mar-kl16", "marvae", {"load_ckpt": False}), ("va-vae", "vavae", {})):
        model = ae.VAE_models[factory](**kwargs).eval()
        manifest = {k: list(v.shape) for k, v in model.state_dict().items()}
        model.load_state_dict(state_from_manifest(manifest), strict=True)
        x = torch.rand(1, 3, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(1)) * 2 - 1
        post = model.encode(x)
        tokens = model.tokenize(x)
        z = torch.randn(post.mean.shape, generator=torch.Generator().manual_seed(2))
        vectors = {"x": x, "mean": post.mean, "logvar": post.logvar, "tokenize": tokens, "z": z,
                   "decode": model.decode(z), "detokenize": model.detokenize(z)}
        stem = family.replace("-", "_")
        torch.save({k: v.contiguous().clone() for k, v in vectors.items()}, args.out / f"{stem}.pt")
        meta = {"family": family, "source": "https://github.com/Shi-qingyu/RecTok", "commit": args.commit,
                "file": "models/autoencoder.py", "factory": f"VAE_models[{factory!r}]({kwargs})",
                "micro": {"ch": MICRO_CH, "note": "Encoder/Decoder ch 128 -> 32; ch_mult, blocks, attention as published"},
                "weights": "tests/models/family_weights.py state_from_manifest(manifest, seed=0)",
                "scale_factor": float(model.scale_factor), "image_size": IMAGE_SIZE,
                "file_layout": "{'model': state_dict} (what init_from_ckpt reads)", "manifest": manifest}
        (args.out / f"{stem}.json").write_text(json.dumps(meta, indent=1) + "\n")
        print(f"{family}: {sum(v.numel() for v in vectors.values())} numbers, latents {tuple(post.mean.shape)}")
    detok_vectors(detok, args.out, args.commit, "detok", "tiny", "tiny")
    detok_vectors(detok, args.out, args.commit, "detok_asym", "tiny", "small")


if __name__ == "__main__":
    main()
