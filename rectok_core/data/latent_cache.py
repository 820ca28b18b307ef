"""Latent statistics and the latent cache: what the generator trains on (recipe §4.4, §6, §11.7).

**Latent statistics.** The DiT sees normalised latents ``(z − mean) / std`` with per-channel ``mean`` and ``std`` of
the posterior **mean** over the training set (center crop, no flip, eval-mode tokenizer): ``std =
sqrt(E[m²] − E[m]²)``, accumulated in float64 over every token of every image and all-reduced over ranks. A
statistics file is keyed by the tokenizer checkpoint's content hash (sha256), the tokenizer weights used (EMA or
raw) and a fingerprint of the image list (paths, labels, image size) — never by a free-form name, so a changed
checkpoint or data set can never pick up stale statistics (§11.7). Files live in a statistics folder
(``--stats-dir``, default ``<rectok cache>/latent-stats``)::

    latent-stats-<sha256[:16]>-<ema|raw>-<fingerprint[:12]>.json   full hashes inside, checked on load

**Latent cache.** ``rectok cache-latents`` (or ``train-dit --cache-latents DIR`` when the folder is missing)
encodes every training image and its horizontal mirror once and stores the posterior moments, so that DiT
training reads no image::

    DIR/index.json           format, tokenizer sha256/path/weights, data source + fingerprint, image size, count,
                             channels, grid, dtype, shard size, classes, labels, bad (unreadable) images,
                             "complete" and, once complete, the latent statistics
    DIR/shard_00000.npy      (n, 2, 2, C, h, w): [image, flip (0: as is, 1: mirrored), (mean, logvar), C, h, w]
    DIR/shard_00000.json     the shard's float64 statistics sums (un-mirrored means); written after the .npy

Images ``k·S … (k+1)·S − 1`` (S = shard size, default 4096) go to shard ``k``. Moments are stored as float16
by default (about 3 significant digits; ~335 GB for ImageNet at 16×16×128) — ``--dtype float32`` doubles that and
keeps them exact; the logvar is the tokenizer's clamped one (−30 … 20), so ``std = exp(logvar / 2)``. Shards are
written to a temporary file and renamed, then their ``.json``; a shard counts as done once its ``.json`` exists,
so a killed build resumes where it stopped. Pending shards are dealt round-robin over the torchrun ranks. The
statistics come from the same pass (float64 sums of the float32 means, before rounding), so a cache and an online
run on the same tokenizer and data get the same statistics.

Training then draws, per sample, the mirrored or plain moments by the sampler's flip bit and a posterior sample
``z = mean + std·ε`` with ε from the step generator (§4.4: the DiT trains on posterior samples).
"""
from __future__ import annotations

import errno
import json
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from rectok_core.config import choice, positive
from rectok_core.data.config import CACHE_DTYPES, DEFAULT_SHARD_SIZE
from rectok_core.data.datasets import ImageDataset
from rectok_core.data.latent_stats import (
    ENCODE_PRECISIONS,
    VERSION,
    LatentStats,
    data_id,
    dataset_fingerprint,
    encode_moments,
    stats_from_sums,
)
from rectok_core.data.readers import build_dataset
from rectok_core.data.sampler import build_loader
from rectok_core.errors import DataError, RectokError
from rectok_core.models.tokenizer import RecTok
from rectok_core.utils import distributed
from rectok_core.utils.files import DiskFull, read_format_json, write_json_atomic
from rectok_core.utils.progress import progress

logger = logging.getLogger(__name__)


CACHE_FORMAT = "rectok-latent-cache"






class LatentCacheError(RectokError):
    """A latent cache folder that is incomplete, corrupt or made from another tokenizer / data / settings."""


# ---------------------------------------------------------------------------------------------------------
# The latent cache
# ---------------------------------------------------------------------------------------------------------
# Keys of index.json that must match for a folder to be reused or resumed.
_IDENTITY = ("tokenizer_sha256", "tokenizer_weights", "data_fingerprint", "image_size", "count", "dtype",
             "shard_size", "precision")


