"""The optimised training and sampling paths compute what a plain eager fp32 reference computes (CPU).

* The tokenizer and DiT^DH steps that the training loops (and ``rectok bench``) run — foreach AdamW, foreach
  gradient clipping, foreach EMA lerp, channels-last convolutional networks (forced on here; on by default on
  CUDA only), device-side metrics — against hand-written references: losses written out term by term, a manual
  gradient-norm clip, ``torch.optim.AdamW(foreach=False)``, an EMA loop. Same batch, same random draws.
* bf16 autocast (the CUDA default) against the fp32 reference: same loss to bf16 accuracy, gradients pointing
  the same way.
* The step makes no host synchronisation (``.item()``, ``bool(tensor)``) apart from the CPU-side scalars that
  never wait for a GPU.
* ``torch.compile`` (inductor, which works on this CPU machine in ~15 s for the tiny DiT) against eager sampling;
  the training loops' compile wiring with the ``eager`` backend (no code generation: it tests the wiring, the
  warm-up log and that a compiled run trains the same as an eager one).
"""
from __future__ import annotations

import copy
import math
import traceback

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from rectok_core.config import build_config
from rectok_core.data.latent_stats import LatentStats
from rectok_core.flow.noise import sample_noise_level, shift_time
from rectok_core.losses.perceptual import LPIPS, PerceptualLoss
from rectok_core.models.tokenizer import random_masking
from rectok_core.training.config import TOKENIZER_PRESETS, TokenizerTrainConfig
from rectok_core.training.dit import build_dit_trainer
from rectok_core.training.dit_config import DIT_TRAIN_PRESETS, DiTTrainConfig
from rectok_core.training.engine import StepRandom, param_groups
from rectok_core.training.rundir import read_metrics
from rectok_core.training.tokenizer import (
    build_teacher_for,
    build_trainer,
    train_tokenizer,
)
from rectok_core.utils import runtime

CPU = torch.device("cpu")


pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------------------------------------------------
# Plain references
# ---------------------------------------------------------------------------------------------------------
def clip_(params, max_norm: float) -> torch.Tensor:
    """Gradient-norm clipping written out: scale every gradient by min(1, max_norm / (‖g‖ + 1e-6))."""
    grads = [p.grad for p in params if p.grad is not None]
    total = torch.sqrt(sum(g.double().pow(2).sum() for g in grads)).float()
    coef = min(1.0, max_norm / (total.item() + 1e-6))
    for g in grads:
        g.mul_(coef)
    return total


def ema_(ema_module, model, decay: float) -> None:
    with torch.no_grad():
        live = dict(model.named_parameters())
        for name, p in ema_module.named_parameters():
            if live[name].requires_grad:
                p.copy_(decay * p + (1 - decay) * live[name])


def plain_adamw(model, O, lr):
    return torch.optim.AdamW(param_groups(model, O.weight_decay), lr=lr, betas=(O.beta1, O.beta2),
                             foreach=False, fused=False)


def grads_before_step(opt) -> dict[int, torch.Tensor]:
    """Snapshot of the gradients an optimizer is about to apply (after clipping), keyed by parameter id."""
    seen: dict[int, torch.Tensor] = {}

    def hook(o, args, kwargs):
        for g in o.param_groups:
            for p in g["params"]:
                if p.grad is not None:
                    seen[id(p)] = p.grad.detach().clone()

    opt.register_step_pre_hook(hook)
    return seen


def close(a: torch.Tensor, b: torch.Tensor, rtol: float, atol: float, what: str) -> None:
    torch.testing.assert_close(a.float(), b.float(), rtol=rtol, atol=atol, msg=lambda m: f"{what}: {m}")


def rel_close(a: torch.Tensor, b: torch.Tensor, tol: float, what: str) -> None:
    """‖a − b‖ ≤ tol·‖b‖ (per tensor: elementwise tests trip over gradient entries that are rounding noise)."""
    a, b = a.detach().double(), b.detach().double()
    err, ref = float((a - b).norm()), float(b.norm())
    assert err <= tol * ref + 1e-12, f"{what}: relative error {err / max(ref, 1e-30)}"


