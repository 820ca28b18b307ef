"""Every registered dataset reader through the same checks, on a tiny dataset of its kind (``reader_fixtures``)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from reader_fixtures import EXAMPLES

from rectok_core.data import READERS as REGISTRY
from rectok_core.data.datasets import ImageDataset
from rectok_core.data.readers import build_dataset, reader_for, readers, register_reader
from rectok_core.data.sampler import ResumableSampler, build_loader
from rectok_core.errors import DataError

READERS = [r.name for r in readers()]


def test_builtin_readers_are_registered() -> None:
    assert READERS[:1] == ["digits"] and {"digits", "tar", "folder", "list"} <= set(READERS)
    assert sorted(READERS) == sorted(REGISTRY.names()) == sorted(EXAMPLES)  # every reader has an example
    for name in REGISTRY:
        assert REGISTRY[name].name == name and REGISTRY.description(name)


def test_reader_names_need_no_torch() -> None:
    import subprocess
    import sys

    code = "import sys; from rectok_core.data import READERS; print(','.join(READERS), 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == [",".join(REGISTRY.names()), "False"]


def example(name: str, tmp_path: Path) -> tuple[str, list[int] | None]:
    return EXAMPLES[name](tmp_path)


def batches(dataset: ImageDataset, steps: int, start_step: int = 0, batch: int = 2, seed: int = 3) -> list[dict]:
    """``steps`` batches from global step ``start_step`` on, as a fresh (resumed) run would produce them."""
    sampler = ResumableSampler(len(dataset), seed=seed, flip=True, batch_size=batch)
    loader = build_loader(dataset, sampler, batch, workers=0, device_is_cuda=False)
    out, step = [], start_step
    while len(out) < steps:
        epoch, within = divmod(step, sampler.steps_per_epoch)
        sampler.set_epoch(epoch)
        sampler.set_start(within * batch)
        for b in loader:
            out.append(b)
            step += 1
            if len(out) == steps:
                break
    return out


@pytest.mark.parametrize("name", READERS)
def test_reader_builds_its_example(name: str, tmp_path: Path) -> None:
    spec, labels = example(name, tmp_path)
    assert reader_for(spec).name == name
    ds = build_dataset(spec, 8, split="train")
    assert isinstance(ds, ImageDataset)
    if labels is not None:
        assert len(ds) == len(labels)
        assert [ds[i]["label"] for i in range(len(ds))] == labels
        assert ds.num_classes == max(labels) + 1
    sample = ds[(len(ds) - 1, True)]
    assert sample["image"].shape == (3, 8, 8) and sample["image"].dtype == torch.float32
    assert sample["ok"] is True and sample["index"] == len(ds) - 1
    assert -1 <= sample["image"].min() < sample["image"].max() <= 1
    torch.testing.assert_close(sample["image"], ds[len(ds) - 1]["image"].flip(-1), rtol=0, atol=0)
    assert 0 <= sample["label"] < ds.num_classes


@pytest.mark.parametrize("name", READERS)
def test_reader_resumes_exactly(name: str, tmp_path: Path) -> None:
    spec, _ = example(name, tmp_path)
    ds = build_dataset(spec, 8, split="train")
    if len(ds) > 40:
        ds = ds.subset(range(0, len(ds), len(ds) // 20))
    steps_per_epoch = len(ds) // 2
    n, k = steps_per_epoch + 3, steps_per_epoch - 1  # across an epoch boundary, resumed mid-epoch
    straight = batches(ds, n)
    resumed = batches(ds, k) + batches(ds, n - k, start_step=k)
    assert len(straight) == len(resumed) == n
    for a, b in zip(straight, resumed):
        for key in ("index", "label", "image", "ok"):
            assert torch.equal(a[key], b[key])
    assert not torch.equal(straight[0]["index"], straight[steps_per_epoch]["index"])


def test_register_reader_dispatches_by_priority(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from rectok_core.data import readers as registry

    spec, labels = example("folder", tmp_path)
    seen = []

    def build(spec: str, image_size: int, split: str | None, strict: bool) -> ImageDataset:
        seen.append((spec, image_size, split, strict))
        return registry.image_folder(Path(spec) / "train", image_size, strict)

    with monkeypatch.context() as m:
        m.setattr(registry, "READERS", REGISTRY.copy())
        register_reader("test-early", claims=lambda s: s.endswith("folder"), priority=1)(build)
        assert reader_for(spec).name == "test-early"
        assert len(build_dataset(spec, 8, split="val", strict=True)) == len(labels)
        assert seen == [(spec, 8, "val", True)]
        with pytest.raises(ValueError, match="'test-early' is registered twice"):
            register_reader("test-early", claims=lambda s: False)(build)
    assert reader_for(spec).name == "folder" and "test-early" not in REGISTRY
    with pytest.raises(DataError, match="not found"):
        reader_for(str(tmp_path / "nothing-here"))
