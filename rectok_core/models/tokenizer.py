"""The RecTok tokenizer (recipe §1): ViT encoder with MAE-style masking, diagonal-Gaussian posterior, pixel
decoder with learned mask tokens, and the tiny semantic decoder used for distillation.

Token order is row-major over the ``image_size/patch_size`` grid. Images are in [-1, 1].
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from rectok_core.flow.noise import noise_latents
from rectok_core.models.config import TokenizerModelConfig
from rectok_core.models.layers import Block, RoPE


class DiagonalGaussian:
    """Posterior ``N(μ, σ²)`` from moments ``(…, 2C)`` = [mean | logvar], computed in fp32."""

    def __init__(self, moments: torch.Tensor):
        mean, logvar = moments.float().chunk(2, dim=-1)
        self.mean = mean
        self.logvar = logvar.clamp(-30.0, 20.0)
        self.std = torch.exp(0.5 * self.logvar)
        self.var = torch.exp(self.logvar)

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        eps = torch.randn(self.mean.shape, generator=generator, device=self.mean.device, dtype=self.mean.dtype)
        return self.mean + self.std * eps

    def kl(self) -> torch.Tensor:
        """Per-sample KL to N(0, I): ``0.5·Σ_{tokens,channels}(μ² + σ² − 1 − log σ²)``, shape (B,)."""
        return 0.5 * (self.mean.pow(2) + self.var - 1.0 - self.logvar).flatten(1).sum(1)


def random_masking(batch: int, num_tokens: int, ratio: float, device: torch.device,
                   generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """MAE masking: keep ``ceil(N·(1 − r))`` random tokens per sample.

    Returns ``ids_keep`` (B, n_keep), ``ids_masked`` (B, N − n_keep) and ``ids_restore`` (B, N) such that
    ``cat([kept, masked])[ids_restore]`` is the original order.
    """
    n_keep = math.ceil(num_tokens * (1 - ratio))
    noise = torch.rand(batch, num_tokens, generator=generator, device=device)
    ids_shuffle = noise.argsort(dim=1)
    ids_restore = ids_shuffle.argsort(dim=1)
    return ids_shuffle[:, :n_keep], ids_shuffle[:, n_keep:], ids_restore


def gather_tokens(x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    return torch.gather(x, 1, ids.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def unshuffle_with_mask(x: torch.Tensor, mask_token: torch.Tensor, ids_restore: torch.Tensor | None) -> torch.Tensor:
    """Append mask tokens after the visible tokens and put every token back at its grid position."""
    n_mask = 0 if ids_restore is None else ids_restore.shape[1] - x.shape[1]
    if n_mask == 0:
        # Nothing masked: keep the mask token in the graph with zero weight so DDP sees every parameter used.
        return x + 0.0 * mask_token.sum()
    x = torch.cat([x, mask_token.to(x.dtype).expand(x.shape[0], n_mask, -1)], dim=1)
    return gather_tokens(x, ids_restore)


class ViT(nn.Module):
    """Token embedding (supplied by the caller) → +PE → ln_pre → RoPE blocks → ln_post."""

    def __init__(self, width: int, depth: int, heads: int, grid: tuple[int, int], rope: str):
        super().__init__()
        n = grid[0] * grid[1]
        self.pos_embed = nn.Parameter(torch.randn(1, n, width) * width ** -0.5)
        self.ln_pre = nn.RMSNorm(width, eps=1e-6)
        self.blocks = nn.ModuleList(Block(width, heads) for _ in range(depth))
        self.ln_post = nn.RMSNorm(width, eps=1e-6)
        self.rope = RoPE(grid, width // heads, rope)

    def run_blocks(self, x: torch.Tensor, ids: torch.Tensor | None = None) -> torch.Tensor:
        rope = self.rope(ids)
        x = self.ln_pre(x)
        for blk in self.blocks:
            x = blk(x, rope)
        return self.ln_post(x)


class Encoder(ViT):
    def __init__(self, cfg: TokenizerModelConfig):
        super().__init__(cfg.width, cfg.depth, cfg.heads, cfg.grid, cfg.rope)
        self.patch_embed = nn.Conv2d(3, cfg.width, cfg.patch_size, cfg.patch_size)
        self.latent_head = nn.Linear(cfg.width, 2 * cfg.dim)

    def forward(self, img: torch.Tensor, ids_keep: torch.Tensor | None = None) -> torch.Tensor:
        """Moments (B, n_visible, 2C); the encoder sees only the tokens in ``ids_keep`` when given."""
        x = self.patch_embed(img).flatten(2).transpose(1, 2) + self.pos_embed
        if ids_keep is not None:
            x = gather_tokens(x, ids_keep)
        return self.latent_head(self.run_blocks(x, ids_keep))


class PixelDecoder(ViT):
    def __init__(self, cfg: TokenizerModelConfig):
        super().__init__(cfg.width, cfg.depth, cfg.heads, cfg.grid, cfg.rope)
        self.grid = cfg.grid
        self.patch = cfg.patch_size
        self.decoder_embed = nn.Linear(cfg.dim, cfg.width)
        self.mask_token = nn.Parameter(torch.randn(1, 1, cfg.width) * cfg.width ** -0.5)
        self.head = nn.Conv2d(cfg.width, cfg.patch_size ** 2 * 3, 1)
        self.conv_out = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, z: torch.Tensor, ids_restore: torch.Tensor | None = None) -> torch.Tensor:
        """Latents of the visible tokens (B, n, C) → image (B, 3, H, W) in [-1, 1] (unclamped)."""
        x = unshuffle_with_mask(self.decoder_embed(z), self.mask_token, ids_restore) + self.pos_embed
        x = self.run_blocks(x)
        B, h, w, p = x.shape[0], *self.grid, self.patch
        x = self.head(x.transpose(1, 2).reshape(B, -1, h, w))
        # pixel shuffle with channel order (p1 p2 c)
        x = x.view(B, p, p, 3, h, w).permute(0, 3, 4, 1, 5, 2).reshape(B, 3, h * p, w * p)
        return self.conv_out(x)


class SemanticDecoder(ViT):
    """The tiny transformer that maps (noisy) latents onto the teacher's patch features (recipe §1.7)."""

    def __init__(self, cfg: TokenizerModelConfig):
        super().__init__(cfg.sem_width, cfg.sem_depth, cfg.sem_heads, cfg.grid, cfg.rope)
        self.token_embedding = nn.Linear(cfg.dim, cfg.sem_width)
        self.mask_embedding = nn.Parameter(torch.zeros(1, 1, cfg.sem_width))
        self.out = nn.Linear(cfg.sem_width, cfg.teacher_dim)

    def forward(self, z: torch.Tensor, ids_restore: torch.Tensor | None = None) -> torch.Tensor:
        x = unshuffle_with_mask(self.token_embedding(z), self.mask_embedding, ids_restore) + self.pos_embed
        return self.out(self.run_blocks(x))


