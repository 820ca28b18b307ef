"""Dataset readers and the registry that turns a ``--data`` spec into a dataset (recipe §6).

A reader is registered with :func:`register_reader` (into ``rectok_core.data.READERS``, where every reader is
declared in one line): a ``build(spec, image_size, split, strict)`` function, a ``claims(spec)`` test and a
priority (lower is asked first). :func:`build_dataset` asks the readers in priority order and builds with the
first that claims the spec. The tests run every registered reader through the same checks, on a tiny dataset
of its kind written by the tests' own fixtures. Built in:

* ``digits`` — scikit-learn's 8×8 digits (the keyword wins over a folder of that name: write ``./digits``);
* ``tar`` — webdataset tar shards (:mod:`rectok_core.data.tar`): a folder of ``*.tar``, a glob or one ``.tar``;
* ``folder`` — an ImageFolder tree ``DIR/<class>/**/<image>`` or a flat folder of unlabelled images;
* ``list`` — a list file ``LIST`` (lines ``path [label]``, paths relative to the list's folder) or ``LIST@ROOT``.

Splits of a folder. A folder whose sub-folders (hidden ones aside) all have split names (:data:`SPLIT_NAMES`:
``train``, ``val``, ``valid``, ``validation``, ``test``) is a *split tree*. With a ``split``, ``DIR/<split>/`` is
used when it exists; a split tree without it is an error naming the splits it has; any other folder is used
whole as the requested split (with a warning unless the split is ``train``). Without a split, a split tree is
refused rather than read as classes called ``train`` and ``test``.

Every dataset is checked once when built (:meth:`ImageDataset.check_readable`): one that cannot decode a single
image is a :class:`DataError` at once, not a run that drops every batch.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass

from rectok_core.data import READERS
from rectok_core.data.datasets import SPLIT_NAMES, ImageDataset, Item, digits
from rectok_core.data.files import Listing, is_image_name, report, scan_images, unique_files
from rectok_core.errors import DataError, _one_line

logger = logging.getLogger(__name__)


#: The largest label a list file or a tar shard may give (class names are made for every label up to it).
MAX_CLASSES = 100_000


Builder = Callable[[str, int, "str | None", bool], ImageDataset]


@dataclass(frozen=True)
class Reader:
    """One registered dataset reader."""

    name: str
    claims: Callable[[str], bool]
    build: Builder
    priority: int = 50


def register_reader(name: str, *, claims: Callable[[str], bool],
                    priority: int = 50) -> Callable[[Builder], Builder]:
    """Decorator registering ``build(spec, image_size, split, strict) -> ImageDataset`` as reader ``name`` in
    ``READERS``. ``claims(spec)`` says whether the reader handles the spec; readers are asked by increasing
    ``priority``. A name registered twice is an error.
    """
    def deco(build: Builder) -> Builder:
        READERS.add(name, Reader(name, claims, build, priority))
        return build
    return deco


def readers() -> list[Reader]:
    """The registered readers (every declared one imported) in the order :func:`build_dataset` asks them."""
    return sorted(READERS.values(), key=lambda r: (r.priority, r.name))


def reader_for(spec: str) -> Reader:
    """The reader that claims ``spec``; :class:`DataError` when none does."""
    for reader in readers():
        if reader.claims(spec):
            return reader
    raise DataError(f"dataset {spec} not found (expected 'digits', an image folder, tar shards, a list file or "
                    f"LIST@ROOT)")


def build_dataset(spec: str, image_size: int, split: str | None = None, strict: bool = False) -> ImageDataset:
    """The dataset named by ``spec`` (the split rules are in the module docs), checked to hold a readable image.

    A list file is already one split: ``split`` does not change it. For ``digits``, ``split`` is ``train``,
    ``val``/``test`` or ``all`` (the default).
    """
    dataset = reader_for(spec).build(spec, image_size, split, strict)
    dataset.check_readable()
    return dataset


# --- folders -------------------------------------------------------------------------------------------------

def _subfolders(folder: str) -> list[str]:
    try:
        with os.scandir(folder) as it:
            return sorted(e.name for e in it if not e.name.startswith(".") and e.is_dir())
    except OSError as exc:
        raise DataError(f"cannot list {folder}: {_one_line(exc)}") from exc


def split_folder(spec: str, split: str | None, kind: str = "folder") -> str:
    """The folder of ``split`` in ``spec`` by the split rules (module docs); ``kind`` names it in messages."""
    subdirs = _subfolders(spec)
    is_split_tree = bool(subdirs) and set(subdirs) <= SPLIT_NAMES
    if split is None:
        if is_split_tree:
            raise DataError(f"{spec} holds splits ({', '.join(subdirs)}), not classes: choose a split")
        return spec
    split_dir = os.path.join(spec, split)
    if os.path.isdir(split_dir):
        return split_dir
    if is_split_tree:
        raise DataError(f"{spec} has no {split}/ split (it has {', '.join(subdirs)})")
    if split != "train":
        logger.warning("%s has no %s/ folder: using the whole %s as the %s split", spec, split, kind, split)
    return spec


def image_folder(root: str | os.PathLike[str], image_size: int, strict: bool = False) -> ImageDataset:
    """An ImageFolder tree ``root/<class>/**/<image>`` (classes sorted; every class folder must hold an
    image), or, when ``root`` has no sub-folders, the unlabelled images directly in ``root``.

    Symlinks are followed at most once (:mod:`rectok_core.data.files`): loops and links to folders listed already
    are not followed (counted in ``dataset.skipped_links``), and a file reached through several paths is kept
    once (counted in ``dataset.duplicates``), under the class folder it really lives in when it lives in one.
    """
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
    loose = [e.path for e in entries if e.is_file() and is_image_name(e.name)]
    if not class_dirs:
        if not loose:
            raise DataError(f"no images found under {root} (expected images or class sub-folders)")
        keep, duplicates = unique_files(loose)
        report(root, Listing(), duplicates)
        dataset = ImageDataset([(loose[i], None) for i in keep], [], image_size, strict, source=root)
        dataset.duplicates = duplicates
        return dataset
    if loose:
        logger.warning("ignoring %d images directly under %s: it has class folders", len(loose), root)
    label_of = {e.name: label for label, e in enumerate(class_dirs)}
    homes = [os.path.realpath(e.path) for e in class_dirs]
    listing = scan_images(root)
    items: list[Item] = []
    for path in listing.files:
        top = os.path.relpath(path, root).split(os.sep)[0]
        if top in label_of:
            items.append((path, label_of[top]))
    keep, duplicates = unique_files([p for p, _ in items], prefer=lambda i: homes[items[i][1]])
    items = [items[i] for i in keep]
    found = {label for _, label in items}
    for label, entry in enumerate(class_dirs):
        if label not in found:
            raise DataError(f"no images found under {entry.path} (every class folder needs at least one image)")
    report(root, listing, duplicates)
    dataset = ImageDataset(items, [e.name for e in class_dirs], image_size, strict, source=root)
    dataset.duplicates, dataset.skipped_links = duplicates, listing.skipped_links
    return dataset


def parse_label(text: str, where: str) -> int:
    """A class label read from a file: an integer in ``0 … MAX_CLASSES − 1`` (checked before any class names
    are made, so ``999999999`` is an error, not a billion class names). ``where`` names the line or member."""
    try:
        label = int(text.strip())
    except ValueError:
        raise DataError(f"{where}: label {text.strip()!r} is not a non-negative integer") from None
    if label < 0:
        raise DataError(f"{where}: label {text.strip()!r} is not a non-negative integer")
    if label >= MAX_CLASSES:
        raise DataError(f"{where}: label {label} is out of range (at most {MAX_CLASSES} classes)")
    return label


def list_file(list_path: str | os.PathLike[str], root: str | os.PathLike[str], image_size: int,
              strict: bool = False) -> ImageDataset:
    """Items from a list file with one ``path [label]`` line per image (recipe §6).

    Paths are relative to ``root`` unless absolute and may not contain whitespace; the optional label is an
    integer in ``0 … MAX_CLASSES − 1``. Blank lines and lines starting with ``#`` are skipped. A labelled list
    gets classes ``'0'`` … ``str(max_label)``; a list mixing labelled and unlabelled lines is allowed
    (``has_labels`` is then False).
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
        label = parse_label(fields[1], f"{list_path}:{lineno}") if len(fields) == 2 else None
        items.append((os.path.join(root, fields[0]), label))
    if not items:
        raise DataError(f"no images found under {list_path} (the list file has no entries)")
    labels = [label for _, label in items if label is not None]
    classes = [str(i) for i in range(max(labels) + 1)] if labels else []
    return ImageDataset(items, classes, image_size, strict, source=list_path)