class LatentCache(Dataset):
    """A complete latent cache as a dataset: ``cache[(i, flip)]`` → ``dict(mean, logvar, label, index, ok)``.

    ``mean``/``logvar`` are fp32 latent maps ``(C, h, w)`` of image ``i`` (mirrored when ``flip``); ``ok`` is False
    for an image that could not be read when the cache was built (zeros; remove with ``data.drop_bad``). Shards are
    memory-mapped lazily in each process (DataLoader workers open their own maps).
    """

    def __init__(self, folder: str | os.PathLike[str]):
        self.folder = Path(folder)
        index = read_cache_index(self.folder)
        if index is None:
            raise LatentCacheError(f"{self.folder} holds no latent cache (no index.json)")
        if not index.get("complete"):
            raise LatentCacheError(f"the latent cache in {self.folder} is incomplete: run `rectok cache-latents` "
                                   f"again with the same arguments to finish it")
        self.index = index
        self.count: int = index["count"]
        self.shard_size: int = index["shard_size"]
        self.labels: list[int] = index["labels"]
        self.classes: list[str] = index["classes"]
        self.bad: frozenset[int] = frozenset(index["bad"])
        self.stats = LatentStats.from_json(index["stats"])
        self._maps: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return self.count

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_maps"] = {}  # never pickle memory maps (spawned workers reopen them)
        return state

    def _shard(self, k: int) -> np.ndarray:
        if k not in self._maps:
            path = self.folder / shard_name(k)
            try:
                self._maps[k] = np.load(path, mmap_mode="r")
            except (OSError, ValueError) as e:
                raise LatentCacheError(f"cannot read latent cache shard {path}: {e}") from None
        return self._maps[k]

    def __getitem__(self, key: int | tuple[int, bool]) -> dict[str, Any]:
        index, flip = key if isinstance(key, tuple) else (key, False)
        index = int(index)
        if not 0 <= index < self.count:
            raise IndexError(f"index {index} out of range for a cache of {self.count} images")
        k, row = divmod(index, self.shard_size)
        moments = torch.from_numpy(np.array(self._shard(k)[row, int(bool(flip))], dtype=np.float32))
        return {"mean": moments[0], "logvar": moments[1], "label": self.labels[index], "index": index,
                "ok": index not in self.bad}


def shard_name(k: int) -> str:
    return f"shard_{k:05d}.npy"


def read_cache_index(folder: Path) -> dict | None:
    path = folder / "index.json"
    if not path.is_file():
        return None
    return read_format_json(path, CACHE_FORMAT, "rectok latent-cache index", LatentCacheError)


def ensure_latent_cache(folder: str | os.PathLike[str], tokenizer: RecTok, tokenizer_meta: dict, data: str,
                        d: distributed.Dist, *, batch_size: int = 64, workers: int | None = None, strict: bool = False,
                        shard_size: int = DEFAULT_SHARD_SIZE, dtype: str = "float16",
                        precision: str = "fp32") -> LatentCache:
    """The latent cache of ``tokenizer`` on the ``train`` split of ``data`` in ``folder``: reused when complete,
    otherwise built or finished (resumed) over all ranks. A folder made from another tokenizer, data set or
    settings is a :class:`LatentCacheError` and is left untouched."""
    folder = Path(folder)
    choice("dtype", dtype, CACHE_DTYPES)
    choice("precision", precision, ENCODE_PRECISIONS)
    positive("shard_size", shard_size)
    index = read_cache_index(folder)
    if index is not None and index.get("complete"):
        _check_complete(folder, index, tokenizer_meta, data, tokenizer.cfg.image_size)
        return LatentCache(folder)
    dataset = build_dataset(data, tokenizer.cfg.image_size, split="train", strict=strict)
    if not dataset.has_labels:
        raise DataError(f"{data} is unlabelled: the class-conditional generator needs class labels")
    h, w = tokenizer.cfg.grid
    fresh = {
        "format": CACHE_FORMAT, "version": VERSION, "complete": False,
        "tokenizer_sha256": tokenizer_meta["sha256"], "tokenizer_weights": tokenizer_meta["weights"],
        "tokenizer_path": os.path.abspath(tokenizer_meta["path"]),
        "data": data_id(data), "data_fingerprint": dataset_fingerprint(dataset), "image_size": dataset.image_size,
        "count": len(dataset), "channels": tokenizer.cfg.dim, "grid": [h, w], "dtype": dtype,
        "shard_size": shard_size, "precision": precision,
        "layout": "(n, flip, [mean, logvar], C, h, w); flip 1 = mirrored left-right",
        "num_shards": math.ceil(len(dataset) / shard_size), "classes": dataset.classes,
        "labels": [label for _, label in dataset.items],
    }
    pending: list[int] | str
    if d.is_main:
        pending = _prepare_folder(folder, index, fresh)
    pending = distributed.broadcast_object(pending if d.is_main else None)
    if isinstance(pending, str):  # rank 0 refused the folder: every rank raises the same error
        raise LatentCacheError(pending)
    _encode_shards(folder, pending[d.rank::d.world_size], tokenizer, dataset, d, batch_size, workers, dtype,
                   precision, shard_size, fresh["num_shards"])
    distributed.barrier()
    if d.is_main:
        _finish_index(folder, fresh)
    distributed.barrier()
    return LatentCache(folder)