class MLPSemanticDecoder(nn.Module):
    """Per-token alternative: Linear(C, 512)–GELU–Linear(512, D_teacher); masked tokens get a learned input."""

    def __init__(self, cfg: TokenizerModelConfig):
        super().__init__()
        self.mask_embedding = nn.Parameter(torch.zeros(1, 1, cfg.dim))
        self.net = nn.Sequential(nn.Linear(cfg.dim, 512), nn.GELU(), nn.Linear(512, cfg.teacher_dim))

    def forward(self, z: torch.Tensor, ids_restore: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(unshuffle_with_mask(z, self.mask_embedding, ids_restore))


class TokenGrid:
    """What every tokenizer offers on top of ``encode`` (images → posterior over (B, N, C) tokens), ``decode``
    (tokens → images) and ``cfg.grid``: RecTok and every other family (:mod:`rectok_core.models.families`)."""

    @torch.no_grad()
    def reconstruct(self, img: torch.Tensor) -> torch.Tensor:
        """Posterior-mean reconstruction, clamped to [-1, 1]."""
        return self.decode(self.encode(img).mean.to(img.dtype)).clamp(-1, 1)

    def latent_grid(self, z: torch.Tensor) -> torch.Tensor:
        """(B, N, C) tokens → (B, C, h, w) latent map."""
        h, w = self.cfg.grid
        return z.transpose(1, 2).reshape(z.shape[0], -1, h, w)

    def latent_tokens(self, z: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) latent map → (B, N, C) tokens."""
        return z.flatten(2).transpose(1, 2)


class RecTok(nn.Module, TokenGrid):
    """Encoder + posterior + pixel decoder (the inference model) and, for stage 1, the semantic decoder."""

    def __init__(self, cfg: TokenizerModelConfig, semantic: bool = True):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.decoder = PixelDecoder(cfg)
        self.apply(_init_weights)  # before the semantic decoder exists: it keeps PyTorch's default init
        self.sem_decoder: nn.Module | None = None
        if semantic and cfg.teacher_dim > 0:
            self.sem_decoder = (SemanticDecoder if cfg.sem_decoder == "transformer" else MLPSemanticDecoder)(cfg)

    # --- inference API -------------------------------------------------------------------------------------
    def encode(self, img: torch.Tensor) -> DiagonalGaussian:
        return DiagonalGaussian(self.encoder(img))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latents (B, N, C) → image in [-1, 1] (unclamped)."""
        return self.decoder(z)


    def inference_state_dict(self) -> dict[str, torch.Tensor]:
        """Encoder + pixel decoder only (what every downstream command needs)."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("sem_decoder.")}

    def forward(self, img: torch.Tensor, ids_keep: torch.Tensor | None, ids_restore: torch.Tensor | None,
                t: torch.Tensor | None, sem_input: str = "noisy", gamma: float = 1.0,
                generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Stage-1 training forward: mask → encode → sample → flow noise → both decoders.

        ``t`` (B,) is the tokenizer-convention noise level (t = 1 is noise) or None for no flow noise.
        """
        post = DiagonalGaussian(self.encoder(img, ids_keep))
        z = post.sample(generator)
        if t is not None and gamma > 0:
            eps = torch.randn(z.shape, generator=generator, device=z.device, dtype=z.dtype)
            x_t = noise_latents(z, t, eps, gamma)
        else:
            x_t = z
        out = {"recon": self.decoder(x_t, ids_restore), "kl": post.kl(), "z": z}
        if self.sem_decoder is not None:
            out["sem"] = self.sem_decoder(x_t if sem_input == "noisy" else z, ids_restore)
        return out


def _init_weights(m: nn.Module) -> None:
    if isinstance(m, (nn.Linear, nn.Conv2d)):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)


def count_params(m: nn.Module | None, trainable_only: bool = True) -> int:
    if m is None:
        return 0
    return sum(p.numel() for p in m.parameters() if p.requires_grad or not trainable_only)


def masked_token_flags(ids_restore: torch.Tensor | None, n_visible: int, num_tokens: int,
                       batch: int, device: torch.device) -> torch.Tensor:
    """Bool (B, N): True where the token was masked from the encoder (grid order)."""
    if ids_restore is None:
        return torch.zeros(batch, num_tokens, dtype=torch.bool, device=device)
    return ids_restore >= n_visible


def cosine_loss_map(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-token ``1 − cos(pred, target)``, shape (B, N), in fp32."""
    return 1 - (F.normalize(pred.float(), dim=-1) * F.normalize(target.float(), dim=-1)).sum(-1)