def _split_list_spec(spec: str) -> tuple[str, str] | None:
    """``(list path, root)`` of ``LIST`` or ``LIST@ROOT`` (first ``@`` after which a file exists), else None."""
    if os.path.isfile(spec):
        return spec, os.path.dirname(os.path.abspath(spec))
    for at, char in enumerate(spec):
        if char == "@" and os.path.isfile(spec[:at]):
            return spec[:at], spec[at + 1:]
    return None


# --- registrations ---------------------------------------------------------------------------------------------

@register_reader("digits", claims=lambda spec: spec == "digits", priority=0)
def _build_digits(spec: str, image_size: int, split: str | None, strict: bool) -> ImageDataset:
    return digits(image_size, split or "all")


@register_reader("folder", claims=os.path.isdir, priority=30)
def _build_folder(spec: str, image_size: int, split: str | None, strict: bool) -> ImageDataset:
    return image_folder(split_folder(spec, split), image_size, strict)


@register_reader("list", claims=lambda spec: _split_list_spec(spec) is not None, priority=40)
def _build_list(spec: str, image_size: int, split: str | None, strict: bool) -> ImageDataset:
    found = _split_list_spec(spec)
    if found is None:
        raise DataError(f"list file of {spec} not found")
    list_path, root = found
    if not os.path.isdir(root):
        raise DataError(f"image root {root} of list file {list_path} is not a folder")
    return list_file(list_path, root, image_size, strict)
