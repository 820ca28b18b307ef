"""Pieces shared by the training loops: the resumable batch stream and start-up logging."""
from __future__ import annotations

import logging
import time

import torch

from rectok_core.data.sampler import ResumableSampler, build_loader, drop_bad
from rectok_core.training.engine import (
    synchronize,
)
from rectok_core.training.rundir import RunDir

logger = logging.getLogger(__name__)


def log_first_step(run: RunDir, step: int, t0: float, device: torch.device, compiled: bool) -> None:
    """Log the wall time of a run's first step (with torch.compile: mostly the compilation warm-up)."""
    synchronize(device)
    seconds = round(time.perf_counter() - t0, 3)
    run.log({"event": "first_step", "step": step, "seconds": seconds, "compile": compiled})
    if compiled and run.is_main:
        logger.info("first step (torch.compile warm-up included): %.1f s", seconds)


class Batches:
    """Endless micro-batches from a resumable sampler: sets the epoch every epoch and can start mid-epoch."""

    def __init__(self, dataset, sampler: ResumableSampler, batch_size: int, per_epoch: int, workers: int,
                 device: torch.device):
        self.sampler = sampler
        self.batch_size, self.per_epoch = batch_size, per_epoch  # micro-batches used per epoch
        self.loader = build_loader(dataset, sampler, batch_size, workers, device.type == "cuda")
        self.bad = 0

    def start(self, epoch: int, skip_batches: int) -> None:
        self.epoch, self.left = epoch, self.per_epoch - skip_batches
        self.sampler.set_epoch(epoch)  # every epoch (the official code never does)
        self.sampler.set_start(skip_batches * self.batch_size)
        self.it = iter(self.loader)  # the loader re-reads the sampler; persistent workers stay up

    def next(self) -> dict:
        while True:
            if self.left == 0:
                self.start(self.epoch + 1, 0)
            self.left -= 1
            batch, n_bad = drop_bad(next(self.it))
            self.bad += n_bad
            if batch["index"].shape[0] > 0:  # every sample kind (images, cached latents) has an index
                return batch

