"""Tar shards in webdataset layout, read by random access (``--data DIR``, ``--data 'DIR/train-*.tar'``).

A shard ``train-0000.tar`` holds samples as members sharing a key: ``0001.jpg`` (the image, any suffix of
:data:`~rectok_core.data.files.IMAGE_EXTENSIONS`) and ``0001.cls`` (the label as integer text, optional). The key
is the member path up to the first ``.`` of its file name, as in webdataset. Only plain ``.tar`` files can be
read by offset (a compressed ``.tar.gz`` cannot).

The shards are indexed once when the dataset is built (member offsets and sizes; labels read then): items are
then ordinary ``(path, label)`` pairs, named ``SHARD::MEMBER``, in shard order then member order, so the
:class:`~rectok_core.data.sampler.ResumableSampler` and resume work as for image folders. Each process (each
DataLoader worker) opens a shard file on first use and keeps it open (``os.pread``: no shared file position);
nothing open is pickled.

Which shards. A ``.tar`` file is one shard; a glob gives the sorted shards it matches (the split is then the
user's choice); a folder gives ``DIR/<split>/*.tar`` when that folder exists, else its ``<split>-*.tar`` (and
``<split>_*.tar``) shards; if no shard carries the split's name but all carry split names (``train-…``,
``test-…``) it is an error naming the splits found; otherwise every shard is used.
"""
from __future__ import annotations

import glob
import io
import logging
import os
import re
import tarfile

from PIL import Image

from rectok_core.data.datasets import SPLIT_NAMES, ImageDataset
from rectok_core.data.files import is_image_name
from rectok_core.data.readers import parse_label, register_reader
from rectok_core.data.transforms import to_rgb
from rectok_core.errors import DataError, _one_line

logger = logging.getLogger(__name__)


SEPARATOR = "::"


_GLOB_CHARS = re.compile(r"[*?\[]")


def _split_of(shard: str) -> str | None:
    """The split a shard file name starts with (``train-0000.tar`` → ``train``), else None."""
    match = re.match(r"([A-Za-z]+)[-_]", os.path.basename(shard))
    return match.group(1) if match and match.group(1) in SPLIT_NAMES else None


def _tars_in(folder: str) -> list[str]:
    return sorted(glob.glob(os.path.join(glob.escape(folder), "*.tar")))


def find_shards(spec: str, split: str | None) -> list[str]:
    """The shard files of ``spec`` for ``split`` (rules in the module docs); :class:`DataError` when none."""
    if _GLOB_CHARS.search(spec) and not os.path.exists(spec):
        shards = sorted(p for p in glob.glob(spec) if p.endswith(".tar") and os.path.isfile(p))
        if not shards:
            raise DataError(f"no .tar shards match {spec}")
        return shards
    if os.path.isfile(spec):
        return [spec]
    if split is not None and os.path.isdir(os.path.join(spec, split)) and _tars_in(os.path.join(spec, split)):
        return _tars_in(os.path.join(spec, split))
    shards = _tars_in(spec)
    if not shards:
        raise DataError(f"no .tar shards in {spec}")
    named = {_split_of(s) for s in shards}
    if split is None:
        if None not in named and len(named) > 1:
            raise DataError(f"{spec} holds shards of several splits ({', '.join(sorted(named))}): choose a split")
        return shards
    mine = [s for s in shards if _split_of(s) == split]
    if mine:
        return mine
    if None not in named:
        raise DataError(f"{spec} has no {split} shards (it has {', '.join(sorted(named))})")
    if split != "train":
        logger.warning("%s has no %s shards: using all %d shards as the %s split", spec, split, len(shards), split)
    return shards


def _key(name: str) -> tuple[str, str]:
    """(sample key, extension) of a member name: ``dir/0001.seg.png`` → (``dir/0001``, ``seg.png``)."""
    folder, _, base = name.rpartition("/")
    stem, _, ext = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), ext.lower()


