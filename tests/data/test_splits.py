"""Evaluation splits (val, else the one there is), class-stratified grid choices, absolute data specs, the data line."""
import os
from collections import Counter

import pytest
from conftest import make_image_folder
from reader_fixtures import write_shards

from rectok_core.data.datasets import (
    describe_dataset,
    digits,
    evaluation_split,
    splits_in,
    stratified_indices,
)
from rectok_core.data.files import absolute_spec
from rectok_core.data.readers import build_dataset


def test_evaluation_split_is_val_else_the_one_evaluation_split_there_is(tmp_path):
    both = tmp_path / "both"
    for s in ("train", "val", "test"):
        make_image_folder(both / s, classes=2, per_class=1)
    assert splits_in(str(both)) == ["test", "train", "val"] and evaluation_split(str(both)) == ("val", "")
    no_val = tmp_path / "no_val"
    for s in ("train", "test"):
        make_image_folder(no_val / s, classes=2, per_class=1)
    split, why = evaluation_split(str(no_val))
    assert split == "test" and why == f"{no_val} has no val/ split: using its test/ split"
    assert evaluation_split(str(no_val), "train") == ("train", "")  # a named split is kept
    ds = build_dataset(str(no_val), 16, split=split)
    assert ds.source == str(no_val / "test") and len(ds) == 2
    only_train = tmp_path / "only_train"
    make_image_folder(only_train / "train", classes=2, per_class=1)
    assert evaluation_split(str(only_train)) == ("val", "")  # the reader then names the splits it has
    classes = make_image_folder(tmp_path / "classes", classes=2, per_class=1)  # class folders, not splits
    assert splits_in(str(classes)) == [] and evaluation_split(str(classes)) == ("val", "")
    assert evaluation_split("digits") == ("val", "")
    shards = tmp_path / "shards"
    write_shards(shards, "train", [0, 1], per_shard=2)
    write_shards(shards, "test", [0, 1], per_shard=2, seed=1)
    assert splits_in(str(shards)) == ["test", "train"] and evaluation_split(str(shards))[0] == "test"
    assert len(build_dataset(str(shards), 16, split="test")) == 2


def test_stratified_indices_are_seeded_and_spread_over_the_classes():
    labels = [0] * 50 + [1] * 30 + [2] * 3 + [3] * 17  # in path order: the first 16 are all class 0
    picks = stratified_indices(labels, 16, seed=0)
    assert picks == stratified_indices(labels, 16, seed=0) and picks != stratified_indices(labels, 16, seed=1)
    assert len(picks) == len(set(picks)) == 16
    counts = Counter(labels[i] for i in picks)
    assert set(counts) == {0, 1, 2, 3} and counts[2] == 3 and max(counts.values()) - counts[1] <= 1
    assert sorted(stratified_indices(labels, 1000)) == list(range(100))  # fewer items than asked: all of them
    assert {labels[i] for i in stratified_indices(labels, 4, seed=5)} == {0, 1, 2, 3}
    assert sorted(stratified_indices([None, None, -1], 8)) == [0, 1, 2]  # unlabelled items are one group
    assert stratified_indices([], 8) == []
    ds = digits(8, "val")
    shown = stratified_indices([label for _, label in ds.items], 8)
    assert len({ds.items[i][1] for i in shown}) == 8  # eight digits, not eight files of one class


def test_absolute_spec_keeps_keywords_and_hub_ids(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_image_folder(tmp_path / "ds" / "train", classes=2, per_class=2)
    (tmp_path / "list.txt").write_text("a.png 0\n")
    assert absolute_spec("ds") == str(tmp_path / "ds")
    assert absolute_spec("./ds/train") == str(tmp_path / "ds" / "train")
    assert absolute_spec("list.txt@ds") == f"{tmp_path / 'list.txt'}@{tmp_path / 'ds'}"
    assert absolute_spec("ds/train/*/*.png") == os.path.join(tmp_path, "ds", "train", "*", "*.png")
    assert absolute_spec("ds/none/*.png") == "ds/none/*.png"  # a glob that matches nothing: kept as written
    assert absolute_spec("ds/train/class0/*.png") == os.path.join(tmp_path, "ds", "train", "class0", "*.png")
    for kept in ("digits", "owner/name", "hf://owner/name", "", "missing/folder"):
        assert absolute_spec(kept) == kept
    (tmp_path / "digits").mkdir()
    assert absolute_spec("digits") == "digits"  # the keyword wins over a folder of that name (as in the readers)
    assert absolute_spec(str(tmp_path / "ds")) == str(tmp_path / "ds")


@pytest.mark.parametrize("make, expected", [
    (lambda p: digits(8, "train"), "data: 1437 images, 10 classes, from digits (train)"),
    (lambda p: build_dataset(str(make_image_folder(p / "d" / "train", 3, 2)), 16),
     "data: 6 images, 3 classes, from {p}/d/train"),
])
def test_describe_dataset_says_images_classes_and_folder(tmp_path, make, expected):
    assert describe_dataset(make(tmp_path)) == expected.format(p=tmp_path)


def test_describe_dataset_of_unlabelled_images_and_a_latent_cache(tmp_path):
    flat = tmp_path / "flat"
    make_image_folder(tmp_path / "tmp", classes=1, per_class=2)
    (tmp_path / "tmp" / "class0").rename(flat)
    assert describe_dataset(build_dataset(str(flat), 8)) == f"data: 2 images, unlabelled, from {flat}"

    class Cache:  # what training needs of a LatentCache: its length, classes and folder
        folder, classes = tmp_path / "cache", ["a", "b"]

        def __len__(self):
            return 5

    assert describe_dataset(Cache()) == f"data: 5 cached latents, 2 classes, from {tmp_path / 'cache'}"


def test_probe_splits_score_on_test_when_there_is_no_val(tmp_path):
    from rectok_core.metrics.probe_run import ProbeConfig, ProbeSplits

    for split in ("train", "test"):
        make_image_folder(tmp_path / "d" / split, classes=2, per_class=2, size=16, seed=len(split))
    splits = ProbeSplits(ProbeConfig(data=str(tmp_path / "d")), 16)
    assert splits.dataset("train", 16).source == str(tmp_path / "d" / "train")
    assert splits.dataset("val", 16).source == str(tmp_path / "d" / "test")
    make_image_folder(tmp_path / "classes", classes=2, per_class=2, size=16)  # a class folder: the train side as is
    splits = ProbeSplits(ProbeConfig(data=str(tmp_path / "classes"), val_data=str(tmp_path / "d" / "test")), 16)
    assert splits.dataset("train", 16).source == str(tmp_path / "classes") and len(splits.val_labels) == 4