def _check_complete(folder: Path, index: dict, meta: dict, data: str, image_size: int) -> None:
    if index["tokenizer_sha256"] != meta["sha256"] or index["tokenizer_weights"] != meta["weights"]:
        raise LatentCacheError(
            f"the latent cache in {folder} was made with tokenizer {index['tokenizer_sha256'][:12]} "
            f"({index['tokenizer_weights']} weights), not {meta['sha256'][:12]} ({meta['weights']}): choose "
            f"another folder")
    if index["data"] != data_id(data):
        raise LatentCacheError(f"the latent cache in {folder} holds {index['data']}, not --data {data}: pass that "
                               f"--data or choose another folder")
    if index.get("image_size") != image_size:
        raise LatentCacheError(f"the latent cache in {folder} holds {index.get('image_size')}-px images' latents, not "
                               f"{image_size}-px: pass --image-size {index.get('image_size')} or choose another folder")


def _prepare_folder(folder: Path, index: dict | None, fresh: dict) -> list[int] | str:
    """Rank 0: check (or create) the folder and list the shards still to encode; an error message instead when
    the folder belongs to something else."""
    if index is not None:
        diff = [k for k in _IDENTITY if index.get(k) != fresh[k]]
        if diff:
            k = diff[0]
            return (f"{folder} holds a latent cache with {k} = {index.get(k)!r}, not {fresh[k]!r}: finish it with "
                    f"its own settings or choose another folder")
    elif folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        return f"{folder} exists and is not an (empty) latent-cache folder: choose another folder"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob(".shard_*.tmp"):
            stale.unlink()
        if index is None:
            write_json_atomic(folder / "index.json", fresh)
    except OSError as e:
        return f"cannot write to {folder}: {e.strerror or e}"
    done = [k for k in range(fresh["num_shards"]) if (folder / shard_name(k)).with_suffix(".json").is_file()]
    if done:
        logger.info("latent cache %s: %d of %d shards already done", folder, len(done), fresh["num_shards"])
    return [k for k in range(fresh["num_shards"]) if k not in set(done)]


def reserve_space(path: Path) -> None:
    """Allocate every block of ``path`` (``os.posix_fallocate``) so writes through a memory map cannot hit a full
    disk later (SIGBUS); a full disk now is a one-line :class:`DiskFull` and the file is removed."""
    size = path.stat().st_size
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as e:
        if e.errno == errno.ENOSPC:
            os.close(fd)
            fd = -1
            path.unlink(missing_ok=True)
            raise DiskFull(path, size) from None
        # EOPNOTSUPP / EINVAL: the file system cannot preallocate; the memory map stays sparse
    finally:
        if fd >= 0:
            os.close(fd)


class _ShardWriter:
    """One shard being filled: a memory-mapped temporary .npy, renamed into place when complete."""

    def __init__(self, folder: Path, k: int, start: int, n: int, shape: tuple[int, ...], dtype: str):
        self.folder, self.k, self.start, self.n = folder, k, start, n
        self.tmp = folder / f".shard_{k:05d}.tmp"
        self.array = np.lib.format.open_memmap(self.tmp, mode="w+", dtype=np.dtype(dtype), shape=(n, 2, 2, *shape))
        reserve_space(self.tmp)  # a sparse memory map on a full disk dies of SIGBUS: claim the blocks now
        self.filled = 0
        self.bad: list[int] = []
        self.sums = torch.zeros(2, shape[0], dtype=torch.float64)
        self.tokens = 0

    def put(self, rows: np.ndarray, values: np.ndarray, ok: np.ndarray, mean: torch.Tensor) -> None:
        self.array[rows] = values
        self.filled += len(rows)
        self.bad.extend(int(self.start + r) for r in rows[~ok])
        m = mean.double().cpu()[torch.from_numpy(ok)]
        self.sums[0] += m.sum(dim=(0, 2, 3))
        self.sums[1] += m.pow(2).sum(dim=(0, 2, 3))
        self.tokens += m.shape[0] * m.shape[2] * m.shape[3]

    def close(self) -> None:
        if self.filled != self.n:
            raise LatentCacheError(f"shard {self.k} got {self.filled} of {self.n} images (data changed while caching?)")
        self.array.flush()
        del self.array
        final = self.folder / shard_name(self.k)
        os.replace(self.tmp, final)
        write_json_atomic(final.with_suffix(".json"), {
            "shard": self.k, "start": self.start, "count": self.n, "bad": self.bad, "tokens": self.tokens,
            "images": self.n - len(self.bad), "sum": self.sums[0].tolist(), "sum_sq": self.sums[1].tolist()})


