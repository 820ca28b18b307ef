"""Sampling a trained DiT^DH: guidance, the ODE on the shifted grid, decoding, and resumable sample folders
(recipe §4.3, §4.6, §4.7, §11.6).

Per sample ``i`` (a global index): label ``i mod K`` (``transport.labels_for``: ``[0 … K−1]`` cycled, i.e. 50 per
class for 50,000 ImageNet samples), initial noise from ``(seed, i)`` only (``transport.initial_noise``), then
``--steps`` grid points ``t_k = 1 − shift(1 − k/(N−1), s)`` (N − 1 Euler updates, or Heun; ``--time-shift auto``:
the family's official ``s``, ``GeneratorFamily.sampling``), the velocity being

* ``none`` — the conditional velocity ``v(x, t, y)``;
* ``cfg`` — ``v_u + w·(v_c − v_u)`` with the null class, on all channels, inside the guidance interval
  (``--interval auto``: the family's official one);
* ``autoguidance`` — ``v_guide + w·(v_main − v_guide)``, both models with the same label (the guide is a smaller /
  less-trained DiT of the same latent space, e.g. DiT^DH-S at 30 epochs with w = 1.29).

A scale of exactly 1 is plain conditional sampling whatever the method (no extra forward passes, and the images
are the ones of ``none``). The result is denormalised with the latent statistics stored in the DiT checkpoint,
decoded by the tokenizer's pixel decoder, clamped to [−1, 1] and **rounded** to uint8 (§11.6).

Every model evaluation sees at least :data:`MIN_ROWS` rows (a smaller batch is padded with copies of its first
row and the padding dropped): CPU GEMM kernels take another code path for very few rows and round differently,
which would make the last, smaller batch of a run differ in the last bit from the same samples in a full batch.
With that, a sample does not depend on the batch size or on the number of processes on CPU (tested bit for bit).
On GPUs, cuBLAS may still pick shape-dependent kernels; noise and labels stay per-index there too.

Sample folder (``--out``)::

    OUT/manifest.json        settings, model hashes, label scheme, n, complete (written first, completed last)
    OUT/samples/000000.png   one PNG per sample, written to a temporary file and renamed (never half-written)
    OUT/samples.npz          ADM-compatible: arr_0 uint8 (n, H, W, 3), arr_1 int64 labels (n,), at the end
    OUT/grid.png             one class per row (classes 0 … 7): its first 8 samples, captioned

A rerun with the same settings skips the samples already written (so a killed run resumes, and ``-n`` may grow);
a folder made with another seed, model or setting is refused before anything is written.
"""
from __future__ import annotations

import logging
import os
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from rectok_core.checkpoints import LoadedDiT, load_dit, load_matching_tokenizer
from rectok_core.errors import RectokError
from rectok_core.flow.transport import labels_for
from rectok_core.models.generators import GENERATORS
from rectok_core.sampling.config import SampleConfig, resolve_sampler  # noqa: F401 - SampleConfig re-exported
from rectok_core.sampling.eta import estimate
from rectok_core.sampling.generate import (
    RowPadded,
    build_velocity,
    check_guide,
    decode_latents,
    generate_latents,
    require_finite,
)
from rectok_core.utils import distributed
from rectok_core.utils.files import atomic_open, read_format_json, write_json_atomic
from rectok_core.utils.images import class_caption, save_grid, to_uint8
from rectok_core.utils.progress import progress
from rectok_core.utils.runtime import maybe_compile, resolve_compile, resolve_precision

logger = logging.getLogger(__name__)


SAMPLES_FORMAT = "rectok-samples"


VERSION = 1


PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # the IEND chunk every complete PNG ends with


GRID_ROWS, GRID_COLUMNS = 8, 8  # grid.png: the first classes, one per row, and their first samples


