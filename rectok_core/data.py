"""Image datasets, the resumable distributed sampler and the data loader (recipe §6, §11.4).

Pipeline (identical for the tokenizer and the generator, recipe §6): decode with PIL and convert to RGB →
ADM :func:`center_crop_arr` → optional horizontal flip → float tensor ``(3, H, W)`` in ``[-1, 1]``
(``ToTensor`` followed by ``Normalize(0.5, 0.5)``). There is no random resized crop and no colour jitter.

Randomness lives in the sampler, never in the dataset: :class:`ResumableSampler` decides the order *and* the
flip bit of every sample from ``(seed, epoch, position)`` and hands ``(index, flip)`` keys to
``ImageDataset.__getitem__``. Data order and augmentation are therefore reproducible, independent of the
number of loader workers, and resumable in the middle of an epoch (:meth:`ResumableSampler.set_start`).

Unreadable files never crash a run. ``__getitem__`` returns ``ok=False`` with a zero image for them and logs
one warning per path (per process: each loader worker warns on its own); the training loop removes such
samples from a collated batch with :func:`drop_bad` and keeps the count, since a counter inside worker
processes is not visible from the main process. ``strict=True`` raises :class:`DataError` instead, and
:meth:`ImageDataset.verify` finds all bad files up front (``--verify-data``).

Dataset specs understood by :func:`build_dataset`:

* ``digits`` — scikit-learn's built-in 8×8 digits, coloured and upscaled (:func:`digits`); the keyword wins
  over a folder of the same name (write ``./digits`` for the folder);
* a directory — an ImageFolder tree ``DIR/<class>/**/<image>`` or a flat folder of unlabelled images; with a
  ``split``, ``DIR/<split>/`` is used when it exists;
* a list file ``LIST`` (any text file; lines ``relative/path label``) with paths relative to the list's
  folder, or ``LIST@ROOT`` with paths relative to ``ROOT``.
"""
from __future__ import annotations

import colorsys
import copy
import functools
import logging
import math
import operator
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate
from tqdm import tqdm

from rectok_core.errors import DataError

logger = logging.getLogger(__name__)

#: File name suffixes recognised as images (compared case-insensitively); the set torchvision uses.
IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")

#: Split names that mark a folder as a split root (``DIR/train``, ``DIR/val``, ...), not a class folder.
SPLIT_NAMES: frozenset[str] = frozenset({"train", "val", "valid", "validation", "test"})

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


