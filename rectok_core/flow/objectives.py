"""Training objectives of the generator families, by name (``OBJECTIVES``, declared in ``rectok_core/flow/__init__``;
a family names its default, ``train-dit --objective`` picks another).

An objective is ``loss(model, x1, y, generator, drop_mask) -> (mean loss, per-sample loss, terms)``: ``x1`` the
normalised latents (data), ``y`` the labels, ``drop_mask`` the label-drop mask; every random draw (times, noise)
comes from ``generator`` (the step generator, on its device, then moved to ``x1``'s device), so a resumed run
continues exactly. ``terms`` holds the per-sample loss terms (fp32) that make up the loss.

================== ========== ===================================================================================
name               prediction what
================== ========== ===================================================================================
flow-shifted       velocity   DiT^DH (recipe §4.2): t = 1 − shift(u), u ~ U(0, 1), shift = √(h·w·C/4096); MSE
flow-uniform       velocity   SiT (official ``create_transport()``): t ~ U(0, 1); MSE on the velocity
flow-lognorm       velocity   LightningDiT as the RecTok code trains it (``create_transport(use_cosine_loss=True,
                              use_lognorm=True)``, whose ``forward`` returns the MSE term only): t = sigmoid(n),
                              n ~ N(0, 1); MSE on the velocity
flow-lognorm-cosine velocity  LightningDiT's own recipe: as flow-lognorm, plus (1 − cosine similarity) of the
                              velocity
diffusion          epsilon    DiT (official ``create_diffusion("")``): timestep k ~ U{0..999}, x_t by the linear-β
                              schedule; MSE on ε + the learned-variance VB term (:mod:`rectok_core.flow.diffusion`)
================== ========== ===================================================================================

The flow paths are the official ``ICPlan`` (``x_t = t·x1 + (1 − t)·x0``, target ``x1 − x0``), which is rectok's
transport convention. Draw order: times, then noise. The cosine term follows the official transport exactly: the
similarity is taken along the smallest non-batch dimension of the latent (the first of equal ones; for
(C, 16, 16) latents with C > 16 that is the row axis, not the channels) and averaged over the others. The loss is
the sum of the terms.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from rectok_core.flow import OBJECTIVES
from rectok_core.flow.diffusion import DiffusionSchedule
from rectok_core.flow.noise import timestep_shift
from rectok_core.flow.transport import VelocityModel, _per_sample, sample_train_time

LossOut = tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]
LossFn = Callable[[VelocityModel, torch.Tensor, torch.Tensor, "torch.Generator | None", "torch.Tensor | None"],
                  LossOut]


@dataclass(frozen=True)
class Objective:
    """A registered training objective."""

    name: str
    prediction: str      # "velocity" or "epsilon"
    loss: LossFn
    description: str


def register_objective(name: str, prediction: str) -> Callable[[LossFn], LossFn]:
    """Decorator registering ``fn`` as objective ``name`` (declared, with its help, in ``rectok_core/flow``)."""
    def deco(fn: LossFn) -> LossFn:
        OBJECTIVES.add(name, Objective(name, prediction, fn, OBJECTIVES.description(name)))
        return fn
    return deco


def _gen_device(generator: torch.Generator | None, x: torch.Tensor) -> torch.device:
    return generator.device if generator is not None else x.device


def _noise(x1: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return torch.randn(x1.shape, generator=generator, device=_gen_device(generator, x1),
                       dtype=torch.float32).to(x1.device)


def channel_dim(x: torch.Tensor) -> int:
    """The official transport's "channel" axis: the smallest non-batch dimension (the first of equal ones)."""
    return min(range(1, x.dim()), key=lambda d: x.shape[d])


