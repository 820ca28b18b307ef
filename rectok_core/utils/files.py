"""Atomic file writes, content hashes and writable-destination checks."""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import math
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from rectok_core.errors import RectokError

logger = logging.getLogger(__name__)


def file_sha256(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "wb", fsync: bool = False) -> Iterator[IO]:
    """Open a temporary file beside ``path`` for writing; on success it is renamed over ``path`` (readers see the
    old file or the new one, never half of one), on any error it is removed. The file gets the mode a plain
    ``open`` would give it (0666 less the umask: 0644 usually), not the 0600 of a temporary file; a full disk is a
    one-line :class:`DiskFull`."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        if e.errno == errno.ENOSPC:
            raise DiskFull(path) from None
        raise
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if is_disk_full(e):
            raise DiskFull(path, getattr(e, "needed", None)) from None
        raise


def file_mode() -> int:
    """The permission bits of a newly created file: 0666 less the process umask (read without changing it where
    /proc says it, else set and restored at once)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


#: What a writer that swallows the OSError says instead: torch's zip writer ("PytorchStreamWriter failed writing
#: file ...: file write failed", "unexpected pos N vs M"), and numpy/zipfile short writes.
_FULL_DISK_TEXT = ("unexpected pos", "file write failed", "PytorchStreamWriter failed", "No space left on device")


def is_disk_full(e: BaseException) -> bool:
    """Whether ``e`` is a write that failed for want of space: ENOSPC itself (also EDQUOT, a full quota) or a
    library's wrapping of it (torch's zip writer raises a RuntimeError that has lost the errno)."""
    if isinstance(e, OSError):
        return e.errno in (errno.ENOSPC, errno.EDQUOT)
    if isinstance(e, RuntimeError):
        if isinstance(e.__cause__ or e.__context__, OSError):
            return is_disk_full(e.__cause__ or e.__context__)
        return any(t in str(e) for t in _FULL_DISK_TEXT)
    return False


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """``text`` written to ``path`` atomically (see :func:`atomic_open`)."""
    with atomic_open(path, "w") as f:
        f.write(text)
    return Path(path)


def write_json_atomic(path: str | os.PathLike[str], obj: Any, indent: int = 1, default: Any = None) -> Path:
    """JSON written to ``path`` atomically (see :func:`atomic_open`); non-finite numbers become null and their
    keys are listed under ``"nonfinite"`` (:func:`finite_json`), so the file is always valid JSON."""
    return write_text_atomic(path, dumps_finite(obj, indent=indent, default=default) + "\n")


