"""The settings of ``rectok sample`` (:class:`SampleConfig`) and its choices, without torch: the CLI help reads
them; the sampling itself is in :mod:`rectok_core.sampling.folder`."""
from __future__ import annotations

import math
from dataclasses import dataclass

from rectok_core.config import WEIGHTS, check_choices, device_option, device_spec, nonneg, opt, positive, precision_option
from rectok_core.errors import RectokError
from rectok_core.flow.solvers import SOLVERS, solver_help

#: ``--time-shift`` / ``--interval`` value meaning the generator family's official setting
#: (``models.generators.base.SamplingDefaults``).
AUTO = "auto"

#: ``--cfg`` values: no guidance, classifier-free guidance, AutoGuidance (a smaller guide DiT).
GUIDANCE = ("none", "cfg", "autoguidance")


#: The ``--sampler`` choices: the registered ODE solvers (``rectok_core.flow.solvers``) for the velocity families,
#: and ``ddpm``, the diffusion family's (DiT's) own ancestral sampler.
SAMPLERS = (*SOLVERS, "ddpm")

SAMPLER_HELP = solver_help("ODE integrator of the velocity families") + ("; ddpm = the DiT family's ancestral "
                                                                          "diffusion sampler (diffusers DDPMScheduler, "
                                                                          "learned-range variance, respaced to --steps "
                                                                          "timesteps; official 250), the one a DiT "
                                                                          "uses (also when euler, the default, is "
                                                                          "asked for)")


def resolve_sampler(prediction: str, requested: str) -> str:
    """The sampler a generator of ``prediction`` uses for ``--sampler requested``: an ODE solver for velocity
    models; ``ddpm`` for epsilon (diffusion) models, which take ``euler`` (the default) to mean it too. One line for
    a sampler the model cannot use."""
    if prediction == "epsilon":
        if requested not in ("ddpm", "euler"):
            raise RectokError(f"--sampler {requested}: a DiT (diffusion, noise prediction) samples with ddpm, its "
                              f"ancestral sampler")
        return "ddpm"
    if requested == "ddpm":
        raise RectokError("--sampler ddpm is the diffusion family's (DiT's) sampler; this generator predicts a "
                          f"velocity: use one of {', '.join(SOLVERS)}")
    return requested


