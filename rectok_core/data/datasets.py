"""Image datasets, the resumable distributed sampler and the data loader (recipe §6, §11.4).

Pipeline (identical for the tokenizer and the generator, recipe §6): decode with PIL, convert to RGB (any mode:
:func:`~rectok_core.data.transforms.to_rgb`) →
ADM :func:`center_crop_arr` → optional horizontal flip → float tensor ``(3, H, W)`` in ``[-1, 1]``
(``ToTensor`` followed by ``Normalize(0.5, 0.5)``). There is no random resized crop and no colour jitter.

Randomness lives in the sampler, never in the dataset: :class:`ResumableSampler` decides the order *and* the
flip bit of every sample from ``(seed, epoch, position)`` and hands ``(index, flip)`` keys to
``ImageDataset.__getitem__``. Data order and augmentation are therefore reproducible, independent of the
number of loader workers, and resumable in the middle of an epoch (:meth:`ResumableSampler.set_start`).

Unreadable files never crash a run. ``__getitem__`` returns ``ok=False`` with a zero image for them and logs
one warning per path (per process: each loader worker warns on its own); the training loop removes such
samples from a collated batch with :func:`drop_bad` and keeps the count, since a counter inside worker
processes is not visible from the main process (a whole epoch without one good sample is a
:class:`DataError` there, never a silent wait). ``strict=True`` raises :class:`DataError` instead, and
:meth:`ImageDataset.verify` finds all bad files up front (``--verify-data``).

Dataset specs (``digits``, image folders, list files, tar shards) are turned into datasets by the reader
registry of :mod:`rectok_core.data.readers` (:func:`~rectok_core.data.readers.build_dataset`), which also checks
that a dataset holds at least one readable image (:meth:`ImageDataset.check_readable`).
"""
from __future__ import annotations

import colorsys
import copy
import functools
import logging
import operator
import os
import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from tqdm import tqdm

from rectok_core.data.files import IMAGE_EXTENSIONS  # noqa: F401  (re-exported)
from rectok_core.data.transforms import _to_tensor, center_crop_arr, to_rgb
from rectok_core.errors import DataError, _one_line

logger = logging.getLogger(__name__)


#: Split names: a folder whose sub-folders all carry one of them is a split tree (``DIR/train``, ``DIR/val``,
#: ...), never read as classes called ``train`` and ``val``.
SPLIT_NAMES: frozenset[str] = frozenset({"train", "val", "valid", "validation", "test"})


#: The evaluation splits, in the order :func:`evaluation_split` picks one when none is named.
EVAL_SPLITS: tuple[str, ...] = ("val", "valid", "validation", "test")


def splits_in(spec: str) -> list[str]:
    """The splits a folder holds: its sub-folders when all carry split names (a split tree), else the split
    prefixes of its ``.tar`` shards (``test-0000.tar``) when all have one; [] for anything else."""
    if not os.path.isdir(spec):
        return []
    try:
        with os.scandir(spec) as it:
            entries = [(e.name, e.is_dir()) for e in it if not e.name.startswith(".")]
    except OSError:
        return []
    subdirs = {name for name, is_dir in entries if is_dir}
    if subdirs:
        return sorted(subdirs) if subdirs <= SPLIT_NAMES else []
    prefixes = {re.split(r"[-_]", name, maxsplit=1)[0] for name, _ in entries if name.endswith(".tar")}
    return sorted(prefixes) if prefixes and prefixes <= SPLIT_NAMES else []


def evaluation_split(spec: str, split: str | None = None) -> tuple[str, str]:
    """The split to evaluate ``spec`` on, and why when it is not ``val``: ``split`` when named, else ``val``, unless
    ``spec`` holds splits without ``val`` but with another evaluation split (``train/`` and ``test/``): then the
    first of :data:`EVAL_SPLITS` it has, with the reason (``DIR has no val/ split: using its test/ split``)."""
    if split:
        return split, ""
    have = splits_in(spec)
    if "val" in have:
        return "val", ""
    for name in EVAL_SPLITS:
        if name in have:
            return name, f"{spec} has no val/ split: using its {name}/ split"
    return "val", ""


