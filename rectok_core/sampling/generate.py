"""The generation math: loading generators, guided velocities (or guided noise predictions for the diffusion
family), latents from seeds, decoding.

Velocity families (DiT^DH, SiT, LightningDiT) integrate the guided velocity with a registered ODE solver on the
family's time grid (``GeneratorFamily.sampling``: DiT^DH shifted by the latent shape, SiT uniform, LightningDiT its
official shift); the epsilon family (DiT) runs its ancestral diffusion sampler (``ddpm``,
:mod:`rectok_core.flow.diffusion`) with the guided noise prediction, its per-step noise also from ``(seed, index)``
only, so a sample is the same whatever the batch size or number of processes."""
from __future__ import annotations

import logging

import torch

from rectok_core.checkpoints.dit import LoadedDiT
from rectok_core.data.latent_stats import LatentStats
from rectok_core.errors import RectokError
from rectok_core.flow.diffusion import guided_eps, sample_ddpm, step_generators
from rectok_core.flow.guidance import (
    autoguidance_velocity,
    cfg_velocity,
    conditional_velocity,
)
from rectok_core.flow.noise import timestep_shift
from rectok_core.flow.solvers import sample_ode
from rectok_core.flow.transport import VelocityFn, initial_noise, time_grid
from rectok_core.models.generators import GENERATORS, family_of_model
from rectok_core.models.tokenizer import RecTok
from rectok_core.sampling.config import GUIDANCE, SAMPLERS, resolve_sampler  # noqa: F401 - SAMPLERS re-exported
from rectok_core.utils.runtime import autocast

logger = logging.getLogger(__name__)


MIN_ROWS = 16


# ---------------------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------------------
def check_guide(main: LoadedDiT, guide: LoadedDiT) -> None:
    """AutoGuidance needs a guide of the same family and latent space: shape, classes, tokenizer and statistics."""
    if guide.family != main.family:
        raise RectokError(f"guide {guide.path} is a {guide.family} generator, the DiT a {main.family} one: "
                          f"AutoGuidance needs a guide of the same family")
    a, b = main.model.config, guide.model.config
    shape_a = (a.in_channels, a.input_size, a.input_size)
    shape_b = (b.in_channels, b.input_size, b.input_size)
    if shape_a != shape_b:
        raise RectokError(f"guide {guide.path} models latents of shape {'×'.join(map(str, shape_b))}, the DiT "
                          f"{'×'.join(map(str, shape_a))}: AutoGuidance needs the same latent shape")
    if a.num_classes != b.num_classes:
        raise RectokError(f"guide {guide.path} has {b.num_classes} classes, the DiT {a.num_classes}: AutoGuidance "
                          f"needs the same classes")
    if guide.tokenizer["sha256"] != main.tokenizer["sha256"]:
        raise RectokError(f"guide {guide.path} was trained on another tokenizer ({guide.tokenizer['sha256'][:12]}, "
                          f"the DiT's is {main.tokenizer['sha256'][:12]})")
    if not (torch.allclose(guide.stats.mean, main.stats.mean, rtol=1e-4, atol=1e-6)
            and torch.allclose(guide.stats.std, main.stats.std, rtol=1e-4, atol=1e-6)):
        raise RectokError(f"guide {guide.path} normalises latents with other statistics than the DiT (another "
                          f"data set?): their velocities are not comparable")


