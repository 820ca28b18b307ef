"""How a generator normalises a tokenizer's latents: per-channel statistics of the posterior mean over a dataset
(population std; ``kind`` "data"), or the tokenizer family's published global ``(z − shift)·scale`` (``kind``
"family": sd-vae 0.18215; sd3-vae 1.5305/0.0609; flux-vae 0.3611/0.1159; mar-kl16 0.2325), held as the same
per-channel ``mean``/``std`` (mean = shift, std = 1/scale) so every consumer normalises one way.

``--latent-norm family`` (the default) trains what the official code trains: the family's own normalisation,
which for RecTok, VA-VAE and l-DeTok *is* per-channel data statistics; ``--latent-norm data`` measures per-channel
statistics for every family."""
from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rectok_core.data.config import ENCODE_PRECISIONS  # noqa: F401 - re-exported (defined without torch)
from rectok_core.data.datasets import ImageDataset
from rectok_core.data.sampler import build_loader, drop_bad
from rectok_core.errors import DataError, RectokError
from rectok_core.models.tokenizer import RecTok
from rectok_core.utils import distributed
from rectok_core.utils.env import cache_dir
from rectok_core.utils.files import write_json_atomic
from rectok_core.utils.progress import progress
from rectok_core.utils.runtime import autocast

logger = logging.getLogger(__name__)


VERSION = 1


STATS_FORMAT = "rectok-latent-stats"



MIN_STD = 1e-8  # a channel whose posterior mean never varies cannot be normalised

#: ``--latent-norm``: the tokenizer family's own normalisation, or per-channel statistics measured on the data.
LATENT_NORMS = ("family", "data")