#: The largest ``image_size`` a dataset produces (a typo such as 2560000 must not allocate terabytes).
MAX_IMAGE_SIZE = 8192


#: How many items :meth:`ImageDataset.check_readable` tries (evenly spread) before declaring a dataset unreadable.
PROBE_ITEMS = 64


#: Errors PIL raises for missing, truncated, corrupt or non-image files.
_READ_ERRORS: tuple[type[BaseException], ...] = (
    OSError,  # includes FileNotFoundError, UnidentifiedImageError and "image file is truncated"
    ValueError,
    SyntaxError,  # some PIL plugins raise it for malformed headers
    EOFError,
    Image.DecompressionBombError,
)


Item = tuple[str, int | None]


Sample = dict[str, Any]


def _parse_key(key: int | tuple[int, bool | int]) -> tuple[int, bool]:
    """A dataset key — an index, or ``(index, flip)`` from :class:`ResumableSampler` — as ``(index, flip)``."""
    if isinstance(key, tuple):
        if len(key) != 2:
            raise TypeError(f"dataset key must be an index or (index, flip), got {key!r}")
        return operator.index(key[0]), bool(key[1])
    return operator.index(key), False


class ImageDataset(Dataset):
    """Images given as ``(path, label or None)`` items, center-cropped to ``image_size``.

    ``dataset[i]`` or ``dataset[(i, flip)]`` returns ``dict(image, label, index, ok)``: ``image`` a float
    tensor ``(3, image_size, image_size)`` in ``[-1, 1]`` (mirrored left-right when ``flip``), ``label`` the
    class index or ``-1`` for an unlabelled item, ``index`` the item index, ``ok`` False when the file could
    not be read (the image is then all zeros; see :func:`drop_bad`). With ``strict=True`` an unreadable file
    raises :class:`DataError` instead. ``source`` names the dataset (its folder or list file) in messages.
    """

    def __init__(self, items: Sequence[Item], classes: Sequence[str], image_size: int, strict: bool = False,
                 source: str = "") -> None:
        if image_size < 1:
            raise ValueError(f"image_size must be positive, got {image_size}")
        if image_size > MAX_IMAGE_SIZE:
            raise DataError(f"image size {image_size} is beyond the largest supported ({MAX_IMAGE_SIZE})")
        for path, label in items:
            if label is not None and not 0 <= label < len(classes):
                raise ValueError(f"label {label} of {path} is outside the {len(classes)} classes")
        self.items: list[Item] = list(items)
        self.classes: list[str] = list(classes)
        self.image_size = image_size
        self.strict = strict
        self.source = source
        self._warned: set[str] = set()
        self.duplicates = 0  # files dropped because another path reached the same file (symlinks)
        self.skipped_links = 0  # symlinked folders not followed while listing (loops, folders already listed)

    def __len__(self) -> int:
        return len(self.items)

    @property
    def num_classes(self) -> int:
        """Number of class names (0 for an unlabelled dataset)."""
        return len(self.classes)

    @property
    def has_labels(self) -> bool:
        """True when every item has a label."""
        return all(label is not None for _, label in self.items)

    def _read(self, path: str) -> Image.Image:
        """Decode ``path`` fully into an RGB image (raises one of the PIL read errors when it cannot)."""
        with Image.open(path) as img:
            return to_rgb(img)

    def load(self, index: int) -> Image.Image:
        """The center-cropped RGB image of item ``index``; raises :class:`DataError` when it cannot be read."""
        path = self.items[index][0]
        try:
            img = self._read(path)
        except _READ_ERRORS as exc:
            raise DataError(f"cannot read image {path}: {_one_line(exc)}") from exc
        return center_crop_arr(img, self.image_size)

    def __getitem__(self, key: int | tuple[int, bool | int]) -> Sample:
        index, flip = _parse_key(key)
        if index < 0:
            index += len(self.items)
        if not 0 <= index < len(self.items):
            raise IndexError(f"index {index} out of range for a dataset of {len(self.items)} images")
        path, label = self.items[index]
        try:
            image = _to_tensor(self.load(index))
            ok = True
        except DataError as exc:
            if self.strict:
                raise
            if path not in self._warned:
                self._warned.add(path)
                logger.warning("skipping unreadable image %s (%s)", path, _one_line(exc.__cause__ or exc))
            image = torch.zeros(3, self.image_size, self.image_size)
            ok = False
        if flip:
            image = image.flip(-1)
        return {"image": image, "label": -1 if label is None else label, "index": index, "ok": ok}

    def _is_readable(self, path: str) -> bool:
        """Whether ``path`` decodes (no logging, never raises for a bad file)."""
        try:
            self._read(path)
        except _READ_ERRORS:
            return False
        return True

    def verify(self, progress: bool = True, threads: int | None = None) -> list[str]:
        """Decode every file and return the paths that cannot be read, in dataset order.

        Each file is fully decoded: ``PIL.Image.verify`` alone accepts truncated JPEGs, which then fail in
        training. Decoding releases the GIL, so ``threads`` (default: up to 8, one per CPU) run in parallel.
        """
        threads = threads or min(8, os.cpu_count() or 1)
        paths = [path for path, _ in self.items]
        bad = []
        chunk = 64 * threads  # bounded work queue: ``pool.map`` would create a future per file up front
        with ThreadPoolExecutor(max_workers=threads) as pool, \
                tqdm(total=len(paths), disable=not progress, desc=f"verifying {self.source or 'images'}",
                     unit="img") as bar:
            for begin in range(0, len(paths), chunk):
                part = paths[begin:begin + chunk]
                bad.extend(path for path, good in zip(part, pool.map(self._is_readable, part)) if not good)
                bar.update(len(part))
        return bad

    def check_readable(self, probes: int = PROBE_ITEMS) -> None:
        """Raise :class:`DataError` unless one of up to ``probes`` items, spread evenly over the dataset (all of
        a small one), decodes; stops at the first that does. A dataset whose every file is missing, corrupt or
        a folder fails here in seconds instead of training on nothing (every batch dropped by ``drop_bad``)."""
        n = len(self.items)
        if n == 0:
            raise DataError(f"no images in {self.source or 'dataset'}")
        picks = sorted({i * n // min(n, probes) for i in range(min(n, probes))})
        first_error = None
        for i in picks:
            try:
                self.load(i)
                return
            except DataError as exc:
                first_error = first_error or exc
        which = f"all {n}" if len(picks) == n else f"all {len(picks)} tried (evenly spread) of the {n}"
        raise DataError(f"no readable image in {self.source or 'dataset'}: {which} images fail to decode "
                        f"(first: {first_error})")

    def subset(self, indices: Sequence[int]) -> ImageDataset:
        """A dataset of the same kind holding ``items[i]`` for ``i`` in ``indices`` (in that order)."""
        new = copy.copy(self)
        new.items = [self.items[i] for i in indices]
        new._warned = set()
        return new


class DigitsDataset(ImageDataset):
    """scikit-learn's 8×8 digits (1797 images, classes ``'0'``–``'9'``) as coloured RGB images.

    Each image gets a deterministic random hue of its own (foreground at that hue, background at the opposite
    hue, dark): the three channels differ, and the colour carries no information about the label. The 8×8
    image goes through the same :func:`center_crop_arr` as files (a BICUBIC upscale to ``image_size``). Item
    paths are ``sklearn-digits:NNNN`` (``NNNN`` the index among the 1797 images).
    """

    PREFIX = "sklearn-digits:"

    def __init__(self, pixels: np.ndarray, targets: np.ndarray, hues: np.ndarray, indices: Sequence[int],
                 image_size: int, split: str) -> None:
        items = [(f"{self.PREFIX}{i:04d}", int(targets[i])) for i in indices]
        super().__init__(items, [str(c) for c in range(10)], image_size, strict=True,
                         source=f"digits ({split})")
        self._pixels = pixels
        self._hues = hues

    def _read(self, path: str) -> Image.Image:
        i = int(path[len(self.PREFIX):])
        ink = self._pixels[i].astype(np.float32)[..., None] / 16.0  # (8, 8, 1) in [0, 1]
        fg = np.array(colorsys.hsv_to_rgb(self._hues[i], 0.8, 1.0), dtype=np.float32)
        bg = np.array(colorsys.hsv_to_rgb((self._hues[i] + 0.5) % 1.0, 0.6, 0.3), dtype=np.float32)
        rgb = (1.0 - ink) * bg + ink * fg
        return Image.fromarray(np.round(rgb * 255.0).astype(np.uint8))


@functools.lru_cache(maxsize=1)
def _digits_arrays() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(pixels uint8 (1797, 8, 8) in 0..16, targets int64, per-image hues in [0, 1)) — loaded once."""
    from sklearn.datasets import (
        load_digits,  # imported lazily: sklearn is slow to import
    )

    bunch = load_digits()
    pixels = bunch.images.astype(np.uint8)
    targets = bunch.target.astype(np.int64)
    hues = np.random.default_rng(1).random(len(pixels))
    return pixels, targets, hues


def digits(image_size: int = 32, split: str = "train") -> ImageDataset:
    """The built-in digits dataset; ``split`` is ``train`` (80 %), ``val`` (20 %; ``test`` is the same held-out
    images: digits has no third split) or ``all``.

    The split is a fixed permutation (seed 0) of the 1797 images: the first 1437 are ``train``, the other 360
    ``val``; each split is in increasing image order.
    """
    pixels, targets, hues = _digits_arrays()
    n = len(pixels)
    order = np.random.default_rng(0).permutation(n)
    n_train = n * 4 // 5
    if split == "train":
        indices = np.sort(order[:n_train])
    elif split in ("val", "test"):
        indices = np.sort(order[n_train:])
    elif split == "all":
        indices = np.arange(n)
    else:
        raise DataError(f"digits: unknown split {split!r} (expected train, val, test or all)")
    return DigitsDataset(pixels, targets, hues, indices.tolist(), image_size, split)


def describe_dataset(dataset: Any) -> str:
    """One line on what a run reads: ``data: 1437 images, 10 classes, from digits (train)`` (the folder, split
    folder, list file or latent cache it was read from; ``unlabelled`` for a dataset without classes)."""
    classes = len(getattr(dataset, "classes", []) or [])
    where = getattr(dataset, "source", "") or str(getattr(dataset, "folder", "")) or "?"
    what = "cached latents" if hasattr(dataset, "folder") and not hasattr(dataset, "items") else "images"
    return f"data: {len(dataset)} {what}, {f'{classes} classes' if classes else 'unlabelled'}, from {where}"


def stratified_indices(labels: Sequence[int | None], n: int, seed: int = 0) -> list[int]:
    """``n`` item indices (all when there are fewer) spread over the classes, the same for the same labels and
    ``seed``: classes take turns in a seeded order, each giving its images in a seeded order, so a reconstruction
    grid shows several classes rather than the first files by path (all one class). Unlabelled items (None or a
    negative label) form one group. The indices are returned in that interleaved order."""
    rng = np.random.default_rng(seed)
    groups: dict[int, list[int]] = {}
    for i, label in enumerate(labels):
        groups.setdefault(-1 if label is None or label < 0 else int(label), []).append(i)
    queues = [rng.permutation(groups[k]) for k in sorted(groups)]
    queues = [queues[j] for j in rng.permutation(len(queues))]
    out: list[int] = []
    for turn in range(max((len(q) for q in queues), default=0)):
        out.extend(int(q[turn]) for q in queues if turn < len(q))
        if len(out) >= n:
            break
    return out[:n]


def limit_per_class(dataset: ImageDataset, n: int) -> ImageDataset:
    """At most ``n`` images of each class: the first ``n`` by path, kept in dataset order."""
    if n < 1:
        raise ValueError(f"images per class must be positive, got {n}")
    if not dataset.has_labels:
        raise DataError(f"{dataset.source or 'dataset'} is unlabelled: cannot limit images per class")
    by_class: dict[int, list[int]] = {}
    for i in sorted(range(len(dataset)), key=lambda i: dataset.items[i][0]):
        kept = by_class.setdefault(dataset.items[i][1], [])
        if len(kept) < n:
            kept.append(i)
    return dataset.subset(sorted(i for kept in by_class.values() for i in kept))