class RowPadded:
    """A velocity model evaluated on at least ``min_rows`` rows (see the module docstring)."""

    def __init__(self, model: VelocityFn, min_rows: int = MIN_ROWS):
        self.model, self.min_rows = model, min_rows

    def __call__(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        if b >= self.min_rows:
            return self.model(x, t, y)
        rows = torch.cat([torch.arange(b), torch.zeros(self.min_rows - b, dtype=torch.long)]).to(x.device)
        return self.model(x[rows], t[rows], y[rows])[:b]


def build_velocity(model: VelocityFn, method: str, scale: float, null_class: int, guide: VelocityFn | None = None,
                   interval: tuple[float, float] = (0.0, 1.0), prediction: str = "velocity",
                   channels: int | None = None) -> VelocityFn:
    """The velocity the ODE integrates: conditional (``none`` or scale 1), CFG or AutoGuidance; for
    ``prediction="epsilon"`` the guided noise prediction of the diffusion sampler (guidance on the first
    ``channels`` channels, see ``flow.diffusion.guided_eps``)."""
    if method not in GUIDANCE:
        raise ValueError(f"unknown guidance {method!r}; choose one of {GUIDANCE}")
    if prediction == "epsilon":
        return guided_eps(model, method, scale, null_class, guide, interval, channels)
    if method == "none" or scale == 1.0:
        return conditional_velocity(model)
    if method == "cfg":
        return cfg_velocity(model, scale, null_class, interval)
    if guide is None:
        raise ValueError("AutoGuidance needs a guide model")
    return autoguidance_velocity(model, guide, scale, interval)


@torch.no_grad()
def generate_latents(velocity: VelocityFn, indices: torch.Tensor, labels: torch.Tensor, seed: int,
                     shape: tuple[int, int, int], steps: int, method: str, device: torch.device,
                     precision: str, shift: float | None = None) -> torch.Tensor:
    """Normalised latents ``(B, C, h, w)`` (fp32) of samples ``indices``: noise from ``(seed, index)``, the grid
    ``time_grid(steps, shift)`` (``shift`` None: the DiT^DH rule ``sqrt(h·w·C/4096)`` of this latent shape; a
    family's own is ``family.sampling.grid_shift(shape)``), ``method`` (a ``SOLVERS`` name) under ``precision``
    autocast; ``method="ddpm"``: the diffusion sampler on ``steps`` respaced timesteps, ``velocity`` the guided ε."""
    x0 = initial_noise(indices.cpu(), seed, shape).to(device)
    if method == "ddpm":
        with autocast(device, precision):
            return sample_ddpm(velocity, x0, labels.to(device), steps, step_generators(indices.cpu(), seed))
    grid = time_grid(steps, timestep_shift(shape[1], shape[2], shape[0]) if shift is None else shift, device)
    with autocast(device, precision):
        return sample_ode(velocity, x0, labels.to(device), grid, method)


def require_finite(x: torch.Tensor, what: str, indices: torch.Tensor) -> None:
    """Stop with a one-line error when any sample of ``x`` (batch-first) holds NaN/inf: such samples would be written
    as black images and poison every metric computed from them."""
    ok = torch.isfinite(x.reshape(x.shape[0], -1)).all(1).cpu()
    if not bool(ok.all()):
        first = int(indices[~ok][0])
        raise RectokError(f"non-finite {what} for {int((~ok).sum())} of {len(ok)} samples in this batch (first: "
                          f"sample {first}): a guidance --scale this large, or non-finite DiT weights; nothing was "
                          f"written for them")


@torch.no_grad()
def decode_latents(tokenizer: RecTok, stats: LatentStats, latents: torch.Tensor, precision: str) -> torch.Tensor:
    """Normalised latent maps → images in [−1, 1] ``(B, 3, H, W)`` (fp32, clamped): denormalise, pixel decoder."""
    tokens = tokenizer.latent_tokens(stats.denormalize(latents.float()))
    b = tokens.shape[0]
    if b < MIN_ROWS:
        tokens = torch.cat([tokens, tokens[:1].expand(MIN_ROWS - b, -1, -1)])
    with autocast(latents.device, precision):
        img = tokenizer.decode(tokens)
    return img[:b].float().clamp(-1, 1)


@torch.no_grad()
def preview_rows(model: torch.nn.Module, tokenizer: RecTok, stats: LatentStats, classes: list[int], per_class: int,
                 seed: int, steps: int, device: torch.device, precision: str) -> list[torch.Tensor]:
    """One row of ``per_class`` images per class (Euler on the family's official grid, or the family's own sampler,
    no guidance, fixed noise): the training preview grid."""
    cfg = model.config
    shape = (cfg.in_channels, cfg.input_size, cfg.input_size)
    labels = torch.tensor(classes).repeat_interleave(per_class)
    family = GENERATORS[family_of_model(model)]
    method = resolve_sampler(family.prediction, "euler")
    z = generate_latents(conditional_velocity(RowPadded(model)), torch.arange(len(labels)), labels, seed, shape,
                         steps, method, device, precision, family.sampling.grid_shift(shape))
    return list(decode_latents(tokenizer, stats, z, precision).split(per_class))