# ---------------------------------------------------------------------------------------------------------
# Encoding and statistics
# ---------------------------------------------------------------------------------------------------------
@torch.no_grad()
def encode_moments(tokenizer: RecTok, img: torch.Tensor, precision: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior mean and (clamped) log-variance of images in [-1, 1], as fp32 latent maps ``(B, C, h, w)``."""
    with autocast(img.device, precision):
        post = tokenizer.encode(img)
    return tokenizer.latent_grid(post.mean), tokenizer.latent_grid(post.logvar)


def dataset_fingerprint(dataset: ImageDataset) -> str:
    """sha256 of the image list (paths and labels, in order), the class names and the image size."""
    h = hashlib.sha256()
    h.update(json.dumps({"image_size": dataset.image_size, "classes": dataset.classes}).encode())
    for path, label in dataset.items:
        h.update(f"\n{path}\t{label}".encode())
    return h.hexdigest()


def data_id(spec: str) -> str:
    """A data spec comparable across working directories (absolute path for an existing file or folder)."""
    return spec if spec == "digits" or not os.path.exists(spec) else os.path.abspath(spec)


@dataclass(frozen=True)
class LatentStats:
    """Per-channel statistics of the posterior mean, and what they were computed from."""

    mean: torch.Tensor  # (C,) float64
    std: torch.Tensor  # (C,) float64
    tokens: int  # latent tokens averaged (images × tokens per image)
    images: int
    tokenizer_sha256: str
    tokenizer_weights: str
    data_fingerprint: str
    kind: str = "data"  # "data": measured per channel; "family": the family's published global scale/shift

    def describe(self) -> str:
        """``per-channel data statistics (N images)`` or the family's ``(z - shift) * scale``."""
        if self.kind == "family":
            return f"family (z - {self.mean[0].item():g}) * {1 / self.std[0].item():g}"
        return f"per-channel data statistics ({self.images} images)"

    def normalize(self, z: torch.Tensor) -> torch.Tensor:
        """``(z − mean) / std`` for latent maps ``(B, C, h, w)`` (``normalize_z`` with scale factor 1)."""
        return (z - self._view(self.mean, z)) / self._view(self.std, z)

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        """The inverse of :meth:`normalize`."""
        return x * self._view(self.std, x) + self._view(self.mean, x)

    @staticmethod
    def _view(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return v.to(device=like.device, dtype=like.dtype).view(1, -1, 1, 1)

    def to_json(self) -> dict[str, Any]:
        return {"format": STATS_FORMAT, "version": VERSION, "tokenizer_sha256": self.tokenizer_sha256,
                "tokenizer_weights": self.tokenizer_weights, "data_fingerprint": self.data_fingerprint,
                "images": self.images, "tokens": self.tokens, "kind": self.kind,
                "mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> LatentStats:
        return cls(mean=torch.tensor(d["mean"], dtype=torch.float64), std=torch.tensor(d["std"], dtype=torch.float64),
                   tokens=int(d["tokens"]), images=int(d["images"]), tokenizer_sha256=d["tokenizer_sha256"],
                   tokenizer_weights=d["tokenizer_weights"], data_fingerprint=d["data_fingerprint"],
                   kind=d.get("kind", "data"))

    def state(self) -> dict[str, Any]:
        """For a checkpoint (tensors and plain values only: loadable with ``weights_only=True``)."""
        d = self.to_json()
        d["mean"], d["std"] = self.mean.clone(), self.std.clone()
        return d

    @classmethod
    def from_state(cls, d: dict[str, Any]) -> LatentStats:
        return cls.from_json({**d, "mean": d["mean"].tolist(), "std": d["std"].tolist()})


def stats_from_sums(total: torch.Tensor, total_sq: torch.Tensor, tokens: int, images: int,
                    tokenizer_sha256: str, tokenizer_weights: str, fingerprint: str) -> LatentStats:
    """Mean and ``sqrt(E[m²] − E[m]²)`` from float64 sums; a channel without variance is a :class:`DataError`."""
    if tokens == 0:
        raise DataError("no readable image to compute latent statistics from")
    mean = total.double().cpu() / tokens
    var = (total_sq.double().cpu() / tokens - mean.pow(2)).clamp_min(0.0)
    std = var.sqrt()
    dead = (std < MIN_STD).nonzero().flatten().tolist()
    if dead:
        raise DataError(f"latent channel(s) {dead[:8]} of the tokenizer never vary over the data (std < {MIN_STD}): "
                        f"they cannot be normalised (collapsed tokenizer?)")
    return LatentStats(mean, std, tokens, images, tokenizer_sha256, tokenizer_weights, fingerprint)


def compute_latent_stats(tokenizer: RecTok, tokenizer_meta: dict, dataset: ImageDataset, d: distributed.Dist,
                         batch_size: int = 64, workers: int | None = None, precision: str = "fp32") -> LatentStats:
    """Statistics of the posterior mean over ``dataset`` (as given: center crop, no flip), rank ``r`` encoding
    images ``r::world``; the float64 sums are all-reduced, so every rank returns the same statistics."""
    dev = d.device
    C = tokenizer.cfg.dim
    sums = torch.zeros(2, C, dtype=torch.float64, device=dev)
    counts = torch.zeros(2, dtype=torch.float64, device=dev)  # tokens, images
    indices = list(range(d.rank, len(dataset), d.world_size))
    loader = build_loader(dataset, indices, batch_size, workers, dev.type == "cuda", drop_last=False)
    bar = progress(len(dataset), 0, "latent statistics", d.is_main, unit="img")
    for batch in loader:
        n_all = batch["image"].shape[0]
        batch, _ = drop_bad(batch)
        if batch["image"].shape[0]:
            mean, _ = encode_moments(tokenizer, batch["image"].to(dev, non_blocking=True), precision)
            m = mean.double()
            sums[0] += m.sum(dim=(0, 2, 3))
            sums[1] += m.pow(2).sum(dim=(0, 2, 3))
            counts += torch.tensor([m.shape[0] * m.shape[2] * m.shape[3], m.shape[0]], dtype=torch.float64,
                                   device=dev)
        bar.update(min(n_all * d.world_size, len(dataset) - bar.n))
    bar.close()
    distributed.all_reduce_sum(sums)
    distributed.all_reduce_sum(counts)
    return stats_from_sums(sums[0], sums[1], int(counts[0].item()), int(counts[1].item()), tokenizer_meta["sha256"],
                           tokenizer_meta["weights"], dataset_fingerprint(dataset))


def family_stats(tokenizer: object, tokenizer_meta: dict) -> LatentStats | None:
    """The published global normalisation of ``tokenizer``'s family (``normalization`` of a
    :class:`~rectok_core.models.families.LatentTokenizer`) as statistics (mean = shift, std = 1/scale per channel);
    None for a family normalised per channel on the data (RecTok, VA-VAE, l-DeTok)."""
    norm = getattr(tokenizer, "normalization", None)
    if norm is None or norm.kind != "global":
        return None
    C = tokenizer.cfg.dim  # type: ignore[attr-defined]
    return LatentStats(mean=torch.full((C,), float(norm.shift), dtype=torch.float64),
                       std=torch.full((C,), 1.0 / float(norm.scale), dtype=torch.float64), tokens=0, images=0,
                       tokenizer_sha256=tokenizer_meta["sha256"], tokenizer_weights=tokenizer_meta["weights"],
                       data_fingerprint="", kind="family")


def choose_stats(tokenizer: object, tokenizer_meta: dict, latent_norm: str,
                 data_stats: Callable[[], LatentStats]) -> LatentStats:
    """The normalisation a generator trains with: under ``latent_norm`` "family", the family's published global one
    where it has one; otherwise per-channel data statistics (``data_stats()``, called only then)."""
    if latent_norm not in LATENT_NORMS:
        raise RectokError(f"--latent-norm {latent_norm!r}: choose one of {', '.join(LATENT_NORMS)}")
    found = family_stats(tokenizer, tokenizer_meta) if latent_norm == "family" else None
    return found if found is not None else data_stats()


def default_stats_dir() -> Path:
    """``<rectok cache>/latent-stats`` (the cache root of :func:`rectok_core.utils.env.cache_dir`)."""
    return cache_dir() / "latent-stats"


def stats_file(stats_dir: str | os.PathLike[str], tokenizer_sha256: str, weights: str, fingerprint: str) -> Path:
    """The statistics file of (tokenizer content hash, tokenizer weights, data fingerprint)."""
    return Path(stats_dir) / f"latent-stats-{tokenizer_sha256[:16]}-{weights}-{fingerprint[:12]}.json"


def is_stats_json(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a latent-statistics JSON rectok wrote (``format: rectok-latent-stats``): the only file
    ``latent-stats --out`` replaces without ``--overwrite``."""
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return False
    return isinstance(doc, dict) and doc.get("format") == STATS_FORMAT


def read_stats_file(path: Path, tokenizer_sha256: str, weights: str, fingerprint: str) -> LatentStats | None:
    """The statistics stored at ``path`` when it exists and its full key matches, else None (logged)."""
    if not path.is_file():
        return None
    try:
        d = json.loads(path.read_text())
        stats = LatentStats.from_json(d)
    except (OSError, ValueError, KeyError, TypeError) as e:
        logger.warning("ignoring unreadable latent statistics %s (%s): recomputing", path, e)
        return None
    if (d.get("format") != STATS_FORMAT or stats.tokenizer_sha256 != tokenizer_sha256
            or stats.tokenizer_weights != weights or stats.data_fingerprint != fingerprint):
        logger.warning("ignoring %s: made for another tokenizer or data set (hash-prefix collision)", path)
        return None
    return stats


def load_or_compute_stats(tokenizer: RecTok, tokenizer_meta: dict, dataset: ImageDataset,
                          stats_dir: str | os.PathLike[str] | None, d: distributed.Dist, batch_size: int = 64,
                          workers: int | None = None, precision: str = "fp32") -> LatentStats:
    """The statistics file of this (tokenizer hash, weights, data) when present; otherwise computed over all
    ranks and written (atomically) by rank 0. Rank 0 decides, so ranks never disagree about the file."""
    folder = Path(stats_dir) if stats_dir else default_stats_dir()
    fp = dataset_fingerprint(dataset)
    path = stats_file(folder, tokenizer_meta["sha256"], tokenizer_meta["weights"], fp)
    found = read_stats_file(path, tokenizer_meta["sha256"], tokenizer_meta["weights"], fp) if d.is_main else None
    found = distributed.broadcast_object(found)
    if found is not None:
        logger.info("latent statistics: %s", path)
        return found
    logger.info("computing latent statistics over %d images (written to %s)", len(dataset), path)
    stats = compute_latent_stats(tokenizer, tokenizer_meta, dataset, d, batch_size, workers, precision)
    if d.is_main:
        try:
            write_json_atomic(path, stats.to_json())
        except OSError as e:
            raise RectokError(f"cannot write latent statistics to {folder}: {e.strerror or e}") from None
    return stats

