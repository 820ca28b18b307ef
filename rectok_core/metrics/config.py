"""The settings of the measuring commands (``eval``, ``eval-samples``, ``fid-stats``, ``probe-flow``): one dataclass each, whose
fields are the commands' options (defaults, help and allowed values written once, here)."""
from __future__ import annotations

from dataclasses import dataclass

from rectok_core.config import (
    WEIGHTS,
    check_choices,
    device_option,
    device_spec,
    nonneg,
    opt,
    positive,
    precision_option,
    strict_data_option,
    workers_option,
)
from rectok_core.data.config import TOKENIZER_IMAGE_SIZE_HELP
from rectok_core.errors import RectokError
from rectok_core.teachers import teacher_help
from rectok_core.training.trackers import parse_log_spec


@dataclass
class EvalConfig:
    """``rectok eval``: reconstruction metrics of a tokenizer checkpoint."""
    data: str = opt("", "evaluation data: image folder (DIR/<split> if present), list file or 'digits' (default: the "
                        "checkpoint's training data)")
    split: str = opt("val", "split of --data to evaluate (val, test or train; data with train/ and test/ but no "
                            "val/ is evaluated on test/ unless this is given)")
    n: int | None = opt(None, "evaluate the first N images in dataset order (default: all)", flag_type=int,
                        flag="--num", aliases=("-n",))
    per_class: int | None = opt(None, "evaluate the first N images of each class (a class-balanced subset; not "
                                      "with -n; default: all)", flag_type=int)
    image_size: int = opt(0, TOKENIZER_IMAGE_SIZE_HELP)
    batch_size: int = opt(64, "images per batch per process")
    out: str = opt("", "folder for eval.json and recon_grid.png (default: RUN/eval/step_NNNNNNN-WEIGHTS beside the "
                       "checkpoint folder)")
    weights: str = opt("ema", "tokenizer weights", WEIGHTS)
    ref_stats: str = opt("", "rFID reference statistics .npz (mu/sigma; default: the same real images, computed in "
                             "the same pass)")
    save_stats: str = opt("", "also write the real images' statistics to this .npz (reuse them with --ref-stats)")
    overwrite: bool = opt(False, "replace a --save-stats file that is not a rectok statistics file")
    lpips_vgg: str = opt("", "VGG16 ImageNet weights for LPIPS (vgg16-397923af.pth; default: torch hub cache; LPIPS "
                             "is left out without them)")
    inception_weights: str = opt("", "InceptionV3 weights file (default: resolved offline)")
    precision: str = precision_option()
    workers: int = workers_option(0)
    device: str = device_option()
    strict_data: bool = strict_data_option()
    log: str = opt("", "also log the metrics to the trackers of the checkpoint's run folder (RUN/checkpoints/X.pt): "
                       "tensorboard and/or wandb, comma-separated")

    def validate(self) -> None:
        check_choices(self)
        parse_log_spec(self.log)
        positive("batch_size", self.batch_size)
        nonneg("workers", self.workers)
        nonneg("image_size", self.image_size)
        if self.n is not None and self.per_class is not None:
            raise RectokError("-n and --per-class choose the images in two ways: give one of them")
        device_spec("device", self.device)


@dataclass
class EvalSamplesConfig:
    """``rectok eval-samples``: gFID (and IS, precision/recall, KID) of generated samples."""
    ref_stats: str = opt("", "reference statistics .npz (mu/sigma: ADM reference batch, torch-fidelity or `rectok "
                             "fid-stats`)")
    ref_data: str = opt("", "folder of reference images (also gives precision/recall, KID)")
    ref_image_size: int = opt(0, "ADM center crop of the reference images (0: as stored)")
    kid: bool = opt(False, "also compute KID (needs --ref-data)")
    inception_weights: str = opt("", "InceptionV3 weights file (default: resolved offline; torch-fidelity's original "
                                     "file also gives the IS)")
    batch_size: int = opt(50, "images per Inception batch")
    workers: int = workers_option(0, "image-decoding worker processes")
    device: str = device_option()
    out: str = opt("", "result JSON (default: SAMPLES/eval.json, or NAME.eval.json beside an .npz)")

    def validate(self) -> None:
        positive("batch_size", self.batch_size)
        nonneg("ref_image_size", self.ref_image_size)
        nonneg("workers", self.workers)
        device_spec("device", self.device)
        if bool(self.ref_stats) == bool(self.ref_data):
            raise RectokError("give exactly one reference: --ref-stats FILE.npz or --ref-data FOLDER")


