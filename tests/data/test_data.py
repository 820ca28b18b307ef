"""Tests for rectok_core.data: crop, datasets, bad files, sampler and loader (all images made in tmp_path)."""
from __future__ import annotations

import logging
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import default_collate

from rectok_core.data.datasets import ImageDataset, digits, limit_per_class
from rectok_core.data.readers import build_dataset, image_folder, list_file
from rectok_core.data.sampler import ResumableSampler, build_loader, drop_bad
from rectok_core.data.transforms import center_crop_arr
from rectok_core.errors import DataError, RectokError


def make_image(path: Path, size: tuple[int, int] = (24, 20), seed: int = 0) -> Path:
    """Write a random RGB image (format from the suffix) and return its path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG"}[path.suffix.lower()]
    Image.fromarray(pixels).save(path, format=fmt)
    return path


def make_truncated_jpeg(path: Path) -> Path:
    make_image(path, (64, 64))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """root/{cat,dog}/... with nested folders, upper-case suffixes, and files that must be ignored."""
    root = tmp_path / "tree"
    make_image(root / "dog" / "b.png", seed=1)
    make_image(root / "dog" / "a.JPG", seed=2)
    make_image(root / "cat" / "sub" / "z.jpeg", seed=3)
    make_image(root / "cat" / "c.jpg", seed=4)
    (root / "cat" / "notes.txt").write_text("not an image")
    make_image(root / "cat" / ".hidden.jpg", seed=5)
    make_image(root / ".cache" / "x.jpg", seed=6)
    return root


# --- center crop -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("size_in,size", [((100, 50), 32), ((17, 40), 16), ((8, 8), 32), ((512, 384), 64)])
def test_center_crop_size(size_in: tuple[int, int], size: int) -> None:
    out = center_crop_arr(Image.new("RGB", size_in, (10, 20, 30)), size)
    assert out.size == (size, size)


def test_center_crop_box_then_bicubic() -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (384, 512, 3), dtype=np.uint8)
    img = Image.fromarray(pixels)
    # By hand: 512x384 -> BOX 256x192 -> BOX 128x96 (96 < 2*64 stops) -> BICUBIC 85x64 -> crop x in [10, 74).
    expected = (img.resize((256, 192), Image.BOX).resize((128, 96), Image.BOX)
                .resize((85, 64), Image.BICUBIC).crop((10, 0, 74, 64)))
    got = center_crop_arr(img, 64)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(expected))
    direct = img.resize((85, 64), Image.BICUBIC).crop((10, 0, 74, 64))
    assert not np.array_equal(np.asarray(got), np.asarray(direct))


# --- image folders and list files --------------------------------------------------------------------------

def test_image_folder_labels_and_classes(tree: Path) -> None:
    ds = image_folder(tree, 16)
    assert ds.classes == ["cat", "dog"]
    assert ds.num_classes == 2 and ds.has_labels
    rel = [(str(Path(p).relative_to(tree)), label) for p, label in ds.items]
    assert rel == [("cat/c.jpg", 0), ("cat/sub/z.jpeg", 0), ("dog/a.JPG", 1), ("dog/b.png", 1)]
    sample = ds[2]
    assert sample["image"].shape == (3, 16, 16) and sample["image"].dtype == torch.float32
    assert -1.0 <= sample["image"].min() and sample["image"].max() <= 1.0
    assert sample["label"] == 1 and sample["index"] == 2 and sample["ok"] is True


def test_image_folder_matches_torchvision_style_transform(tree: Path) -> None:
    ds = image_folder(tree, 16)
    path = ds.items[0][0]
    crop = center_crop_arr(Image.open(path).convert("RGB"), 16)
    expected = (torch.from_numpy(np.asarray(crop).copy()).permute(2, 0, 1).float() / 255 - 0.5) / 0.5
    torch.testing.assert_close(ds[0]["image"], expected, rtol=0, atol=0)
    torch.testing.assert_close(ds[(0, True)]["image"], expected.flip(-1), rtol=0, atol=0)
    torch.testing.assert_close(ds[(0, 0)]["image"], expected, rtol=0, atol=0)


def test_flat_folder_is_unlabelled(tmp_path: Path) -> None:
    make_image(tmp_path / "b.png")
    make_image(tmp_path / "a.jpg")
    ds = image_folder(tmp_path, 8)
    assert [Path(p).name for p, _ in ds.items] == ["a.jpg", "b.png"]
    assert ds.classes == [] and ds.num_classes == 0 and not ds.has_labels
    assert ds[0]["label"] == -1


def test_loose_images_next_to_class_folders_are_ignored(tree: Path, caplog: pytest.LogCaptureFixture) -> None:
    make_image(tree / "loose.jpg")
    with caplog.at_level(logging.WARNING):
        ds = image_folder(tree, 8)
    assert len(ds) == 4
    assert str(tree) in caplog.text


def test_empty_or_missing_folder_is_data_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images found under .*empty"):
        image_folder(tmp_path / "empty", 8)
    with pytest.raises(DataError, match="no images found under .*missing"):
        image_folder(tmp_path / "missing", 8)
    make_image(tmp_path / "t" / "a" / "x.png")
    (tmp_path / "t" / "b").mkdir()
    with pytest.raises(DataError, match=r"no images found under .*t/b"):
        image_folder(tmp_path / "t", 8)
    assert issubclass(DataError, RectokError)


def test_list_file_parsing(tmp_path: Path) -> None:
    make_image(tmp_path / "imgs" / "a.jpg")
    make_image(tmp_path / "imgs" / "b.png")
    absolute = make_image(tmp_path / "elsewhere" / "c.png")
    listing = tmp_path / "list.txt"
    listing.write_text(f"# header\n\nimgs/a.jpg 3\n  imgs/b.png\t0  \n{absolute} 1\n")
    ds = list_file(listing, tmp_path, 8)
    assert ds.items == [(str(tmp_path / "imgs" / "a.jpg"), 3), (str(tmp_path / "imgs" / "b.png"), 0),
                        (str(absolute), 1)]
    assert ds.classes == ["0", "1", "2", "3"] and ds.has_labels

    listing.write_text("imgs/a.jpg\nimgs/b.png 2\n")
    mixed = list_file(listing, tmp_path, 8)
    assert mixed.items[0][1] is None and mixed.items[1][1] == 2
    assert not mixed.has_labels and mixed.num_classes == 3 and mixed[0]["label"] == -1

    listing.write_text("imgs/a.jpg\nimgs/b.png\n")
    unlabelled = list_file(listing, tmp_path, 8)
    assert unlabelled.classes == [] and not unlabelled.has_labels


@pytest.mark.parametrize("line", ["imgs/a.jpg cat", "imgs/a.jpg -1", "my file.jpg 3"])
def test_list_file_bad_lines(tmp_path: Path, line: str) -> None:
    listing = tmp_path / "list.txt"
    listing.write_text(f"ok.jpg 0\n{line}\n")
    with pytest.raises(DataError, match=r"list\.txt:2"):
        list_file(listing, tmp_path, 8)


def test_list_file_missing_or_empty(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="nope.txt"):
        list_file(tmp_path / "nope.txt", tmp_path, 8)
    (tmp_path / "empty.txt").write_text("# nothing\n\n")
    with pytest.raises(DataError, match="empty.txt"):
        list_file(tmp_path / "empty.txt", tmp_path, 8)


# --- unreadable files --------------------------------------------------------------------------------------

def test_bad_files_are_flagged_and_warned_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    good = make_image(tmp_path / "c" / "good.png")
    truncated = make_truncated_jpeg(tmp_path / "c" / "truncated.jpg")
    fake = tmp_path / "c" / "fake.jpg"
    fake.write_text("this is not a JPEG")
    ds = image_folder(tmp_path, 8)
    assert [Path(p).name for p, _ in ds.items] == ["fake.jpg", "good.png", "truncated.jpg"]
    with caplog.at_level(logging.WARNING, logger="rectok_core.data"):
        samples = [ds[i] for i in range(3)] + [ds[0], ds[(2, True)]]
    assert [s["ok"] for s in samples] == [False, True, False, False, False]
    assert torch.count_nonzero(samples[0]["image"]) == 0 and samples[0]["image"].shape == (3, 8, 8)
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 2
    assert str(fake) in warned[0] and str(truncated) in warned[1]

    batch, n_bad = drop_bad(default_collate(samples[:3]))
    assert n_bad == 2
    assert batch["index"].tolist() == [1] and batch["image"].shape == (1, 3, 8, 8)
    assert batch["ok"].all()
    same, none_bad = drop_bad(default_collate(samples[1:2]))
    assert none_bad == 0 and same["index"].tolist() == [1]

    assert ds.verify(progress=False) == [str(fake), str(truncated)]
    assert ds.verify(progress=False, threads=1) == [str(fake), str(truncated)]
    assert good.exists()


def test_strict_raises_data_error_naming_the_path(tmp_path: Path) -> None:
    truncated = make_truncated_jpeg(tmp_path / "truncated.jpg")
    fake = tmp_path / "fake.jpg"
    fake.write_bytes(b"\x00" * 100)
    ds = image_folder(tmp_path, 8, strict=True)
    for i, path in enumerate([fake, truncated]):
        with pytest.raises(DataError) as info:
            ds[i]
        assert str(path) in str(info.value) and "\n" not in str(info.value)


# --- sampler -----------------------------------------------------------------------------------------------

def epoch_of(sampler: ResumableSampler, epoch: int) -> list:
    sampler.set_epoch(epoch)
    return list(sampler)


def test_sampler_permutation_per_epoch() -> None:
    a, b = ResumableSampler(100, seed=3), ResumableSampler(100, seed=3)
    e0, e1 = epoch_of(a, 0), epoch_of(a, 1)
    assert sorted(e0) == list(range(100)) and sorted(e1) == list(range(100))
    assert e0 != e1 and e0 != list(range(100))
    assert epoch_of(b, 1) == e1 and epoch_of(b, 0) == e0
    assert epoch_of(ResumableSampler(100, seed=4), 0) != e0
    assert all(type(i) is int for i in e0)
    assert epoch_of(ResumableSampler(10, shuffle=False), 5) == list(range(10))


def test_sampler_two_ranks_partition() -> None:
    ranks = [ResumableSampler(10, rank=r, world_size=2, drop_last=False) for r in range(2)]
    parts = [epoch_of(s, 2) for s in ranks]
    assert len(parts[0]) == len(parts[1]) == 5 == len(ranks[0])
    assert not set(parts[0]) & set(parts[1])
    assert sorted(parts[0] + parts[1]) == list(range(10))


def test_sampler_uneven_pad_or_drop() -> None:
    padded = [epoch_of(ResumableSampler(11, rank=r, world_size=3, drop_last=False), 0) for r in range(3)]
    assert [len(p) for p in padded] == [4, 4, 4]
    assert set(sum(padded, [])) == set(range(11))
    dropped = [epoch_of(ResumableSampler(11, rank=r, world_size=3, drop_last=True), 0) for r in range(3)]
    assert [len(p) for p in dropped] == [3, 3, 3] and len(set(sum(dropped, []))) == 9
    tiny = [epoch_of(ResumableSampler(2, rank=r, world_size=3, drop_last=False), 0) for r in range(3)]
    assert [len(p) for p in tiny] == [1, 1, 1] and set(sum(tiny, [])) == {0, 1}


def test_sampler_set_start_yields_the_tail() -> None:
    sampler = ResumableSampler(50, rank=1, world_size=2, seed=7, flip=True, batch_size=4)
    full = epoch_of(sampler, 3)
    assert sampler.steps_per_epoch == 6
    sampler.set_epoch(3)
    sampler.set_start(8)
    assert len(sampler) == 17 and list(sampler) == full[8:]
    sampler.set_start(25)
    assert len(sampler) == 0 and list(sampler) == []
    sampler.set_epoch(4)
    assert len(sampler) == 25
    with pytest.raises(ValueError):
        sampler.set_start(26)


def test_sampler_flip_bits() -> None:
    one = epoch_of(ResumableSampler(400, seed=1, flip=True), 0)
    again = epoch_of(ResumableSampler(400, seed=1, flip=True), 0)
    plain = epoch_of(ResumableSampler(400, seed=1), 0)
    assert one == again
    assert all(type(i) is int and type(f) is bool for i, f in one)
    assert [i for i, _ in one] == plain  # flipping does not change the order
    flips = [f for _, f in one]
    assert 150 < sum(flips) < 250
    assert flips != [f for _, f in epoch_of(ResumableSampler(400, seed=1, flip=True), 1)]


def test_sampler_steps_and_too_small() -> None:
    assert ResumableSampler(10, batch_size=4).steps_per_epoch == 2
    assert ResumableSampler(10, batch_size=4, drop_last=False).steps_per_epoch == 3
    with pytest.raises(DataError, match="too small"):
        ResumableSampler(6, world_size=2, batch_size=4)


# --- digits ------------------------------------------------------------------------------------------------

def test_digits() -> None:
    train, val, full = digits(16, "train"), digits(16, "val"), digits(16, "all")
    assert (len(train), len(val), len(full)) == (1437, 360, 1797)
    assert train.classes == [str(i) for i in range(10)] and train.num_classes == 10 and train.has_labels
    train_paths, val_paths = {p for p, _ in train.items}, {p for p, _ in val.items}
    assert not train_paths & val_paths and train_paths | val_paths == {p for p, _ in full.items}
    assert {label for _, label in val.items} == set(range(10))
    images = torch.stack([train[i]["image"] for i in range(20)])
    assert images.shape == (20, 3, 16, 16)
    assert images.min() >= -1 and images.max() <= 1 and images.min() < -0.5 and images.max() > 0.5
    assert not torch.equal(images[:, 0], images[:, 1]) and not torch.equal(images[:, 1], images[:, 2])
    sample = train[(5, 1)]
    torch.testing.assert_close(sample["image"], train[5]["image"].flip(-1))
    assert sample["label"] == train.items[5][1] and sample["index"] == 5 and sample["ok"]
    torch.testing.assert_close(digits(16, "train")[5]["image"], train[5]["image"])
    with pytest.raises(DataError, match="split"):
        digits(16, "bogus")


# --- build_dataset, subsets --------------------------------------------------------------------------------

def test_build_dataset_dispatch(tmp_path: Path, tree: Path) -> None:
    assert len(build_dataset("digits", 8, split="val")) == 360
    assert len(build_dataset("digits", 8)) == 1797

    make_image(tmp_path / "splits" / "train" / "a" / "1.png")
    make_image(tmp_path / "splits" / "train" / "b" / "2.png")
    make_image(tmp_path / "splits" / "val" / "a" / "3.png")
    make_image(tmp_path / "splits" / "val" / "b" / "4.png")
    val = build_dataset(str(tmp_path / "splits"), 8, split="val")
    assert [Path(p).name for p, _ in val.items] == ["3.png", "4.png"] and val.classes == ["a", "b"]
    with pytest.raises(DataError, match="splits"):
        build_dataset(str(tmp_path / "splits"), 8)

    assert len(build_dataset(str(tree), 8, split="train")) == 4  # no train/ folder: the folder itself
    assert len(build_dataset(str(tree), 8)) == 4

    listing = tmp_path / "splits" / "train.txt"
    listing.write_text("train/a/1.png 0\ntrain/b/2.png 1\n")
    from_list = build_dataset(str(listing), 8)
    assert from_list.items[1] == (str(tmp_path / "splits" / "train" / "b" / "2.png"), 1)
    (tmp_path / "rel.txt").write_text("a/3.png 0\n")
    at_root = build_dataset(f"{tmp_path / 'rel.txt'}@{tmp_path / 'splits' / 'val'}", 8)
    assert at_root.items == [(str(tmp_path / "splits" / "val" / "a" / "3.png"), 0)]
    assert at_root[0]["ok"]

    with pytest.raises(DataError, match="nowhere"):
        build_dataset(str(tmp_path / "nowhere"), 8)
    with pytest.raises(DataError, match="nowhere"):
        build_dataset(f"{tmp_path / 'rel.txt'}@{tmp_path / 'nowhere'}", 8)


def test_subset_and_limit_per_class(tree: Path) -> None:
    ds = image_folder(tree, 8)
    limited = limit_per_class(ds, 1)
    assert [Path(p).name for p, _ in limited.items] == ["c.jpg", "a.JPG"]
    assert isinstance(limited, ImageDataset) and limited.classes == ds.classes
    assert len(limit_per_class(ds, 10)) == 4
    sub = ds.subset([3, 0])
    assert [label for _, label in sub.items] == [1, 0] and len(ds) == 4
    assert len(limit_per_class(digits(8, "val"), 3)) == 30
    with pytest.raises(DataError, match="unlabelled"):
        limit_per_class(ImageDataset([(ds.items[0][0], None)], [], 8, source="flat"), 1)


def test_datasets_pickle_for_spawned_workers(tree: Path) -> None:
    for ds in (image_folder(tree, 8), digits(8, "val")):
        clone = pickle.loads(pickle.dumps(ds))
        assert clone.items == ds.items and torch.equal(clone[1]["image"], ds[1]["image"])


# --- loader ------------------------------------------------------------------------------------------------

def test_loader_workers_give_identical_batches(tree: Path) -> None:
    ds = image_folder(tree, 8)
    big = ds.subset(list(range(4)) * 4)
    rng_state = torch.get_rng_state()
    runs = []
    for workers in (0, 2):
        sampler = ResumableSampler(len(big), seed=5, flip=True, batch_size=3)
        loader = build_loader(big, sampler, batch_size=3, workers=workers, device_is_cuda=False)
        batches = []
        for epoch in (0, 1):
            sampler.set_epoch(epoch)
            batches.extend(list(loader))
        assert len(batches) == 2 * sampler.steps_per_epoch == 10
        runs.append(batches)
    assert torch.equal(torch.get_rng_state(), rng_state)
    for b0, b2 in zip(*runs):
        assert set(b0) == {"image", "label", "index", "ok"}
        assert b0["image"].shape == (3, 3, 8, 8) and b0["label"].dtype == torch.int64
        for key in b0:
            assert torch.equal(b0[key], b2[key])
    assert not torch.equal(runs[0][0]["index"], runs[0][5]["index"])


def test_loader_resumes_mid_epoch(tree: Path) -> None:
    big = image_folder(tree, 8).subset(list(range(4)) * 3)
    sampler = ResumableSampler(len(big), seed=2, flip=True, batch_size=2)
    loader = build_loader(big, sampler, batch_size=2, workers=0, device_is_cuda=False)
    sampler.set_epoch(1)
    full = list(loader)
    sampler.set_epoch(1)
    sampler.set_start(2 * 2)
    resumed = list(loader)
    assert len(resumed) == len(full) - 2
    for a, b in zip(full[2:], resumed):
        assert torch.equal(a["index"], b["index"]) and torch.equal(a["image"], b["image"])
