"""DiT^DH: the class-conditional latent flow-matching generator (a DiT trunk with a wide DDT head), recipe §4.1.

``forward(x, t, y)`` predicts the velocity ``u = x1 − x0`` of the linear path ``x_t = t·x1 + (1 − t)·x0`` in the
transport convention (**t = 1 is data**, t = 0 is noise); ``y`` holds class labels, ``num_classes`` being the null
(unconditional) label.

Data flow (B = batch, N = tokens of the ``input_size/patch_size`` grid):

1. ``t_emb`` = Gaussian-Fourier features of t (256 fixed random frequencies) → MLP; ``c = SiLU(t_emb + y_emb)``.
2. Trunk (width ``width``): ``s = s_embedder(x) + sin-cos PE`` → ``depth`` blocks with adaLN from the vector ``c``.
3. ``s = s_projector(SiLU(s + t_emb))`` — a per-token condition of width ``head_width``.
4. Head (width ``head_width``): ``h = x_embedder(x)`` (no absolute PE) → ``head_depth`` blocks with per-token adaLN
   from ``s`` → RMSNorm + per-token shift/scale → linear → unpatchify.

Both branches use 2-D RoPE (EVA style, θ = 10000, integer positions, a true rotation of adjacent channel pairs:
the first half of each head's channels rotates with the row index, the second half with the column index).

Module and parameter names follow the official implementation (``blocks`` holds the trunk blocks followed by
the head blocks; ``adaLN_modulation``, ``t_embedder.W``, ``pos_embed`` ...), so its state-dict keys match ours,
except its persisted RoPE tables (``enc_feat_rope.*``, ``dec_feat_rope.*``): here they are non-persistent
buffers recomputed at construction.
"""
from __future__ import annotations

import math
from dataclasses import asdict

import torch
import torch.nn as nn
import torch.nn.functional as F

from rectok_core.errors import RectokError
from rectok_core.models.config import DIT_PRESETS, DiTConfig
from rectok_core.models.layers import Attention, SwiGLU


def build_dit(preset: str, in_channels: int, input_size: int, num_classes: int, **overrides: object) -> DiTDH:
    """A DiT^DH of a named preset (``DIT_PRESETS``); ``overrides`` replace any other ``DiTConfig`` field.

    Build under ``with torch.device("meta"):`` to inspect a large preset without allocating it.
    """
    if preset not in DIT_PRESETS:
        raise RectokError(f"unknown DiT preset {preset!r}; choose one of {', '.join(DIT_PRESETS)}")
    fields: dict[str, object] = dict(DIT_PRESETS[preset])
    fields.update(in_channels=in_channels, input_size=input_size, num_classes=num_classes)
    fields.update(overrides)
    return DiTDH(DiTConfig(**fields))  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------------------
# Position tables
# ---------------------------------------------------------------------------------------------------------
def sincos_pos_embed_2d(dim: int, grid: int) -> torch.Tensor:
    """Fixed 2-D sin-cos absolute position embedding ``(grid², dim)``, row-major tokens (MAE/DiT layout).

    The first ``dim/2`` channels encode the column index, the last ``dim/2`` the row index; each half is
    ``[sin(p·ω), cos(p·ω)]`` with ``ω_k = 10000^(−k/(dim/4))``.
    """
    if dim % 4 != 0:
        raise ValueError(f"sin-cos position embedding needs a width divisible by 4, got {dim}")
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim / 4))
    pos = torch.arange(grid, dtype=torch.float64)
    rows, cols = torch.meshgrid(pos, pos, indexing="ij")

    def axis(p: torch.Tensor) -> torch.Tensor:
        angle = p.reshape(-1, 1) * omega
        return torch.cat([angle.sin(), angle.cos()], dim=1)

    return torch.cat([axis(cols), axis(rows)], dim=1).float()


def rope_angles_2d(grid: int, head_dim: int, theta: float = 10000.0) -> torch.Tensor:
    """Angle table ``(grid², head_dim)`` of the DiT's EVA-style 2-D RoPE, row-major tokens.

    Per axis ``head_dim/2`` channels with frequencies ``θ^(−2k/(head_dim/2))`` at integer positions, each
    frequency repeated for an adjacent channel pair (so the transform is a true rotation); channels
    ``[0, head_dim/2)`` follow the row index, ``[head_dim/2, head_dim)`` the column index.
    """
    if head_dim % 4 != 0:
        raise ValueError(f"2-D RoPE needs a head size divisible by 4, got {head_dim}")
    axis_dim = head_dim // 2
    freqs = 1.0 / theta ** (torch.arange(0, axis_dim, 2, dtype=torch.float64) / axis_dim)
    per_axis = (torch.arange(grid, dtype=torch.float64)[:, None] * freqs).repeat_interleave(2, dim=1)
    rows = per_axis[:, None, :].expand(grid, grid, axis_dim)
    cols = per_axis[None, :, :].expand(grid, grid, axis_dim)
    return torch.cat([rows, cols], dim=-1).reshape(grid * grid, head_dim)


