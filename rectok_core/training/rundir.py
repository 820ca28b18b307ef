"""The run directory: resolved config, JSON-lines metrics, checkpoints and image grids.

Layout::

    OUT/config.json            resolved configuration (every default filled in)
    OUT/metrics.jsonl          one JSON object per log step (and events such as resume or NaN stop)
    OUT/config_history.jsonl   one line per resume: the step and the settings it changed ({key: [old, new]})
    OUT/checkpoints/latest.pt  newest checkpoint (atomic)
    OUT/checkpoints/step_XXXXXXX.pt  milestones: every tenth of the run by default (--milestones, --keep-every)
    OUT/best.pt                the checkpoint of the best evaluation by the main metric (with evaluation on);
                               every checkpoint records ``best``: {"metric", "value", "step"} of the best so far
    OUT/checkpoints/recent_XXXXXXX.pt  the checkpoints before latest.pt (RECENT_KEPT - 1 of them), all finite
    OUT/images/*.png           reconstruction / sample grids
    OUT/tensorboard/           TensorBoard event files (--log tensorboard)
    OUT/wandb/, OUT/wandb-id   the W&B run and its id (--log wandb; --resume continues the same W&B run)
"""
from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rectok_core.errors import RectokError
from rectok_core.training.logging import RunLogger
from rectok_core.utils.files import claim_output_dir, dumps_finite, remove_stale_temps, write_json_atomic, write_text_atomic

#: Finite checkpoints a run keeps: latest.pt and the ones before it (after a loss spike, an earlier one may be the
#: one to resume from: copy it over latest.pt).
RECENT_KEPT = 3


class RunDir:
    """The run folder of one training command. A new run needs a folder that is new, empty or marked as this
    command's (``claim_output_dir``); stale temporary files of a killed save are removed; ``checkpoints/`` and
    ``images/`` appear with their first file."""

    def __init__(self, out: str | Path, resume: bool, is_main: bool = True, command: str = "train"):
        if str(out).strip() == "":
            raise RectokError("--out '': give a folder for the run")
        self.path = Path(out)
        self.ckpt_dir = self.path / "checkpoints"
        self.image_dir = self.path / "images"
        self.latest = self.ckpt_dir / "latest.pt"
        self.best = self.path / "best.pt"
        self.is_main = is_main
        if resume and not self.latest.is_file():
            raise RectokError(f"--resume: no checkpoint to resume from at {self.latest}")
        if not resume and self.latest.is_file():
            raise RectokError(f"{self.path} already holds a run ({self.latest}); pass --resume to continue it "
                              f"or choose another --out")
        if is_main:
            claim_output_dir(self.path, command, own=("checkpoints/latest.pt",))
            for d in (self.path, self.ckpt_dir):
                remove_stale_temps(d)
        self.tracker = RunLogger(self.path, "jsonl", enabled=is_main)

    def write_config(self, cfg_dict: dict) -> None:
        if self.is_main:
            write_json_atomic(self.path / "config.json", cfg_dict, indent=2)

    def record_history(self, entry: dict[str, Any]) -> None:
        """Append ``entry`` (with the time) to ``config_history.jsonl``: what each resume changed."""
        if not self.is_main:
            return
        path = self.path / "config_history.jsonl"
        old = path.read_text() if path.is_file() else ""
        line = dumps_finite({"time": time.strftime("%Y-%m-%dT%H:%M:%S"), **entry}, default=str)
        write_text_atomic(path, old + line + "\n")

    def keep_recent(self, step: int | None) -> Path | None:
        """Before ``latest.pt`` (of ``step``) is replaced: keep it as ``recent_STEP.pt`` (a hard link, so no copy
        and no risk to latest.pt). Returns the link made (None when none was), for :meth:`prune_recent` after the
        save, or for removal when the save failed."""
        if not self.is_main or step is None or not self.latest.is_file():
            return None
        keep = self.ckpt_dir / f"recent_{step:07d}.pt"
        if keep.exists():
            return None
        try:
            os.link(self.latest, keep)
        except OSError:  # a file system without hard links keeps only latest.pt
            return None
        return keep

    def prune_recent(self) -> None:
        """Delete all but the newest :data:`RECENT_KEPT` - 1 ``recent_*.pt``."""
        for old in sorted(self.ckpt_dir.glob("recent_*.pt"))[:-(RECENT_KEPT - 1) or None]:
            with contextlib.suppress(OSError):
                old.unlink()

    def log(self, record: dict[str, Any]) -> None:
        """Append ``record`` to metrics.jsonl; a metric record (a ``step`` and no ``event``) also goes to the
        trackers started by :meth:`track`."""
        if not self.is_main:
            return
        if "step" in record and "event" not in record:
            self.tracker.scalars(record["step"], {k: v for k, v in record.items() if k != "step"})
        else:
            self.tracker.record(record)

    def track(self, trackers: str, config: dict | None, step: int, resume: bool) -> None:
        """Start the ``--log`` trackers (TensorBoard, W&B) of this run; ``step`` is where a resumed run restarts."""
        self.tracker.close()
        self.tracker = RunLogger(self.path, trackers, config=config, resume=resume, step=step, enabled=self.is_main)

    def image(self, tag: str, path: Path, step: int) -> None:
        """An image grid already saved at ``path``, to the trackers that show images."""
        if self.is_main:
            self.tracker.image(tag, path, step)

    def close(self) -> None:
        self.tracker.close()

    def milestone(self, step: int) -> Path:
        """The kept checkpoint of ``step`` (``checkpoints/step_XXXXXXX.pt``)."""
        return self.ckpt_dir / f"step_{step:07d}.pt"


