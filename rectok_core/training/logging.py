"""Experiment tracking: one fan-out logger over the run's trackers (``--log jsonl,tensorboard,wandb``).

``jsonl`` (``OUT/metrics.jsonl``, what :func:`~rectok_core.training.rundir.read_metrics` reads) is always on;
``tensorboard`` writes event files to ``OUT/tensorboard``; ``wandb`` (the optional ``rectok[wandb]`` extra) logs to a
W&B run whose id is stored in ``OUT/wandb-id``, so ``--resume`` continues the same W&B run (``WANDB_MODE=offline``
writes it under ``OUT/wandb`` for a later ``wandb sync``).

Training scalars are tagged ``train/<name>``; results logged to a run afterwards (:func:`log_results_to_run`: eval,
probe-flow, bench) use their own prefix, e.g. ``eval/psnr``.
"""
from __future__ import annotations

import atexit
import logging
import math
import os
import secrets
import time
from pathlib import Path
from typing import Any

import numpy as np

from rectok_core.errors import RectokError
from rectok_core.training.trackers import TRACKERS, parse_log_spec  # noqa: F401 - re-exported
from rectok_core.utils.files import dumps_finite, write_text_atomic

logger = logging.getLogger(__name__)

TB_DIR = "tensorboard"
WANDB_ID_FILE = "wandb-id"
WANDB_PROJECT = "rectok"


def _jsonable(x: Any) -> Any:
    if hasattr(x, "numel") and hasattr(x, "tolist"):  # a torch tensor
        return x.item() if x.numel() == 1 else x.tolist()
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    return str(x)


def numeric(values: dict[str, Any]) -> dict[str, float]:
    """The finite-or-not numbers among ``values`` (bools as 0/1, one-element tensors as floats)."""
    out = {}
    for k, v in values.items():
        if hasattr(v, "numel") and v.numel() == 1:
            v = v.item()
        if isinstance(v, (bool, int, float, np.floating, np.integer)):
            out[k] = float(v)
    return out


def _image_array(image: str | Path | np.ndarray) -> np.ndarray:
    """An (H, W, 3) uint8 array from a PNG path or an array (HWC or CHW; uint8 or floats in [0, 1])."""
    if isinstance(image, (str, Path)):
        from PIL import Image

        return np.asarray(Image.open(image).convert("RGB"))
    a = np.asarray(image)
    if a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[-1] not in (1, 3):
        a = a.transpose(1, 2, 0)
    if a.dtype != np.uint8:
        a = (np.clip(a, 0, 1) * 255).round().astype(np.uint8)
    return a


class JsonlSink:
    def __init__(self, path: Path):
        self.path = path

    def record(self, record: dict[str, Any]) -> None:
        with open(self.path, "a") as f:
            f.write(dumps_finite({"time": round(time.time(), 3), **record}, default=_jsonable) + "\n")

    def scalars(self, step: int, values: dict[str, float], prefix: str) -> None:  # the record holds them
        pass

    def image(self, tag: str, image: Any, step: int) -> None:  # the PNG is in OUT/images
        pass

    def close(self) -> None:
        pass


def flat_config(config: dict, prefix: str = "") -> dict[str, Any]:
    """A nested config as ``{"section/key": value}`` of numbers, bools and strings (others as text)."""
    out: dict[str, Any] = {}
    for k, v in config.items():
        if isinstance(v, dict):
            out.update(flat_config(v, f"{prefix}{k}/"))
        else:
            out[f"{prefix}{k}"] = v if isinstance(v, (bool, int, float, str)) else str(v)
    return out


class TensorBoardSink:
    """Event files in ``log_dir``; the run's config goes in once (the first session): as hyperparameters (the HPARAMS
    tab, linked to ``train/loss``) and as a text summary ``config``."""

    def __init__(self, log_dir: Path, purge_step: int | None = None, config: dict | None = None):
        from torch.utils.tensorboard import SummaryWriter

        self.log_dir = log_dir
        first = not any(log_dir.glob("events.out.tfevents.*"))
        self.writer = SummaryWriter(str(log_dir), purge_step=purge_step or None, flush_secs=30)
        if config and first:
            self.config(config)

    def config(self, config: dict) -> None:
        import json

        from torch.utils.tensorboard.summary import hparams

        for summary in hparams(flat_config(config), {"train/loss": 0.0}):  # in this run's folder, no sub-run
            self.writer.file_writer.add_summary(summary)
        text = json.dumps(config, indent=2, default=str)
        self.writer.add_text("config", "\n".join("    " + line for line in text.splitlines()), 0)

    def scalars(self, step: int, values: dict[str, float], prefix: str) -> None:
        for k, v in values.items():
            self.writer.add_scalar(f"{prefix}{k}", v, step)

    def image(self, tag: str, image: Any, step: int) -> None:
        self.writer.add_image(tag, _image_array(image), step, dataformats="HWC")

    def close(self) -> None:
        self.writer.close()


class WandbSink:
    """A W&B run in ``run_dir/wandb``; its id lives in ``run_dir/wandb-id`` so a resumed run logs to the same one."""

    def __init__(self, run_dir: Path, config: dict | None, resume: bool):
        import wandb

        id_file = run_dir / WANDB_ID_FILE
        run_id = id_file.read_text().strip() if id_file.is_file() else None
        if run_id is None:
            if resume:
                logger.warning("%s has no %s: --resume starts a new W&B run", run_dir, WANDB_ID_FILE)
            run_id = secrets.token_hex(4)  # W&B ids: lowercase letters and digits
            write_text_atomic(id_file, run_id + "\n")
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", WANDB_PROJECT), id=run_id, resume="allow",
                              dir=str(run_dir), name=run_dir.resolve().name, config=config,
                              settings=wandb.Settings(silent=True))
        self.id = run_id
        self.dir = Path(self.run.dir).parent

    def scalars(self, step: int, values: dict[str, float], prefix: str) -> None:
        self.run.log({f"{prefix}{k}": v for k, v in values.items()}, step=step)

    def image(self, tag: str, image: Any, step: int) -> None:
        import wandb

        self.run.log({tag: wandb.Image(_image_array(image))}, step=step)

    def close(self) -> None:
        self.run.finish()