class RoPE2D(nn.Module):
    """cos/sin tables ``(N, head_dim)`` of ``rope_angles_2d`` as non-persistent fp32 buffers."""

    def __init__(self, grid: int, head_dim: int, theta: float = 10000.0):
        super().__init__()
        angles = rope_angles_2d(grid, head_dim, theta)
        self.register_buffer("cos", angles.cos().float(), persistent=False)
        self.register_buffer("sin", angles.sin().float(), persistent=False)

    def forward(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.cos, self.sin


# ---------------------------------------------------------------------------------------------------------
# Layers
# ---------------------------------------------------------------------------------------------------------
class RMSNorm(nn.Module):
    """RMSNorm computed in fp32 (also under autocast), cast back to the input dtype, times a learnable weight."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        normed = xf * torch.rsqrt(xf.pow(2).mean(dim=-1, keepdim=True) + self.eps)
        return normed.type_as(x) * self.weight


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN modulation ``x·(1 + scale) + shift`` (shift/scale broadcast per sample or per token)."""
    return x * (1 + scale) + shift


class DDTBlock(nn.Module):
    """Pre-norm transformer block with adaLN (shift, scale, gate for attention and for the SwiGLU MLP).

    The condition is a vector per sample ``(B, D)`` (trunk) or per token ``(B, N, D)`` (head).
    """

    def __init__(self, dim: int, heads: int, mlp_hidden: int):
        super().__init__()
        self.norm1 = RMSNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = RMSNorm(dim)
        self.mlp = SwiGLU(dim, mlp_hidden)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))

    def forward(self, x: torch.Tensor, cond: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        if cond.dim() == 2:
            cond = cond.unsqueeze(1)
        shift1, scale1, gate1, shift2, scale2, gate2 = self.adaLN_modulation(cond).chunk(6, dim=-1)
        x = x + gate1 * self.attn(modulate(self.norm1(x), shift1, scale1), rope)
        return x + gate2 * self.mlp(modulate(self.norm2(x), shift2, scale2))


class DDTFinalLayer(nn.Module):
    """RMSNorm → per-token adaLN (shift, scale; no gate) → linear to ``out_dim`` values per token."""

    def __init__(self, dim: int, out_dim: int):
        super().__init__()
        self.norm_final = RMSNorm(dim)
        self.linear = nn.Linear(dim, out_dim)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(cond).chunk(2, dim=-1)
        return self.linear(modulate(self.norm_final(x), shift, scale))


class GaussianFourierEmbedding(nn.Module):
    """Time embedding: ``[sin(2πtW), cos(2πtW)]`` with fixed ``W ~ N(0, 1)`` (a frozen parameter) → MLP."""

    def __init__(self, dim: int, num_features: int = 256):
        super().__init__()
        self.W = nn.Parameter(torch.randn(num_features), requires_grad=False)
        self.mlp = nn.Sequential(nn.Linear(2 * num_features, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        angle = t.float()[:, None] * self.W.detach().float()[None, :] * (2 * math.pi)
        return self.mlp(torch.cat([angle.sin(), angle.cos()], dim=-1))


class LabelEmbedder(nn.Module):
    """Class-label table with one extra row, index ``num_classes``, for the null (unconditional) label."""

    def __init__(self, num_classes: int, dim: int):
        super().__init__()
        self.embedding_table = nn.Embedding(num_classes + 1, dim)

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        return self.embedding_table(labels)


class PatchEmbed(nn.Module):
    """Non-overlapping ``p×p`` patches → ``dim`` channels via a strided conv; returns row-major tokens."""

    def __init__(self, in_channels: int, dim: int, patch_size: int):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


# ---------------------------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------------------------
class DiTDH(nn.Module):
    """DiT trunk + DDT head velocity model (recipe §4.1). See the module docstring for the data flow."""

    def __init__(self, config: DiTConfig):
        super().__init__()
        cfg = self.config = config
        self.t_embedder = GaussianFourierEmbedding(cfg.width, cfg.fourier_features)
        self.y_embedder = LabelEmbedder(cfg.num_classes, cfg.width)
        self.s_embedder = PatchEmbed(cfg.in_channels, cfg.width, cfg.patch_size)
        self.pos_embed = nn.Parameter(sincos_pos_embed_2d(cfg.width, cfg.grid_size).unsqueeze(0),
                                      requires_grad=False)
        self.x_embedder = PatchEmbed(cfg.in_channels, cfg.head_width, cfg.patch_size)
        self.s_projector: nn.Module = (nn.Linear(cfg.width, cfg.head_width) if cfg.width != cfg.head_width
                                       else nn.Identity())
        self.blocks = nn.ModuleList(
            [DDTBlock(cfg.width, cfg.heads, cfg.mlp_hidden) for _ in range(cfg.depth)]
            + [DDTBlock(cfg.head_width, cfg.head_heads, cfg.head_mlp_hidden) for _ in range(cfg.head_depth)]
        )
        self.final_layer = DDTFinalLayer(cfg.head_width, cfg.patch_size ** 2 * cfg.in_channels)
        self.trunk_rope = RoPE2D(cfg.grid_size, cfg.width // cfg.heads, cfg.rope_theta)
        self.head_rope = RoPE2D(cfg.grid_size, cfg.head_width // cfg.head_heads, cfg.rope_theta)
        self.initialize_weights()

    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    @property
    def null_class(self) -> int:
        """The label index of the unconditional (dropped) class."""
        return self.config.num_classes

    def initialize_weights(self) -> None:
        """Recipe §4.1 init: generic linears keep PyTorch's default; patch embeds Xavier-uniform as linears with
        zero bias; label table and time-MLP weights N(0, 0.02); every adaLN output, and the final linear, zero."""
        for embed in (self.s_embedder, self.x_embedder):
            w = embed.proj.weight
            with torch.no_grad():
                nn.init.xavier_uniform_(w.view(w.shape[0], -1))
            nn.init.zeros_(embed.proj.bias)
        nn.init.normal_(self.y_embedder.embedding_table.weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[2].weight, std=0.02)
        for module in [*self.blocks, self.final_layer]:
            nn.init.zeros_(module.adaLN_modulation[-1].weight)
            nn.init.zeros_(module.adaLN_modulation[-1].bias)
        nn.init.zeros_(self.final_layer.linear.weight)
        nn.init.zeros_(self.final_layer.linear.bias)

    def draw_drop_mask(self, n: int, generator: torch.Generator | None = None,
                       device: torch.device | str | None = None) -> torch.Tensor:
        """Bernoulli(``class_dropout``) label-drop mask ``(n,)`` drawn from ``generator`` (on its device), moved to
        ``device``. Pass it to ``forward(..., drop_mask=)`` to make label dropout reproducible."""
        gen_device = generator.device if generator is not None else device
        u = torch.rand(n, generator=generator, device=gen_device)
        return (u < self.config.class_dropout).to(device if device is not None else u.device)

    def unpatchify(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, N, p·p·C)`` → ``(B, C, H, W)``; each token's values are ordered (row-in-patch, col-in-patch, C)."""
        g, p, c = self.config.grid_size, self.config.patch_size, self.config.in_channels
        x = x.reshape(x.shape[0], g, g, p, p, c).permute(0, 5, 1, 3, 2, 4)
        return x.reshape(x.shape[0], c, g * p, g * p)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor,
                drop_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Velocity ``(B, C, H, W)`` at latents ``x (B, C, H, W)``, times ``t`` ((B,) or a scalar; 1 = data), labels
        ``y (B,)`` long.

        ``drop_mask`` (bool ``(B,)``), when given, replaces the masked labels by the null class in any mode. Without
        it, training mode drops each label with probability ``class_dropout`` using the global RNG; eval mode never
        drops.
        """
        cfg = self.config
        expected = (cfg.in_channels, cfg.input_size, cfg.input_size)
        if tuple(x.shape[1:]) != expected:
            raise ValueError(f"DiT^DH expects latents of shape (B, {expected[0]}, {expected[1]}, {expected[2]}), "
                             f"got {tuple(x.shape)}")
        batch = x.shape[0]
        t = t.reshape(-1).expand(batch)
        if drop_mask is None and self.training and cfg.class_dropout > 0:
            drop_mask = torch.rand(batch, device=y.device) < cfg.class_dropout
        if drop_mask is not None:
            y = torch.where(drop_mask, torch.full_like(y, self.null_class), y)

        t_emb = self.t_embedder(t)
        c = F.silu(t_emb + self.y_embedder(y))

        s = self.s_embedder(x) + self.pos_embed
        trunk_rope = self.trunk_rope()
        for block in self.blocks[: cfg.depth]:
            s = block(s, c, trunk_rope)
        s = self.s_projector(F.silu(s + t_emb.unsqueeze(1)))

        # Keep the head's residual stream in the parameter dtype (fp32 under autocast), like the trunk's.
        h = self.x_embedder(x).to(self.pos_embed.dtype)
        head_rope = self.head_rope()
        for block in self.blocks[cfg.depth:]:
            h = block(h, s, head_rope)
        return self.unpatchify(self.final_layer(h, s))

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in asdict(self.config).items())

