"""Hand-made bad inputs: nothing readable, symlink loops and duplicates, image modes, absurd labels and sizes,
split trees."""
from __future__ import annotations

import logging
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rectok_core.data.datasets import ImageDataset
from rectok_core.data.files import list_images
from rectok_core.data.readers import build_dataset, image_folder
from rectok_core.data.sampler import ResumableSampler
from rectok_core.errors import DataError
from rectok_core.metrics import folder_stats
from rectok_core.training.scaffold import Batches


def rgb(path: Path, colour: tuple[int, int, int] = (10, 20, 30), size: int = 4) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size), colour).save(path)
    return path


# --- nothing readable --------------------------------------------------------------------------------------

def test_no_readable_image_is_one_data_error(tmp_path: Path) -> None:
    for c in ("a", "b"):
        for i in range(30):
            (tmp_path / "bad" / c).mkdir(parents=True, exist_ok=True)
            (tmp_path / "bad" / c / f"{i}.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(DataError, match=r"no readable image in .*bad: all 60 images fail") as info:
        build_dataset(str(tmp_path / "bad"), 8)
    assert "\n" not in str(info.value) and "0.jpg" in str(info.value)

    (tmp_path / "missing.txt").write_text("".join(f"gone/{i}.png {i % 3}\n" for i in range(500)))
    with pytest.raises(DataError, match=r"all 64 tried \(evenly spread\) of the 500 images"):
        build_dataset(str(tmp_path / "missing.txt"), 8)

    (tmp_path / "dirs" / "x").mkdir(parents=True)
    (tmp_path / "dirs" / "y").mkdir()
    (tmp_path / "dirs.txt").write_text("x 0\ny 1\n")
    with pytest.raises(DataError, match="IsADirectoryError"):
        build_dataset(f"{tmp_path / 'dirs.txt'}@{tmp_path / 'dirs'}", 8)

    rgb(tmp_path / "bad" / "b" / "99.png")  # one good file among 60 bad ones is enough
    assert len(build_dataset(str(tmp_path / "bad"), 8)) == 61


def test_training_batches_stop_when_an_epoch_has_no_sample(tmp_path: Path) -> None:
    (tmp_path / "x.jpg").write_bytes(b"broken")
    ds = ImageDataset([(str(tmp_path / "x.jpg"), 0)] * 6, ["c"], 8)  # built by hand: no up-front check
    sampler = ResumableSampler(len(ds), batch_size=2)
    stream = Batches(ds, sampler, 2, sampler.steps_per_epoch, workers=0, device=torch.device("cpu"))
    stream.start(0, 0)
    with pytest.raises(DataError, match=r"whole epoch \(3 batches\) had no readable sample: 6 unreadable"):
        stream.next()


# --- symlinks ----------------------------------------------------------------------------------------------

def test_symlink_loops_and_duplicates(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = tmp_path / "root"
    rgb(root / "cls0" / "a.png")
    rgb(root / "cls1" / "b.png")
    rgb(tmp_path / "outside" / "c.png")
    os.symlink("..", root / "cls0" / "loop")  # back to the root: would list cls1 as class 0
    os.symlink("../cls1", root / "cls0" / "more")  # another class folder
    os.symlink("../cls1/b.png", root / "cls0" / "0-link.png")  # sorts first, but b.png is class 1's
    os.symlink("../cls0/a.png", root / "cls1" / "a-again.png")
    os.symlink(tmp_path / "outside", root / "cls0" / "ext")  # outside the tree: followed once
    os.symlink(tmp_path / "outside", root / "cls1" / "ext")  # the same files again, from class 1
    os.symlink(".", root / "cls1" / "self")
    with caplog.at_level(logging.WARNING):
        ds = image_folder(root, 4)
    rel = [(str(Path(p).relative_to(root)), label) for p, label in ds.items]
    assert rel == [("cls0/a.png", 0), ("cls0/ext/c.png", 0), ("cls1/b.png", 1)]
    assert ds.duplicates == 2 and ds.skipped_links == 4
    assert "did not follow 4 symlinked folder(s): 2 loop(s), 2 already listed" in caplog.text
    assert "dropped 2 duplicate image(s)" in caplog.text

    assert [str(Path(p).relative_to(root)) for p in list_images(root)] == [
        "cls0/0-link.png", "cls0/a.png", "cls0/ext/c.png"]  # one walk from the root: each real file once
    assert [p.name for p in folder_stats.list_images(root)] == ["0-link.png", "a.png", "c.png"]


def test_one_lister_for_datasets_and_fid_folders(tmp_path: Path) -> None:
    for name in ["b/2.PNG", "a/1.webp", "a.b/0.jpg", "a/.hidden.png", "a/notes.txt", "3.bmp"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    expected = ["3.bmp", "a/1.webp", "a.b/0.jpg", "b/2.PNG"]  # sorted by path components
    assert [str(Path(p).relative_to(tmp_path)) for p in list_images(tmp_path)] == expected
    assert [str(p.relative_to(tmp_path)) for p in folder_stats.list_images(tmp_path)] == expected


# --- image modes -------------------------------------------------------------------------------------------

def pixels_of(path: Path, size: int) -> np.ndarray:
    """The dataset's RGB values (0..255) of the file at ``path`` (crop size = image size: no resampling)."""
    image = ImageDataset([(str(path), None)], [], size, strict=True)[0]["image"]
    return ((image + 1) / 2 * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()


def test_16_bit_grey(tmp_path: Path) -> None:
    values = np.array([[0, 1000, 32896, 65535]] * 4, dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode == "I;16"
    expected = np.array([0, 4, 128, 255], dtype=np.uint8)  # round(v / 257)
    np.testing.assert_array_equal(pixels_of(tmp_path / "g16.png", 4), np.broadcast_to(expected[:, None], (4, 4, 3)))
    from rectok_core.data.transforms import to_rgb

    as_int32 = Image.fromarray(values.astype(np.int32))
    assert as_int32.mode == "I"
    np.testing.assert_array_equal(np.asarray(to_rgb(as_int32))[0, :, 1], expected)


def test_palette_alpha_cmyk_and_grey(tmp_path: Path) -> None:
    pal = Image.new("P", (2, 2))
    pal.putpalette([200, 0, 0, 0, 90, 0] + [0] * 762)
    pal.putdata([0, 1, 1, 0])
    pal.save(tmp_path / "p.png", transparency=1)
    np.testing.assert_array_equal(pixels_of(tmp_path / "p.png", 2).reshape(4, 3),
                                  [[200, 0, 0], [255, 255, 255], [255, 255, 255], [200, 0, 0]])

    rgba = np.array([[[0, 0, 255, 128], [10, 20, 30, 255]], [[9, 9, 9, 0], [100, 50, 0, 51]]], dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    # on white: round(c * a/255 + 255 * (1 - a/255))
    np.testing.assert_array_equal(pixels_of(tmp_path / "rgba.png", 2),
                                  [[[127, 127, 255], [10, 20, 30]], [[255, 255, 255], [224, 214, 204]]])

    la = np.array([[[0, 255], [100, 0]], [[0, 51], [255, 128]]], dtype=np.uint8)
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    np.testing.assert_array_equal(pixels_of(tmp_path / "la.png", 2)[..., 0], [[0, 255], [204, 255]])

    cmyk = Image.new("CMYK", (2, 1))
    cmyk.putdata([(255, 0, 0, 0), (100, 50, 0, 60)])
    cmyk.save(tmp_path / "cmyk.tif")
    # (255 - c)(255 - k) / 255 per channel
    got = np.asarray(ImageDataset([], [], 1)._read(str(tmp_path / "cmyk.tif")))  # decoded, not cropped
    np.testing.assert_array_equal(got, [[[0, 255, 255], [119, 157, 195]]])

    Image.fromarray(np.array([[77, 0], [255, 3]], dtype=np.uint8), "L").save(tmp_path / "l.png")
    np.testing.assert_array_equal(pixels_of(tmp_path / "l.png", 2), np.repeat([[[77], [0]], [[255], [3]]], 3, -1))
    Image.fromarray(np.array([[True, False], [False, True]])).save(tmp_path / "bw.png")
    assert Image.open(tmp_path / "bw.png").mode == "1"
    np.testing.assert_array_equal(pixels_of(tmp_path / "bw.png", 2)[..., 2], [[255, 0], [0, 255]])


# --- absurd labels and sizes -------------------------------------------------------------------------------

def test_absurd_label_is_refused_before_class_names(tmp_path: Path) -> None:
    rgb(tmp_path / "a.png")
    (tmp_path / "list.txt").write_text("a.png 1\na.png 999999999\n")
    with pytest.raises(DataError, match=r"list\.txt:2: label 999999999 is out of range \(at most 100000 classes\)"):
        build_dataset(str(tmp_path / "list.txt"), 8)


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width × height`` RGB pixels, with no pixel data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def test_absurd_image_sizes_are_refused_before_decoding(tmp_path: Path) -> None:
    rgb(tmp_path / "c" / "good.png")
    (tmp_path / "c" / "huge.png").write_bytes(png_header(10_000, 10_000))  # PIL would only warn
    (tmp_path / "c" / "vast.png").write_bytes(png_header(100_000, 100_000))
    ds = image_folder(tmp_path, 8)
    assert [Path(p).name for p, _ in ds.items] == ["good.png", "huge.png", "vast.png"]
    assert [ds[i]["ok"] for i in range(3)] == [True, False, False]
    strict = image_folder(tmp_path, 8, strict=True)
    with pytest.raises(DataError, match=r"huge\.png: ValueError: image is 10000x10000 pixels"):
        strict[1]
    with pytest.raises(DataError, match=r"vast\.png: DecompressionBombError"):
        strict[2]
    with pytest.raises(DataError, match="image size 1000000 is beyond"):
        build_dataset(str(tmp_path), 1_000_000)


# --- splits ------------------------------------------------------------------------------------------------

def test_split_tree_rules(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    for split in ("train", "test"):
        for c in ("cat", "dog"):
            rgb(tmp_path / "s" / split / c / "1.png")
    with pytest.raises(DataError, match=r"has no val/ split \(it has test, train\)"):
        build_dataset(str(tmp_path / "s"), 8, split="val")
    test = build_dataset(str(tmp_path / "s"), 8, split="test")
    assert test.classes == ["cat", "dog"] and all("/test/" in p for p, _ in test.items)
    with pytest.raises(DataError, match=r"holds splits \(test, train\), not classes"):
        build_dataset(str(tmp_path / "s"), 8)
    assert len(build_dataset("digits", 8, split="test")) == len(build_dataset("digits", 8, split="val")) == 360

    rgb(tmp_path / "c" / "cat" / "1.png")  # class folders, no splits: the whole folder is any split (warned)
    rgb(tmp_path / "c" / "dog" / "2.png")
    with caplog.at_level(logging.WARNING):
        val = build_dataset(str(tmp_path / "c"), 8, split="val")
    assert val.classes == ["cat", "dog"] and "has no val/ folder" in caplog.text
