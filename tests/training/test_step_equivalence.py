"""One rectok training step computes what one official training step computes (fp32, CPU).

The vectors in ``tests/data/step_vectors`` were recorded from the official implementation (Shi-qingyu/RecTok at
``ee87aaf``, its own ``train_one_epoch_tokenizer`` / ``train_one_epoch_generator`` run for one step) by
``tools/make_step_vectors.py``; ``meta.json`` names the commit and the command. Each holds the starting weights,
the batch, every random draw of the step, the official loss terms and gradient norm, and the weights after the
step (model, EMA, discriminator).

Injection point: the ``rnd`` argument of ``TokenizerTrainer.step`` / ``DiTTrainer.step``, through which every
random draw of a rectok step passes. :class:`ReplayRandom` is a ``StepRandom`` that returns the recorded mask
ratio from ``uniform`` and, while it is entered, answers each ``torch.rand`` / ``torch.randn`` call made with its
generators by the next recorded tensor (same shape required, all of them consumed). The normal path is untouched.

Covered: stage 1 without and with the GAN (RAD masking, posterior sample, FSD flow noise, semantic cosine loss
against fixed teacher features, KL, PatchGAN generator and hinge discriminator losses, clip, AdamW, EMA, the
discriminator's AdamW and BatchNorm statistics), decoder fine-tuning (frozen encoder, fresh GAN, the EMA's
frozen encoder) and the DiT^DH step on cached moments and on online-encoded images (posterior sample,
normalisation, label drop, shifted t, flow-matching loss, clip, AdamW, EMA). Not covered (stubbed identically on
both sides): the perceptual term (its LPIPS/ConvNeXt-S weights are not available offline: ``--perceptual none``
here, the official ``PerceptualLoss`` returning 0) and the DINOv3 teacher (fixed random features); the official
RoPE variant (``rope="official"``) is used; sizes are micro (widths 16, one block).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from torch.overrides import TorchFunctionMode

from rectok_core.data.latent_stats import LatentStats
from rectok_core.interop.official import tokenizer_state
from rectok_core.losses.tokenizer import DiscriminatorLoss
from rectok_core.models.discriminator import NLayerDiscriminator
from rectok_core.models.dit import DiTConfig, DiTDH
from rectok_core.models.tokenizer import RecTok, TokenizerModelConfig
from rectok_core.training.config import OptimConfig, TokenizerLossConfig
from rectok_core.training.dit import DiTTrainer
from rectok_core.training.dit_config import DiTOptimConfig
from rectok_core.training.engine import (
    EMA,
    StepRandom,
    adamw,
    hold_then_linear,
    param_groups,
    set_lr,
    warmup_cosine,
)
from rectok_core.training.tokenizer import build_trainer

CPU = torch.device("cpu")
DATA = Path(__file__).resolve().parents[1] / "data" / "step_vectors"
TOL = 1e-5
TOKENIZER_CASES = ("stage1", "stage1-gan", "decoder-ft")
DIT_CASES = ("dit-cached", "dit-online")

pytestmark = pytest.mark.usefixtures("one_thread")


def load(case: str) -> dict:
    return torch.load(DATA / f"{case}.pt", weights_only=True)


# ---------------------------------------------------------------------------------------------------------
# The injection point
# ---------------------------------------------------------------------------------------------------------
class ReplayRandom(StepRandom, TorchFunctionMode):
    """A ``StepRandom`` whose draws are given: ``uniform`` returns ``ratio``; inside ``with``, every
    ``torch.rand``/``randn`` call on its generators returns the next tensor of ``draws`` (shapes must match)."""

    FUNCS = (torch.rand, torch.randn)

    def __init__(self, draws: list[torch.Tensor], ratio: float | None = None):
        StepRandom.__init__(self, 0, 0, CPU)
        TorchFunctionMode.__init__(self)
        self.queue, self.ratio = list(draws), ratio

    def uniform(self, lo: float, hi: float) -> float:
        assert self.ratio is not None, "the step drew a mask ratio the vector does not have"
        return self.ratio

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        gen = kwargs.get("generator")
        if func not in self.FUNCS or gen is None or gen not in (self.device, self.cpu):
            return func(*args, **kwargs)
        shape = tuple(args[0]) if len(args) == 1 and isinstance(args[0], (tuple, list, torch.Size)) else tuple(args)
        assert self.queue, f"the step drew {func.__name__}{shape} beyond the recorded draws"
        value = self.queue.pop(0)
        assert tuple(value.shape) == shape, f"recorded draw {tuple(value.shape)}, the step asked for {shape}"
        return value.to(device=kwargs.get("device") or CPU, dtype=kwargs.get("dtype") or torch.float32).clone()

    def __exit__(self, *exc):
        out = TorchFunctionMode.__exit__(self, *exc)
        if exc[0] is None:
            assert not self.queue, f"{len(self.queue)} recorded draws were not used"
        return out


# ---------------------------------------------------------------------------------------------------------
# Comparisons
# ---------------------------------------------------------------------------------------------------------
def rel_err(a, b) -> float:
    a, b = torch.as_tensor(a).double(), torch.as_tensor(b).double()
    return float((a - b).norm() / max(float(b.norm()), 1e-30))


def mismatches(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor], what: str) -> list[str]:
    """Per-tensor relative errors above TOL (every official tensor must exist in ``got``)."""
    bad = []
    for k, w in want.items():
        assert k in got, f"{what}: rectok has no {k}"
        if not w.is_floating_point():
            if not torch.equal(got[k], w):
                bad.append(f"{what} {k}: {got[k].tolist()} vs {w.tolist()}")
            continue
        e = rel_err(got[k], w) if float(w.norm()) > 0 else float((got[k].double() - w.double()).norm())
        if e > TOL:
            bad.append(f"{what} {k}: {e:.3g}")
    return bad


def scalar_mismatches(pairs: dict[str, tuple[float, float]]) -> list[str]:
    return [f"{k}: rectok {a!r} official {b!r}" for k, (a, b) in pairs.items()
            if not abs(a - b) <= TOL * abs(b) + 1e-12]


# ---------------------------------------------------------------------------------------------------------
# Tokenizer steps
# ---------------------------------------------------------------------------------------------------------
class FixedTeacher(nn.Module):
    """The stub teacher of the vectors: fixed patch features, whatever the image."""

    def __init__(self, feats: torch.Tensor):
        super().__init__()
        self.register_buffer("feats", feats)
        self.dim = feats.shape[-1]

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        return self.feats[: img.shape[0]]


def load_params(module: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load official weights: every parameter must be given; only derived buffers (RoPE tables) may be absent."""
    missing, unexpected = module.load_state_dict(state, strict=False)
    params = {n for n, _ in module.named_parameters()}
    assert not unexpected and not params & set(missing), (unexpected, sorted(params & set(missing)))


