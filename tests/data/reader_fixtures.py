"""Tiny datasets of every registered reader's kind, for the reader-wide tests: ``EXAMPLES[name](tmpdir)`` writes
one under ``tmpdir`` and returns ``(--data spec, labels in dataset order or None)``; ``write_shards`` writes tar
shards in webdataset layout."""
from __future__ import annotations

import io
import tarfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image


def write_images(folder: Path, names: list[str], seed: int) -> None:
    """Small random RGB images (format from the suffix)."""
    rng = np.random.default_rng(seed)
    for name in names:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)).save(path)


def write_shards(folder: Path, prefix: str, labels: list[int | None], per_shard: int, seed: int = 0) -> list[Path]:
    """Write tiny random PNG samples with ``labels`` as shards ``prefix-0000.tar`` …"""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for first in range(0, len(labels), per_shard):
        path = folder / f"{prefix}-{first // per_shard:04d}.tar"
        with tarfile.open(path, "w") as tar:
            for i in range(first, min(first + per_shard, len(labels))):
                buf = io.BytesIO()
                Image.fromarray(rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)).save(buf, format="PNG")
                members = [(f"{i:04d}.png", buf.getvalue())]
                if labels[i] is not None:
                    members.append((f"{i:04d}.cls", str(labels[i]).encode()))
                for name, data in members:
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
        paths.append(path)
    return paths


def digits_example(tmpdir: Path) -> tuple[str, list[int] | None]:
    return "digits", None


def folder_example(tmpdir: Path) -> tuple[str, list[int] | None]:
    root = tmpdir / "folder"
    write_images(root / "train", ["a/0.png", "a/1.jpg", "b/2.png", "b/sub/3.png", "c/4.png", "c/5.png"], seed=1)
    (root / "val").mkdir()
    return str(root), [0, 0, 1, 1, 2, 2]


def list_example(tmpdir: Path) -> tuple[str, list[int] | None]:
    root = tmpdir / "listed"
    names = ["x/0.png", "x/1.png", "y/2.jpg", "3.png", "4.png"]
    write_images(root, names, seed=2)
    labels = [4, 0, 2, 2, 1]
    (tmpdir / "list.txt").write_text("# path label\n" + "".join(f"{n} {c}\n" for n, c in zip(names, labels)))
    return f"{tmpdir / 'list.txt'}@{root}", labels


def tar_example(tmpdir: Path) -> tuple[str, list[int] | None]:
    labels = [3, 1, 0, 2, 1, 0, 3]
    write_shards(tmpdir / "shards", "train", labels, per_shard=3)
    write_shards(tmpdir / "shards", "val", [0, 1], per_shard=3, seed=1)
    return str(tmpdir / "shards"), labels


#: One example writer per registered reader (a test checks that none is missing).
EXAMPLES: dict[str, Callable[[Path], tuple[str, list[int] | None]]] = {
    "digits": digits_example, "folder": folder_example, "list": list_example, "tar": tar_example,
}
