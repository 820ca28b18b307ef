"""The Python API: :class:`Tokenizer` (images ↔ latent maps) and :class:`Generator` (class labels → images).

Both load from a rectok checkpoint, an export folder (``rectok export``) or a Hugging Face Hub id of one::

    from rectok_core import Tokenizer, Generator
    tok = Tokenizer.from_pretrained("tokenizer/")          # images in [0, 1] ↔ (B, C, h, w) latents
    z = tok.encode(tok.preprocess(["cat.jpg"]))
    gen = Generator.from_pretrained("dit/", tokenizer="tokenizer/")
    images = gen.sample([207, 360], steps=150, seed=0)   # uint8 (B, H, W, 3), what `rectok sample` writes

``Generator.sample`` runs the same code as ``rectok sample`` (noise from (seed, sample index), the same velocity,
grid, decoding and rounding), so sample ``i`` equals the CLI's PNG ``i`` bit for bit for the same settings.
Images are in [0, 1] here (the models work in [−1, 1] inside).

As in diffusers: ``from_pretrained(..., revision=, cache_dir=, local_files_only=)`` for Hub ids,
``save_pretrained(dir)`` (the ``rectok export`` folder), ``push_to_hub(repo_id, dry_run=...)`` (``rectok push``),
``.to(device)`` returning the object, and a ``repr`` naming the model, its latent shape, parameters and device.
"""
from __future__ import annotations

import abc
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rectok_core.checkpoints import load_dit, load_matching_tokenizer, load_tokenizer, open_checkpoint, resolve
from rectok_core.checkpoints.families import load_any_tokenizer, split_spec
from rectok_core.config import device_spec
from rectok_core.data.latent_stats import LatentStats, family_stats, load_or_compute_stats
from rectok_core.data.readers import build_dataset
from rectok_core.data.transforms import center_crop_arr
from rectok_core.errors import RectokError
from rectok_core.interop.export import export, push
from rectok_core.sampling.config import resolve_sampler
from rectok_core.sampling.folder import SampleConfig, sampling_of
from rectok_core.sampling.generate import RowPadded, build_velocity, check_guide, decode_latents, generate_latents
from rectok_core.utils import checkpoint
from rectok_core.utils.distributed import Dist, resolve_device
from rectok_core.utils.images import to_uint8
from rectok_core.utils.runtime import autocast, maybe_compile, resolve_compile, resolve_precision

ImageLike = Any  # a PIL image, or a path to an image file


def _hub_options(revision: str | None, cache_dir: str | os.PathLike[str] | None,
                 local_files_only: bool) -> dict[str, Any]:
    return {"revision": revision, "cache_dir": cache_dir, "local_files_only": local_files_only}


def _local(spec: str | os.PathLike[str] | None, hub: dict[str, Any]) -> str | None:
    """``spec`` as a local file or folder: a Hub id is fetched (with ``hub``'s revision, cache and offline options)."""
    return None if spec is None else str(resolve(str(spec), **hub))


def _millions(module: torch.nn.Module) -> str:
    return f"{sum(p.numel() for p in module.parameters()) / 1e6:.2f}M"


class _Saveable(abc.ABC):
    """``save_pretrained`` / ``push_to_hub`` / ``to`` shared by :class:`Tokenizer` and :class:`Generator`."""

    @abc.abstractmethod
    def _source(self) -> tuple[str, str, str, torch.nn.Module]:
        """(checkpoint or folder, weights, kind, model) this object was loaded from."""

    def _check_unchanged(self) -> None:
        """Refuse to export weights that were changed in memory: the folder would claim the source's identity."""
        source, weights, kind, model = self._source()
        state = checkpoint.state_of(open_checkpoint(source, kind), weights, source)
        for name, t in model.state_dict().items():
            if name in state and not torch.equal(state[name], t.detach().cpu().to(state[name].dtype)):
                raise RectokError(f"the weights in memory differ from {source} ({name} changed): save_pretrained "
                                  f"writes a checkpoint's weights; save the changed model as a training checkpoint")

    def save_pretrained(self, save_directory: str | os.PathLike[str], overwrite: bool = False, **export_options: Any
                        ) -> Path:
        """Write the export folder of this model (what ``rectok export`` writes: ``model.safetensors``,
        ``config.json``, ``README.md``) into ``save_directory``; ``from_pretrained`` loads it. ``export_options``:
        ``eval_file``, ``license``, and for a Generator ``tokenizer_ref``."""
        self._check_unchanged()
        source, weights, _, _ = self._source()
        return export(source, save_directory, weights=weights, overwrite=overwrite, **export_options)

    def push_to_hub(self, repo_id: str, commit_message: str = "Upload rectok model", private: bool = False,
                    dry_run: bool = False, **export_options: Any) -> list[tuple[str, int]]:
        """Export this model to a temporary folder and upload it to the Hub repo ``repo_id`` (what ``rectok push``
        does); returns the (file, bytes) uploaded. ``dry_run``: list them without the network."""
        import tempfile

        with tempfile.TemporaryDirectory(prefix="rectok-push-") as tmp:
            folder = self.save_pretrained(Path(tmp) / "export", **export_options)
            return push(folder, repo_id, dry_run=dry_run, private=private, message=commit_message)

    def to(self, device: str | torch.device) -> Any:
        """Move the model(s) to ``device`` (``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"``); returns self."""
        device_spec("device", str(device))
        dev = resolve_device(str(device))
        for m in self._modules():
            m.to(dev)
        self.device = dev
        self.precision = resolve_precision(dev, self.precision)
        return self

    @abc.abstractmethod
    def _modules(self) -> list[torch.nn.Module]:
        """The networks :meth:`to` moves."""