def tokenizer_draws(vec: dict, draws: dict | None = None) -> ReplayRandom:
    """The recorded draws in the order a rectok tokenizer step makes them (mask ratio and noise, t, posterior
    noise, flow noise); the official layouts already match rectok's, and ``t`` was recorded before its shift."""
    d = vec["draws"] if draws is None else draws
    order = [k for k in ("mask_noise", "t_uniform", "posterior_noise", "flow_noise") if k in d]
    return ReplayRandom([d[k] for k in order], d.get("mask_ratio"))


def tokenizer_step(vec: dict, rnd: ReplayRandom):
    """rectok's tokenizer trainer built with the vector's settings and starting weights, after one step."""
    S, stage1 = vec["settings"], vec["stage"] == "stage1"
    M = TokenizerModelConfig(image_size=S["image_size"], patch_size=S["patch_size"], width=S["width"],
                             depth=S["depth"], heads=S["heads"], dim=S["dim"], sem_width=S["sem_width"],
                             sem_depth=S["sem_depth"], sem_heads=S["sem_heads"], rope="official",
                             teacher_dim=S["teacher_dim"])
    L = TokenizerLossConfig(teacher="none", perceptual="none", gamma=S["gamma"], mask_min=S["mask_min"],
                            mask_max=S["mask_max"], kl_weight=S["kl_weight"], sem_weight=S["sem_weight"],
                            gan_weight=S["gan_weight"], t_schedule="shift", sem_input="noisy", sem_target="rec+align")
    O = OptimConfig(weight_decay=S["weight_decay"], beta1=S["beta1"], beta2=S["beta2"], grad_clip=S["grad_clip"],
                    ema=S["ema"], lr=S["lr"])
    live = tokenizer_state(vec["before"]["model"])
    teacher = FixedTeacher(vec["teacher_feats"]) if stage1 else None
    tr = build_trainer(M, L, O, CPU, "fp32", S["lr"], teacher, None, with_disc=vec["gan"],
                       init=lambda m: load_params(m, live), frozen=() if stage1 else ("encoder.",),
                       channels_last=False)
    if not stage1:
        # the official fine-tune start (recipe §3.2, §3.3): EMA ← model_ema for what trains; the frozen encoder
        # is the raw one, which the official EMA copies in at its first step
        ema = tokenizer_state(vec["before"]["ema"])
        ema.update({k: v for k, v in live.items() if k.startswith("encoder.")})
        load_params(tr.ema.module, ema)
    if vec["gan"]:  # the vectors' PatchGAN is smaller than the default one
        disc = NLayerDiscriminator(ndf=S["disc_ndf"], n_layers=S["disc_layers"])
        disc.load_state_dict(vec["before"]["disc"])
        tr.disc, tr.loss_fn.disc, tr.disc_loss = disc, disc, DiscriminatorLoss(disc)
        tr.opt_d = adamw(param_groups(disc, O.weight_decay), S["lr"], (O.beta1, O.beta2), CPU)
    images = vec["images"]
    with rnd:
        terms, _ = tr.step(lambda: images, rnd, gan_on=vec["gan"])
    return tr, terms