class RunLogger:
    """Fan-out over the trackers of one run directory: :meth:`record` (any JSON record: metrics.jsonl only),
    :meth:`scalars` (a metric record: metrics.jsonl and the numeric values to every tracker), :meth:`image`,
    :meth:`close`. Ranks other than 0 get a logger that writes nothing (``enabled=False``)."""

    def __init__(self, run_dir: str | Path, trackers: str | tuple[str, ...] = "jsonl", config: dict | None = None,
                 resume: bool = False, step: int = 0, enabled: bool = True, prefix: str = "train/",
                 jsonl: bool = True):
        self.path = Path(run_dir)
        self.trackers = parse_log_spec(trackers) if isinstance(trackers, str) else tuple(trackers)
        self.prefix = prefix
        self.jsonl = JsonlSink(self.path / "metrics.jsonl") if enabled and jsonl else None
        self.sinks: list[Any] = []
        self._closed = not enabled
        if not enabled:
            return
        if "tensorboard" in self.trackers:
            # purge_step: TensorBoard hides the previous session's events after the checkpoint a resumed run restarts
            # from (logged by the killed process, redone now); those up to the checkpoint's step stay
            self.sinks.append(TensorBoardSink(self.path / TB_DIR, purge_step=step + 1 if resume and step else None,
                                              config=config))
        if "wandb" in self.trackers:
            self.sinks.append(WandbSink(self.path, config, resume))
        atexit.register(self.close)

    def record(self, record: dict[str, Any]) -> None:
        if self.jsonl is not None:
            self.jsonl.record(record)

    def scalars(self, step: int, values: dict[str, Any]) -> None:
        """Log a metric record at ``step``: all of it to metrics.jsonl, its finite numbers to the trackers."""
        self.record({**values, "step": step})
        nums = {k: v for k, v in numeric(values).items() if k != "step" and math.isfinite(v)}
        for s in self.sinks:
            s.scalars(step, nums, self.prefix)

    def image(self, tag: str, path_or_array: str | Path | np.ndarray, step: int) -> None:
        for s in self.sinks:
            s.image(tag, path_or_array, step)

    def files(self) -> dict[str, str]:
        """What the trackers wrote: the metrics file, the TensorBoard folder, the W&B run folder."""
        out = {}
        if (self.path / "metrics.jsonl").is_file():
            out["metrics"] = str(self.path / "metrics.jsonl")
        for s in self.sinks:
            if isinstance(s, TensorBoardSink):
                out["tensorboard"] = str(s.log_dir)
            elif isinstance(s, WandbSink):
                out["wandb"] = f"{s.dir} (run id {s.id})"
        return out

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for s in self.sinks:
            try:
                s.close()
            except Exception as e:  # a tracker that fails at shutdown must not hide the run's own result
                logger.warning("closing %s failed: %s", type(s).__name__, e)


def run_dir_of(checkpoint: str | Path) -> Path | None:
    """The run directory a checkpoint lives in (``RUN/checkpoints/X.pt`` with ``RUN/config.json``), else None."""
    p = Path(checkpoint).resolve()
    if p.parent.name == "checkpoints" and (p.parent.parent / "config.json").is_file():
        return p.parent.parent
    return None


def results_run(checkpoint: str | Path, trackers: str) -> Path | None:
    """The run folder that ``--log`` results of ``checkpoint`` go to (None when ``trackers`` is empty); a checkpoint
    outside a run folder is an error."""
    if not trackers:
        return None
    parse_log_spec(trackers)
    run = run_dir_of(checkpoint)
    if run is None:
        raise RectokError(f"--log {trackers}: {checkpoint} is not in a run folder (RUN/checkpoints/*.pt beside "
                          f"RUN/config.json), so there is no run to log the results to")
    return run


def log_figure_to_run(run_dir: str | Path, tag: str, record: dict[str, Any], figure: np.ndarray, step: int,
                      trackers: str = "tensorboard") -> RunLogger:
    """Append a result that is a curve (e.g. probe-flow's accuracy against t) to an existing run as one figure
    ``tag`` at ``step`` for the trackers, and its numbers as an ``{"event": tag, ...}`` record in metrics.jsonl."""
    path = Path(run_dir)
    rl = RunLogger(path, trackers, resume=True, jsonl=False)
    JsonlSink(path / "metrics.jsonl").record({"event": tag, "step": step, **record})
    rl.image(tag, figure, step)
    rl.close()
    return rl


def log_results_to_run(run_dir: str | Path, prefix: str, values: dict[str, Any], step: int,
                       trackers: str = "tensorboard") -> RunLogger:
    """Append a result set (eval, probe-flow, bench numbers) to the trackers of an existing run, tagged
    ``prefix/<name>`` at ``step``; metrics.jsonl gets an ``{"event": prefix, ...}`` record. W&B continues the run's
    own id (``wandb-id``)."""
    path = Path(run_dir)
    rl = RunLogger(path, trackers, resume=True, prefix=f"{prefix.rstrip('/')}/", jsonl=False)
    JsonlSink(path / "metrics.jsonl").record({"event": prefix, "step": step, **values})
    nums = {k: v for k, v in numeric(values).items() if math.isfinite(v)}
    for s in rl.sinks:
        s.scalars(step, nums, rl.prefix)
    rl.close()
    return rl
