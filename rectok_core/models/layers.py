"""Transformer building blocks shared by the tokenizer's encoder, pixel decoder and semantic decoder.

Pre-norm block: ``x += Attn(RMSNorm(x)); x += SwiGLU(RMSNorm(x))`` with 2-D rotary position embeddings
(recipe §1.2). Attention goes through ``F.scaled_dot_product_attention`` (flash / memory-efficient kernels on
GPU).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

ROPE_VARIANTS = ("rotation", "official")


def swiglu_hidden(dim: int) -> int:
    """Hidden width of the SwiGLU MLP: int(2/3 * 4 * d) (2048 for d=768, 512 for d=192)."""
    return int(2 / 3 * 4 * dim)


class SwiGLU(nn.Module):
    def __init__(self, dim: int, hidden: int | None = None):
        super().__init__()
        hidden = hidden or swiglu_hidden(dim)
        self.w12 = nn.Linear(dim, 2 * hidden)
        self.w3 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.w12(x).chunk(2, dim=-1)
        return self.w3(F.silu(a) * b)


def rope_frequencies(head_dim: int) -> torch.Tensor:
    """The D/4 frequencies of the tokenizer's RoPE: geometric from 7.0 down to 7e-4 (recipe §1.2)."""
    if head_dim % 4 != 0:
        raise ValueError(f"2-D RoPE needs a head dim divisible by 4, got {head_dim}")
    n = head_dim // 4
    if n == 1:
        return torch.tensor([7.0], dtype=torch.float64)
    k = torch.arange(n, dtype=torch.float64)
    return 7.0 * (7.0 / 7e-4) ** (-k / (n - 1))


def rope_table(grid: tuple[int, int], head_dim: int, variant: str = "rotation") -> torch.Tensor:
    """Angle table ``(N, head_dim)`` for a ``grid = (rows, cols)`` token grid, row-major token order.

    Channels ``[0, D/2)`` carry the row coordinate, ``[D/2, D)`` the column coordinate; coordinates are
    ``linspace(0, 1, n)`` and angle = coord · f · 2π.

    - ``rotation`` (default): each adjacent channel pair (2i, 2i+1) shares one frequency, so the transform is
      a true rotation of every pair and preserves norms.
    - ``official``: the frequency list is concatenated with itself (the released implementation), so
      adjacent channels get different frequencies; needed to load the official weights.
    """
    if variant not in ROPE_VARIANTS:
        raise ValueError(f"unknown RoPE variant {variant!r}; choose one of {ROPE_VARIANTS}")
    f = rope_frequencies(head_dim)
    per_axis = f.repeat_interleave(2) if variant == "rotation" else torch.cat([f, f])  # D/2
    rows, cols = grid
    r = torch.linspace(0, 1, rows, dtype=torch.float64)
    c = torch.linspace(0, 1, cols, dtype=torch.float64)
    rr, cc = torch.meshgrid(r, c, indexing="ij")
    ang = torch.cat([rr.reshape(-1, 1) * per_axis, cc.reshape(-1, 1) * per_axis], dim=1) * 2 * math.pi
    return ang.float()


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """Adjacent pairs (2i, 2i+1) -> (-x_{2i+1}, x_{2i})."""
    x = x.unflatten(-1, (-1, 2))
    x1, x2 = x.unbind(-1)
    return torch.stack((-x2, x1), dim=-1).flatten(-2)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """``x`` is (B, H, N, D); ``cos``/``sin`` broadcast to it ((N, D) or (B, 1, N, D))."""
    return x * cos + rotate_half(x) * sin


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        if dim % heads != 0:
            raise ValueError(f"width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        B, N, C = x.shape
        qkv = self.qkv(x).view(B, N, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        if rope is not None:
            cos, sin = rope
            q = apply_rope(q, cos, sin).to(v.dtype)
            k = apply_rope(k, cos, sin).to(v.dtype)
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(B, N, C))


class Block(nn.Module):
    """Pre-norm transformer block with RMSNorm, RoPE attention and a SwiGLU MLP."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.norm1 = nn.RMSNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.RMSNorm(dim, eps=1e-6)
        self.mlp = SwiGLU(dim)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), rope)
        return x + self.mlp(self.norm2(x))


class RoPE(nn.Module):
    """Holds the cos/sin tables of a token grid as non-persistent buffers and gathers rows for masking."""

    def __init__(self, grid: tuple[int, int], head_dim: int, variant: str = "rotation"):
        super().__init__()
        ang = rope_table(grid, head_dim, variant)
        self.register_buffer("cos", ang.cos(), persistent=False)
        self.register_buffer("sin", ang.sin(), persistent=False)

    def forward(self, ids: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Full-grid tables (N, D), or per-sample rows (B, 1, n, D) for token indices ``ids`` (B, n)."""
        if ids is None:
            return self.cos, self.sin
        return self.cos[ids].unsqueeze(1), self.sin[ids].unsqueeze(1)