# ---------------------------------------------------------------------------------------------------------
# The sample folder
# ---------------------------------------------------------------------------------------------------------
@dataclass
class SampleResult:
    out: Path
    n: int
    generated: int  # samples made by this run (all ranks)
    existing: int  # samples found already written
    npz: Path
    grid: Path
    manifest: dict[str, Any]


def png_path(out: Path, index: int) -> Path:
    return out / "samples" / f"{index:06d}.png"


def png_complete(path: Path) -> bool:
    """A PNG that exists and ends with its IEND chunk (PNGs are renamed into place, so this is a sanity check)."""
    try:
        size = path.stat().st_size
        if size < 8 + len(PNG_END):
            return False
        with open(path, "rb") as f:
            f.seek(size - len(PNG_END))
            return f.read() == PNG_END
    except OSError:
        return False


def write_png(path: Path, image: np.ndarray) -> None:
    """One HWC uint8 image as a PNG, via a temporary file renamed into place (never half-written; on a full disk a
    one-line error naming the file, and no temporary file left)."""
    with atomic_open(path, "wb") as f:
        Image.fromarray(image).save(f, format="PNG")


def sampling_of(cfg: SampleConfig, dit: LoadedDiT) -> tuple[float | None, tuple[float, float]]:
    """(time-grid shift, guidance interval) of ``cfg`` for ``dit``: ``auto`` is its family's official setting."""
    mc = dit.model.config
    return cfg.resolved(GENERATORS[dit.family].sampling, (mc.in_channels, mc.input_size, mc.input_size),
                        dit.prediction)


def manifest_for(cfg: SampleConfig, dit: LoadedDiT, tok_meta: dict, guide: LoadedDiT | None, precision: str,
                 world: int) -> dict[str, Any]:
    """The sample folder's manifest: what made the images (recipe §11.8), with ``complete`` false until the end."""
    K = dit.model.num_classes
    shift, interval = sampling_of(cfg, dit)
    guided = cfg.guided()
    per_class = f"{cfg.n // K}" if cfg.n % K == 0 else f"{cfg.n // K} or {cfg.n // K + 1}"
    return {
        "format": SAMPLES_FORMAT, "version": VERSION, "complete": False, "n": cfg.n, "seed": cfg.seed,
        "steps": cfg.steps, "sampler": resolve_sampler(dit.prediction, cfg.sampler), "precision": precision,
        "guidance": {"method": cfg.cfg if guided else "none", "scale": cfg.scale if guided else 1.0,
                     "interval": list(interval) if guided else None,
                     "guide": None if guide is None or not guided else
                     {"path": os.path.abspath(guide.path), "sha256": guide.sha256, "weights": guide.weights,
                      "step": guide.step},
                     "requested": {"method": cfg.cfg, "scale": cfg.scale, "interval": cfg.interval,
                                   "time_shift": cfg.time_shift}},
        "dit": {"path": os.path.abspath(dit.path), "sha256": dit.sha256, "weights": dit.weights, "step": dit.step,
                "family": dit.family},
        "tokenizer": {"path": os.path.abspath(tok_meta["path"]), "sha256": tok_meta["sha256"],
                      "weights": tok_meta["weights"]},
        "latent_stats": {"tokenizer_sha256": dit.stats.tokenizer_sha256,
                         "data_fingerprint": dit.stats.data_fingerprint},
        "labels": {"scheme": "cycled", "rule": "label of sample i = i mod num_classes", "num_classes": K,
                   "per_class": per_class},
        "classes": dit.classes,
        "noise": "transport.initial_noise(seed, index): per sample, independent of batch size and processes",
        "time_grid": ({"rule": "t_k = 1 - shift_time(1 - k/(N-1), shift)", "shift": shift,
                       "source": "family default" if cfg.shift_value() is None else "--time-shift"}
                      if dit.prediction == "velocity" else
                      {"rule": "official respacing of 1000 diffusion steps to N; per-step noise from "
                               "diffusion.step_generators(seed, index)", "shift": None}),
        "image_size": None, "files": "samples/{index:06d}.png", "npz": "samples.npz", "grid": "grid.png",
        "batch_size": cfg.batch_size, "world_size": world,
    }