def tokenizer_mismatches(vec: dict, tr, terms: dict) -> list[str]:
    S = vec["settings"]
    off = vec["official_terms"]["generator"]
    terms = {k: v.detach() for k, v in terms.items()}
    pairs = {"rec": (float(terms["rec"]), off["reconstruction_loss"]),
             "kl (weighted)": (S["kl_weight"] * float(terms["kl"]), off["kl_loss"]),
             "loss": (float(terms["loss"]), off["total_loss"]),
             "grad_norm": (float(terms["grad_norm"]), vec["grad_norm"])}
    if "sem" in terms:
        pairs["sem"] = (float(terms["sem"]), off["sem_loss"])
    if vec["gan"]:
        d = vec["official_terms"]["discriminator"]
        pairs.update(gan=(float(terms["gan"]), off["gan_loss"]), disc=(float(terms["disc"]), d["discriminator_loss"]),
                     logits_real=(float(terms["logits_real"]), d["logits_real"]),
                     logits_fake=(float(terms["logits_fake"]), d["logits_fake"]))
    bad = scalar_mismatches(pairs)
    after = vec["after"]
    bad += mismatches(tr.model.state_dict(), tokenizer_state(after["model"]), "model")
    bad += mismatches(tr.ema.state_dict(), tokenizer_state(after["ema"]), "EMA")
    if vec["gan"]:
        bad += mismatches(tr.disc.state_dict(), after["disc"], "discriminator")
    return bad


