"""SiT, and the adaLN-Zero transformer it shares with the DiT and LightningDiT families.

The official RecTok code builds SiT, DiT and LightningDiT from one transformer (its ``models/layers.py``
``Transformer`` of ``Block(use_modulation=True)``); :class:`AdaLNTransformer` is rectok's implementation of that
network, each family a subclass choosing the norm, the MLP and the position encoding. Data flow (B = batch,
N = tokens of the ``input_size/patch_size`` grid, D = ``width``):

1. ``h = x_embedder(x) + pos_embed`` (strided-conv patches + the fixed 2-D sin-cos table);
   ``c = t_embedder(t) + y_embedder(y)`` (sinusoidal time features ``[cos, sin]`` of 256 frequencies → MLP, plus
   the label row; row ``num_classes`` is the null label).
2. ``depth`` pre-norm blocks, adaLN-Zero from ``c``: ``h += g1·Attn(norm1(h)·(1+a1)+b1)``,
   ``h += g2·MLP(norm2(h)·(1+a2)+b2)`` with ``(b1, a1, g1, b2, a2, g2) = Linear(SiLU(c))``.
3. ``final_layer``: ``Linear(norm(h)·(1+a)+b)`` with ``(b, a) = Linear(SiLU(c))`` → unpatchify.

SiT (and DiT) use LayerNorm without affine parameters (eps 1e-6), a GELU MLP of ``mlp_ratio·D``, optional QK-norm
(the same LayerNorm over each head) and no RoPE. Time: SiT's transport already uses rectok's convention (t = 1
data, ``x_t = t·x1 + (1 − t)·x0``, velocity ``x1 − x0``) and feeds t ∈ [0, 1] to the time embedder unscaled, so
``forward`` passes t through unchanged.

Module and parameter names follow the official classes (``x_embedder.proj``, ``pos_embed``, ``t_embedder.mlp``,
``y_embedder.embedding_table``, ``transformer.blocks.N.{norm1,attn.qkv,attn.proj,mlp.fc1,mlp.fc2,adaLN_modulation}``,
``final_layer.{linear,adaLN_modulation}``), so an official SiT/DiT state dict loads unchanged
(:func:`from_official_state`). The official label table has the null row only when built with a positive label
dropout (its default, 0.1); rectok's always has it.
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from rectok_core.models.dit import LabelEmbedder, PatchEmbed, RoPE2D, modulate, sincos_pos_embed_2d
from rectok_core.models.generators.base import ClassConditional, GeneratorFamily, SamplingDefaults, register_generator
from rectok_core.models.layers import SwiGLU, apply_rope

#: Official ``SIZE_DICT`` shapes (``models/model_utils.py``) under rectok size names, plus CPU sizes.
SIZES: dict[str, dict[str, int]] = {
    "tiny": dict(width=32, depth=2, heads=2),
    "mini": dict(width=384, depth=6, heads=6),
    "s": dict(width=512, depth=8, heads=8),      # official "small"
    "b": dict(width=768, depth=12, heads=12),    # "base"
    "l": dict(width=1024, depth=24, heads=16),   # "large"
    "xl": dict(width=1152, depth=28, heads=16),  # "xl"
    "h": dict(width=1280, depth=32, heads=16),   # "huge"
}


def family_sizes(names: Iterable[str]) -> dict[str, dict[str, int]]:
    """The :data:`SIZES` entries ``names`` (each family offers its own subset)."""
    return {name: dict(SIZES[name]) for name in names}


@dataclass(frozen=True)
class AdaLNConfig:
    """Shape of an :class:`AdaLNTransformer`; ``asdict`` is what checkpoints save."""

    width: int
    depth: int
    heads: int
    in_channels: int = 16
    input_size: int = 16
    patch_size: int = 1
    num_classes: int = 1000
    class_dropout: float = 0.1
    mlp_ratio: float = 4.0
    qk_norm: bool = False

    def __post_init__(self) -> None:
        name = type(self).__name__
        for field in ("width", "depth", "heads", "in_channels", "input_size", "patch_size"):
            if getattr(self, field) <= 0:
                raise ValueError(f"{name}.{field} must be positive, got {getattr(self, field)}")
        if self.num_classes < 0:
            raise ValueError(f"{name}.num_classes must be >= 0, got {self.num_classes}")
        if not 0.0 <= self.class_dropout <= 1.0:
            raise ValueError(f"{name}.class_dropout must lie in [0, 1], got {self.class_dropout}")
        if self.input_size % self.patch_size != 0:
            raise ValueError(f"input_size {self.input_size} is not divisible by patch_size {self.patch_size}")
        if self.width % 4 != 0 or self.width % self.heads != 0:
            raise ValueError(f"width {self.width} must be divisible by 4 (2-D sin-cos positions) and by the "
                             f"{self.heads} heads")

    @property
    def grid_size(self) -> int:
        """Tokens per side: ``input_size / patch_size``."""
        return self.input_size // self.patch_size


@dataclass(frozen=True)
class SiTConfig(AdaLNConfig):
    """SiT: ``learn_sigma`` (official default False) widens the output to 2C; ``forward`` returns the first C."""

    learn_sigma: bool = False


# ---------------------------------------------------------------------------------------------------------
# Layers
# ---------------------------------------------------------------------------------------------------------
def make_norm(kind: str, dim: int) -> nn.Module:
    """``layernorm``: LayerNorm without affine parameters, eps 1e-6 (SiT, DiT); ``rmsnorm``: ``nn.RMSNorm`` with a
    weight and PyTorch's default eps (LightningDiT)."""
    if kind == "layernorm":
        return nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
    if kind == "rmsnorm":
        return nn.RMSNorm(dim)
    raise ValueError(f"unknown norm {kind!r}; choose layernorm or rmsnorm")