def _encode_shards(folder: Path, shards: Sequence[int], tokenizer: RecTok, dataset: ImageDataset,
                   d: distributed.Dist, batch_size: int, workers: int, dtype: str, precision: str, shard_size: int,
                   num_shards: int) -> None:
    """Encode this rank's ``shards`` (each image and its mirror) in one pass of one loader."""
    dev = d.device
    n = len(dataset)
    spans = {k: (k * shard_size, min((k + 1) * shard_size, n)) for k in shards}
    indices = [i for k in shards for i in range(*spans[k])]
    if not indices:
        return
    shape = (tokenizer.cfg.dim, *tokenizer.cfg.grid)
    loader = build_loader(dataset, indices, batch_size, workers, dev.type == "cuda", drop_last=False)
    bar = progress(len(indices) * d.world_size, 0, f"caching latents ({len(shards)}/{num_shards} shards)", d.is_main,
                   unit="img")
    writer: _ShardWriter | None = None
    for batch in loader:
        img = batch["image"].to(dev, non_blocking=True)
        mean, logvar = encode_moments(tokenizer, img, precision)
        mean_f, logvar_f = encode_moments(tokenizer, img.flip(-1), precision)
        values = torch.stack([torch.stack([mean, logvar], 1), torch.stack([mean_f, logvar_f], 1)], 1)
        values_np = values.cpu().numpy().astype(dtype)
        ok = batch["ok"].numpy().astype(bool)
        values_np[~ok] = 0
        if not np.isfinite(values_np).all():
            raise LatentCacheError(f"latent moments overflow {dtype} (or are not finite): use --dtype float32")
        idx = batch["index"].numpy()
        for k in np.unique(idx // shard_size):
            sel = idx // shard_size == k
            if writer is None or writer.k != k:
                if writer is not None:
                    writer.close()
                start, stop = spans[int(k)]
                writer = _ShardWriter(folder, int(k), start, stop - start, shape, dtype)
            writer.put(idx[sel] - writer.start, values_np[sel], ok[sel], mean[torch.from_numpy(sel).to(dev)])
        bar.update(len(idx) * d.world_size)
    if writer is not None:
        writer.close()
    bar.close()


def _finish_index(folder: Path, fresh: dict) -> None:
    """Rank 0: combine the shard sums into the statistics and mark the cache complete."""
    sums = torch.zeros(2, fresh["channels"], dtype=torch.float64)
    tokens = images = 0
    bad: list[int] = []
    for k in range(fresh["num_shards"]):
        side = (folder / shard_name(k)).with_suffix(".json")
        if not side.is_file() or not (folder / shard_name(k)).is_file():
            raise LatentCacheError(f"latent cache shard {k} is missing in {folder} after encoding")
        s = json.loads(side.read_text())
        sums[0] += torch.tensor(s["sum"], dtype=torch.float64)
        sums[1] += torch.tensor(s["sum_sq"], dtype=torch.float64)
        tokens += s["tokens"]
        images += s["images"]
        bad.extend(s["bad"])
    stats = stats_from_sums(sums[0], sums[1], tokens, images, fresh["tokenizer_sha256"], fresh["tokenizer_weights"],
                            fresh["data_fingerprint"])
    if bad:
        logger.warning("latent cache %s: %d unreadable images are left out of training", folder, len(bad))
    write_json_atomic(folder / "index.json", {**fresh, "complete": True, "bad": sorted(bad), "stats": stats.to_json()})