@pytest.mark.parametrize("case", TOKENIZER_CASES)
def test_tokenizer_step_matches_official(case):
    vec = load(case)
    tr, terms = tokenizer_step(vec, tokenizer_draws(vec))
    assert tokenizer_mismatches(vec, tr, terms) == []
    # every trainable rectok parameter was compared, and the step did move the weights
    official = tokenizer_state(vec["after"]["model"])
    assert {n for n, p in tr.model.named_parameters() if p.requires_grad} <= set(official)
    moved = [n for n in official if not torch.equal(official[n], tokenizer_state(vec["before"]["model"])[n])]
    assert len(moved) > 10
    if case == "decoder-ft":  # the official EMA's encoder after the step is the raw (frozen) encoder
        ema, live = tokenizer_state(vec["after"]["ema"]), tokenizer_state(vec["before"]["model"])
        assert all(torch.equal(ema[k], live[k]) for k in live if k.startswith("encoder."))
    if vec["gan"]:
        assert float(terms["gan"].detach()) != 0 and "running_mean" in "".join(vec["after"]["disc"])


def perturbed(draws: dict, key: str) -> dict:
    """``draws`` with one draw replaced by a different valid one."""
    out = dict(draws)
    v = draws[key]
    if key == "mask_ratio":  # one more masked token: one token fewer of posterior and flow noise
        out[key] = v + 1 / 16
        out.update({k: draws[k][:, :-1] for k in ("posterior_noise", "flow_noise")})
    elif key in ("mask_noise", "t_uniform", "drop_uniform"):
        out[key] = (v + 0.37) % 1.0
    else:
        out[key] = -v
    return out


@pytest.mark.parametrize("case", TOKENIZER_CASES)
def test_tokenizer_match_breaks_when_any_draw_is_perturbed(case):
    vec = load(case)
    for key in vec["draws"]:
        tr, terms = tokenizer_step(vec, tokenizer_draws(vec, perturbed(vec["draws"], key)))
        assert tokenizer_mismatches(vec, tr, terms), f"perturbing {key} went unnoticed"


# ---------------------------------------------------------------------------------------------------------
# DiT^DH steps
# ---------------------------------------------------------------------------------------------------------
def to_grid(tokens: torch.Tensor, side: int) -> torch.Tensor:
    """(B, N, C) official token layout → (B, C, h, w)."""
    return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], side, side)


def dit_draws(vec: dict, draws: dict | None = None) -> ReplayRandom:
    """The recorded draws in rectok's order: posterior noise (as a latent map), label drop, t (before the shift),
    x0."""
    d = vec["draws"] if draws is None else draws
    side = vec["settings"]["image_size"] // vec["settings"]["patch_size"]
    return ReplayRandom([to_grid(d["posterior_noise"], side), d["drop_uniform"], d["t_uniform"], d["x0"]])


def dit_step(vec: dict, rnd: ReplayRandom):
    S = vec["settings"]
    side = S["image_size"] // S["patch_size"]
    cfg = DiTConfig(width=S["width"], depth=S["depth"], heads=S["heads"], in_channels=S["dim"], input_size=side,
                    head_width=S["head_width"], head_depth=S["head_depth"], head_heads=S["head_heads"],
                    num_classes=S["num_classes"], class_dropout=S["class_dropout"])
    model = DiTDH(cfg)
    load_params(model, {k: v for k, v in vec["before"]["model"].items() if "feat_rope.freqs" not in k})
    O = DiTOptimConfig(lr=S["lr"], weight_decay=S["weight_decay"], beta1=S["beta1"], beta2=S["beta2"],
                       grad_clip=S["grad_clip"], ema=S["ema"])
    ema = EMA(model, O.ema)
    opt = adamw(param_groups(model, O.weight_decay), O.lr, (O.beta1, O.beta2), CPU)
    set_lr([opt], S["lr"])
    stats = LatentStats(mean=vec["stats_mean"].double(), std=vec["stats_std"].double(), tokens=0, images=0,
                        tokenizer_sha256="", tokenizer_weights="", data_fingerprint="")
    tokenizer = None
    if "images" in vec:
        tokenizer = RecTok(TokenizerModelConfig(image_size=S["image_size"], patch_size=S["patch_size"],
                                                width=S["tok_width"], depth=S["tok_depth"], heads=S["tok_heads"],
                                                dim=S["dim"], rope="official", teacher_dim=0), semantic=False)
        missing, unexpected = tokenizer.load_state_dict(tokenizer_state(vec["tokenizer"]), strict=False)
        assert not unexpected and all(k.startswith("decoder.") for k in missing)
        tokenizer.eval().requires_grad_(False)
        batch = {"label": vec["labels"], "image": vec["images"]}
    else:
        m = vec["moments"]
        C = m.shape[-1] // 2
        batch = {"label": vec["labels"], "mean": to_grid(m[..., :C], side),
                 "logvar": to_grid(m[..., C:].clamp(-30.0, 20.0), side)}
    tr = DiTTrainer(model=model, ema=ema, opt=opt, stats=stats, optim=O, device=CPU, precision="fp32",
                    tokenizer=tokenizer)
    with rnd:
        terms, _ = tr.step(lambda: batch, rnd)
    return tr, terms


