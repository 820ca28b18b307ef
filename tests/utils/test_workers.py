"""The default number of data-loading workers: min(4, CPUs available), never above what PyTorch suggests."""
import os
import warnings

import torch
from torch.utils.data import TensorDataset

from rectok_core.data.sampler import build_loader
from rectok_core.metrics.probe_run import ProbeConfig
from rectok_core.training.config import RunConfig
from rectok_core.utils import env


def test_default_workers_follows_the_affinity_mask(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert env.default_workers() == 2
    assert RunConfig().workers == 2 and ProbeConfig().workers == 2  # computed when the config is made
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)), raising=False)
    assert env.default_workers() == 4 and RunConfig().workers == 4
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(), raising=False)
    assert env.default_workers() == 1


def test_default_loader_raises_no_worker_warning():
    data = TensorDataset(torch.arange(8.0))
    loader = build_loader(data, list(range(8)), 4, None, False, drop_last=False)
    assert loader.num_workers == env.default_workers() <= len(os.sched_getaffinity(0))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert sum(len(b[0]) for b in loader) == 8
    assert not [w for w in caught if "worker" in str(w.message)]
