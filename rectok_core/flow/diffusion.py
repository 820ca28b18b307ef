"""Gaussian diffusion for the ``dit`` family (official ``create_diffusion`` defaults: 1000 steps, the linear β
schedule from 1e-4 to 2e-2, ε prediction, learned-range variance, loss = MSE(ε) + VB).

What comes from diffusers and what is written here, and why:

* the **sampler** is diffusers' ``DDPMScheduler`` (``variance_type="learned_range"``, ``prediction_type="epsilon"``,
  no clipping) on the official respaced grid (:func:`respaced_timesteps`, passed as custom timesteps): its step is
  the official ``p_sample`` (posterior mean from the predicted x0; log-variance interpolated between the posterior
  variance and β of the respaced chain; no noise at the last step). Its schedule tensors are replaced by the
  float64 ones of :class:`DiffusionSchedule` (diffusers builds them in float32, which moves ``1 − ᾱ_t`` near t = 0
  by ~1e-3 relative); the step then computes its scalar coefficients in float64 like the official tables;
* the **training terms** (q-sample, the posterior q(x_{t−1}|x_t, x0), the Gaussian KL and the discretised
  decoder NLL of the VB term) are written here: diffusers has no variational-bound loss, and the float64 tables
  are what makes the loss equal the official one to 1e-5 near t = 0.
"""
from __future__ import annotations

import hashlib
import math

import numpy as np
import torch

NUM_TIMESTEPS = 1000


def linear_betas(num_timesteps: int = NUM_TIMESTEPS) -> np.ndarray:
    """The official "linear" schedule: β from 1e-4 to 2e-2 (scaled by 1000/T), float64."""
    scale = 1000 / num_timesteps
    return np.linspace(scale * 1e-4, scale * 2e-2, num_timesteps, dtype=np.float64)


def respaced_timesteps(num_timesteps: int, steps: int) -> list[int]:
    """The official respacing of ``num_timesteps`` into ``steps`` kept timesteps (one section, fractional stride
    ``(T − 1)/(steps − 1)`` rounded half to even), descending (the sampling order)."""
    if not 1 <= steps <= num_timesteps:
        raise ValueError(f"diffusion sampling needs 1..{num_timesteps} steps, got {steps}")
    stride = 1.0 if steps <= 1 else (num_timesteps - 1) / (steps - 1)
    kept, cur = [], 0.0
    for _ in range(steps):
        kept.append(round(cur))
        cur += stride
    return sorted(set(kept), reverse=True)


