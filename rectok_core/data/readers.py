"""Dataset readers: image folders, list files and the built-in digits."""
from __future__ import annotations

import logging
import os

from rectok_core.data.datasets import (
    IMAGE_EXTENSIONS,
    SPLIT_NAMES,
    ImageDataset,
    Item,
    digits,
)
from rectok_core.errors import DataError, _one_line

logger = logging.getLogger(__name__)


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

