"""The resumable, rank-aware sampler and the data loader around it."""
from __future__ import annotations

import logging
import math
from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate

from rectok_core.data.datasets import Sample
from rectok_core.errors import DataError
from rectok_core.utils.env import default_workers

logger = logging.getLogger(__name__)


def drop_bad(batch: Sample) -> tuple[Sample, int]:
    """Remove the samples with ``ok=False`` from a collated batch; returns the batch and how many went."""
    ok = batch["ok"]
    n_bad = int((~ok).sum())
    if n_bad == 0:
        return batch, 0
    return {key: value[ok] for key, value in batch.items()}, n_bad


def _seed_for(*words: int) -> int:
    """A 63-bit seed mixing ``words`` (distinct tuples give unrelated streams, unlike ``seed + epoch``)."""
    return int(np.random.SeedSequence(list(words)).generate_state(2, dtype=np.uint64)[0] >> np.uint64(1))


_PERMUTATION_STREAM = 0


_FLIP_STREAM = 1


class ResumableSampler(Sampler):
    """Distributed, deterministic, resumable sampler (recipe §6, §11.4).

    Per epoch, the dataset order is ``torch.randperm`` seeded by ``(seed, epoch)`` (or ``0 … n-1`` without
    ``shuffle``), cut (``drop_last``) or padded with its own head so it splits evenly into ``world_size`` ranks,
    exactly like ``DistributedSampler``; rank ``r`` takes positions ``r::world_size``. With ``flip``, every
    position also gets a flip bit (p = 0.5) from ``(seed, epoch, position)`` and the sampler yields
    ``(index, flip)`` keys, otherwise plain indices.

    Call :meth:`set_epoch` at the start of every epoch (it also clears :meth:`set_start`), then, to resume in the
    middle of an epoch, ``set_start(batches_done * batch_size)``. ``batch_size`` only serves
    :attr:`steps_per_epoch`.
    """

    def __init__(self, dataset_len: int, rank: int = 0, world_size: int = 1, seed: int = 0, shuffle: bool = True,
                 flip: bool = False, drop_last: bool = True, batch_size: int = 1) -> None:
        if dataset_len < 1:
            raise ValueError(f"cannot sample from an empty dataset (dataset_len={dataset_len})")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"invalid rank {rank} for world size {world_size}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if seed < 0:
            raise ValueError(f"seed must be non-negative, got {seed}")
        self.dataset_len = dataset_len
        self.rank = rank
        self.world_size = world_size
        self.seed = seed
        self.shuffle = shuffle
        self.flip = flip
        self.drop_last = drop_last
        self.batch_size = batch_size
        if drop_last:
            self.num_samples = dataset_len // world_size
        else:
            self.num_samples = math.ceil(dataset_len / world_size)
        self.total_size = self.num_samples * world_size
        if drop_last and self.steps_per_epoch == 0:
            raise DataError(f"dataset of {dataset_len} images is too small for {world_size} rank(s) × batch size "
                            f"{batch_size} with drop_last")
        self.epoch = 0
        self.start = 0

    @property
    def steps_per_epoch(self) -> int:
        """Batches per rank in a whole epoch (incomplete last batch dropped when ``drop_last``)."""
        if self.drop_last:
            return self.num_samples // self.batch_size
        return math.ceil(self.num_samples / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order and flips to yield, from its first sample."""
        if epoch < 0:
            raise ValueError(f"epoch must be non-negative, got {epoch}")
        self.epoch = epoch
        self.start = 0

    def set_start(self, k: int) -> None:
        """Skip the first ``k`` samples of this rank in the current epoch (resume after ``k / batch_size``
        batches)."""
        if not 0 <= k <= self.num_samples:
            raise ValueError(f"cannot skip {k} samples: this rank has {self.num_samples} per epoch")
        self.start = k

    def __len__(self) -> int:
        return self.num_samples - self.start

    def _global_order(self) -> torch.Tensor:
        """The epoch's order of dataset indices over all ranks, cut or padded to ``total_size``."""
        if self.shuffle:
            generator = torch.Generator().manual_seed(_seed_for(self.seed, self.epoch, _PERMUTATION_STREAM))
            order = torch.randperm(self.dataset_len, generator=generator)
        else:
            order = torch.arange(self.dataset_len)
        if self.total_size <= self.dataset_len:
            return order[: self.total_size]
        repeats = math.ceil(self.total_size / self.dataset_len)
        return order.repeat(repeats)[: self.total_size]

    def __iter__(self) -> Iterator[int] | Iterator[tuple[int, bool]]:
        positions = slice(self.rank + self.start * self.world_size, self.total_size, self.world_size)
        indices = self._global_order()[positions].tolist()
        if not self.flip:
            return iter(indices)
        generator = torch.Generator().manual_seed(_seed_for(self.seed, self.epoch, _FLIP_STREAM))
        flips = torch.randint(0, 2, (self.total_size,), generator=generator)[positions].bool().tolist()
        return iter(list(zip(indices, flips)))


def build_loader(dataset: Dataset, sampler: Sampler, batch_size: int, workers: int | None, device_is_cuda: bool,
                 drop_last: bool = True) -> DataLoader:
    """A DataLoader over ``dataset`` in ``sampler`` order: pinned memory on CUDA, persistent workers, dict
    batches (``default_collate``), and a dedicated generator so the global torch RNG is never consumed.
    ``workers=None``: :func:`rectok_core.utils.env.default_workers`."""
    seed = sampler.seed if isinstance(sampler, ResumableSampler) else 0
    workers = default_workers() if workers is None else workers
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        collate_fn=default_collate,
        pin_memory=device_is_cuda,
        drop_last=drop_last,
        persistent_workers=workers > 0,
        generator=torch.Generator().manual_seed(seed),
    )