def check_updates(got, want, before, tol: float, what: str) -> None:
    """The parameter changes of two modules from the same start agree (per tensor, relative); frozen ones are
    untouched in both."""
    for (n, a), b, b0 in zip(got.named_parameters(), want.parameters(), before.parameters()):
        if torch.equal(b, b0):
            assert torch.equal(a, b0), f"{what} {n} changed in the optimised step only"
        else:
            rel_close(a.detach() - b0, b.detach() - b0, tol, f"{what} update {n}")


def cosine(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    va = torch.cat([x.flatten().double() for x in a])
    vb = torch.cat([x.flatten().double() for x in b])
    return float(va @ vb / (va.norm() * vb.norm()))


# ---------------------------------------------------------------------------------------------------------
# Tokenizer step
# ---------------------------------------------------------------------------------------------------------
def tokenizer_setup(precision: str, perceptual: bool = False):
    """A tiny stage-1 trainer with the real offline Inception teacher and a PatchGAN, channels-last forced on, and
    deep copies of everything in the default layout for the reference. ``perceptual`` adds LPIPS with a random
    VGG16 — whose input gradients are ill-conditioned (near-zero feature norms in ``normalize_tensor``): fp32
    contiguous and fp32 channels-last both differ from fp64 by ~0.3%, see the LPIPS test below — so the tight
    comparison leaves it out."""
    torch.manual_seed(0)
    cfg = build_config(TokenizerTrainConfig, TOKENIZER_PRESETS, "tiny",
                       dict(teacher="inception-s", gan_weight=0.1, batch_size=8, device="cpu",
                            rope="rotation"))  # the tolerances below were set for this RoPE (the old default)
    L, M, O = cfg.loss, cfg.model, cfg.optim
    teacher = build_teacher_for(cfg, CPU)  # the real offline Inception (a conv net: channels-last applies)
    lpips = PerceptualLoss("lpips", lpips_module=LPIPS(None)) if perceptual else None  # random VGG16
    ref = {"teacher": copy.deepcopy(teacher), "perceptual": copy.deepcopy(lpips)}
    tr = build_trainer(M, L, O, CPU, precision, 1e-3, teacher, lpips, with_disc=True, channels_last=True)
    assert tr.disc.channels_last
    assert teacher.module.stages[0].conv.weight.is_contiguous(memory_format=torch.channels_last)
    ref["model"] = copy.deepcopy(tr.model)
    ref["ema"] = copy.deepcopy(tr.ema.module)
    ref["disc"] = copy.deepcopy(tr.disc)
    ref["before"] = {"model": copy.deepcopy(tr.model), "disc": copy.deepcopy(tr.disc)}
    ref["disc"].channels_last = False
    images = torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    # a step whose mask ratio is positive, so masking and the mask tokens are exercised
    step = next(s for s in range(100) if StepRandom(7, 0, CPU).at(s).uniform(L.mask_min, L.mask_max) > 0.05)
    return cfg, tr, ref, images, step


def tokenizer_reference(cfg, ref, images, step):
    """One stage-1 step written out plainly (fp32, eager, contiguous layouts)."""
    L, M, O = cfg.loss, cfg.model, cfg.optim
    model, disc, teacher, perceptual = ref["model"], ref["disc"], ref["teacher"], ref["perceptual"]
    opt, opt_d = plain_adamw(model, O, 1e-3), plain_adamw(disc, O, 1e-3)
    rnd = StepRandom(7, 0, CPU).at(step)
    B = images.shape[0]
    r = max(0.0, rnd.uniform(L.mask_min, L.mask_max))
    ids_keep, _, ids_restore = random_masking(B, M.num_tokens, r, CPU, rnd.device)
    t = sample_noise_level(B, L.t_schedule, math.sqrt(M.grid[0] * M.grid[1] * M.dim / 4096), rnd.device, CPU)
    out = model(images, ids_keep, ids_restore, t, L.sem_input, L.gamma, rnd.device)
    feats = teacher(images)
    recon01, img01 = out["recon"] * 0.5 + 0.5, images * 0.5 + 0.5
    terms = {"rec": (recon01 - img01).pow(2).mean(), "kl": out["kl"].mean(),
             "sem": (1 - (F.normalize(out["sem"], dim=-1) * F.normalize(feats, dim=-1)).sum(-1)).mean()}
    disc.requires_grad_(False)
    terms["gan"] = -disc(recon01).mean()
    disc.requires_grad_(True)
    terms["loss"] = (terms["rec"] + L.kl_weight * terms["kl"] + L.sem_weight * terms["sem"]
                     + L.gan_weight * terms["gan"])
    if perceptual is not None:
        terms["perceptual"] = perceptual(out["recon"], images).mean()
        terms["loss"] = terms["loss"] + L.perceptual_weight * terms["perceptual"]
    terms["loss"].backward()
    terms["grad_norm"] = clip_([p for p in model.parameters() if p.requires_grad], O.grad_clip)
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    opt.step()
    ema_(ref["ema"], model, O.ema)
    d = 0.5 * (F.relu(1 - disc(img01)).mean() + F.relu(1 + disc(recon01.detach())).mean())
    d.backward()
    clip_(list(disc.parameters()), O.grad_clip)
    d_grads = {n: p.grad.clone() for n, p in disc.named_parameters()}
    opt_d.step()
    terms["disc"] = d
    return {k: v.detach() for k, v in terms.items()}, grads, d_grads


def test_tokenizer_step_matches_plain_fp32_reference():
    cfg, tr, ref, images, step = tokenizer_setup("fp32")
    g_seen, d_seen = grads_before_step(tr.opt), grads_before_step(tr.opt_d)
    terms, n = tr.step(lambda: images, StepRandom(7, 0, CPU).at(step), gan_on=True)
    assert n == 8
    want, grads, d_grads = tokenizer_reference(cfg, ref, images, step)
    assert "perceptual" not in terms
    for k in ("rec", "kl", "sem", "gan", "loss", "grad_norm", "disc"):
        close(terms[k], want[k], 1e-5, 1e-7, k)
    names = {id(p): n for n, p in tr.model.named_parameters()}
    assert set(names[i] for i in g_seen) == set(grads)
    for i, g in g_seen.items():
        rel_close(g, grads[names[i]], 1e-4, f"grad {names[i]}")
    d_names = {id(p): n for n, p in tr.disc.named_parameters()}
    for i, g in d_seen.items():
        rel_close(g, d_grads[d_names[i]], 1e-4, f"disc grad {d_names[i]}")
    # the updates made by AdamW and the EMA (a first AdamW step is lr·g/(|g| + eps) elementwise: entries with
    # |g| ~ eps turn gradient rounding into visible update differences, hence a per-tensor relative test)
    check_updates(tr.model, ref["model"], ref["before"]["model"], 1e-3, "param")
    for (n, p), q in zip(tr.ema.module.named_parameters(), ref["ema"].parameters()):  # 0.99·ema + 0.01·p: ulps
        close(p, q, 1e-6, 1e-6, f"ema {n}")
    check_updates(tr.disc, ref["disc"], ref["before"]["disc"], 1e-3, "disc")
    for (n, b), c in zip(tr.disc.named_buffers(), ref["disc"].buffers()):
        close(b, c, 1e-5, 1e-6, f"disc buffer {n}")


def test_lpips_channels_last_is_as_accurate_as_the_default_layout():
    """Channels-last LPIPS: the same distance, and input gradients as close to fp64 as the default layout's."""
    torch.manual_seed(0)
    base = LPIPS(None)
    nhwc = copy.deepcopy(base).to(memory_format=torch.channels_last)
    f64 = copy.deepcopy(base).double()
    x, y = torch.rand(8, 3, 32, 32) * 2 - 1, torch.rand(8, 3, 32, 32) * 2 - 1

    def run(m, dtype):
        xi = x.detach().to(dtype).clone().requires_grad_()
        d = m(xi, y.to(dtype))
        d.mean().backward()
        return d.detach().double(), xi.grad.double()

    (d0, g0), (d1, g1), (_, g2) = run(base, torch.float32), run(nhwc, torch.float32), run(f64, torch.float64)
    close(d1, d0, 1e-5, 1e-7, "LPIPS distance")
    err = lambda g: float((g - g2).norm() / g2.norm())  # noqa: E731
    assert err(g1) < 3 * err(g0) + 1e-6, (err(g1), err(g0))


def test_tokenizer_bf16_autocast_step_agrees_with_fp32_reference():
    cfg, tr, ref, images, step = tokenizer_setup("bf16", perceptual=True)
    g_seen = grads_before_step(tr.opt)
    terms, _ = tr.step(lambda: images, StepRandom(7, 0, CPU).at(step), gan_on=True)
    want, grads, _ = tokenizer_reference(cfg, ref, images, step)
    for k in ("rec", "sem", "perceptual", "loss"):
        close(terms[k], want[k], 3e-2, 1e-4, f"bf16 {k}")
    names = {id(p): n for n, p in tr.model.named_parameters()}
    keys = [i for i in g_seen]
    assert cosine([g_seen[i] for i in keys], [grads[names[i]] for i in keys]) > 0.99


# ---------------------------------------------------------------------------------------------------------
# DiT step
# ---------------------------------------------------------------------------------------------------------
def dit_setup(precision: str, grad_accum: int = 1):
    torch.manual_seed(0)
    cfg = build_config(DiTTrainConfig, DIT_TRAIN_PRESETS, "tiny", dict(tokenizer="x", device="cpu"))
    C, h = 16, 8
    stats = LatentStats(mean=torch.linspace(-0.5, 0.5, C, dtype=torch.float64),
                        std=torch.linspace(0.5, 2.0, C, dtype=torch.float64), tokens=1, images=1,
                        tokenizer_sha256="x", tokenizer_weights="ema", data_fingerprint="x")
    tr = build_dit_trainer("tiny", (C, h, h), 10, cfg.model.class_dropout, cfg.optim, stats, CPU, precision,
                           grad_accum=grad_accum)
    with torch.no_grad():  # leave the zero-initialised adaLN/final layers: every parameter gets a gradient
        for p in tr.model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    tr.ema.module.load_state_dict(tr.model.state_dict())
    ref = {"model": copy.deepcopy(tr.model), "ema": copy.deepcopy(tr.ema.module), "before": copy.deepcopy(tr.model)}
    g = torch.Generator().manual_seed(2)
    batches = [{"label": torch.randint(0, 10, (8,), generator=g), "mean": torch.randn(8, C, h, h, generator=g),
                "logvar": torch.randn(8, C, h, h, generator=g) * 0.1 - 3} for _ in range(grad_accum)]
    return cfg, tr, ref, stats, batches


def dit_reference(cfg, ref, stats, batches, step):
    """One DiT^DH step written out plainly (fp32, eager): the random draws in the step's order (ε, drop mask,
    then t and x0 inside the loss)."""
    O, model = cfg.optim, ref["model"]
    opt = plain_adamw(model, O, O.lr)
    rnd = StepRandom(5, 0, CPU).at(step)
    C, h = 16, 8
    shift = math.sqrt(h * h * C / 4096)
    losses = []
    for batch in batches:
        y, mean, logvar = batch["label"], batch["mean"], batch["logvar"]
        eps = torch.randn(mean.shape, generator=rnd.device)
        z = mean + torch.exp(0.5 * logvar) * eps
        x1 = (z - stats.mean.float().view(1, -1, 1, 1)) / stats.std.float().view(1, -1, 1, 1)
        drop = torch.rand(y.shape[0], generator=rnd.device) < cfg.model.class_dropout
        t = 1 - shift_time(torch.rand(y.shape[0], generator=rnd.device), shift)
        x0 = torch.randn(x1.shape, generator=rnd.device)
        tb = t.view(-1, 1, 1, 1)
        v = model(tb * x1 + (1 - tb) * x0, t, y, drop_mask=drop)
        loss = (v - (x1 - x0)).pow(2).mean()
        (loss / len(batches)).backward()
        losses.append(loss.detach())
    gnorm = clip_(list(model.parameters()), O.grad_clip)
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    opt.step()
    ema_(ref["ema"], model, O.ema)
    return losses[-1], gnorm, grads


@pytest.mark.parametrize("grad_accum", [1, 2])
def test_dit_step_matches_plain_fp32_reference(grad_accum):
    cfg, tr, ref, stats, batches = dit_setup("fp32", grad_accum)
    seen = grads_before_step(tr.opt)
    it = iter(batches)
    terms, n = tr.step(lambda: next(it), StepRandom(5, 0, CPU).at(3))
    loss, gnorm, grads = dit_reference(cfg, ref, stats, batches, 3)
    assert n == 8
    close(terms["loss"], loss, 1e-5, 1e-7, "loss")
    close(terms["grad_norm"], gnorm, 1e-5, 1e-7, "grad norm")
    names = {id(p): n for n, p in tr.model.named_parameters()}
    assert set(names[i] for i in seen) == set(grads)
    for i, g in seen.items():
        rel_close(g, grads[names[i]], 1e-4, f"grad {names[i]}")
    check_updates(tr.model, ref["model"], ref["before"], 1e-3, "param")
    for (n_, p), q in zip(tr.ema.module.named_parameters(), ref["ema"].parameters()):
        close(p, q, 1e-6, 1e-6, f"ema {n_}")


def test_dit_bf16_autocast_step_agrees_with_fp32_reference():
    cfg, tr, ref, stats, batches = dit_setup("bf16")
    seen = grads_before_step(tr.opt)
    terms, _ = tr.step(lambda: batches[0], StepRandom(5, 0, CPU).at(3))
    loss, _, grads = dit_reference(cfg, ref, stats, batches, 3)
    close(terms["loss"], loss, 2e-2, 1e-4, "bf16 loss")
    names = {id(p): n for n, p in tr.model.named_parameters()}
    keys = list(seen)
    assert cosine([seen[i] for i in keys], [grads[names[i]] for i in keys]) > 0.99


# ---------------------------------------------------------------------------------------------------------
# No host synchronisation inside the step
# ---------------------------------------------------------------------------------------------------------
class HostSyncSpy(TorchDispatchMode):
    """Records every tensor → Python scalar conversion (``.item()``, ``bool(t)``, ``float(t)``: the calls that make
    the host wait for a GPU) with the Python stack that made it."""

    def __init__(self):
        super().__init__()
        self.calls: list[traceback.StackSummary] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default:
            self.calls.append(traceback.extract_stack())
        return func(*args, **(kwargs or {}))


def _device_syncs(spy: HostSyncSpy) -> list[str]:
    """The recorded conversions other than those of CPU-resident scalars by design: the step generator's mask
    ratio draw (a CPU generator) and torch.optim's step counters (CPU tensors; fused AdamW on CUDA has none)."""
    bad = []
    for stack in spy.calls:
        if any(f.name == "uniform" and f.filename.endswith("engine.py") for f in stack):
            continue
        if any("/torch/optim/" in f.filename for f in stack):
            continue
        bad.append("".join(traceback.format_list(stack[-6:])))
    return bad


def test_training_steps_make_no_host_syncs():
    cfg, tr, _, images, step = tokenizer_setup("fp32")
    spy = HostSyncSpy()
    with spy:
        tr.step(lambda: images, StepRandom(7, 0, CPU).at(step), gan_on=True)
    assert spy.calls, "the spy saw nothing: it does not work"
    assert not _device_syncs(spy), _device_syncs(spy)[0]
    _, dtr, _, _, batches = dit_setup("fp32")
    spy = HostSyncSpy()
    with spy:
        dtr.step(lambda: batches[0], StepRandom(5, 0, CPU).at(0))
    assert not _device_syncs(spy), _device_syncs(spy)[0]
    # the spy does see a real sync
    with HostSyncSpy() as s:
        torch.ones(()).item()
    assert len(s.calls) == 1 and _device_syncs(s)


# ---------------------------------------------------------------------------------------------------------
# torch.compile
# ---------------------------------------------------------------------------------------------------------
def test_compiled_sampling_matches_eager():
    """Inductor on CPU: CFG sampling with the compiled DiT gives the eager images to float rounding."""
    from rectok_core.models.dit import build_dit
    from rectok_core.sampling.generate import (
        RowPadded,
        build_velocity,
        generate_latents,
    )
    from rectok_core.utils.runtime import maybe_compile

    torch.manual_seed(0)
    model = build_dit("tiny", in_channels=16, input_size=8, num_classes=10).eval().requires_grad_(False)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    idx = torch.arange(16)
    labels = idx % 10

    def latents(compiled: bool) -> torch.Tensor:
        v = build_velocity(RowPadded(maybe_compile(model, compiled)), "cfg", 1.5, model.null_class)
        return generate_latents(v, idx, labels, 0, (16, 8, 8), 6, "euler", CPU, "fp32")

    eager = latents(False)
    torch._dynamo.reset()
    compiled = latents(True)
    assert eager.abs().mean() > 0.1
    close(compiled, eager, 1e-4, 1e-5, "compiled vs eager latents")


def test_training_compile_wiring_eager_backend(tmp_path, monkeypatch):
    """--compile in train-tokenizer: the model goes through torch.compile (dynamic shapes), the first-step time is
    logged, and training matches the uncompiled run. Backend 'eager' (no code generation) keeps this fast."""
    calls = []
    real_compile = torch.compile

    def spy(module, **kwargs):
        calls.append(kwargs)
        return real_compile(module, **kwargs)

    monkeypatch.setattr(runtime, "COMPILE_BACKEND", "eager")
    monkeypatch.setattr(torch, "compile", spy)
    kw = dict(teacher="none", steps=3, batch_size=8, log_every=1, ckpt_every=3, image_every=100, workers=0, device="cpu")
    runs = {}
    for compiled in (False, True):
        out = tmp_path / f"c{int(compiled)}"
        torch._dynamo.reset()
        train_tokenizer(build_config(TokenizerTrainConfig, TOKENIZER_PRESETS, "tiny",
                                     dict(kw, out=str(out), compile=compiled)))
        runs[compiled] = read_metrics(out)
    assert calls == [{"backend": "eager", "dynamic": True}]
    first = next(m for m in runs[True] if m.get("event") == "first_step")
    assert first["compile"] is True and first["seconds"] > 0
    assert next(m for m in runs[True] if m.get("event") == "start")["compile"] is True
    assert next(m for m in runs[False] if m.get("event") == "start")["compile"] is False
    la = [m["loss"] for m in runs[False] if "loss" in m]
    lb = [m["loss"] for m in runs[True] if "loss" in m]
    assert len(la) == 3 and la == pytest.approx(lb, rel=1e-5)


def test_compile_auto_resolution():
    assert runtime.resolve_compile(None, torch.device("cpu")) is False
    assert runtime.resolve_compile(None, torch.device("cuda")) is True
    assert runtime.resolve_compile(False, torch.device("cuda")) is False
    assert runtime.resolve_compile(True, torch.device("cpu")) is True
    cfg = build_config(TokenizerTrainConfig, TOKENIZER_PRESETS, "tiny", {})
    assert cfg.run.compile is None  # auto unless --compile/--no-compile