def flow_terms(model: VelocityModel, x1: torch.Tensor, y: torch.Tensor, t: torch.Tensor, x0: torch.Tensor,
               drop_mask: torch.Tensor | None = None, cosine: bool = False) -> dict[str, torch.Tensor]:
    """Per-sample flow-matching terms at given times ``t`` and noise ``x0``: ``mse`` and, with ``cosine``,
    ``cos`` = mean of 1 − cosine similarity (official axis, see the module docstring)."""
    x1 = x1.float()
    tb = _per_sample(t, x1)
    x_t = tb * x1 + (1 - tb) * x0
    v = model(x_t, t, y, drop_mask=drop_mask).float()
    target = x1 - x0
    terms = {"mse": (v - target).pow(2).flatten(1).mean(dim=1)}
    if cosine:
        terms["cos"] = (1 - F.cosine_similarity(v, target, dim=channel_dim(x_t))).flatten(1).mean(dim=1)
    return terms


def _total(terms: dict[str, torch.Tensor]) -> LossOut:
    per_sample = sum(terms.values())
    assert isinstance(per_sample, torch.Tensor)
    return per_sample.mean(), per_sample, terms


@register_objective("flow-shifted", "velocity")
def flow_shifted(model, x1, y, generator, drop_mask=None) -> LossOut:
    """``rectok_core.flow.transport.flow_matching_loss`` with the resolution shift of the latent shape."""
    _, C, h, w = x1.shape
    t = sample_train_time(x1.shape[0], timestep_shift(h, w, C), generator, x1.device)
    return _total(flow_terms(model, x1, y, t, _noise(x1, generator), drop_mask))


@register_objective("flow-uniform", "velocity")
def flow_uniform(model, x1, y, generator, drop_mask=None) -> LossOut:
    t = torch.rand(x1.shape[0], generator=generator, device=_gen_device(generator, x1)).to(x1.device)
    return _total(flow_terms(model, x1, y, t, _noise(x1, generator), drop_mask))


def _lognorm(model, x1, y, generator, drop_mask, cosine: bool) -> LossOut:
    n = torch.randn(x1.shape[0], generator=generator, device=_gen_device(generator, x1))
    t = torch.sigmoid(n).to(x1.device)
    return _total(flow_terms(model, x1, y, t, _noise(x1, generator), drop_mask, cosine=cosine))


@register_objective("flow-lognorm", "velocity")
def flow_lognorm(model, x1, y, generator, drop_mask=None) -> LossOut:
    return _lognorm(model, x1, y, generator, drop_mask, cosine=False)


@register_objective("flow-lognorm-cosine", "velocity")
def flow_lognorm_cosine(model, x1, y, generator, drop_mask=None) -> LossOut:
    return _lognorm(model, x1, y, generator, drop_mask, cosine=True)


_SCHEDULE: list[DiffusionSchedule] = []


def schedule() -> DiffusionSchedule:
    """The official diffusion schedule (built once)."""
    if not _SCHEDULE:
        _SCHEDULE.append(DiffusionSchedule())
    return _SCHEDULE[0]


def diffusion_terms(model: VelocityModel, x1: torch.Tensor, y: torch.Tensor, t: torch.Tensor, noise: torch.Tensor,
                    drop_mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Per-sample ``mse`` (ε) and, for a model with learned variance (2·C output channels), ``vb`` at integer
    timesteps ``t`` and noise ``noise``."""
    x1 = x1.float()
    sch = schedule()
    x_t = sch.q_sample(x1, t, noise)
    out = model(x_t, t.float(), y, drop_mask=drop_mask).float()
    return sch.terms(out, x1, x_t, t, noise, learn_sigma=out.shape[1] == 2 * x1.shape[1])


@register_objective("diffusion", "epsilon")
def diffusion(model, x1, y, generator, drop_mask=None) -> LossOut:
    t = torch.randint(0, schedule().num_timesteps, (x1.shape[0],), generator=generator,
                      device=_gen_device(generator, x1)).to(x1.device)
    return _total(diffusion_terms(model, x1, y, t, _noise(x1, generator), drop_mask))