class TimestepEmbedder(nn.Module):
    """Sinusoidal features ``[cos(t·f), sin(t·f)]``, ``f_k = 10000^(−k/(F/2))`` of F = 256 → Linear-SiLU-Linear."""

    def __init__(self, dim: int, num_features: int = 256):
        super().__init__()
        self.num_features = num_features
        self.mlp = nn.Sequential(nn.Linear(num_features, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        half = self.num_features // 2
        freqs = torch.exp(torch.arange(half, dtype=torch.float32, device=t.device) * (-math.log(10000) / half))
        angle = t.float()[:, None] * freqs[None, :]
        return self.mlp(torch.cat([angle.cos(), angle.sin()], dim=-1))


class GeluMlp(nn.Module):
    """``fc2(GELU(fc1(x)))`` with the exact (erf) GELU."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Attention(nn.Module):
    """Multi-head self-attention (fused qkv with bias, SDPA) with optional per-head QK-norm and 2-D RoPE."""

    def __init__(self, dim: int, heads: int, qk_norm: bool, norm: str):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.q_norm = make_norm(norm, dim // heads) if qk_norm else nn.Identity()
        self.k_norm = make_norm(norm, dim // heads) if qk_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        B, N, C = x.shape
        q, k, v = self.qkv(x).view(B, N, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        q, k = self.q_norm(q).to(v.dtype), self.k_norm(k).to(v.dtype)  # norms may run in fp32 under autocast
        if rope is not None:
            cos, sin = rope
            q, k = apply_rope(q, cos, sin).to(v.dtype), apply_rope(k, cos, sin).to(v.dtype)
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(B, N, C))


class AdaLNBlock(nn.Module):
    """Pre-norm block with adaLN-Zero modulation (shift, scale, gate for attention and for the MLP)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, qk_norm: bool, norm: str, swiglu: bool):
        super().__init__()
        self.norm1 = make_norm(norm, dim)
        self.attn = Attention(dim, heads, qk_norm, norm)
        self.norm2 = make_norm(norm, dim)
        self.mlp: nn.Module = (SwiGLU(dim, int(2 / 3 * dim * mlp_ratio)) if swiglu
                               else GeluMlp(dim, int(dim * mlp_ratio)))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))

    def forward(self, x: torch.Tensor, c: torch.Tensor,
                rope: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        shift1, scale1, gate1, shift2, scale2, gate2 = self.adaLN_modulation(c).unsqueeze(1).chunk(6, dim=-1)
        x = x + gate1 * self.attn(modulate(self.norm1(x), shift1, scale1), rope)
        return x + gate2 * self.mlp(modulate(self.norm2(x), shift2, scale2))


class ModulatedLinear(nn.Module):
    """Final layer: norm → adaLN shift/scale (no gate) → linear to ``out_dim`` values per token."""

    def __init__(self, dim: int, out_dim: int, norm: str):
        super().__init__()
        self.norm = make_norm(norm, dim)
        self.linear = nn.Linear(dim, out_dim)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(c).unsqueeze(1).chunk(2, dim=-1)
        return self.linear(modulate(self.norm(x), shift, scale))


class BlockStack(nn.Module):
    """Holds the blocks as ``blocks`` (the official ``transformer.blocks.N`` key prefix)."""

    def __init__(self, blocks: list[nn.Module]):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)


