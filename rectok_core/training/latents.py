"""``rectok cache-latents``: the latent cache of a tokenizer checkpoint, built before DiT training (the cache
itself, its shards and statistics, is :mod:`rectok_core.data.latent_cache`)."""
from __future__ import annotations

import torch

from rectok_core.checkpoints import is_family_spec, load_any_tokenizer, load_tokenizer
from rectok_core.checkpoints.families import check_image_size
from rectok_core.data.config import CacheLatentsConfig
from rectok_core.data.latent_cache import LatentCache, ensure_latent_cache
from rectok_core.errors import RectokError
from rectok_core.utils import distributed


def cache_latents(tokenizer_path: str, cfg: CacheLatentsConfig) -> LatentCache:
    """``rectok cache-latents``: build (or finish) the latent cache of a tokenizer checkpoint on ``cfg.data``
    (default: the data the tokenizer was trained on)."""
    cfg.validate()
    d = distributed.setup(cfg.device)
    try:
        if d.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        if is_family_spec(tokenizer_path):  # FAMILY:SOURCE: another tokenizer family (rectok tokenizers)
            tokenizer, meta = load_any_tokenizer(tokenizer_path, device=d.device, image_size=cfg.image_size)
        else:
            tokenizer, meta = load_tokenizer(tokenizer_path, use_ema=cfg.weights == "ema", device=d.device)
            check_image_size(tokenizer, tokenizer_path, cfg.image_size)
        if not cfg.data and not meta.get("config"):
            raise RectokError(f"{tokenizer_path} records no training data: give --data")
        data = cfg.data or meta["config"]["run"]["data"]
        return ensure_latent_cache(cfg.out, tokenizer, meta, data, d, batch_size=cfg.batch_size, workers=cfg.workers,
                                   strict=cfg.strict_data, shard_size=cfg.shard_size, dtype=cfg.dtype,
                                   precision=cfg.precision)
    finally:
        distributed.cleanup()
