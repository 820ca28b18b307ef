"""The run directory: resolved config, JSON-lines metrics, checkpoints and image grids.

Layout::

    OUT/config.json            resolved configuration (every default filled in)
    OUT/metrics.jsonl          one JSON object per log step (and events such as resume or NaN stop)
    OUT/checkpoints/latest.pt  newest checkpoint (atomic); step_XXXXXXX.pt milestones with --keep-every
    OUT/images/*.png           reconstruction / sample grids
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rectok_core.errors import RectokError
from rectok_core.utils.files import ensure_writable


class RunDir:
    def __init__(self, out: str | Path, resume: bool, is_main: bool = True):
        self.path = Path(out)
        self.ckpt_dir = self.path / "checkpoints"
        self.image_dir = self.path / "images"
        self.latest = self.ckpt_dir / "latest.pt"
        self.is_main = is_main
        if resume and not self.latest.is_file():
            raise RectokError(f"--resume: no checkpoint to resume from at {self.latest}")
        if not resume and self.latest.is_file():
            raise RectokError(f"{self.path} already holds a run ({self.latest}); pass --resume to continue it "
                              f"or choose another --out")
        if is_main:
            for d in (self.ckpt_dir, self.image_dir):
                ensure_writable(d, self.path)

    def write_config(self, cfg_dict: dict) -> None:
        if self.is_main:
            tmp = self.path / ".config.json.tmp"
            tmp.write_text(json.dumps(cfg_dict, indent=2) + "\n")
            os.replace(tmp, self.path / "config.json")

    def log(self, record: dict[str, Any]) -> None:
        if self.is_main:
            record = {"time": round(time.time(), 3), **record}
            with open(self.path / "metrics.jsonl", "a") as f:
                f.write(json.dumps(record, default=_jsonable) + "\n")

    def milestone(self, step: int) -> Path:
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

