"""Webdataset tar shards: indexing, labels, shard selection, random access in loader workers."""
from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from reader_fixtures import write_shards

from rectok_core.data.readers import build_dataset, reader_for
from rectok_core.data.sampler import ResumableSampler, build_loader
from rectok_core.data.tar import TarShardDataset, find_shards
from rectok_core.data.transforms import _to_tensor, center_crop_arr
from rectok_core.errors import DataError


def add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def png(value: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (6, 6), (value, 255 - value, 7)).save(buf, format="PNG")
    return buf.getvalue()


def test_members_labels_and_pixels(tmp_path: Path) -> None:
    shard = tmp_path / "train-0000.tar"
    with tarfile.open(shard, "w") as tar:
        add(tar, "0002.png", png(20))
        add(tar, "0002.cls", b"1\n")
        add(tar, "0001.png", png(200))
        add(tar, "0001.cls", b"0")
        add(tar, "0003.json", b"{}")  # a sample without an image: not an item
        add(tar, "sub/0004.png", png(90))
        add(tar, "sub/0004.cls", b"4")
    ds = build_dataset(str(shard), 6)
    assert isinstance(ds, TarShardDataset)
    assert [p.split("::")[1] for p, _ in ds.items] == ["0002.png", "0001.png", "sub/0004.png"]
    assert [label for _, label in ds.items] == [1, 0, 4] and ds.classes == ["0", "1", "2", "3", "4"]
    for i, value in enumerate([20, 200, 90]):
        expected = (torch.tensor([value, 255 - value, 7]).float() / 255 - 0.5) / 0.5
        torch.testing.assert_close(ds[i]["image"], expected[:, None, None].expand(3, 6, 6), rtol=0, atol=0)


def test_shard_selection_by_split(tmp_path: Path) -> None:
    write_shards(tmp_path / "d", "train", [0, 1, 2, 0, 1], per_shard=2)
    write_shards(tmp_path / "d", "test", [1, 1], per_shard=2, seed=1)
    names = lambda shards: [Path(s).name for s in shards]  # noqa: E731
    assert names(find_shards(str(tmp_path / "d"), "train")) == ["train-0000.tar", "train-0001.tar", "train-0002.tar"]
    assert len(build_dataset(str(tmp_path / "d"), 8, split="train")) == 5
    assert len(build_dataset(str(tmp_path / "d"), 8, split="test")) == 2
    with pytest.raises(DataError, match=r"no val shards \(it has test, train\)"):
        build_dataset(str(tmp_path / "d"), 8, split="val")
    with pytest.raises(DataError, match="several splits"):
        build_dataset(str(tmp_path / "d"), 8)
    glob_spec = str(tmp_path / "d" / "train-000[01].tar")
    assert reader_for(glob_spec).name == "tar"
    assert len(build_dataset(glob_spec, 8, split="val")) == 4  # a glob is the user's choice of shards
    write_shards(tmp_path / "s" / "val", "shard", [3], per_shard=1)
    assert len(build_dataset(str(tmp_path / "s"), 8, split="val")) == 1  # DIR/<split>/*.tar


def test_unlabelled_and_bad_labels(tmp_path: Path) -> None:
    write_shards(tmp_path / "u", "shard", [None, None, None], per_shard=2)
    ds = build_dataset(str(tmp_path / "u"), 8)
    assert len(ds) == 3 and not ds.has_labels and ds.classes == [] and ds[2]["label"] == -1
    for text, message in [(b"999999999", "out of range"), (b"cat", "not a non-negative integer")]:
        with tarfile.open(tmp_path / "bad.tar", "w") as tar:
            add(tar, "0001.png", png(1))
            add(tar, "0001.cls", text)
        with pytest.raises(DataError, match=rf"bad\.tar::0001\.cls: .*{message}"):
            build_dataset(str(tmp_path / "bad.tar"), 8)
    (tmp_path / "broken.tar").write_bytes(b"\x00garbage" * 100)
    with pytest.raises(DataError, match="broken.tar"):
        TarShardDataset([str(tmp_path / "broken.tar")], 8)


def test_workers_and_pickle_give_the_same_batches(tmp_path: Path) -> None:
    write_shards(tmp_path / "w", "train", [i % 3 for i in range(10)], per_shard=4)
    ds = build_dataset(str(tmp_path / "w"), 8, split="train")
    clone = pickle.loads(pickle.dumps(ds))
    assert torch.equal(clone[7]["image"], ds[7]["image"])
    runs = []
    for workers in (0, 2):
        sampler = ResumableSampler(len(ds), seed=1, flip=True, batch_size=3)
        loader = build_loader(ds, sampler, 3, workers=workers, device_is_cuda=False)
        sampler.set_epoch(1)
        runs.append(list(loader))
    for a, b in zip(*runs):
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])
    # the shard bytes are the PNGs write_shards made: decode one by hand
    with tarfile.open(ds.shards[0]) as tar:
        raw = np.asarray(Image.open(tar.extractfile("0001.png")).convert("RGB"))
    torch.testing.assert_close(ds[1]["image"], _to_tensor(center_crop_arr(Image.fromarray(raw), 8)))
    assert ds.verify(progress=False, threads=2) == []
