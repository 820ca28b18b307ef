"""The settings of the measuring commands (``eval``, ``eval-samples``, ``fid-stats``): one dataclass each, whose
fields are the commands' options (defaults, help and allowed values written once, here)."""
from __future__ import annotations

from dataclasses import dataclass

from rectok_core.config import check_choices, device_spec, nonneg, opt, positive
from rectok_core.errors import RectokError
from rectok_core.training.engine import PRECISIONS
from rectok_core.training.logging import parse_log_spec
from rectok_core.utils.checkpoint import WEIGHTS


@dataclass
class EvalConfig:
    """``rectok eval``: reconstruction metrics of a tokenizer checkpoint."""
    data: str = opt("", "evaluation data: image folder (DIR/<split> if present), list file or 'digits' (default: the "
                        "checkpoint's training data)")
    split: str = opt("val", "split of --data to evaluate (val, test or train)")
    n: int | None = opt(None, "evaluate the first N images in dataset order (default: all)", flag_type=int)
    per_class: int | None = opt(None, "evaluate the first N images of each class (a class-balanced subset; not "
                                      "with -n; default: all)", flag_type=int)
    batch_size: int = opt(64, "images per batch per process")
    out: str = opt("", "folder for eval.json and recon_grid.png (default: RUN/eval/step_NNNNNNN-WEIGHTS beside the "
                       "checkpoint folder)")
    weights: str = opt("ema", "tokenizer weights", WEIGHTS)
    ref_stats: str = opt("", "rFID reference statistics .npz (mu/sigma; default: the same real images, computed in "
                             "the same pass)")
    save_stats: str = opt("", "also write the real images' statistics to this .npz (reuse them with --ref-stats)")
    lpips_vgg: str = opt("", "VGG16 ImageNet weights for LPIPS (vgg16-397923af.pth; default: torch hub cache; LPIPS "
                             "is left out without them)")
    inception_weights: str = opt("", "InceptionV3 weights file (default: resolved offline)")
    precision: str = opt("auto", "autocast precision (auto: bf16 on CUDA, fp32 on CPU)", PRECISIONS)
    workers: int = opt(0, "data-loading worker processes per rank")
    device: str = opt("auto", "cuda, cpu or auto")
    strict_data: bool = opt(False, "fail on the first unreadable image instead of skipping it")
    log: str = opt("", "also log the metrics to the trackers of the checkpoint's run folder (RUN/checkpoints/X.pt): "
                       "tensorboard and/or wandb, comma-separated")

    def validate(self) -> None:
        check_choices(self)
        parse_log_spec(self.log)
        positive("batch_size", self.batch_size)
        nonneg("workers", self.workers)
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
    workers: int = opt(0, "image-decoding worker processes")
    device: str = opt("auto", "cuda, cpu or auto")
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
    image_size: int = opt(0, "ADM center crop to this size (0: as stored; 256 for ImageNet-256)")
    n: int = opt(0, "use the first N images in path order (0: all)")
    per_class: int = opt(0, "use the first N images of each sub-folder (class) (0: all); a class-balanced subset")
    inception_weights: str = opt("", "InceptionV3 weights file (default: resolved offline)")
    batch_size: int = opt(50, "images per Inception batch")
    workers: int = opt(0, "image-decoding worker processes")
    device: str = opt("auto", "cuda, cpu or auto")

    def validate(self) -> None:
        positive("batch_size", self.batch_size)
        for name in ("image_size", "n", "per_class", "workers"):
            nonneg(name, getattr(self, name))
        device_spec("device", self.device)


def inception_device(device: str) -> str | None:
    """``--device`` for the Inception commands: None lets them pick (CUDA when present)."""
    return None if device == "auto" else device