def _jsonable(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return x.item() if x.numel() == 1 else x.tolist()
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    return str(x)


def read_metrics(path: str | Path) -> list[dict]:
    path = Path(path)
    if path.is_dir():
        path = path / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]



def newest_run_checkpoint(kind: str, root: str | Path = "runs") -> Path:
    """``ROOT/*/checkpoints/latest.pt`` of the most recently saved run of ``kind`` ("dit" or "tokenizer"), told
    apart by the run's config.json (a DiT run has a ``latents`` section); a one-line error when there is none."""
    found = []
    for cfg_path in Path(root).glob("*/config.json"):
        latest = cfg_path.parent / "checkpoints" / "latest.pt"
        try:
            is_dit = "latents" in json.loads(cfg_path.read_text())
        except (OSError, ValueError):
            continue
        if latest.is_file() and is_dit == (kind == "dit"):
            found.append((latest.stat().st_mtime, latest))
    if not found:
        raise RectokError(f"no {kind} run with a checkpoint under {root}/: give the checkpoint path")
    return max(found)[1]


def run_summary(out: str | Path) -> dict[str, Any]:
    """A finished run at a glance: its last metric record and the files it holds (checkpoint, config, metrics,
    image grids, tracker folders)."""
    path = Path(out)
    rows = read_metrics(path) if (path / "metrics.jsonl").is_file() else []
    final = next((r for r in reversed(rows) if "event" not in r and "step" in r), {})
    files: dict[str, str] = {}
    for key, p in (("checkpoint", path / "checkpoints" / "latest.pt"), ("config", path / "config.json"),
                   ("metrics", path / "metrics.jsonl")):
        if p.is_file():
            files[key] = str(p)
    kept = sorted((path / "checkpoints").glob("step_*.pt")) if (path / "checkpoints").is_dir() else []
    if kept:
        files["milestones"] = f"{path / 'checkpoints'} ({_count(len(kept), 'milestone')}: {kept[0].name} … {kept[-1].name})"
    if (path / "best.pt").is_file():
        files["best"] = str(path / "best.pt")
    images = sorted((path / "images").glob("*.png")) if (path / "images").is_dir() else []
    if images:
        files["images"] = f"{path / 'images'} ({_count(len(images), 'grid')}, latest {images[-1].name})"
    events = sorted((path / "tensorboard").glob("events.out.tfevents.*")) if (path / "tensorboard").is_dir() else []
    if events:
        files["tensorboard"] = f"{path / 'tensorboard'} ({_count(len(events), 'event file')})"
    if (path / "wandb-id").is_file():
        files["wandb"] = f"{path / 'wandb'} (run id {(path / 'wandb-id').read_text().strip()})"
    return {"step": final.get("step"), "metrics": {k: v for k, v in final.items() if k not in ("time", "step")},
            "files": files}


def _count(n: int, what: str) -> str:
    return f"{n} {what}{'' if n == 1 else 's'}"