# ---------------------------------------------------------------------------------------------------------
# The shared network
# ---------------------------------------------------------------------------------------------------------
class AdaLNTransformer(ClassConditional, nn.Module):
    """The official adaLN-Zero latent transformer; subclasses set the class attributes below."""

    label = "adaLN transformer"  # the family's name in error messages
    norm = "layernorm"           # make_norm kind of every norm, QK-norm included
    swiglu = False               # SwiGLU MLP (hidden int(2/3·mlp_ratio·D)) instead of GELU (hidden mlp_ratio·D)
    use_rope = False             # EVA-style 2-D RoPE on q and k (θ = 10000, integer positions)
    learned_pos_embed = False    # the sin-cos table is trainable (LightningDiT) or frozen (SiT, DiT)
    return_sigma = False         # with learn_sigma (2C output channels): forward keeps all (DiT) or the first C

    def __init__(self, config: AdaLNConfig):
        super().__init__()
        cfg = self.config = config
        self.sigma_out = bool(getattr(cfg, "learn_sigma", False))
        self.out_channels = cfg.in_channels * (2 if self.sigma_out else 1)
        self.x_embedder = PatchEmbed(cfg.in_channels, cfg.width, cfg.patch_size)
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.grid_size ** 2, cfg.width),
                                      requires_grad=self.learned_pos_embed)
        self.t_embedder = TimestepEmbedder(cfg.width)
        self.y_embedder = LabelEmbedder(cfg.num_classes, cfg.width)
        self.transformer = BlockStack([AdaLNBlock(cfg.width, cfg.heads, cfg.mlp_ratio, cfg.qk_norm, self.norm,
                                                  self.swiglu) for _ in range(cfg.depth)])
        self.final_layer = ModulatedLinear(cfg.width, cfg.patch_size ** 2 * self.out_channels, self.norm)
        self.rope = RoPE2D(cfg.grid_size, cfg.width // cfg.heads) if self.use_rope else None
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """The official init: every linear Xavier-uniform with zero bias; the patch conv Xavier-uniform as a
        linear, zero bias; positions the 2-D sin-cos table; label table and time-MLP weights N(0, 0.02); every
        adaLN output linear and the final linear zero (adaLN-Zero); norm weights one."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        with torch.no_grad():
            self.pos_embed.copy_(sincos_pos_embed_2d(self.config.width, self.config.grid_size).unsqueeze(0))
            w = self.x_embedder.proj.weight
            nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.x_embedder.proj.bias)
        nn.init.normal_(self.y_embedder.embedding_table.weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[2].weight, std=0.02)
        for module in [*self.transformer.blocks, self.final_layer]:
            nn.init.zeros_(module.adaLN_modulation[-1].weight)
            nn.init.zeros_(module.adaLN_modulation[-1].bias)
        nn.init.zeros_(self.final_layer.linear.weight)
        nn.init.zeros_(self.final_layer.linear.bias)

    def unpatchify(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, N, p·p·C')`` → ``(B, C', H, W)``; each token's values are ordered (row-in-patch, col-in-patch, C')."""
        g, p, c = self.config.grid_size, self.config.patch_size, self.out_channels
        x = x.reshape(x.shape[0], g, g, p, p, c).permute(0, 5, 1, 3, 2, 4)
        return x.reshape(x.shape[0], c, g * p, g * p)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor,
                drop_mask: torch.Tensor | None = None) -> torch.Tensor:
        """The network output ``(B, C or 2C, H, W)`` at latents ``x (B, C, H, W)``, times ``t`` ((B,) or a
        scalar, in the family's convention) and labels ``y (B,)`` long.

        ``drop_mask`` (bool ``(B,)``), when given, replaces the masked labels by the null class in any mode.
        Without it, training mode drops each label with probability ``class_dropout`` using the global RNG (as
        the official label embedder does); eval mode never drops.
        """
        cfg = self.config
        expected = (cfg.in_channels, cfg.input_size, cfg.input_size)
        if x.dim() != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(f"{self.label} expects latents of shape (B, {expected[0]}, {expected[1]}, "
                             f"{expected[2]}), got {tuple(x.shape)}")
        batch = x.shape[0]
        t = torch.as_tensor(t, device=x.device).reshape(-1).expand(batch)
        if drop_mask is None and self.training and cfg.class_dropout > 0:
            drop_mask = torch.rand(batch, device=y.device) < cfg.class_dropout
        if drop_mask is not None:
            y = torch.where(drop_mask, torch.full_like(y, self.null_class), y)

        h = self.x_embedder(x) + self.pos_embed
        c = self.t_embedder(t) + self.y_embedder(y)
        rope = self.rope() if self.rope is not None else None
        for block in self.transformer.blocks:
            h = block(h, c, rope)
        out = self.unpatchify(self.final_layer(h, c))
        if self.sigma_out and not self.return_sigma:
            out = out[:, : cfg.in_channels]
        return out

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in asdict(self.config).items())


