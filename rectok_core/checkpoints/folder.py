"""Reading rectok export folders (``model.safetensors`` + ``config.json``, written by ``rectok export``): the
checked config and the checkpoint dict they stand for. Writing them is :mod:`rectok_core.interop.export`'s."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rectok_core.checkpoints.registry import kind_mismatch
from rectok_core.data.latent_stats import LatentStats
from rectok_core.errors import CheckpointError
from rectok_core.utils import checkpoint, files

EXPORT_FORMAT = "rectok-export"
VERSION = 1
WEIGHTS_FILE = "model.safetensors"


def read_export_config(folder: str | Path) -> dict:
    """config.json of an export folder, checked: its format, and its weights file against the recorded sha256."""
    folder = Path(folder)
    try:
        cfg = json.loads((folder / "config.json").read_text())
    except OSError:
        raise CheckpointError(f"{folder} is not a rectok export folder (no config.json): make one with rectok "
                              f"export") from None
    except ValueError as e:
        raise CheckpointError(f"cannot read {folder / 'config.json'}: {e}") from None
    if not isinstance(cfg, dict) or cfg.get("format") != EXPORT_FORMAT:
        raise CheckpointError(f"{folder} is not a rectok export folder (config.json has no 'format: {EXPORT_FORMAT}')")
    wfile = folder / cfg.get("weights_file", WEIGHTS_FILE)
    if not wfile.is_file():
        raise CheckpointError(f"{folder} has no {wfile.name}")
    if files.file_sha256(wfile) != cfg.get("weights_sha256"):
        raise CheckpointError(f"{wfile} does not match the sha256 in {folder / 'config.json'} (changed or corrupt)")
    return cfg


def read_export(folder: str | Path, kind: str | None) -> dict:
    """The checkpoint dict of an export folder, as :func:`rectok_core.checkpoints.open_checkpoint` gives for a file."""
    from safetensors.torch import load_file

    folder = Path(folder)
    cfg = read_export_config(folder)
    if kind is not None and cfg.get("kind") != kind:
        raise kind_mismatch(folder, cfg.get("kind"), kind)
    wfile = folder / cfg.get("weights_file", WEIGHTS_FILE)
    state = load_file(str(wfile))
    ck: dict[str, Any] = {"format": checkpoint.FORMAT, "version": checkpoint.VERSION, "kind": cfg["kind"],
                          "stage": cfg.get("stage"), "config": cfg.get("config"), "step": cfg.get("step") or 0,
                          "epoch": cfg.get("epoch"), "ema" if cfg["weights"] == "ema" else "model": state,
                          "imported": cfg.get("imported"), "export": cfg,
                          "_identity": {"path": str(folder), "sha256": cfg["checkpoint_sha256"]}}
    stats = cfg.get("latent_stats")
    if stats is not None:
        ck["latent_stats"] = LatentStats.from_json(stats).state()
    if cfg["kind"] == "dit":
        tok = dict(cfg["tokenizer"])
        ref = tok.pop("ref", None)
        if ref:
            family, sep, source = ref.partition(":")  # FAMILY:FILE of another tokenizer family, FILE in the folder
            if sep and not (folder / ref).exists() and (folder / source).exists():
                tok["path"] = f"{family}:{folder / source}"
            else:
                tok["path"] = str(folder / ref) if (folder / ref).exists() else ref
        ck.update({k: cfg[k] for k in ("dit_config", "generator") if k in cfg})
        ck.update(tokenizer=tok, classes=cfg["classes"], num_classes=cfg["num_classes"],
                  latents=cfg.get("latents"))
    return ck