@dataclass
class FidStatsConfig:
    """``rectok fid-stats``: Inception statistics of an image folder, the reference of ``eval-samples``."""
    out: str = opt("", "statistics file to write (.npz with mu/sigma)", required=True)
    overwrite: bool = opt(False, "replace an --out file that is not a rectok statistics file")
    image_size: int = opt(0, "ADM center crop to this size (0: as stored; 256 for ImageNet-256)")
    n: int = opt(0, "use the first N images in path order (0: all)", flag="--num", aliases=("-n",))
    per_class: int = opt(0, "use the first N images of each sub-folder (class) (0: all); a class-balanced subset")
    inception_weights: str = opt("", "InceptionV3 weights file (default: resolved offline)")
    batch_size: int = opt(50, "images per Inception batch")
    workers: int = workers_option(0, "image-decoding worker processes")
    device: str = device_option()

    def validate(self) -> None:
        positive("batch_size", self.batch_size)
        for name in ("image_size", "n", "per_class", "workers"):
            nonneg(name, getattr(self, name))
        device_spec("device", self.device)


def inception_device(device: str) -> str | None:
    """``--device`` for the Inception commands: None lets them pick (CUDA when present)."""
    return None if device == "auto" else device


SPACES = ("normalized", "raw")


CLASSIFIERS = ("torch", "sklearn")


# ---------------------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------------------
@dataclass
class ProbeConfig:
    """``rectok probe-flow``: linear probes of tokenizer latents x_t along the forward flow."""
    data: str = opt("", "labelled data: a folder with train/ and val/ (or test/) ImageFolder trees, or 'digits' (default: the "
                        "training data recorded in the first checkpoint)")
    train_data: str = opt("", "train split (folder, list file or 'digits'); overrides --data")
    val_data: str = opt("", "val split (folder, list file or 'digits'); overrides --data")
    per_class: int = opt(0, "at most N train images per class, first by path (0: all)")
    val_per_class: int = opt(0, "at most N val images per class, first by path (0: all)")
    t_grid: str = opt("", "comma-separated noise levels t in [0, 1] (t = 1 is noise); overrides --t-steps")
    t_steps: int = opt(11, "number of evenly spaced t from 0 to 1 (11: 0, 0.1, …, 1)")
    space: str = opt("normalized", "latent space: standardised per channel with train statistics (the DiT's "
                                   "input) or raw", SPACES)
    classifier: str = opt("torch", "linear classifier: full-batch L-BFGS in torch (GPU, any size) or "
                                   "scikit-learn LogisticRegression (small sets)", CLASSIFIERS)
    weight_decay: float = opt(1e-4, "L2 penalty weight_decay/2·‖W‖² added to the mean cross-entropy")
    max_iter: int = opt(500, "classifier iterations (L-BFGS / lbfgs)")
    seed: int = opt(0, "seed of the per-image noise ε")
    weights: str = opt("ema", "tokenizer weights to probe", WEIGHTS)
    teacher: str = opt("", teacher_help("also probe this teacher's pooled features (a t-independent reference)",
                                        include_none=False))
    teacher_weights: str = opt("", "local weights file for --teacher")
    image_size: int = opt(0, "image size for tokenizers of other families (FAMILY:SOURCE) (0: the first RecTok "
                             "checkpoint's, else 256)")
    batch_size: int = opt(128, "images per encoder batch")
    workers: int = workers_option(what="data-loading worker processes")
    device: str = device_option()
    precision: str = precision_option(what="encoder autocast")
    out: str = opt("runs/probe-flow", "output folder for probe.json and probe.png")
    log: str = opt("", "also log the val top-1 of each t to the trackers of each checkpoint's run folder: "
                       "tensorboard and/or wandb, comma-separated")

    def validate(self) -> None:
        for name in ("per_class", "val_per_class", "image_size"):
            if getattr(self, name) < 0:
                raise RectokError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")
        for name in ("batch_size", "max_iter"):
            if getattr(self, name) < 1:
                raise RectokError(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        if self.workers < 0:
            raise RectokError(f"--workers must be >= 0, got {self.workers}")
        if not self.weight_decay > 0:
            raise RectokError(f"--weight-decay must be positive, got {self.weight_decay}")
        if self.seed < 0:
            raise RectokError(f"--seed must be >= 0, got {self.seed}")
        device_spec("device", self.device)
        parse_log_spec(self.log)
        if self.teacher_weights and not self.teacher:
            raise RectokError("--teacher-weights needs --teacher")
        self.times()

    def times(self) -> list[float]:
        """The t grid: ``--t-grid`` when given, else ``--t-steps`` evenly spaced points from 0 to 1."""
        if self.t_grid.strip():
            try:
                ts = [float(x) for x in self.t_grid.split(",") if x.strip()]
            except ValueError:
                raise RectokError(f"--t-grid {self.t_grid!r}: expected comma-separated numbers") from None
            if not ts:
                raise RectokError("--t-grid is empty")
        else:
            if self.t_steps < 2:
                raise RectokError(f"--t-steps must be at least 2 (0 and 1), got {self.t_steps}")
            ts = [round(i / (self.t_steps - 1), 10) for i in range(self.t_steps)]
        bad = [t for t in ts if not 0.0 <= t <= 1.0]
        if bad:
            raise RectokError(f"--t-grid: every t must be in [0, 1], got {bad[0]}")
        if len(set(ts)) != len(ts):
            raise RectokError("--t-grid has repeated values")
        return sorted(ts)