def official_state(sd: dict[str, torch.Tensor], dropped: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
    """An official state dict's tensors under rectok's keys: the same keys, less ``dropped`` (tables rectok
    recomputes instead of storing)."""
    return {k: v for k, v in sd.items() if k not in dropped}


#: Heads of each official ``SIZE_DICT`` width (the head count is not visible in the weights).
OFFICIAL_HEADS = {192: 4, 512: 8, 768: 12, 1024: 16, 1152: 16, 1280: 16}


def shape_from_state(sd: dict[str, torch.Tensor], heads: int | None = None) -> dict[str, object]:
    """The config fields readable from an official (or rectok) state dict of this network: width, depth,
    in_channels, patch_size, input_size, num_classes, QK-norm when it has weights, and ``learn_sigma`` when the
    output has twice the input channels; ``heads`` from :data:`OFFICIAL_HEADS` unless given (the official
    classes always use ``mlp_ratio`` 4)."""
    proj = sd["x_embedder.proj.weight"]
    width, in_channels, patch = int(proj.shape[0]), int(proj.shape[1]), int(proj.shape[2])
    if heads is None and width not in OFFICIAL_HEADS:
        raise ValueError(f"width {width} is no official size; give the head count")
    depth = len({k.split(".")[2] for k in sd if k.startswith("transformer.blocks.")})
    out = {"width": width, "depth": depth, "heads": heads or OFFICIAL_HEADS[width], "in_channels": in_channels,
           "patch_size": patch, "input_size": math.isqrt(int(sd["pos_embed"].shape[1])) * patch,
           "num_classes": int(sd["y_embedder.embedding_table.weight"].shape[0]) - 1}
    if "transformer.blocks.0.attn.q_norm.weight" in sd:
        out["qk_norm"] = True
    if sd["final_layer.linear.weight"].shape[0] == 2 * patch * patch * in_channels:
        out["learn_sigma"] = True
    return out


# ---------------------------------------------------------------------------------------------------------
# SiT
# ---------------------------------------------------------------------------------------------------------
class SiT(AdaLNTransformer):
    """SiT velocity model: t ∈ [0, 1] with t = 1 data (the official convention is rectok's; no conversion)."""

    label = "SiT"


def from_official_state(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An official ``SiT`` state dict (``model.state_dict()``) for :class:`SiT`: the keys are identical."""
    return official_state(sd)


def config_from_official_state(sd: dict[str, torch.Tensor], heads: int | None = None,
                               qk_norm: bool = False) -> dict[str, object]:
    """:class:`SiTConfig` fields of an official SiT state dict (its QK-norm has no weights: pass ``qk_norm``)."""
    return {"qk_norm": qk_norm, **shape_from_state(sd, heads)}


SIT = register_generator(GeneratorFamily(
    name="sit",
    model_class=SiT,
    config_class=SiTConfig,
    sizes=family_sizes(("tiny", "mini", "s", "b", "l", "xl")),
    objective="flow-uniform",
    prediction="velocity",
    official={"SiT_small": "s", "SiT_base": "b", "SiT_large": "l", "SiT_xl": "xl"},
    description="SiT: DiT transformer (adaLN-Zero, sin-cos positions) trained on the linear flow "
                "(official SiT_models)",
    sampling=SamplingDefaults(1.0, (0.0, 1.0), "official SiT: uniform grid, guidance at every t (its default "
                                               "integrator, dopri5, is not in rectok: euler/heun)"),
))
