"""``rectok latent-stats`` and what ``import-official`` needs of it: a tokenizer's per-channel latent statistics
(posterior mean over a data set, center crop, no flip, fp32; recipe §4.4) or, by default for a family with one, its
published global scale/shift (``--latent-norm family``), and class-name lists."""
from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rectok_core.checkpoints import is_family_spec, load_any_tokenizer, load_tokenizer
from rectok_core.checkpoints.families import check_image_size
from rectok_core.config import settings
from rectok_core.data.latent_stats import (
    STATS_FORMAT,
    LatentStats,
    choose_stats,
    dataset_fingerprint,
    default_stats_dir,
    is_stats_json,
    load_or_compute_stats,
    stats_file,
)
from rectok_core.data.readers import build_dataset
from rectok_core.errors import DataError, RectokError
from rectok_core.interop.config import LatentStatsConfig
from rectok_core.models.tokenizer import RecTok
from rectok_core.utils import distributed
from rectok_core.utils.files import atomic_open, check_own_file, write_json_atomic

logger = logging.getLogger(__name__)


@dataclass
class StatsResult:
    stats: LatentStats
    path: Path  # the keyed statistics file
    classes: list[str]  # the data set's class names, in label order


def latent_stats(tokenizer: str, data: str | None = None, cfg: LatentStatsConfig | None = None,
                 **options: Any) -> StatsResult:
    """``rectok latent-stats``: the statistics of ``tokenizer`` over ``cfg.data`` (its train split), read from the
    keyed file in ``cfg.stats_dir`` when there, otherwise computed over all torchrun ranks and written there; copied
    to ``cfg.out`` when given (an existing one only when it is a latent-statistics file, or with ``overwrite``).
    ``cfg``: the settings (:class:`~rectok_core.interop.config.LatentStatsConfig`); ``data`` and ``options`` set its
    fields by name."""
    cfg = settings(LatentStatsConfig, cfg, data=data, **options)
    data, stats_dir, weights, device = cfg.data, cfg.stats_dir or None, cfg.weights, cfg.device
    batch_size, workers, out, overwrite = cfg.batch_size, cfg.workers, cfg.out or None, cfg.overwrite
    if out is not None:  # before any compute
        check_own_file(out, "--out", "latent-stats", is_stats_json, overwrite)
    d = distributed.setup(device)
    try:
        if is_family_spec(tokenizer):  # FAMILY:SOURCE: another tokenizer family (rectok tokenizers)
            tok, meta = load_any_tokenizer(tokenizer, device=d.device, image_size=cfg.image_size)
        else:
            tok, meta = load_tokenizer(tokenizer, use_ema=weights == "ema", device=d.device)
            check_image_size(tok, tokenizer, cfg.image_size)
        stats, classes, dataset = _compute(tok, meta, data, stats_dir, d, batch_size, workers, cfg.latent_norm)
        folder = Path(stats_dir) if stats_dir else default_stats_dir()
        path = stats_file(folder, meta["sha256"], meta["weights"], stats.kind if stats.kind == "family" else
                          dataset_fingerprint(dataset))
        if stats.kind == "family" and d.is_main:  # no data pass: the family's published scale/shift
            try:
                write_json_atomic(path, stats.to_json())
            except OSError as e:
                raise RectokError(f"cannot write latent statistics to {folder}: {e.strerror or e}") from None
        if out and d.is_main:
            try:
                with open(path, "rb") as src, atomic_open(out, "wb") as dst:
                    shutil.copyfileobj(src, dst)
            except OSError as e:
                raise RectokError(f"cannot write --out {out}: {e.strerror or e}") from None
        return StatsResult(stats, Path(out) if out else path, classes)
    finally:
        distributed.cleanup()


def _compute(tok: RecTok, meta: dict, data: str, stats_dir: str | None, d: distributed.Dist, batch_size: int,
             workers: int, latent_norm: str = "data"):
    dataset = build_dataset(data, tok.cfg.image_size, split="train")
    if len(dataset) == 0:
        raise DataError(f"{data} holds no image")
    stats = choose_stats(tok, meta, latent_norm, lambda: load_or_compute_stats(tok, meta, dataset, stats_dir, d,
                                                                               batch_size, workers, precision="fp32"))
    return stats, list(dataset.classes), dataset


def read_stats(path: str, tokenizer_sha256: str, weights: str = "ema") -> LatentStats:
    """A statistics JSON (``rectok latent-stats --out``), checked to be of this tokenizer (content hash)."""
    try:
        d = json.loads(Path(path).read_text())
        stats = LatentStats.from_json(d)
    except OSError as e:
        raise RectokError(f"cannot read --latent-stats {path}: {e.strerror or e}") from None
    except (ValueError, KeyError, TypeError) as e:
        raise RectokError(f"--latent-stats {path} is not a rectok latent-statistics file ({e})") from None
    if d.get("format") != STATS_FORMAT:
        raise RectokError(f"--latent-stats {path} is not a rectok latent-statistics file (format {d.get('format')!r})")
    if stats.tokenizer_sha256 != tokenizer_sha256 or stats.tokenizer_weights != weights:
        raise RectokError(f"--latent-stats {path} belongs to tokenizer {stats.tokenizer_sha256[:12]} "
                          f"({stats.tokenizer_weights} weights), not {tokenizer_sha256[:12]} ({weights})")
    return stats


def compute_or_read_stats(tok: RecTok, meta: dict, stats_path: str | None, data: str | None, stats_dir: str | None,
                          device: str, batch_size: int, workers: int) -> tuple[LatentStats, list[str] | None]:
    """``--latent-stats FILE`` or ``--data DIR`` (computed like ``rectok latent-stats``), with the data's classes."""
    if stats_path and data:
        raise RectokError("give --latent-stats FILE or --data DIR, not both")
    if stats_path:
        return read_stats(stats_path, meta["sha256"], meta["weights"]), None
    if not data:
        raise RectokError("a DiT^DH needs its latent statistics, which no official file holds: --latent-stats FILE "
                          "(from `rectok latent-stats TOK --data IMAGENET`) or --data IMAGENET to compute them")
    d = distributed.setup(device)
    tok.to(d.device)
    try:
        stats, classes, _ = _compute(tok, meta, data, stats_dir, d, batch_size, workers)
    finally:
        distributed.cleanup()
    return stats, classes


def read_classes(path: str, count: int) -> list[str]:
    """Class names, one a line, in label order; exactly ``count`` of them."""
    try:
        names = [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]
    except OSError as e:
        raise RectokError(f"cannot read --classes {path}: {e.strerror or e}") from None
    if len(names) != count:
        raise RectokError(f"--classes {path} names {len(names)} classes, the DiT has {count}")
    return names