class DiffusionSchedule:
    """The float64 tables of a Gaussian diffusion over ``betas``."""

    def __init__(self, betas: np.ndarray | None = None):
        self.betas = betas if betas is not None else linear_betas()
        self.num_timesteps = len(self.betas)
        alphas = 1.0 - self.betas
        self.alphas_cumprod = np.cumprod(alphas)
        prev = np.append(1.0, self.alphas_cumprod[:-1])
        self.sqrt_alphas_cumprod = np.sqrt(self.alphas_cumprod)
        self.sqrt_one_minus_alphas_cumprod = np.sqrt(1.0 - self.alphas_cumprod)
        self.posterior_variance = self.betas * (1.0 - prev) / (1.0 - self.alphas_cumprod)
        self.posterior_log_variance_clipped = np.log(np.append(self.posterior_variance[1],
                                                               self.posterior_variance[1:]))
        self.posterior_mean_coef1 = self.betas * np.sqrt(prev) / (1.0 - self.alphas_cumprod)
        self.posterior_mean_coef2 = (1.0 - prev) * np.sqrt(alphas) / (1.0 - self.alphas_cumprod)
        self.sqrt_recip_alphas_cumprod = np.sqrt(1.0 / self.alphas_cumprod)
        self.sqrt_recipm1_alphas_cumprod = np.sqrt(1.0 / self.alphas_cumprod - 1)
        self.log_betas = np.log(self.betas)

    def take(self, table: np.ndarray, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """``table[t]`` as fp32 on ``like``'s device, shaped to broadcast over ``like``'s non-batch dims."""
        v = torch.from_numpy(table).to(t.device)[t.long()].float()
        return v.view(-1, *([1] * (like.dim() - 1))).to(like.device)

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return self.take(self.sqrt_alphas_cumprod, t, x0) * x0 + self.take(self.sqrt_one_minus_alphas_cumprod, t,
                                                                           x0) * noise

    def terms(self, out: torch.Tensor, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor,
              noise: torch.Tensor, learn_sigma: bool) -> dict[str, torch.Tensor]:
        """Per-sample ``mse`` (ε) and, with ``learn_sigma``, ``vb`` (bits per dim; the mean is detached in it) of
        the model output ``out`` at ``x_t``."""
        C = x0.shape[1]
        eps = out[:, :C]
        terms = {"mse": (noise - eps).pow(2).flatten(1).mean(dim=1)}
        if learn_sigma:
            if out.shape[1] != 2 * C:
                raise ValueError(f"a learned-variance model must output {2 * C} channels, got {out.shape[1]}")
            terms["vb"] = self.vb_bits(eps.detach(), out[:, C:], x0, x_t, t)
        return terms

    def vb_bits(self, eps: torch.Tensor, var_values: torch.Tensor, x0: torch.Tensor, x_t: torch.Tensor,
                t: torch.Tensor) -> torch.Tensor:
        """KL(q(x_{t−1}|x_t, x0) ‖ p(x_{t−1}|x_t)) in bits per dim (the decoder NLL at t = 0)."""
        true_mean = self.take(self.posterior_mean_coef1, t, x_t) * x0 + self.take(self.posterior_mean_coef2, t,
                                                                                  x_t) * x_t
        true_logvar = self.take(self.posterior_log_variance_clipped, t, x_t)
        frac = (var_values + 1) / 2
        logvar = frac * self.take(self.log_betas, t, x_t) + (1 - frac) * true_logvar
        pred_x0 = self.take(self.sqrt_recip_alphas_cumprod, t, x_t) * x_t - self.take(
            self.sqrt_recipm1_alphas_cumprod, t, x_t) * eps
        mean = self.take(self.posterior_mean_coef1, t, x_t) * pred_x0 + self.take(self.posterior_mean_coef2, t,
                                                                                  x_t) * x_t
        kl = 0.5 * (-1.0 + logvar - true_logvar + torch.exp(true_logvar - logvar)
                    + (true_mean - mean).pow(2) * torch.exp(-logvar))
        kl = kl.flatten(1).mean(dim=1) / math.log(2.0)
        nll = -_discretized_gaussian_log_likelihood(x0, mean, 0.5 * logvar).flatten(1).mean(dim=1) / math.log(2.0)
        return torch.where(t.to(kl.device) == 0, nll, kl)


def _approx_cdf(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x.pow(3))))


def _discretized_gaussian_log_likelihood(x: torch.Tensor, means: torch.Tensor, log_scales: torch.Tensor):
    """Log-probability (nats) of ``x`` under a Gaussian discretised to bins of width 2/255 on [−1, 1]."""
    centered, inv_std = x - means, torch.exp(-log_scales)
    cdf_plus = _approx_cdf(inv_std * (centered + 1.0 / 255.0))
    cdf_min = _approx_cdf(inv_std * (centered - 1.0 / 255.0))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_min = torch.log((1.0 - cdf_min).clamp(min=1e-12))
    mid = torch.log((cdf_plus - cdf_min).clamp(min=1e-12))
    return torch.where(x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_one_minus_cdf_min, mid))