# ---------------------------------------------------------------------------------------------------------
# Settings
# ---------------------------------------------------------------------------------------------------------
@dataclass
class SampleConfig:
    """``rectok sample``: generate images from a generator checkpoint (any family) into a resumable sample folder."""
    n: int = opt(50000, "number of samples (labels 0…K−1 cycled: 50 per class for 50,000 ImageNet samples)",
                 flag="--num", aliases=("-n",))
    steps: int = opt(150, "time-grid points: N points = N−1 Euler updates (official 150; 50 for quick evals)")
    sampler: str = opt("euler", SAMPLER_HELP, SAMPLERS)
    cfg: str = opt("none", "guidance method", GUIDANCE)
    scale: float = opt(1.0, "guidance scale w; 1 = no guidance (official AutoGuidance: 1.29)")
    guide: str = opt("", "guide DiT checkpoint for --cfg autoguidance, of the same family and latent space "
                         "(official: DiT^DH-S, 30 epochs)")
    interval: str = opt(AUTO, "guidance interval LO,HI in generator time (t = 0 noise, 1 data; a DiT's diffusion "
                              "timestep k is t = 1 − k/1000), guided inside; auto = the family's official one "
                              "(LightningDiT 0.1,1: guided where t >= 0.10; the others 0,1)")
    time_shift: str = opt(AUTO, "time-grid shift s of the velocity families, t_k = 1 − shift(1 − k/(N−1), s), s > 1 "
                                "denser near the noise; auto = the family's official grid (DiT^DH sqrt(h·w·C/4096), "
                                "SiT 1 = uniform, LightningDiT 1/0.3 = its timestep_shift 0.3); SiT's official "
                                "integrator, dopri5, is not in rectok: euler/heun on its grid. Not for a DiT "
                                "(diffusion respacing)")
    out: str = opt("samples", "sample folder (PNGs, samples.npz, grid.png, manifest.json)")
    batch_size: int = opt(256, "samples per model batch per process (results do not depend on it)")
    seed: int = opt(0, "noise seed: sample i's noise depends only on (seed, i)")
    weights: str = opt("ema", "DiT (and guide) weights to sample with", WEIGHTS)
    tokenizer: str = opt("", "tokenizer checkpoint or FAMILY:SOURCE (default: the one recorded in the DiT "
                             "checkpoint; its sha256 must match the recorded one)")
    device: str = device_option()
    precision: str = precision_option()
    compile: bool | None = opt(None, "torch.compile the DiT and the guide (auto: on CUDA, off on CPU; images agree "
                                     "with eager ones to float rounding, not bit for bit)", flag_type=bool)

    def validate(self) -> None:
        check_choices(self)
        if self.n < 1:
            raise RectokError(f"-n must be positive, got {self.n}")
        if self.steps < 2:
            raise RectokError(f"--steps must be at least 2 (grid points; N points = N−1 updates), got {self.steps}")
        positive("batch_size", self.batch_size)
        nonneg("seed", self.seed)
        if not math.isfinite(self.scale) or self.scale < 0:
            raise RectokError(f"--scale must be a finite number >= 0, got {self.scale}")
        self.interval_range()
        self.shift_value()
        if self.cfg == "autoguidance" and not self.guide:
            raise RectokError("--cfg autoguidance needs --guide GUIDE_CKPT (a smaller DiT of the same latent space)")
        if self.scale != 1.0 and self.cfg == "none":
            raise RectokError(f"--scale {self.scale} needs guidance: add --cfg cfg or --cfg autoguidance")
        if self.guide and self.cfg != "autoguidance":
            raise RectokError(f"--guide is only used by --cfg autoguidance (got --cfg {self.cfg})")
        device_spec("device", self.device)

    def interval_range(self, default: tuple[float, float] = (0.0, 1.0)) -> tuple[float, float]:
        """The guidance interval: ``--interval LO,HI``, or ``default`` (the family's) for ``auto``."""
        if self.interval == AUTO:
            return (float(default[0]), float(default[1]))
        parts = self.interval.split(",")
        try:
            lo, hi = (float(p) for p in parts)
        except ValueError:
            raise RectokError(f"--interval {self.interval!r}: expected LO,HI such as 0,1") from None
        if not 0.0 <= lo <= hi <= 1.0:
            raise RectokError(f"--interval {self.interval!r}: need 0 <= LO <= HI <= 1")
        return lo, hi

    def shift_value(self) -> float | None:
        """The ``--time-shift`` number, None for ``auto``; a one-line error for anything else."""
        if self.time_shift == AUTO:
            return None
        try:
            s = float(self.time_shift)
        except ValueError:
            raise RectokError(f"--time-shift {self.time_shift!r}: expected auto or a number > 0 such as 1") from None
        if not math.isfinite(s) or s <= 0:
            raise RectokError(f"--time-shift {self.time_shift!r}: need a finite number > 0 (1 = uniform grid)")
        return s

    def resolved(self, defaults, shape: tuple[int, int, int], prediction: str) -> tuple[float | None,
                                                                                         tuple[float, float]]:
        """(grid shift, guidance interval) for a generator whose family has sampling ``defaults``
        (``models.generators.base.SamplingDefaults``) and latents of ``shape`` (C, h, w): the options, ``auto``
        resolved to the family's. The shift is None for the diffusion family (``prediction`` epsilon), which
        refuses an explicit ``--time-shift``."""
        shift = self.shift_value()
        if prediction == "epsilon":
            if shift is not None:
                raise RectokError(f"--time-shift {self.time_shift}: a DiT (diffusion) samples on its own respaced "
                                  f"timesteps, not on a time grid; leave --time-shift auto")
        elif shift is None:
            shift = defaults.grid_shift(shape)
        return shift, self.interval_range(defaults.interval)

    def guided(self) -> bool:
        """Whether guidance changes anything (a scale of 1 is plain conditional sampling)."""
        return self.cfg != "none" and self.scale != 1.0
