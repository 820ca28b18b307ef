"""Opening a checkpoint named by a user: a rectok ``.pt`` file, an export folder or a Hub id of one."""
from __future__ import annotations

from pathlib import Path

from rectok_core.checkpoints.folder import read_export
from rectok_core.checkpoints.registry import kind_mismatch
from rectok_core.checkpoints.resolve import resolve
from rectok_core.utils import checkpoint


def open_checkpoint(spec: str | Path, kind: str | None = None, map_location: str = "cpu") -> dict:
    """The checkpoint dict of ``spec`` (file, export folder or Hub id), checked to hold ``kind`` when given.

    An export folder gives the same dict as the file it was exported from (one set of weights), with
    ``_identity`` = its local path and the sha256 of its source checkpoint.
    """
    path = resolve(spec)
    if path.is_dir():
        return read_export(path, kind)
    ck = checkpoint.read(path, map_location)
    if kind is not None and ck.get("kind") != kind:
        raise kind_mismatch(path, ck.get("kind"), kind)
    return ck
