"""The one resolver behind every command that takes a checkpoint: a rectok ``.pt`` file, an export folder
(``rectok export``: ``model.safetensors`` + ``config.json``) or a Hugging Face Hub id ``owner/name[@revision]`` of
such a folder (downloaded with ``huggingface_hub.snapshot_download``; offline, a one-line error names the
local-folder alternative at once)."""
from __future__ import annotations

import logging
import re
from pathlib import Path

from rectok_core.errors import CheckpointError
from rectok_core.utils.env import network_available

logger = logging.getLogger(__name__)

HUB_ID = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+)(@(?P<rev>[\w./-]+))?$")

#: The files of an export folder that a download fetches.
EXPORT_FILES = ["config.json", "model.safetensors", "README.md"]


#: Names that are files, not Hub repositories (a missing ``runs/x.pt`` is not looked up on the Hub).
FILE_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".safetensors", ".json", ".npz")


def looks_like_hub_id(spec: str | Path) -> bool:
    s = str(spec)
    return bool(HUB_ID.match(s)) and not s.lower().endswith(FILE_SUFFIXES) and not Path(s).exists()


def resolve(spec: str | Path, revision: str | None = None, cache_dir: str | Path | None = None,
            local_files_only: bool = False) -> Path:
    """A local checkpoint file or export folder for ``spec`` (downloading a Hub id; ``revision``, ``cache_dir`` and
    ``local_files_only`` go to ``snapshot_download``); one-line errors otherwise."""
    p = Path(spec)
    if p.is_file():
        return p
    if p.is_dir():
        if not (p / "config.json").is_file():
            raise CheckpointError(f"{p} is a folder without config.json: not a rectok export folder (rectok export)")
        return p
    m = HUB_ID.match(str(spec))
    if not m or not looks_like_hub_id(spec):
        raise CheckpointError(f"checkpoint not found: {spec}")
    if p.parent.is_dir():  # ``runs/tokenzer`` beside an existing ``runs/``: a mistyped path, not a Hub id
        raise CheckpointError(f"checkpoint not found: {spec}: no such folder or Hub repo ({p.parent}/ holds no "
                              f"{p.name})")
    if revision and m.group("rev") and revision != m.group("rev"):
        raise CheckpointError(f"{spec} names revision {m.group('rev')}, revision= asks for {revision}: give one")
    return _download(m.group("repo"), revision or m.group("rev"), str(spec), cache_dir, local_files_only)


def _download(repo: str, revision: str | None, spec: str, cache_dir: str | Path | None = None,
              local_files_only: bool = False) -> Path:
    if not local_files_only and not network_available():
        raise CheckpointError(f"checkpoint not found: {spec} is no local file or folder, and as a Hugging Face Hub id "
                              f"it needs the network, which is unavailable (offline): download the folder elsewhere "
                              f"(hf download {repo} --local-dir DIR) and pass DIR")
    try:
        from huggingface_hub import snapshot_download

        folder = Path(snapshot_download(repo, revision=revision, allow_patterns=EXPORT_FILES, cache_dir=cache_dir,
                                        local_files_only=local_files_only))
    except Exception as e:  # noqa: BLE001 - any hub failure is one line
        if type(e).__name__ in ("RepositoryNotFoundError", "RevisionNotFoundError", "LocalEntryNotFoundError"):
            where = f" at revision {revision}" if revision else ""
            local = " in the local Hub cache (local_files_only)" if local_files_only else ""
            raise CheckpointError(f"checkpoint not found: {spec}: no such folder or Hub repo{where}{local}") from None
        raise CheckpointError(f"cannot download {spec} from the Hugging Face Hub: {type(e).__name__}: "
                              f"{' '.join(str(e).split())[:200]}") from None
    if not (folder / "config.json").is_file():
        raise CheckpointError(f"Hub repo {spec} holds no rectok export (no config.json): an official .pth file is "
                              f"converted with `rectok import-official`")
    logger.info("%s: %s", spec, folder)
    return folder