def index_shard(shard: str) -> list[tuple[str, int, int, int | None]]:
    """``(image member, data offset, size, label or None)`` per sample of ``shard``, in member order."""
    samples: dict[str, dict] = {}
    try:
        with tarfile.open(shard, mode="r:") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                key, ext = _key(member.name)
                entry = samples.setdefault(key, {})
                if ext == "cls":
                    data = tar.extractfile(member).read(64)
                    entry["cls"] = data.decode("utf-8", errors="replace")
                elif is_image_name("x." + ext) and "image" not in entry:
                    entry["image"] = (member.name, member.offset_data, member.size)
    except (OSError, tarfile.TarError, EOFError) as exc:
        raise DataError(f"cannot read tar shard {shard}: {_one_line(exc)}") from exc
    out = []
    for key, entry in samples.items():
        if "image" not in entry:
            continue
        label = parse_label(entry["cls"], f"{shard}::{key}.cls") if "cls" in entry else None
        out.append((*entry["image"], label))
    return out


#: Shard files open in this process: path → file descriptor (oldest first), at most :data:`MAX_OPEN_SHARDS`.
_OPEN: dict[str, int] = {}
_OPEN_PID = [os.getpid()]
MAX_OPEN_SHARDS = 128


def _shard_fd(shard: str) -> int:
    """A read-only descriptor of ``shard``, opened once per process (a forked worker opens its own)."""
    if _OPEN_PID[0] != os.getpid():
        _OPEN.clear()  # the parent's descriptors: left alone, the parent still uses them
        _OPEN_PID[0] = os.getpid()
    fd = _OPEN.get(shard)
    if fd is None:
        if len(_OPEN) >= MAX_OPEN_SHARDS:
            os.close(_OPEN.pop(next(iter(_OPEN))))
        fd = _OPEN[shard] = os.open(shard, os.O_RDONLY)
    return fd


class TarShardDataset(ImageDataset):
    """Images stored in tar shards (webdataset layout), read by offset; see the module docs.

    Reads use ``os.pread`` on a per-process descriptor: no shared file position, so loader workers and the
    threads of :meth:`verify` can read side by side. The dataset pickles as plain data.
    """

    def __init__(self, shards: list[str], image_size: int, strict: bool = False, source: str = "") -> None:
        items, where = [], {}
        for shard in shards:
            for member, offset, size, label in index_shard(shard):
                path = f"{shard}{SEPARATOR}{member}"
                if path not in where:
                    where[path] = (shard, offset, size)
                    items.append((path, label))
        if not items:
            raise DataError(f"no images found in the tar shards of {source or shards[0]}")
        labels = [label for _, label in items if label is not None]
        classes = [str(i) for i in range(max(labels) + 1)] if labels else []
        super().__init__(items, classes, image_size, strict, source=source or shards[0])
        self.shards = list(shards)
        self._where = where

    def _read(self, path: str) -> Image.Image:
        shard, offset, size = self._where[path]
        data = os.pread(_shard_fd(shard), size, offset)
        if len(data) != size:
            raise OSError(f"tar member ends early ({len(data)} of {size} bytes)")
        with Image.open(io.BytesIO(data)) as img:
            return to_rgb(img)


def _claims(spec: str) -> bool:
    if spec.endswith(".tar") and os.path.isfile(spec):
        return True
    if _GLOB_CHARS.search(spec) and not os.path.exists(spec):
        return any(p.endswith(".tar") for p in glob.glob(spec))
    if not os.path.isdir(spec):
        return False
    return bool(_tars_in(spec)) or any(_tars_in(os.path.join(spec, s)) for s in SPLIT_NAMES)


@register_reader("tar", claims=_claims, priority=10)
def _build_tar(spec: str, image_size: int, split: str | None, strict: bool) -> TarShardDataset:
    return TarShardDataset(find_shards(spec, split), image_size, strict, source=spec)