# What must agree for a folder to be continued (everything that changes the pixels of sample i).
_IDENTITY_KEYS = (("seed",), ("steps",), ("sampler",), ("precision",), ("guidance", "method"), ("guidance", "scale"),
                  ("guidance", "interval"), ("time_grid", "shift"), ("dit", "sha256"), ("dit", "weights"),
                  ("tokenizer", "sha256"), ("tokenizer", "weights"))


def _legacy_time_grid(old: dict[str, Any], new: dict[str, Any]) -> None:
    """Manifests written before the families had their own grids describe it in a string (DiT^DH's shifted grid
    ``... = S`` with S to 6 digits, or the diffusion respacing): read it as the structured ``time_grid``."""
    grid = old.get("time_grid")
    if not isinstance(grid, str):
        return
    shift = None
    if grid.startswith("t_k"):
        shift = grid.rsplit("= ", 1)[-1]
        now = _get(new, ("time_grid", "shift"))
        if isinstance(now, float) and f"{now:.6g}" == shift:
            shift = now
    old["time_grid"] = {"rule": grid, "shift": shift}


def _get(d: dict, path: tuple[str, ...]) -> Any:
    for p in path:
        d = d.get(p) if isinstance(d, dict) else None
    return d


def _check_folder(out: Path, new: dict[str, Any]) -> dict[str, Any] | None:
    """The existing manifest of ``out`` when it may be continued by a run described by ``new`` (None for a new
    folder); a :class:`RectokError` naming the first difference otherwise. Nothing is written here."""
    if out.exists() and not out.is_dir():
        raise RectokError(f"--out {out} is a file, not a folder")
    mpath = out / "manifest.json"
    if not mpath.is_file():
        if out.is_dir() and any(out.iterdir()):
            raise RectokError(f"--out {out} is not empty and holds no rectok sample manifest: choose another --out")
        return None
    old = read_format_json(mpath, SAMPLES_FORMAT, "rectok sample manifest: choose another --out")
    _legacy_time_grid(old, new)
    pairs = [(k, _get(old, k), _get(new, k)) for k in _IDENTITY_KEYS]
    if _get(new, ("guidance", "guide")) is not None or _get(old, ("guidance", "guide")) is not None:
        pairs.append((("guide", "sha256"), _get(old, ("guidance", "guide", "sha256")),
                      _get(new, ("guidance", "guide", "sha256"))))
    for key, a, b in pairs:
        if a != b:
            name = ".".join(key)
            raise RectokError(f"{out} holds samples made with {name} = {a!r} (this run: {b!r}); nothing was "
                              f"overwritten — choose another --out")
    if new["n"] < old["n"]:
        raise RectokError(f"{out} holds {old['n']} samples; -n {new['n']} would leave a mixed folder: use "
                          f"-n {old['n']} or more, or another --out")
    return old


def _pending(out: Path, n: int) -> list[int]:
    return [i for i in range(n) if not png_complete(png_path(out, i))]


