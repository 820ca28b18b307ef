"""The settings of ``rectok cache-latents``: its options, defaults and allowed values in one dataclass."""
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

#: Storage dtypes of a latent cache's posterior moments.
CACHE_DTYPES = ("float16", "float32")


#: Images per latent-cache shard file.
DEFAULT_SHARD_SIZE = 4096


#: Encoder precisions of latent statistics and latent caches.
ENCODE_PRECISIONS = ("fp32", "bf16")


#: Help of ``--image-size`` in the commands that encode images with a tokenizer (eval, latent-stats, cache-latents,
#: train-dit); 0 is the tokenizer's own size.
TOKENIZER_IMAGE_SIZE_HELP = ("square size the images are resized and center-cropped to for the tokenizer: a KL "
                             "family (FAMILY:SOURCE) takes any multiple of its down-sampling, a ViT (RecTok, detok) "
                             "only its weights' size (0: the tokenizer's own: 256 for a KL family, the weights' "
                             "size for a ViT)")


@dataclass
class CacheLatentsConfig:
    """``rectok cache-latents``: encode every training image and its mirror once into a latent cache."""
    out: str = opt("", "cache folder (created; an unfinished one is resumed)", required=True)
    data: str = opt("", "training data: image folder (DIR/train if present), list file or 'digits'; the train split "
                        "is encoded (default: the tokenizer's training data)")
    weights: str = opt("ema", "tokenizer weights", WEIGHTS)
    image_size: int = opt(0, TOKENIZER_IMAGE_SIZE_HELP)
    batch_size: int = opt(64, "images per batch per process")
    shard_size: int = opt(DEFAULT_SHARD_SIZE, "images per shard file")
    dtype: str = opt("float16", "storage of the moments", CACHE_DTYPES)
    precision: str = precision_option("fp32", ENCODE_PRECISIONS, "encoder")
    workers: int = workers_option(0)
    device: str = device_option()
    strict_data: bool = strict_data_option()

    def validate(self) -> None:
        check_choices(self)
        positive("batch_size", self.batch_size)
        positive("shard_size", self.shard_size)
        nonneg("image_size", self.image_size)
        nonneg("workers", self.workers)
        device_spec("device", self.device)
