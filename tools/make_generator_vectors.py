"""Generate the reference vectors of the SiT, DiT and LightningDiT generator families (tests/data/generators/
{sit,dit,lightningdit}.pt + .json) from the official RecTok code.

Runs the official classes (``models/sit.py``, ``models/dit.py``, ``models/lightningdit.py`` with their
``transport`` / ``diffusion`` packages) offline on the CPU at a micro size (``SIZE_DICT["micro"]``: width 64,
2 layers, 4 heads; 4 latent channels, 10 classes), loads the deterministic weights of
``tests/models/family_weights.py`` (every parameter; buffers such as the RoPE tables stay the official ones) and
saves, per family:

* ``x, t, y → out``: ``model.net(x, t, y)`` in eval mode (patch 1 on 8×8 latents), and ``alt_*`` the same for a
  second model (patch 2 on 16×16 latents; QK-norm on for SiT and LightningDiT, ``learn_sigma`` on for SiT);
* one training-loss evaluation of the official model with fixed draws, in eval mode (no label dropout):
  ``loss_x1`` data, ``loss_x0`` noise, ``loss_t`` times, ``loss_y`` labels; flow families: the transport's
  ``sample`` returns ``(loss_t, loss_x0, loss_x1)`` and ``loss`` = ``model(loss_x1, loss_y)`` (official forward:
  the mean of the per-sample MSE ``loss_mse``; LightningDiT also ``loss_cos``, the cosine term its transport
  computes but its forward does not add); DiT: ``train_diffusion.training_losses(model.net, loss_x1, loss_t,
  {y}, noise=loss_x0)`` → ``loss_mse``, ``loss_vb``, ``loss`` = mean of mse + vb;
* a fixed-noise sample of the official ``model.generate(2, sample_y, cfg)`` with ``SAMPLE_STEPS`` steps, at cfg 1
  (``sample``) and ``CFG`` (``sample_cfg``), each right after ``torch.manual_seed(SAMPLE_SEED)``; ``sample_z``
  is the initial noise it draws (``torch.randn(2, C, H, W)`` first thing after the seed). SiT and LightningDiT
  integrate the ODE with torchdiffeq's Euler on ``sample_grid`` (LightningDiT: ``timestep_shift`` 0.3 and, with
  CFG, guidance only where t ≥ 0.1); DiT runs ``p_sample_loop`` on the respaced timesteps ``sample_timesteps``
  and draws one ``torch.randn_like(x)`` per step after ``z`` (x has 2n rows with CFG), saved in order as
  ``sample_noise`` / ``sample_cfg_noise`` (S, rows, C, H, W) (the last step's draw is unused).

The JSON holds the parameter manifests, the rectok configs of the two models, the official full-size parameter
counts (each builder of ``SiT_models`` / ``DiT_models`` / ``LightningDiT_models`` at its defaults -- 16 latent
channels, 16×16 latents, 1000 classes -- built on the meta device) and the source commit. Never imported by the
package or the tests; needs einops, scipy, torchdiffeq (pip install torchdiffeq) and a checkout of the official
code::

    python tools/make_generator_vectors.py --official /tmp/official --commit ee87aaf015d9f758caa54c2a5df01516dc1e5253
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

MICRO = {"width": 64, "layers": 2, "heads": 4}
CHANNELS, CLASSES = 4, 10
SAMPLE_STEPS, SAMPLE_SEED, CFG = 5, 1234, 1.5
FAMILIES = {  # family: (official module, class, first-model kwargs, second-model kwargs)
    "sit": ("sit", "SiT", {}, {"qk_norm": True, "learn_sigma": True}),
    "dit": ("dit", "DiT", {}, {}),
    "lightningdit": ("lightningdit", "LightningDiT", {}, {"qk_norm": True}),
}


def official_modules(checkout: Path) -> dict[str, types.ModuleType]:
    """``models.{sit,dit,lightningdit}`` of the checkout, without the package ``__init__`` (which imports every
    model family); ``SIZE_DICT`` gains the ``micro`` entry."""
    sys.path.insert(0, str(checkout))
    pkg = types.ModuleType("models")
    pkg.__path__ = [str(checkout / "models")]
    sys.modules["models"] = pkg
    import models.dit
    import models.lightningdit
    import models.model_utils
    import models.sit

    models.model_utils.SIZE_DICT["micro"] = dict(MICRO)
    return {"sit": models.sit, "dit": models.dit, "lightningdit": models.lightningdit}


def build(module, cls: str, grid: int, patch: int, **kwargs):
    """An official micro model on ``grid``×``grid`` latents with the deterministic weights, in eval mode."""
    torch.manual_seed(0)
    model = getattr(module, cls)(img_size=grid * 16, tokenizer_patch_size=16, patch_size=patch, model_size="micro",
                                 token_channels=CHANNELS, num_classes=CLASSES, num_sampling_steps=SAMPLE_STEPS,
                                 **({} if cls == "DiT" else {"sampling_method": "euler"}), **kwargs)
    manifest = {k: list(p.shape) for k, p in model.named_parameters()}
    missing, unexpected = model.load_state_dict(state_from_manifest(manifest), strict=False)
    assert not unexpected and all(k.startswith("rope.") for k in missing), (missing, unexpected)
    return model.eval(), manifest


def rectok_config(grid: int, patch: int, kwargs: dict) -> dict:
    cfg = dict(width=MICRO["width"], depth=MICRO["layers"], heads=MICRO["heads"], in_channels=CHANNELS,
               input_size=grid, patch_size=patch, num_classes=CLASSES, class_dropout=0.1)
    cfg.update(kwargs)
    return cfg


def loss_vectors(family: str, model) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    x1 = torch.randn(3, CHANNELS, 8, 8, generator=g)
    x0 = torch.randn(3, CHANNELS, 8, 8, generator=g)
    y = torch.tensor([1, 5, 9])
    if family == "dit":
        t = torch.tensor([0, 421, 999])
        terms = model.train_diffusion.training_losses(model.net, x1, t, dict(y=y), noise=x0)
        return dict(loss_x1=x1, loss_x0=x0, loss_t=t, loss_y=y, loss_mse=terms["mse"], loss_vb=terms["vb"],
                    loss=terms["loss"].mean())
    t = torch.tensor([0.05, 0.4, 0.77]) if family == "sit" else torch.tensor([0.12, 0.5, 0.93])
    model.transport.sample = lambda x, *args, **kw: (t, x0, x)
    terms = model.transport.training_losses(model.net, x1, dict(y=y))
    out = dict(loss_x1=x1, loss_x0=x0, loss_t=t, loss_y=y, loss_mse=terms["loss"], loss=model(x1, y))
    if "cos_loss" in terms:
        out["loss_cos"] = terms["cos_loss"]
    return out


def sample_vectors(family: str, model) -> dict[str, torch.Tensor]:
    labels = torch.tensor([3, 7])
    torch.manual_seed(SAMPLE_SEED)
    out = {"sample_y": labels, "sample_z": torch.randn(2, CHANNELS, model.input_size, model.input_size)}
    randn_like = torch.randn_like
    drawn: list[torch.Tensor] = []

    def recording(*args, **kwargs):
        drawn.append(randn_like(*args, **kwargs))
        return drawn[-1]

    for key, cfg in (("sample", 1.0), ("sample_cfg", CFG)):
        drawn.clear()
        torch.manual_seed(SAMPLE_SEED)
        torch.randn_like = recording
        try:
            out[key] = model.generate(2, labels, cfg=cfg).clone()
        finally:
            torch.randn_like = randn_like
        if family == "dit":
            out[f"{key}_noise"] = torch.stack(drawn)
        else:
            assert not drawn
    if family == "dit":
        out["sample_timesteps"] = torch.tensor(model.gen_diffusion.timestep_map)
    else:
        out["sample_grid"] = model.sample_fn.__self__.t.clone()
    return out


def official_counts(module, builders: dict) -> dict[str, dict[str, int]]:
    counts = {}
    for name, builder in builders.items():
        with torch.device("meta"):
            model = builder()
        counts[name] = {"params": sum(p.numel() for p in model.parameters()),
                        "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad)}
    return counts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--official", type=Path, required=True, help="checkout of github.com/Shi-qingyu/RecTok")
    ap.add_argument("--commit", required=True, help="the checkout's commit (recorded in the JSON)")
    ap.add_argument("--out", type=Path, default=ROOT / "tests" / "data" / "generators")
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    modules = official_modules(args.official)
    args.out.mkdir(parents=True, exist_ok=True)
    for family, (mod_name, cls, first, second) in FAMILIES.items():
        module = modules[family]
        flow = family != "dit"
        g = torch.Generator().manual_seed(1)
        vectors: dict[str, torch.Tensor] = {}
        variants = []
        for prefix, grid, patch, kwargs in (("", 8, 1, first), ("alt_", 16, 2, second)):
            model, manifest = build(module, cls, grid, patch, **kwargs)
            x = torch.randn(2, CHANNELS, grid, grid, generator=g)
            t = torch.tensor([0.3, 0.85]) if flow else torch.tensor([17.0, 604.0])
            y = torch.tensor([3, CLASSES])  # a class and the null label
            vectors.update({f"{prefix}x": x, f"{prefix}t": t, f"{prefix}y": y, f"{prefix}out": model.net(x, t, y)})
            variants.append({"prefix": prefix, "official_kwargs": {"img_size": grid * 16, "tokenizer_patch_size": 16,
                                                                   "patch_size": patch, "model_size": "micro",
                                                                   "token_channels": CHANNELS,
                                                                   "num_classes": CLASSES, **kwargs},
                             "rectok_config": rectok_config(grid, patch, kwargs), "manifest": manifest})
            if not prefix:
                vectors.update(loss_vectors(family, model))
                vectors.update(sample_vectors(family, model))
        torch.save({k: v.contiguous().clone() for k, v in vectors.items()}, args.out / f"{family}.pt")
        builders = getattr(module, f"{cls}_models")
        meta = {"family": family, "source": "https://github.com/Shi-qingyu/RecTok", "commit": args.commit,
                "file": f"models/{mod_name}.py", "micro_size": MICRO,
                "weights": "tests/models/family_weights.py state_from_manifest(manifest, seed=0) (parameters only)",
                "net": "model.eval(); model.net(x, t, y)",
                "loss": "eval mode, fixed draws (see tools/make_generator_vectors.py loss_vectors)",
                "sample": {"steps": SAMPLE_STEPS, "seed": SAMPLE_SEED, "cfg": CFG, "labels": [3, 7],
                           "call": "torch.manual_seed(seed); model.generate(2, labels, cfg)",
                           "noise": "sample_z = torch.randn(2, C, H, W) right after the seed" +
                                    ("; then one torch.randn_like(x) per step (sample_noise / sample_cfg_noise)"
                                     if not flow else "; no other draws"),
                           "solver": ("p_sample_loop, respaced timesteps sample_timesteps, clip_denoised False"
                                      if not flow else "torchdiffeq euler on sample_grid"
                                      + (", timestep_shift 0.3, CFG only where t >= 0.10"
                                         if family == "lightningdit" else ""))},
                "variants": variants,
                "official_counts": official_counts(module, builders),
                "official_counts_setting": "builder() defaults: token_channels 16, img_size 256 / "
                                           "tokenizer_patch_size 16 = 16x16 latents, patch_size 1, "
                                           "num_classes 1000, label_drop_prob 0.1"}
        (args.out / f"{family}.json").write_text(json.dumps(meta, indent=1) + "\n")
        print(f"{family}: {sum(v.numel() for v in vectors.values())} numbers; loss {float(vectors['loss']):.6f}; "
              f"counts {meta['official_counts']}")


if __name__ == "__main__":
    main()