def _one_line(exc: BaseException) -> str:
    """The message of ``exc`` collapsed to one line (user-facing errors are one line)."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def center_crop_arr(img: Image.Image, size: int) -> Image.Image:
    """ADM center crop: halve with BOX while the short side is ≥ ``2*size``, BICUBIC-resize the short side to
    ``size``, then cut the central ``size × size`` square (recipe §6)."""
    if size < 1:
        raise ValueError(f"crop size must be positive, got {size}")
    while min(img.size) >= 2 * size:
        img = img.resize(tuple(x // 2 for x in img.size), resample=Image.BOX)
    scale = size / min(img.size)
    img = img.resize(tuple(round(x * scale) for x in img.size), resample=Image.BICUBIC)
    left = (img.size[0] - size) // 2
    top = (img.size[1] - size) // 2
    return img.crop((left, top, left + size, top + size))


def _to_tensor(img: Image.Image) -> torch.Tensor:
    """RGB PIL image → float tensor (3, H, W) in [-1, 1], bit-identical to ``ToTensor`` + ``Normalize(.5, .5)``."""
    arr = np.asarray(img, dtype=np.uint8)
    tensor = torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255.0)
    return tensor.sub_(0.5).div_(0.5)


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
        for path, label in items:
            if label is not None and not 0 <= label < len(classes):
                raise ValueError(f"label {label} of {path} is outside the {len(classes)} classes")
        self.items: list[Item] = list(items)
        self.classes: list[str] = list(classes)
        self.image_size = image_size
        self.strict = strict
        self.source = source
        self._warned: set[str] = set()

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
            return img.convert("RGB")

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
    from sklearn.datasets import load_digits  # imported lazily: sklearn is slow to import

    bunch = load_digits()
    pixels = bunch.images.astype(np.uint8)
    targets = bunch.target.astype(np.int64)
    hues = np.random.default_rng(1).random(len(pixels))
    return pixels, targets, hues


def digits(image_size: int = 32, split: str = "train") -> ImageDataset:
    """The built-in digits dataset; ``split`` is ``train`` (80 %), ``val`` (20 %) or ``all``.

    The split is a fixed permutation (seed 0) of the 1797 images: the first 1437 are ``train``, the other 360
    ``val``; each split is in increasing image order.
    """
    pixels, targets, hues = _digits_arrays()
    n = len(pixels)
    order = np.random.default_rng(0).permutation(n)
    n_train = n * 4 // 5
    if split == "train":
        indices = np.sort(order[:n_train])
    elif split == "val":
        indices = np.sort(order[n_train:])
    elif split == "all":
        indices = np.arange(n)
    else:
        raise DataError(f"digits: unknown split {split!r} (expected train, val or all)")
    return DigitsDataset(pixels, targets, hues, indices.tolist(), image_size, split)


def _is_image_name(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def _images_under(folder: str) -> list[str]:
    """Sorted image files anywhere under ``folder`` (following links; hidden files and folders skipped)."""
    def fail(exc: OSError) -> None:
        raise DataError(f"cannot list {exc.filename or folder}: {_one_line(exc)}") from exc

    found = []
    for dirpath, dirnames, filenames in os.walk(folder, onerror=fail, followlinks=True):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        found.extend(os.path.join(dirpath, f) for f in filenames if _is_image_name(f))
    return sorted(found)


def image_folder(root: str | os.PathLike[str], image_size: int, strict: bool = False) -> ImageDataset:
    """An ImageFolder tree ``root/<class>/**/<image>`` (classes sorted; every class folder must hold an
    image), or, when ``root`` has no sub-folders, the unlabelled images directly in ``root``."""
    root = os.fspath(root)
    if not os.path.isdir(root):
        reason = "not a folder" if os.path.exists(root) else "folder does not exist"
        raise DataError(f"no images found under {root} ({reason})")
    try:
        with os.scandir(root) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError as exc:
        raise DataError(f"cannot list {root}: {_one_line(exc)}") from exc
    class_dirs = [e for e in entries if e.is_dir() and not e.name.startswith(".")]
    loose = [e.path for e in entries if e.is_file() and _is_image_name(e.name)]
    if not class_dirs:
        if not loose:
            raise DataError(f"no images found under {root} (expected images or class sub-folders)")
        return ImageDataset([(path, None) for path in loose], [], image_size, strict, source=root)
    if loose:
        logger.warning("ignoring %d images directly under %s: it has class folders", len(loose), root)
    items: list[Item] = []
    for label, entry in enumerate(class_dirs):
        paths = _images_under(entry.path)
        if not paths:
            raise DataError(f"no images found under {entry.path} (every class folder needs at least one image)")
        items.extend((path, label) for path in paths)
    return ImageDataset(items, [e.name for e in class_dirs], image_size, strict, source=root)


def list_file(list_path: str | os.PathLike[str], root: str | os.PathLike[str], image_size: int,
              strict: bool = False) -> ImageDataset:
    """Items from a list file with one ``path [label]`` line per image (recipe §6).

    Paths are relative to ``root`` unless absolute and may not contain whitespace; the optional label is a
    non-negative integer. Blank lines and lines starting with ``#`` are skipped. A labelled list gets classes
    ``'0'`` … ``str(max_label)``; a list mixing labelled and unlabelled lines is allowed (``has_labels`` is then
    False).
    """
    list_path, root = os.fspath(list_path), os.fspath(root)
    try:
        with open(list_path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except FileNotFoundError as exc:
        raise DataError(f"list file {list_path} does not exist") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read list file {list_path}: {_one_line(exc)}") from exc
    items: list[Item] = []
    for lineno, line in enumerate(lines, start=1):
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        if len(fields) > 2:
            raise DataError(f"{list_path}:{lineno}: expected 'path [label]', got {len(fields)} fields")
        label = None
        if len(fields) == 2:
            try:
                label = int(fields[1])
            except ValueError:
                label = -1
            if label < 0:
                raise DataError(f"{list_path}:{lineno}: label {fields[1]!r} is not a non-negative integer")
        items.append((os.path.join(root, fields[0]), label))
    if not items:
        raise DataError(f"no images found under {list_path} (the list file has no entries)")
    labels = [label for _, label in items if label is not None]
    classes = [str(i) for i in range(max(labels) + 1)] if labels else []
    return ImageDataset(items, classes, image_size, strict, source=list_path)


def build_dataset(spec: str, image_size: int, split: str | None = None, strict: bool = False) -> ImageDataset:
    """The dataset named by ``spec``: ``digits``, a directory, ``LIST`` or ``LIST@ROOT`` (see module docs).

    For a directory, ``split`` selects ``spec/<split>/`` when that folder exists, otherwise the directory itself
    is used (with a warning for a split other than ``train``). Without a split, a directory whose sub-folders
    are all split names (``train``, ``val``, ...) is refused rather than read as classes called ``train`` and
    ``val``. A list file is already one split: ``split`` does not change it. For ``digits``, ``split`` is
    ``train``, ``val`` or ``all`` (the default).
    """
    if spec == "digits":
        return digits(image_size, split or "all")
    if os.path.isdir(spec):
        if split is not None:
            split_dir = os.path.join(spec, split)
            if os.path.isdir(split_dir):
                return image_folder(split_dir, image_size, strict)
            if split != "train":
                logger.warning("%s has no %s/ folder: using the whole folder as the %s split", spec, split, split)
            return image_folder(spec, image_size, strict)
        with os.scandir(spec) as entries:
            subdirs = {e.name for e in entries if e.is_dir() and not e.name.startswith(".")}
        if subdirs and subdirs <= SPLIT_NAMES:
            raise DataError(f"{spec} holds splits ({', '.join(sorted(subdirs))}), not classes: choose a split")
        return image_folder(spec, image_size, strict)
    if os.path.isfile(spec):
        return list_file(spec, os.path.dirname(os.path.abspath(spec)), image_size, strict)
    for at, char in enumerate(spec):
        if char == "@" and os.path.isfile(spec[:at]):
            list_path, root = spec[:at], spec[at + 1:]
            if not os.path.isdir(root):
                raise DataError(f"image root {root} of list file {list_path} is not a folder")
            return list_file(list_path, root, image_size, strict)
    raise DataError(f"dataset {spec} not found (expected 'digits', an image folder, a list file or LIST@ROOT)")


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


def drop_bad(batch: Sample) -> tuple[Sample, int]:
    """Remove the samples with ``ok=False`` from a collated batch; returns the batch and how many went."""
    ok = batch["ok"]
    n_bad = int((~ok).sum())
    if n_bad == 0:
        return batch, 0
    return {key: value[ok] for key, value in batch.items()}, n_bad


def _seed_for(*words: int) -> int:
    """A 63-bit seed mixing ``words`` (distinct tuples give unrelated streams, unlike ``seed + epoch``)."""
    return int(np.random.SeedSequence(list(words)).generate_state(2, dtype=np.uint64)[0] >> np.uint64(1))


_PERMUTATION_STREAM = 0
_FLIP_STREAM = 1


class ResumableSampler(Sampler):
    """Distributed, deterministic, resumable sampler (recipe §6, §11.4).

    Per epoch, the dataset order is ``torch.randperm`` seeded by ``(seed, epoch)`` (or ``0 … n-1`` without
    ``shuffle``), cut (``drop_last``) or padded with its own head so it splits evenly into ``world_size`` ranks,
    exactly like ``DistributedSampler``; rank ``r`` takes positions ``r::world_size``. With ``flip``, every
    position also gets a flip bit (p = 0.5) from ``(seed, epoch, position)`` and the sampler yields
    ``(index, flip)`` keys, otherwise plain indices.

    Call :meth:`set_epoch` at the start of every epoch (it also clears :meth:`set_start`), then, to resume in the
    middle of an epoch, ``set_start(batches_done * batch_size)``. ``batch_size`` only serves
    :attr:`steps_per_epoch`.
    """

    def __init__(self, dataset_len: int, rank: int = 0, world_size: int = 1, seed: int = 0, shuffle: bool = True,
                 flip: bool = False, drop_last: bool = True, batch_size: int = 1) -> None:
        if dataset_len < 1:
            raise ValueError(f"cannot sample from an empty dataset (dataset_len={dataset_len})")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"invalid rank {rank} for world size {world_size}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if seed < 0:
            raise ValueError(f"seed must be non-negative, got {seed}")
        self.dataset_len = dataset_len
        self.rank = rank
        self.world_size = world_size
        self.seed = seed
        self.shuffle = shuffle
        self.flip = flip
        self.drop_last = drop_last
        self.batch_size = batch_size
        if drop_last:
            self.num_samples = dataset_len // world_size
        else:
            self.num_samples = math.ceil(dataset_len / world_size)
        self.total_size = self.num_samples * world_size
        if drop_last and self.steps_per_epoch == 0:
            raise DataError(f"dataset of {dataset_len} images is too small for {world_size} rank(s) × batch size "
                            f"{batch_size} with drop_last")
        self.epoch = 0
        self.start = 0

    @property
    def steps_per_epoch(self) -> int:
        """Batches per rank in a whole epoch (incomplete last batch dropped when ``drop_last``)."""
        if self.drop_last:
            return self.num_samples // self.batch_size
        return math.ceil(self.num_samples / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order and flips to yield, from its first sample."""
        if epoch < 0:
            raise ValueError(f"epoch must be non-negative, got {epoch}")
        self.epoch = epoch
        self.start = 0

    def set_start(self, k: int) -> None:
        """Skip the first ``k`` samples of this rank in the current epoch (resume after ``k / batch_size``
        batches)."""
        if not 0 <= k <= self.num_samples:
            raise ValueError(f"cannot skip {k} samples: this rank has {self.num_samples} per epoch")
        self.start = k

    def __len__(self) -> int:
        return self.num_samples - self.start

    def _global_order(self) -> torch.Tensor:
        """The epoch's order of dataset indices over all ranks, cut or padded to ``total_size``."""
        if self.shuffle:
            generator = torch.Generator().manual_seed(_seed_for(self.seed, self.epoch, _PERMUTATION_STREAM))
            order = torch.randperm(self.dataset_len, generator=generator)
        else:
            order = torch.arange(self.dataset_len)
        if self.total_size <= self.dataset_len:
            return order[: self.total_size]
        repeats = math.ceil(self.total_size / self.dataset_len)
        return order.repeat(repeats)[: self.total_size]

    def __iter__(self) -> Iterator[int] | Iterator[tuple[int, bool]]:
        positions = slice(self.rank + self.start * self.world_size, self.total_size, self.world_size)
        indices = self._global_order()[positions].tolist()
        if not self.flip:
            return iter(indices)
        generator = torch.Generator().manual_seed(_seed_for(self.seed, self.epoch, _FLIP_STREAM))
        flips = torch.randint(0, 2, (self.total_size,), generator=generator)[positions].bool().tolist()
        return iter(list(zip(indices, flips)))


def build_loader(dataset: Dataset, sampler: Sampler, batch_size: int, workers: int, device_is_cuda: bool,
                 drop_last: bool = True) -> DataLoader:
    """A DataLoader over ``dataset`` in ``sampler`` order: pinned memory on CUDA, persistent workers, dict
    batches (``default_collate``), and a dedicated generator so the global torch RNG is never consumed."""
    seed = sampler.seed if isinstance(sampler, ResumableSampler) else 0
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        collate_fn=default_collate,
        pin_memory=device_is_cuda,
        drop_last=drop_last,
        persistent_workers=workers > 0,
        generator=torch.Generator().manual_seed(seed),
    )