def finite_json(obj: Any) -> tuple[Any, list[str]]:
    """``obj`` with every NaN/inf float replaced by None, and the dotted paths of the replaced values."""
    bad: list[str] = []

    def walk(x: Any, where: str) -> Any:
        if isinstance(x, float) and not math.isfinite(x):
            bad.append(where or "value")
            return None
        if isinstance(x, dict):
            return {k: walk(v, f"{where}.{k}" if where else str(k)) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [walk(v, f"{where}[{i}]") for i, v in enumerate(x)]
        return x

    return walk(obj, ""), bad


def dumps_finite(obj: Any, indent: int | None = None, default: Any = None) -> str:
    """``json.dumps`` that never writes NaN/Infinity (invalid JSON): such values become null and a mapping gets
    ``"nonfinite": [their keys]``."""
    if default is not None:  # let ``default`` turn tensors etc. into numbers first, then sanitise those
        obj = json.loads(json.dumps(obj, default=default))
    clean, bad = finite_json(obj)
    if bad and isinstance(clean, dict):
        clean["nonfinite"] = sorted(set(clean.get("nonfinite") or []) | set(bad))
    return json.dumps(clean, indent=indent, allow_nan=False)


class DiskFull(RectokError):
    """A write ran out of space (ENOSPC); nothing half-written is left behind."""

    def __init__(self, path: str | os.PathLike[str], needed: int | None = None):
        self.path = Path(path)
        try:
            st = os.statvfs(self.path.parent if not self.path.is_dir() else self.path)
            free = st.f_bavail * st.f_frsize
        except OSError:
            free = None
        need = f"{needed / 1e6:.1f} MB needed, " if needed else ""
        have = f"{free / 1e6:.1f} MB free" if free is not None else "free space unknown"
        super().__init__(f"disk full writing {self.path} ({need}{have}): nothing was half-written; free some space "
                         f"and run the command again")


def remove_stale_temps(folder: str | os.PathLike[str]) -> list[Path]:
    """Delete the ``.NAME.*.tmp`` files a killed :func:`atomic_open` left in ``folder`` (call at start-up)."""
    folder = Path(folder)
    gone = []
    for p in folder.glob(".*.tmp") if folder.is_dir() else ():
        with contextlib.suppress(OSError):
            p.unlink()
            gone.append(p)
    return gone


OWNER_FILE = ".rectok-owner.json"


_OVERWRITE_HINT = ", or add --overwrite to write into it anyway"


def claim_output_dir(path: str | os.PathLike[str], command: str, flag: str = "--out",
                     own: tuple[str, ...] = (), create: bool = True, owns: Callable[[Path], bool] | None = None,
                     overwrite: bool | None = None) -> Path:
    """Make sure ``path`` is a folder that ``rectok COMMAND`` may write into: one that does not exist yet (created),
    an empty one (or one holding only empty folders), or one this command wrote before (its ``.rectok-owner.json``
    marker, one of the ``own`` manifest files that only this command writes, or ``owns(folder)`` true). Anything
    else is refused with a one-line error before any compute, as is a folder that cannot be written, unless
    ``overwrite`` (a command's ``--overwrite``; None: the command has no such option). Returns the folder (with
    the marker written)."""
    if str(path).strip() == "":
        raise RectokError(f"{flag} '': give a folder")
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise RectokError(f"{flag} {folder}: is a file, not a folder")
    marker = folder / OWNER_FILE
    if folder.is_dir():
        owner = _owner(marker)
        # empty folders (a `checkpoints/` made by hand) hold nobody's data
        entries = [p.name for p in folder.iterdir() if p.name != OWNER_FILE and not _empty_tree(p)]
        if owner is not None and owner != command and not overwrite:
            raise RectokError(f"{flag} {folder} belongs to `rectok {owner}`, not `rectok {command}`: choose another "
                              f"folder{_OVERWRITE_HINT if overwrite is not None else ''}")
        mine = any((folder / o).exists() for o in own) or (owns is not None and owns(folder))
        if owner is None and entries and not mine and not overwrite:
            shown = ", ".join(sorted(entries)[:3]) + (", ..." if len(entries) > 3 else "")
            raise RectokError(f"{flag} {folder} already holds files that `rectok {command}` did not write ({shown}): "
                              f"choose a new or empty folder{_OVERWRITE_HINT if overwrite is not None else ''}")
    if not create:
        return folder
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if _owner(marker) != command:
            write_json_atomic(marker, {"command": command})
    except OSError as e:
        raise RectokError(f"cannot write to {flag} {folder}: {e.strerror or e}") from None
    return folder


def _empty_tree(p: Path) -> bool:
    """A folder holding nothing but (recursively) empty folders."""
    try:
        return p.is_dir() and not p.is_symlink() and all(_empty_tree(c) for c in p.iterdir())
    except OSError:
        return False


def _owner(marker: Path) -> str | None:
    try:
        return str(json.loads(marker.read_text())["command"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def check_writable_file(path: str | os.PathLike[str], flag: str) -> Path:
    """Check, before any compute, that the output file ``path`` of option ``flag`` can be written: its folder
    exists or can be created and accepts a file, and ``path`` itself is not a folder."""
    if str(path).strip() == "":
        raise RectokError(f"{flag} '': give a file name")
    p = Path(path)
    if p.is_dir():
        raise RectokError(f"{flag} {p}: is a folder, give a file name")
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=".write-test.", suffix=".tmp")
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        raise RectokError(f"cannot write {flag} {p}: {e.strerror or e}") from None
    return p


def ensure_writable(folder: str | Path, named: str | Path | None = None) -> Path:
    """Create ``folder`` and check that a file can be written in it; else a one-line error naming ``--out
    named`` (default: the folder itself)."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise RectokError(f"cannot write to --out {named or folder}: {e.strerror or e}") from None
    return folder


def check_own_file(path: str | os.PathLike[str], flag: str, command: str, owns: Callable[[Path], bool],
                   overwrite: bool = False) -> Path:
    """:func:`check_writable_file` for an output file of ``rectok COMMAND``: an existing file is replaced only when
    ``owns(path)`` recognises it (its format header: a file this command wrote) or with ``--overwrite``; anything
    else is refused with one line before any compute."""
    p = check_writable_file(path, flag)
    if p.exists() and not overwrite:
        try:
            mine = owns(p)
        except (OSError, ValueError, KeyError, TypeError, UnicodeDecodeError):
            mine = False
        if not mine:
            raise RectokError(f"{flag} {p} exists and was not written by `rectok {command}`: choose another file "
                              f"name, or add --overwrite to replace it")
    return p


def check_result_file(path: str | os.PathLike[str], flag: str, command: str,
                      keys: tuple[str, ...] = ("metrics", "manifest")) -> Path:
    """:func:`check_writable_file` for a JSON result of ``rectok COMMAND``; an existing file is replaced only when it
    is such a result (a JSON object with ``keys``), never someone else's file."""
    p = check_writable_file(path, flag)
    if p.exists():
        try:
            doc = json.loads(p.read_text())
            own = isinstance(doc, dict) and all(k in doc for k in keys)
        except (OSError, ValueError, UnicodeDecodeError):
            own = False
        if not own:
            raise RectokError(f"{flag} {p} exists and is not a `rectok {command}` result: choose another file name")
    return p


def read_format_json(path: str | os.PathLike[str], fmt: str, what: str, error: type[Exception] = RectokError) -> dict:
    """The JSON object in ``path`` whose ``format`` is ``fmt``; ``error`` (one line) when it is unreadable or of
    another format. ``what`` names the document in the message (e.g. "rectok latent-cache index")."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise error(f"cannot read {path}: {e}") from None
    if not isinstance(doc, dict) or doc.get("format") != fmt:
        raise error(f"{path} is not a {what}")
    return doc