class Tokenizer(_Saveable):
    """A RecTok tokenizer for inference (encoder + posterior + pixel decoder, frozen)."""

    def __init__(self, model, meta: dict, device: torch.device, precision: str = "fp32"):
        self.model, self.meta, self.device = model, meta, device
        self.precision = resolve_precision(device, precision)
        st = meta.get("latent_stats")
        #: Per-channel statistics of the posterior mean (from an export folder, or :meth:`compute_latent_stats`);
        #: for a family with a published global normalisation (SD-VAE 0.18215, MAR KL-16 0.2325 …), that one.
        self.latent_stats: LatentStats | None = (LatentStats.from_state(st) if st is not None else
                                                 family_stats(model, meta))

    @classmethod
    def from_pretrained(cls, source: str | os.PathLike[str], device: str = "auto", weights: str = "ema",
                        precision: str = "fp32", revision: str | None = None,
                        cache_dir: str | os.PathLike[str] | None = None, local_files_only: bool = False,
                        image_size: int | None = None) -> Tokenizer:
        """From a tokenizer checkpoint, export folder or Hub id; ``precision`` fp32 (exact) or bf16/auto.
        ``revision``, ``cache_dir``, ``local_files_only``: for a Hub id, as ``huggingface_hub`` takes them.
        ``FAMILY:SOURCE`` loads a tokenizer of another family (``rectok tokenizers``) at ``image_size`` (default 256)."""
        dev = resolve_device(device)
        family, source = split_spec(source)
        if family != "rectok":
            model, meta = load_any_tokenizer(f"{family}:{source}", device=dev, image_size=image_size)
            return cls(model, meta, dev, precision)
        local = _local(source, _hub_options(revision, cache_dir, local_files_only))
        model, meta = load_tokenizer(local, use_ema=weights == "ema", device=dev)
        return cls(model, meta, dev, precision)

    def _source(self) -> tuple[str, str, str, torch.nn.Module]:
        family = self.meta.get("family", "rectok")
        if family != "rectok":
            raise RectokError(f"save_pretrained and push_to_hub write rectok tokenizers; this one is {family}'s "
                              f"published model ({self.meta.get('source')}): share its own release instead")
        return self.meta["path"], self.meta["weights"], "tokenizer", self.model

    def _modules(self) -> list[torch.nn.Module]:
        return [self.model]

    def __repr__(self) -> str:
        family = self.meta.get("family", "rectok")
        what = f"RecTok {self.meta.get('stage') or 'tokenizer'}" if family == "rectok" else family
        return (f"Tokenizer({what}, {self.image_size} px → latents {'×'.join(map(str, self.latent_shape))}, "
                f"{_millions(self.model)} params, {self.meta.get('weights')} weights, device={self.device}, "
                f"precision={self.precision}, latent_stats={'yes' if self.latent_stats is not None else 'no'}, "
                f"source={self.meta.get('path')!r})")

    @property
    def image_size(self) -> int:
        return self.model.cfg.image_size

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """(C, h, w) of one latent map."""
        h, w = self.model.cfg.grid
        return (self.model.cfg.dim, h, w)

    def preprocess(self, images: ImageLike | Sequence[ImageLike]) -> torch.Tensor:
        """PIL images or image paths → ADM center crop at the model's size → float (B, 3, S, S) in [0, 1]."""
        from PIL import Image

        items = images if isinstance(images, (list, tuple)) else [images]
        out = []
        for item in items:
            if isinstance(item, (str, os.PathLike)):
                try:
                    with Image.open(item) as im:
                        img = im.convert("RGB")
                except OSError as e:
                    raise RectokError(f"cannot read image {item}: {e}") from None
            elif isinstance(item, Image.Image):
                img = item.convert("RGB")
            else:
                raise RectokError(f"preprocess takes PIL images or paths, got {type(item).__name__}")
            arr = np.asarray(center_crop_arr(img, self.image_size), dtype=np.uint8)
            out.append(torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255.0))  # as data.transforms
        if not out:
            raise RectokError("preprocess got no image")
        return torch.stack(out).to(self.device)

    def _check_images(self, x: torch.Tensor) -> torch.Tensor:
        s = self.image_size
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or tuple(x.shape[1:]) != (3, s, s):
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise RectokError(f"expected images of shape (B, 3, {s}, {s}) in [0, 1], got {got}")
        if not x.is_floating_point() or x.min() < 0 or x.max() > 1:
            raise RectokError("expected float images in [0, 1] (use preprocess(), or (x + 1) / 2 for [-1, 1])")
        return x.to(self.device, torch.float32)

    def _check_latents(self, z: torch.Tensor) -> torch.Tensor:
        C, h, w = self.latent_shape
        if not isinstance(z, torch.Tensor) or z.dim() != 4 or tuple(z.shape[1:]) != (C, h, w):
            got = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
            raise RectokError(f"expected latents of shape (B, {C}, {h}, {w}), got {got}")
        return z.to(self.device, torch.float32)

    def _stats(self) -> LatentStats:
        if self.latent_stats is None:
            raise RectokError("this tokenizer has no latent statistics: call compute_latent_stats(data) first (or "
                              "export it with --latent-stats)")
        return self.latent_stats

    @torch.no_grad()
    def encode(self, x: torch.Tensor, sample: bool = False, normalize: bool = False,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """Images (B, 3, S, S) in [0, 1] → latent maps (B, C, h, w): the posterior mean (``sample``: a draw),
        ``normalize``: standardised with :attr:`latent_stats` (the DiT's input space)."""
        x = self._check_images(x).sub(0.5).div(0.5)
        with autocast(self.device, self.precision):
            post = self.model.encode(x)
        z = self.model.latent_grid(post.sample(generator) if sample else post.mean)
        return self._stats().normalize(z) if normalize else z

    @torch.no_grad()
    def decode(self, z: torch.Tensor, normalized: bool = False) -> torch.Tensor:
        """Latent maps (B, C, h, w) → images (B, 3, S, S) in [0, 1] (``normalized``: ``z`` is standardised)."""
        z = self._check_latents(z)
        if normalized:
            z = self._stats().denormalize(z)
        with autocast(self.device, self.precision):
            img = self.model.decode(self.model.latent_tokens(z))
        return img.float().clamp(-1, 1).add(1).div(2)

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Posterior-mean reconstruction of images in [0, 1]."""
        return self.decode(self.encode(x))

    def compute_latent_stats(self, data: str, stats_dir: str | None = None, batch_size: int = 64,
                             workers: int = 0) -> LatentStats:
        """The statistics over ``data`` (its train split), as ``rectok latent-stats`` computes them (and caches)."""
        dataset = build_dataset(data, self.image_size, split="train")
        self.latent_stats = load_or_compute_stats(self.model, self.meta, dataset, stats_dir,
                                                  Dist(0, 1, 0, self.device), batch_size, workers, "fp32")
        return self.latent_stats


class Generator(_Saveable):
    """A class-conditional generator of any family (DiT^DH, SiT, LightningDiT, DiT) with the tokenizer that decodes
    its latents (and optionally a guide of the same family)."""

    def __init__(self, dit, tokenizer, tokenizer_meta: dict, guide=None, device: torch.device | None = None,
                 precision: str = "auto", compile: bool | None = None):
        self.dit, self.tokenizer, self.tokenizer_meta, self.guide = dit, tokenizer, tokenizer_meta, guide
        self.device = device or torch.device("cpu")
        self.precision = resolve_precision(self.device, precision)
        self.compile = resolve_compile(compile, self.device)

    @classmethod
    def from_pretrained(cls, source: str | os.PathLike[str], tokenizer: str | None = None, guide: str | None = None,
                        device: str = "auto", weights: str = "ema", precision: str = "auto",
                        compile: bool | None = None, revision: str | None = None,
                        cache_dir: str | os.PathLike[str] | None = None, local_files_only: bool = False) -> Generator:
        """From a DiT checkpoint, export folder or Hub id. ``tokenizer``: default the one the DiT records (its
        sha256 is checked); ``guide``: a smaller DiT of the same latent space for AutoGuidance. ``revision`` (of
        ``source``), ``cache_dir``, ``local_files_only``: for Hub ids, as ``huggingface_hub`` takes them."""
        dev = resolve_device(device)
        hub = _hub_options(revision, cache_dir, local_files_only)
        dit = load_dit(_local(source, hub), weights, dev)
        tok, meta = load_matching_tokenizer(dit, _local(tokenizer, {**hub, "revision": None}), dev)
        g = None
        if guide is not None:
            g = load_dit(_local(guide, {**hub, "revision": None}), weights, dev)
            check_guide(dit, g)
        return cls(dit, tok, meta, g, dev, precision, compile)

    def _source(self) -> tuple[str, str, str, torch.nn.Module]:
        return self.dit.path, self.dit.weights, "dit", self.dit.model

    def _modules(self) -> list[torch.nn.Module]:
        return [self.dit.model, self.tokenizer] + ([self.guide.model] if self.guide is not None else [])

    def __repr__(self) -> str:
        c = self.dit.model.config
        guide = f", guide {_millions(self.guide.model)} params" if self.guide is not None else ""
        arch = (f"DiT^DH trunk {c.width}×{c.depth}, head {c.head_width}×{c.head_depth}" if self.dit.family == "dit-dh"
                else f"{self.dit.family} {getattr(c, 'width', '?')}×{getattr(c, 'depth', '?')}")
        return (f"Generator({arch}, {_millions(self.dit.model)} params, {c.num_classes} classes, latents {c.in_channels}×"
                f"{c.input_size}×{c.input_size} → {self.image_size} px (tokenizer {_millions(self.tokenizer)} "
                f"params){guide}, step {self.dit.step}, {self.dit.weights} weights, device={self.device}, "
                f"precision={self.precision}, source={self.dit.path!r})")

    @property
    def num_classes(self) -> int:
        return self.dit.model.num_classes

    @property
    def classes(self) -> list[str]:
        return self.dit.classes

    @property
    def image_size(self) -> int:
        return self.tokenizer.cfg.image_size

    def _guide(self, guide) -> Any:
        if guide is None:
            return self.guide
        if isinstance(guide, Generator):
            guide = guide.dit
        if isinstance(guide, (str, Path)):
            guide = load_dit(str(guide), self.dit.weights, self.device)
        check_guide(self.dit, guide)
        return guide

    @torch.no_grad()
    def sample(self, labels: Sequence[int] | torch.Tensor, steps: int = 150, cfg: str = "none", scale: float = 1.0,
               guide: Any = None, seed: int = 0, indices: Sequence[int] | torch.Tensor | None = None,
               sampler: str = "euler", interval: tuple[float, float] | None = None, batch_size: int = 256,
               output: str = "uint8", time_shift: float | None = None) -> np.ndarray | torch.Tensor:
        """Images of class ``labels``: uint8 (B, H, W, 3) (the PNGs' pixels), or ``output="float"`` (B, 3, H, W)
        in [0, 1]. Sample ``k`` uses the noise of sample index ``indices[k]`` (default ``k``); with labels
        ``i mod K`` these are ``rectok sample``'s images. ``cfg``: none, cfg (null class) or autoguidance (a
        ``guide`` checkpoint / Generator, or the one given to :meth:`from_pretrained`). ``interval`` and
        ``time_shift`` None: the family's official ones (``rectok sample``'s ``auto``)."""
        y = torch.as_tensor(labels, dtype=torch.long).reshape(-1)
        idx = torch.arange(len(y)) if indices is None else torch.as_tensor(indices, dtype=torch.long).reshape(-1)
        K = self.num_classes
        if len(y) == 0 or len(idx) != len(y):
            raise RectokError(f"need one sample index per label (got {len(y)} labels, {len(idx)} indices)")
        if y.min() < 0 or y.max() >= K or idx.min() < 0:
            raise RectokError(f"labels must lie in [0, {K}) and indices be >= 0")
        if output not in ("uint8", "float"):
            raise RectokError(f"output {output!r}: choose uint8 or float")
        g = self._guide(guide) if cfg == "autoguidance" else None
        settings = SampleConfig(n=len(y), steps=steps, sampler=sampler, cfg=cfg, scale=scale, seed=seed,
                                guide="given" if g is not None else "", batch_size=batch_size,
                                interval="auto" if interval is None else f"{interval[0]},{interval[1]}",
                                time_shift="auto" if time_shift is None else str(time_shift))
        settings.validate()
        shift, interval = sampling_of(settings, self.dit)
        mc = self.dit.model.config
        shape = (mc.in_channels, mc.input_size, mc.input_size)
        sampler = resolve_sampler(self.dit.prediction, sampler)
        velocity = build_velocity(RowPadded(maybe_compile(self.dit.model, self.compile)), cfg, scale,
                                  self.dit.model.null_class,
                                  RowPadded(maybe_compile(g.model, self.compile)) if g is not None else None,
                                  interval, self.dit.prediction, mc.in_channels)
        parts = []
        for start in range(0, len(y), batch_size):
            z = generate_latents(velocity, idx[start:start + batch_size], y[start:start + batch_size], seed, shape,
                                 steps, sampler, self.device, self.precision, shift)
            img = decode_latents(self.tokenizer, self.dit.stats, z, self.precision)
            parts.append(to_uint8(img) if output == "uint8" else img.add(1).div(2).cpu())
        return np.concatenate(parts) if output == "uint8" else torch.cat(parts)
