"""Deterministic weights for the family reference tests: a state dict rebuilt from a manifest of (name, shape)
without the code that defined it (the reference vectors in tests/data/families/ were computed with these weights
by tools/make_family_vectors.py running the published code)."""
from __future__ import annotations

import math
import zlib

import torch


def fill(name: str, shape: list[int] | tuple[int, ...], seed: int = 0) -> torch.Tensor:
    """The tensor ``name`` of ``shape``: N(0, 1/fan_in) for weights of rank ≥ 2, 1 + N(0, 0.1²) for norm scales,
    N(0, 0.1²) for other vectors; seeded by ``seed`` and the name's CRC32, so key order does not matter."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(name.encode()))
    t = torch.randn(tuple(shape), generator=g, dtype=torch.float64)
    if len(shape) >= 2:
        return (t / math.sqrt(math.prod(shape[1:]))).float()
    if "norm" in name and name.endswith(".weight"):
        return (1 + 0.1 * t).float()
    return (0.1 * t).float()


def state_from_manifest(manifest: dict[str, list[int]], seed: int = 0) -> dict[str, torch.Tensor]:
    return {name: fill(name, shape, seed) for name, shape in manifest.items()}