# ---------------------------------------------------------------------------------------------------------
# Sampling
# ---------------------------------------------------------------------------------------------------------
def ddpm_scheduler(steps: int, schedule: DiffusionSchedule | None = None):
    """diffusers' ``DDPMScheduler`` for the official ancestral sampler on ``steps`` respaced timesteps, with the
    float64 schedule tensors (see the module docstring)."""
    from diffusers import DDPMScheduler

    sch = schedule or DiffusionSchedule()
    scheduler = DDPMScheduler(num_train_timesteps=sch.num_timesteps, beta_schedule="linear", beta_start=1e-4,
                              beta_end=2e-2, variance_type="learned_range", prediction_type="epsilon",
                              clip_sample=False)
    scheduler.betas = torch.from_numpy(sch.betas)
    scheduler.alphas = 1.0 - scheduler.betas
    scheduler.alphas_cumprod = torch.from_numpy(sch.alphas_cumprod)
    scheduler.one = torch.tensor(1.0, dtype=torch.float64)
    scheduler.set_timesteps(timesteps=respaced_timesteps(sch.num_timesteps, steps))
    return scheduler


def step_generators(indices: torch.Tensor, seed: int) -> list[torch.Generator]:
    """One CPU generator per sample for the ancestral steps' noise, seeded from ``(seed, index)`` only (so samples
    are identical whatever the batch, shard or number of processes)."""
    gens = []
    for index in indices.tolist():
        digest = hashlib.blake2b(f"rectok-ddpm:{seed}:{index}".encode(), digest_size=8).digest()
        gen = torch.Generator(device="cpu")
        gen.manual_seed(int.from_bytes(digest, "little") & ((1 << 63) - 1))
        gens.append(gen)
    return gens


def flow_time(timestep: int, num_timesteps: int = NUM_TIMESTEPS) -> float:
    """The transport-convention time of a diffusion timestep (``1 − k/T``: 1 = data), for guidance intervals."""
    return 1.0 - timestep / num_timesteps


def sample_ddpm(eps_fn, x: torch.Tensor, y: torch.Tensor, steps: int, generators: list[torch.Generator],
                schedule: DiffusionSchedule | None = None) -> torch.Tensor:
    """Ancestral sampling from noise ``x`` with ``eps_fn(x, t_index (B,), y) -> (B, 2C, H, W)`` (ε then the
    variance values) over ``steps`` respaced timesteps; per-step noise from ``generators`` (one per sample)."""
    scheduler = ddpm_scheduler(steps, schedule)
    x = x.float()
    with torch.no_grad():
        for t in scheduler.timesteps.tolist():
            out = eps_fn(x, torch.full((x.shape[0],), float(t), device=x.device), y).float()
            x = scheduler.step(out, t, x, generator=generators).prev_sample.float()
    return x


def guided_eps(model, method: str, scale: float, null_class: int, guide=None,
               interval: tuple[float, float] = (0.0, 1.0), channels: int | None = None):
    """The noise prediction the ancestral sampler uses: guidance on the first ``channels`` (ε) channels only, the
    variance channels taken from the conditional / main model (as the official ``forward_with_cfg`` does).

    ``cfg``: ``ε_u + w·(ε_c − ε_u)`` with one doubled-batch forward; ``autoguidance``: ``ε_g + w·(ε_m − ε_g)``;
    ``none``: the conditional output. Guidance applies where the timestep's transport time ``1 − k/T``
    (:func:`flow_time`) lies in ``interval``, the conditional / main ε elsewhere.
    """
    lo, hi = interval

    def inside(t: torch.Tensor) -> torch.Tensor:
        ft = 1.0 - t.float() / NUM_TIMESTEPS
        return ((ft >= lo) & (ft <= hi)).view(-1, 1, 1, 1)

    def mix(main: torch.Tensor, other: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        c = channels or main.shape[1]
        guided = other[:, :c] + scale * (main[:, :c] - other[:, :c])
        eps = torch.where(inside(t).to(guided.device), guided, main[:, :c])
        return torch.cat([eps, main[:, c:]], dim=1)

    def none(x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return model(x, t, y)

    def cfg(x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        out = model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, torch.full_like(y, null_class)]))
        cond, uncond = out.chunk(2, dim=0)
        return mix(cond, uncond, t)

    def auto(x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return mix(model(x, t, y), guide(x, t, y), t)

    if method == "none" or scale == 1.0:
        return none
    if method == "cfg":
        return cfg
    if guide is None:
        raise ValueError("AutoGuidance needs a guide model")
    return auto
