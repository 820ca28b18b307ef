"""Architecture settings of the models (tokenizer and DiT^DH, with the DiT size presets), without torch: the
training configs and the CLI help read them; the networks live in :mod:`rectok_core.models.tokenizer` and
:mod:`rectok_core.models.dit`."""
from __future__ import annotations

from dataclasses import dataclass

from rectok_core.config import opt, positive
from rectok_core.errors import RectokError


# ---------------------------------------------------------------------------------------------------------
# Tokenizer
# ---------------------------------------------------------------------------------------------------------
@dataclass
class TokenizerModelConfig:
    image_size: int = opt(256, "image side in pixels")
    patch_size: int = opt(16, "patch side in pixels (image_size/patch_size tokens per side)")
    width: int = opt(768, "encoder and pixel-decoder width")
    depth: int = opt(12, "encoder and pixel-decoder blocks")
    heads: int = opt(12, "attention heads of encoder and pixel decoder")
    dim: int = opt(128, "latent channels per token (C)")
    sem_decoder: str = opt("transformer", "semantic decoder type", ("transformer", "mlp"))
    sem_width: int = opt(192, "semantic decoder width")
    sem_depth: int = opt(3, "semantic decoder blocks")
    sem_heads: int = opt(4, "semantic decoder heads")
    rope: str = opt("official", "2-D RoPE: official (the official code's non-orthogonal variant, recipe §1.2; what "
                                "the released weights need) or rotation (a true rotation, rectok's choice, §11.2)",
                    ("official", "rotation"))
    teacher_dim: int = opt(1024, "teacher feature width (set from --teacher; 0 = no semantic decoder)", cli=False)

    @property
    def grid(self) -> tuple[int, int]:
        n = self.image_size // self.patch_size
        return (n, n)

    @property
    def num_tokens(self) -> int:
        return self.grid[0] * self.grid[1]

    def validate(self) -> None:
        positive("image_size", self.image_size)
        positive("patch_size", self.patch_size)
        positive("dim", self.dim)
        for name in ("width", "depth", "heads", "sem_width", "sem_depth", "sem_heads"):
            positive(name, getattr(self, name))
        if self.image_size % self.patch_size:
            raise RectokError(f"--image-size {self.image_size} is not a multiple of --patch-size {self.patch_size}")
        for w, h, name in ((self.width, self.heads, "width/heads"), (self.sem_width, self.sem_heads, "sem-width/sem-heads")):
            if w % h or (w // h) % 4:
                raise RectokError(f"{name} = {w}/{h}: the head dim must be an integer divisible by 4 (2-D RoPE)")


# ---------------------------------------------------------------------------------------------------------
# DiT^DH: configuration and size presets
# ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class DiTConfig:
    """Architecture of a DiT^DH. Widths must split into heads whose size is divisible by 4 (2-D RoPE)."""

    width: int
    depth: int
    heads: int
    in_channels: int = 128
    input_size: int = 16
    patch_size: int = 1
    head_width: int = 2048
    head_depth: int = 2
    head_heads: int = 16
    mlp_ratio: float = 4.0
    num_classes: int = 1000
    class_dropout: float = 0.1
    fourier_features: int = 256
    rope_theta: float = 10000.0

    def __post_init__(self) -> None:
        positive = ("width", "depth", "heads", "in_channels", "input_size", "patch_size", "head_width",
                    "head_depth", "head_heads", "fourier_features")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"DiTConfig.{name} must be positive, got {getattr(self, name)}")
        if self.num_classes < 0:
            raise ValueError(f"DiTConfig.num_classes must be >= 0, got {self.num_classes}")
        if not 0.0 <= self.class_dropout <= 1.0:
            raise ValueError(f"DiTConfig.class_dropout must lie in [0, 1], got {self.class_dropout}")
        if self.input_size % self.patch_size != 0:
            raise ValueError(f"input_size {self.input_size} is not divisible by patch_size {self.patch_size}")
        if self.width % 4 != 0:
            raise ValueError(f"width {self.width} must be divisible by 4 (2-D sin-cos position embedding)")
        for w, h, name in ((self.width, self.heads, "trunk"), (self.head_width, self.head_heads, "head")):
            if w % h != 0 or (w // h) % 4 != 0:
                raise ValueError(f"{name} width {w} with {h} heads: the head size must be an integer "
                                 "divisible by 4 (2-D RoPE)")

    @property
    def grid_size(self) -> int:
        """Tokens per side: ``input_size / patch_size``."""
        return self.input_size // self.patch_size

    @property
    def mlp_hidden(self) -> int:
        """SwiGLU hidden width of the trunk: ``int(2/3 · int(width · mlp_ratio))`` (3072 for 1152)."""
        return int(2 / 3 * int(self.width * self.mlp_ratio))

    @property
    def head_mlp_hidden(self) -> int:
        """SwiGLU hidden width of the head (5461 for 2048)."""
        return int(2 / 3 * int(self.head_width * self.mlp_ratio))


# Trunk and head shapes of each preset; the data-dependent fields (in_channels, input_size, num_classes) come
# from ``build_dit``. S/B/L/XL share the 2-block, 2048-wide DDT head of the recipe (§4.1); "tiny" is CPU-sized
# for smoke tests and toy runs.
DIT_PRESETS: dict[str, dict[str, int]] = {
    "S": dict(width=384, depth=12, heads=6),
    "B": dict(width=768, depth=12, heads=12),
    "L": dict(width=1024, depth=24, heads=16),
    "XL": dict(width=1152, depth=28, heads=16),
    # small-scale studies on one GPU (docs/reproduction.md): an S-width trunk of 6 blocks, a 512-wide head
    "mini": dict(width=384, depth=6, heads=6, head_width=512, head_depth=2, head_heads=8),
    "tiny": dict(width=64, depth=2, heads=4, head_width=96, head_depth=1, head_heads=4),
}