def write_npz(path: Path, images: Iterator[np.ndarray], n: int, hw: tuple[int, int], labels: np.ndarray) -> None:
    """An ADM-style ``.npz`` (``arr_0`` uint8 (n, H, W, 3), ``arr_1`` labels) streamed image by image, atomically."""
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)), "fortran_order": False,
              "shape": (n, hw[0], hw[1], 3)}
    with atomic_open(path, "wb") as raw, zipfile.ZipFile(raw, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        with zf.open("arr_0.npy", "w", force_zip64=True) as f:
            np.lib.format.write_array_header_1_0(f, header)
            written = 0
            for img in images:
                f.write(np.ascontiguousarray(img, dtype=np.uint8).tobytes())
                written += 1
            if written != n:
                raise RectokError(f"{path}: got {written} of {n} images")
        with zf.open("arr_1.npy", "w") as f:
            np.lib.format.write_array(f, np.ascontiguousarray(labels))


def _read_png(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.array(im.convert("RGB"))


def grid_layout(n: int, K: int, rows: int = GRID_ROWS, cols: int = GRID_COLUMNS) -> list[list[int]]:
    """Sample indices of ``grid.png``: row ``c`` holds class ``c``'s first samples ``c, c+K, c+2K, …`` (labels are
    ``i mod K``), for the first ``min(rows, K, n)`` classes, all rows as long as the shortest (at most ``cols``)."""
    classes = min(rows, K, n)
    width = min(cols, len(range(classes - 1, n, K)))
    return [[c + j * K for j in range(width)] for c in range(classes)]


def _finish(out: Path, manifest: dict[str, Any], K: int, outputs_current: bool) -> tuple[Path, Path]:
    """Rank 0, once every PNG exists: the .npz, the grid and the completed manifest (the .npz and grid are kept
    when ``outputs_current``: a rerun of a complete folder that generated nothing)."""
    n = manifest["n"]
    missing = _pending(out, n)
    if missing:
        raise RectokError(f"{len(missing)} samples are missing in {out} after sampling (first: {missing[0]})")
    hw = _read_png(png_path(out, 0)).shape[:2]
    npz, grid = out / "samples.npz", out / "grid.png"
    manifest.update(complete=True, image_size=int(hw[0]))
    if outputs_current:
        write_json_atomic(out / "manifest.json", manifest)
        return npz, grid
    write_npz(npz, (_read_png(png_path(out, i)) for i in range(n)), n, hw, labels_for(n, K).numpy())
    layout = grid_layout(n, K)
    rows = [torch.stack([torch.from_numpy(_read_png(png_path(out, i))).permute(2, 0, 1).float() / 127.5 - 1
                         for i in row]) for row in layout]
    classes = manifest.get("classes")
    g = manifest["guidance"]
    guide = "no guidance" if g["method"] == "none" else f"{g['method']} {g['scale']:g}"
    save_grid(rows, grid, row_labels=[class_caption(r[0] % K, classes) for r in layout],
              title=f"samples: one class per row, first {len(layout[0])} samples each "
                    f"({manifest['sampler']}, {manifest['steps']} steps, {guide}, seed {manifest['seed']})")
    write_json_atomic(out / "manifest.json", manifest)
    return npz, grid


def sample(dit_ckpt: str, cfg: SampleConfig) -> SampleResult:
    """``rectok sample``: generate ``cfg.n`` samples into ``cfg.out`` (resuming a folder made with the same
    settings); spread over torchrun ranks (gloo on CPU, NCCL on GPU)."""
    cfg.validate()
    d = distributed.setup(cfg.device)
    try:
        return sample_in_group(dit_ckpt, cfg, d)
    finally:
        distributed.cleanup()


def sample_in_group(dit_ckpt: str, cfg: SampleConfig, d: distributed.Dist) -> SampleResult:
    """:func:`sample` inside a process group the caller set up (and tears down): ``rectok sweep`` runs one
    folder per guidance scale in the same group."""
    dev, out = d.device, Path(cfg.out)
    precision = resolve_precision(dev, cfg.precision)
    dit = load_dit(dit_ckpt, cfg.weights, dev)
    tokenizer, tok_meta = load_matching_tokenizer(dit, cfg.tokenizer or None, dev)
    guide = None
    if cfg.cfg == "autoguidance":
        guide = load_dit(cfg.guide, cfg.weights, dev)
        check_guide(dit, guide)
    if cfg.guided() and cfg.cfg == "cfg" and dit.model.config.class_dropout == 0:
        logger.warning("%s was trained without label dropout: its null class is untrained and CFG is meaningless",
                       dit.path)
    if cfg.cfg != "none" and cfg.scale == 1.0:
        logger.info("guidance scale 1: plain conditional sampling (no guidance passes)")
    manifest = manifest_for(cfg, dit, tok_meta, guide, precision, d.world_size)
    compiled = resolve_compile(cfg.compile, dev)
    # not an identity key: compiled and eager images agree to float rounding (tests/training/test_equivalence.py)
    manifest["compile"] = compiled

    plan: tuple[list[int], int, bool] | str  # (pending indices, already written, outputs current) or an error
    if d.is_main:
        try:
            old = _check_folder(out, manifest)
            (out / "samples").mkdir(parents=True, exist_ok=True)
            for stale in [*(out / "samples").glob(".tmp-*"), *(out / "samples").glob(".*.tmp")]:
                stale.unlink()
            write_json_atomic(out / "manifest.json", manifest)
            pending = _pending(out, cfg.n)
            current = (not pending and old is not None and old.get("complete") is True and old["n"] == cfg.n
                       and (out / "samples.npz").is_file() and (out / "grid.png").is_file())
            plan = (pending, cfg.n - len(pending), current)
        except RectokError as e:
            plan = str(e)
        except OSError as e:
            plan = f"cannot write to --out {out}: {e.strerror or e}"
    plan = distributed.broadcast_object(plan if d.is_main else None)
    if isinstance(plan, str):  # every rank stops with rank 0's message
        raise RectokError(plan)
    pending, existing, outputs_current = plan
    mine = pending[d.rank::d.world_size]  # any split works: a sample depends on its index only

    K = dit.model.num_classes
    mc = dit.model.config
    shape = (mc.in_channels, mc.input_size, mc.input_size)
    sampler = resolve_sampler(dit.prediction, cfg.sampler)
    shift, interval = sampling_of(cfg, dit)
    velocity = build_velocity(RowPadded(maybe_compile(dit.model, compiled)), cfg.cfg, cfg.scale, dit.model.null_class,
                              RowPadded(maybe_compile(guide.model, compiled)) if guide is not None else None,
                              interval, dit.prediction, mc.in_channels)
    all_labels = labels_for(cfg.n, K)
    if d.is_main and mine:  # before any work: the defaults (50,000 × 150 steps) take days on a CPU
        est = estimate(lambda m, g: build_velocity(m, cfg.cfg, cfg.scale, dit.model.null_class,
                                                   g if guide is not None else None, interval),
                       velocity, mc, guide.model.config if guide is not None else None, len(mine), cfg.batch_size,
                       cfg.steps, sampler if sampler != "ddpm" else "euler", dev, precision)
        logger.info("%s", est.line(cfg.steps, dev, len(pending), d.world_size))
    bar = progress(len(pending), 0, "sample", d.is_main, unit="img")
    for start in range(0, len(mine), cfg.batch_size):
        idx = torch.tensor(mine[start:start + cfg.batch_size], dtype=torch.long)
        z = generate_latents(velocity, idx, all_labels[idx], cfg.seed, shape, cfg.steps, sampler, dev, precision,
                             shift)
        require_finite(z, "latents", idx)
        decoded = decode_latents(tokenizer, dit.stats, z, precision)
        require_finite(decoded, "images", idx)
        images = to_uint8(decoded)
        for i, img in zip(idx.tolist(), images):
            write_png(png_path(out, i), img)
        bar.update(min(len(idx) * d.world_size, len(pending) - bar.n))
    bar.close()
    distributed.barrier()
    npz = out / "samples.npz"
    grid = out / "grid.png"
    if d.is_main:
        npz, grid = _finish(out, manifest, K, outputs_current)
        logger.info("%d samples in %s (%d new, %d already there)", cfg.n, out, len(pending), existing)
    return SampleResult(out=out, n=cfg.n, generated=len(pending), existing=existing, npz=npz, grid=grid,
                        manifest=manifest)

