"""Finding image files: the one extension list and the one folder walker (datasets and FID folders).

The walk follows symbolic links, but lists every real folder once: a link to a folder that holds it
(``cls0/loop -> ..``) is a loop, a link to a folder listed already (``cls0/more -> ../cls1``) is a repeat, and
neither is followed. Real folders are listed before symlinked ones, so files inside the tree keep their real
path. Hidden files and folders (``.name``) are skipped. The result is sorted by
path components (``a/z.png`` before ``a.b/c.png``), so it does not depend on the file system's listing order.

The same file reached through several paths (symlinks, hard links do not count) is kept once by
:func:`unique_files`: the first path in order, or, with ``prefer``, the path whose real location lies inside its
own preferred folder, so that a link in class folder ``A`` to an image of class ``B`` never gives that image
label ``A``.
"""
from __future__ import annotations

import glob
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from rectok_core.errors import DataError, _one_line

logger = logging.getLogger(__name__)


#: File name suffixes recognised as images (compared case-insensitively); the set torchvision uses.
IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def is_image_name(name: str) -> bool:
    """Whether a file name looks like an image (a known suffix, not hidden)."""
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


@dataclass
class Listing:
    """Image files under a folder, and the symlinked folders that were not followed."""

    files: list[str] = field(default_factory=list)
    loops: list[str] = field(default_factory=list)  # links to a folder that contains them
    repeats: list[str] = field(default_factory=list)  # links to a folder already listed

    @property
    def skipped_links(self) -> int:
        return len(self.loops) + len(self.repeats)


def _real(path: str) -> str:
    return os.path.realpath(path)


def _sort_key(path: str) -> tuple[str, ...]:
    return tuple(path.split(os.sep))


def scan_images(folder: str | os.PathLike[str]) -> Listing:
    """Image files anywhere under ``folder``, sorted by path components, each folder listed once.

    The real folders are listed first; then the symlinked ones, in the order found, each followed only when its
    target has not been listed yet (a link to the folder holding it, or to an ancestor, is a loop). A file
    inside the tree is thus listed under its real folder, not under a link to it. Raises :class:`DataError` when
    a folder cannot be listed.
    """
    top = os.fspath(folder)
    listing = Listing()
    entered: set[str] = set()
    real_dirs: list[tuple[str, tuple[str, ...]]] = [(top, ())]
    links: list[tuple[str, tuple[str, ...]]] = []
    while real_dirs or links:
        if real_dirs:
            path, ancestors = real_dirs.pop()
        else:
            path, ancestors = links.pop(0)
        real = _real(path)
        if real in ancestors:
            listing.loops.append(path)
            continue
        if real in entered:
            listing.repeats.append(path)
            continue
        entered.add(real)
        try:
            with os.scandir(path) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            raise DataError(f"cannot list {exc.filename or path}: {_one_line(exc)}") from exc
        subdirs = []
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                is_dir = entry.is_dir()  # follows links; a dangling link is neither a folder nor a file
                is_file = not is_dir and entry.is_file()
                is_link = is_dir and entry.is_symlink()
            except OSError:
                continue
            if is_link:
                links.append((entry.path, ancestors + (real,)))
            elif is_dir:
                subdirs.append((entry.path, ancestors + (real,)))
            elif is_file and is_image_name(entry.name):
                listing.files.append(entry.path)
        real_dirs.extend(reversed(subdirs))  # popped in name order
    listing.files.sort(key=_sort_key)
    return listing


def unique_files(paths: Sequence[str], prefer: Callable[[int], str | None] | None = None) -> tuple[list[int], int]:
    """Indices of ``paths`` to keep so that every real file appears once, in order; and how many were dropped.

    Without ``prefer`` the first path of each real file is kept. ``prefer(i)`` may name a folder (a real path)
    where path ``i`` ought to live: among the paths of one real file, the first whose real file lies inside its
    preferred folder wins (an image in class folder ``B`` linked from class folder ``A`` keeps label ``B``).
    """
    groups: dict[str, list[int]] = {}
    for i, path in enumerate(paths):
        groups.setdefault(_real(path), []).append(i)
    keep = []
    for real, group in groups.items():
        chosen = group[0]
        if prefer is not None and len(group) > 1:
            for i in group:
                home = prefer(i)
                if home is not None and real.startswith(home.rstrip(os.sep) + os.sep):
                    chosen = i
                    break
        keep.append(chosen)
    keep.sort()
    return keep, len(paths) - len(keep)


def list_images(folder: str | os.PathLike[str]) -> list[str]:
    """Image files under ``folder`` (recursive, sorted, each real file once; see the module docs).

    Raises :class:`DataError` when ``folder`` is not a folder. Skipped loops and duplicates are logged.
    """
    root = os.fspath(folder)
    if not os.path.isdir(root):
        reason = "not a folder" if os.path.exists(root) else "folder does not exist"
        raise DataError(f"image folder not found: {root} ({reason})")
    listing = scan_images(root)
    keep, duplicates = unique_files(listing.files)
    report(root, listing, duplicates)
    return [listing.files[i] for i in keep]


#: ``--data`` specs that name no path (built-in datasets): kept as written.
KEYWORD_SPECS: frozenset[str] = frozenset({"digits"})


def absolute_spec(spec: str) -> str:
    """``spec`` with its local paths made absolute, so that a config saved with it works from any folder.

    An existing file or folder, the list and root of ``LIST@ROOT``, and the folder of a glob that matches are made
    absolute; keywords (``digits``), URLs and what exists nowhere here (a Hugging Face Hub id ``owner/name``, a typo
    that fails later with its own message) are kept as written.
    """
    if not spec or spec in KEYWORD_SPECS or "://" in spec:
        return spec
    if os.path.exists(spec):
        return os.path.abspath(spec)
    for at, char in enumerate(spec):  # LIST@ROOT (the first '@' after which the list file exists)
        if char == "@" and os.path.isfile(spec[:at]):
            root = spec[at + 1:]
            return f"{os.path.abspath(spec[:at])}@{os.path.abspath(root) if os.path.exists(root) else root}"
    if glob.has_magic(spec) and glob.glob(spec):
        return os.path.abspath(spec)
    return spec


def report(root: str, listing: Listing, duplicates: int) -> None:
    """Log the symlinked folders not followed and the duplicate files dropped under ``root`` (when any)."""
    if listing.skipped_links:
        logger.warning("%s: did not follow %d symlinked folder(s): %d loop(s), %d already listed", root,
                       listing.skipped_links, len(listing.loops), len(listing.repeats))
    if duplicates:
        logger.warning("%s: dropped %d duplicate image(s) (the same file reached through symlinks)", root,
                       duplicates)
