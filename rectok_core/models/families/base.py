"""What every tokenizer family gives the rest of rectok: :class:`LatentTokenizer` and the family registry.

A family (``sd-vae``, ``mar-kl16``, ``rectok`` …) is a :class:`Family`: a name, a one-line description, its
published source, the facts of its latent space, and ``load(source, **options)`` building a frozen
:class:`LatentTokenizer` from a local file or folder (or, where the family's library has one, a Hub id). Adding a
family is one module calling :func:`register_family` plus one import line in ``families/__init__.py``.

Conventions (the same as RecTok's, so every consumer of a RecTok model takes any family unchanged):

* images are (B, 3, S, S) in [-1, 1]; latent maps are (B, C, h, w); tokens are the row-major (B, h·w, C) view;
* ``encode`` returns the posterior over tokens (:class:`~rectok_core.models.tokenizer.DiagonalGaussian`; a
  deterministic family has ``logvar = -30``, the clamp floor, i.e. std ≈ 3e-7), ``decode`` takes tokens;
* ``cfg`` carries ``image_size``, ``grid`` (h, w) and ``dim`` (C) like RecTok's model config;
* the family's own normalisation (:class:`Normalization`: a global ``(z − shift)·scale`` as its project ships it, or
  per-channel statistics computed on the data) is what ``train-dit`` and ``latent-stats`` use by default
  (``--latent-norm family``; :func:`rectok_core.data.latent_stats.choose_stats`); ``--latent-norm data``
  standardises every family per channel on the data (recipe §4.4), as for RecTok.
"""
from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn as nn

from rectok_core.errors import CheckpointError
from rectok_core.models.tokenizer import DiagonalGaussian, TokenGrid
from rectok_core.utils.registry import Registry


@dataclass(frozen=True)
class Normalization:
    """A family's published latent normalisation: ``"global"`` → ``z_norm = (z − shift)·scale``; ``"per-channel"``
    → mean/std per channel measured on the data (``scale``/``shift`` unused)."""

    kind: str = "global"
    scale: float = 1.0
    shift: float = 0.0

    def describe(self) -> str:
        if self.kind == "per-channel":
            return "per-channel stats (data)"
        return f"(z - {self.shift:g}) * {self.scale:g}"


@dataclass
class LatentConfig:
    """The shape facts consumers read from a tokenizer's ``cfg`` (the same names as RecTok's model config)."""

    image_size: int
    grid: tuple[int, int]
    dim: int
    downsample: int

    @property
    def num_tokens(self) -> int:
        return self.grid[0] * self.grid[1]


class LatentTokenizer(nn.Module, TokenGrid, metaclass=abc.ABCMeta):
    """A frozen image tokenizer of some family. Subclasses implement :meth:`encode_moments` and
    :meth:`decode_latents` on (B, C, h, w) maps; everything else follows."""

    family: str = ""

    def __init__(self, cfg: LatentConfig, normalization: Normalization, source: str):
        super().__init__()
        self.cfg, self.normalization, self.source = cfg, normalization, source

    # --- what a family implements ----------------------------------------------------------------------------
    @abc.abstractmethod
    def encode_moments(self, img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Images in [-1, 1] → (mean, logvar) maps (B, C, h, w); ``logvar`` None for a deterministic encoder."""

    @abc.abstractmethod
    def decode_latents(self, z: torch.Tensor) -> torch.Tensor:
        """Latent maps (B, C, h, w) (raw, un-normalised) → images in [-1, 1] (unclamped)."""

    # --- the RecTok-compatible interface ---------------------------------------------------------------------
    def latent_shape(self, image_size: int | None = None) -> tuple[int, int, int]:
        """(C, h, w) of the latent map of a square image of ``image_size`` (default: the configured one)."""
        s = self.cfg.image_size if image_size is None else image_size
        if s % self.cfg.downsample:
            raise CheckpointError(f"{self.family} down-samples by {self.cfg.downsample}: an image size of {s} does not "
                                  f"fit (use a multiple of {self.cfg.downsample})")
        return (self.cfg.dim, s // self.cfg.downsample, s // self.cfg.downsample)

    def encode(self, img: torch.Tensor) -> DiagonalGaussian:
        mean, logvar = self.encode_moments(img)
        if logvar is None:
            logvar = torch.full_like(mean, -30.0)
        return DiagonalGaussian(torch.cat([self.latent_tokens(mean), self.latent_tokens(logvar)], dim=-1))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Tokens (B, N, C) → images in [-1, 1] (unclamped)."""
        return self.decode_latents(self.latent_grid(z))

    def normalize(self, z: torch.Tensor) -> torch.Tensor:
        """The family's own global normalisation ``(z − shift)·scale`` (identity for per-channel families)."""
        n = self.normalization
        return z if n.kind != "global" else (z - n.shift) * n.scale

    def denormalize(self, z: torch.Tensor) -> torch.Tensor:
        n = self.normalization
        return z if n.kind != "global" else z / n.scale + n.shift

    def inference_state_dict(self) -> dict[str, torch.Tensor]:
        return self.state_dict()


@dataclass(frozen=True)
class Family:
    """A registered tokenizer family. ``load(source, image_size=…, device=…)`` → a frozen :class:`LatentTokenizer`
    (``rectok``'s returns a RecTok model); ``hub`` is whether ``source`` may be a Hub id the family's library
    downloads; ``latent`` describes the latent grid and channels; ``example`` is a usable ``FAMILY:SOURCE``."""

    name: str
    description: str
    source: str
    latent: str
    normalization: Normalization
    load: Callable[..., nn.Module]
    hub: bool = False
    local_form: str = "FILE"


#: The registered families (the shared :class:`~rectok_core.utils.registry.Registry` shape).
FAMILIES: Registry[Family] = Registry("tokenizer family")


def register_family(name: str, description: str, source: str, latent: str, normalization: Normalization,
                    hub: bool = False, local_form: str = "FILE") -> Callable[[Callable[..., nn.Module]],
                                                                            Callable[..., nn.Module]]:
    """Decorator registering ``load`` as family ``name``; a second registration of a name is an error."""

    def add(load: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        FAMILIES.add(name, Family(name, description, source, latent, normalization, load, hub, local_form),
                     description)
        return load

    return add


def get_family(name: str) -> Family:
    """The family ``name``; a one-line error listing the known families otherwise."""
    if name not in FAMILIES:
        raise CheckpointError(f"unknown tokenizer family {name!r} (known: {', '.join(sorted(FAMILIES))})")
    return FAMILIES.get(name)


def load_exact(model: nn.Module, sd: dict[str, torch.Tensor], where: str, what: str) -> None:
    """Load ``sd`` into ``model`` strictly; one line naming the missing, extra or misshapen tensors of ``what``."""
    own = model.state_dict()
    missing, extra = sorted(set(own) - set(sd)), sorted(set(sd) - set(own))
    if missing or extra:
        parts = ([f"{len(missing)} missing (e.g. {missing[0]})"] if missing else []) + \
                ([f"{len(extra)} extra (e.g. {extra[0]})"] if extra else [])
        raise CheckpointError(f"{where}: {' and '.join(parts)} tensors for {what}")
    bad = [k for k in own if own[k].shape != sd[k].shape]
    if bad:
        raise CheckpointError(f"{where}: {bad[0]} has shape {tuple(sd[bad[0]].shape)}, the model needs "
                              f"{tuple(own[bad[0]].shape)}")
    model.load_state_dict(sd, strict=True)


def frozen(model: nn.Module, device: torch.device | str = "cpu") -> nn.Module:
    return model.eval().requires_grad_(False).to(device)
