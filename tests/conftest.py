import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

# Tests never touch the network: teachers and weight resolvers take the offline path at once.
os.environ.setdefault("RECTOK_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]


def make_image_folder(root: Path, classes: int = 3, per_class: int = 8, size: int = 40, seed: int = 0) -> Path:
    """A small labelled ImageFolder of coloured random-blob JPEGs/PNGs."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for c in range(classes):
        d = root / f"class{c}"
        d.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            base = np.zeros((size, size, 3), np.float32)
            base[..., c % 3] = 180
            arr = np.clip(base + rng.normal(0, 40, (size, size, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(arr).save(d / f"img{i}.{'png' if i % 2 else 'jpg'}")
    return root


@pytest.fixture
def image_folder(tmp_path):
    return make_image_folder(tmp_path / "data")


def cli_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


PYTHON = sys.executable


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module (``pytestmark = pytest.mark.usefixtures("one_thread")``): these problems
    are tiny, thread hand-offs dominate them on a busy 2-core CPU, and the arithmetic matches the subprocesses'."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def free_port() -> int:
    """A TCP port nobody listens on now (for torchrun's rendezvous in tests that run side by side)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