def dit_mismatches(vec: dict, tr, terms: dict) -> list[str]:
    bad = scalar_mismatches({"loss": (float(terms["loss"]), vec["official_terms"]["generator"]["loss"]),
                             "grad_norm": (float(terms["grad_norm"]), vec["grad_norm"])})
    drop = lambda sd: {k: v for k, v in sd.items() if "feat_rope.freqs" not in k}  # noqa: E731
    bad += mismatches(tr.model.state_dict(), drop(vec["after"]["model"]), "model")
    bad += mismatches(tr.ema.state_dict(), drop(vec["after"]["ema"]), "EMA")
    return bad


@pytest.mark.parametrize("case", DIT_CASES)
def test_dit_step_matches_official(case):
    vec = load(case)
    assert vec["settings"]["dim"] * (vec["settings"]["image_size"] // vec["settings"]["patch_size"]) ** 2 > 4096
    tr, terms = dit_step(vec, dit_draws(vec))
    assert dit_mismatches(vec, tr, terms) == []
    assert {n for n, p in tr.model.named_parameters() if p.requires_grad} <= set(vec["after"]["model"])
    u = vec["draws"]["drop_uniform"]
    assert bool((u < vec["settings"]["class_dropout"]).any()) and bool((u >= vec["settings"]["class_dropout"]).any())


@pytest.mark.parametrize("case", DIT_CASES)
def test_dit_match_breaks_when_any_draw_is_perturbed(case):
    vec = load(case)
    for key in vec["draws"]:
        tr, terms = dit_step(vec, dit_draws(vec, perturbed(vec["draws"], key)))
        assert dit_mismatches(vec, tr, terms), f"perturbing {key} went unnoticed"


@pytest.mark.parametrize("case", TOKENIZER_CASES + DIT_CASES)
def test_learning_rate_rule_matches_official(case):
    """The learning rate the official schedule set for the recorded step (at a whole epoch) is what rectok's
    schedule gives at the same point of the run (any number of steps per epoch)."""
    vec = load(case)
    s = vec["schedule"]
    for per_epoch in (1, 7, 1251):
        step = s["epoch"] * per_epoch
        if case.startswith("dit"):
            lr = hold_then_linear(step, s["decay_start"] * per_epoch, s["decay_end"] * per_epoch, s["base_lr"],
                                  s["min_lr"])
        else:
            total = s["epochs"] * per_epoch
            warmup = int(s["warmup_epochs"] / s["epochs"] * total)  # rectok's --warmup is a fraction of the run
            lr = warmup_cosine(step, total, warmup, s["base_lr"], s["min_lr"])
        assert lr == pytest.approx(vec["settings"]["lr"], rel=1e-12), (case, per_epoch)


def test_vectors_name_their_source():
    meta = json.loads((DATA / "meta.json").read_text())
    assert meta["source"].endswith("Shi-qingyu/RecTok") and meta["commit"].startswith("ee87aaf")
    assert set(meta["cases"]) == set(TOKENIZER_CASES + DIT_CASES)
    assert sum(f.stat().st_size for f in DATA.iterdir()) < 2_000_000
    assert all(math.isfinite(c["grad_norm"]) for c in meta["cases"].values())
