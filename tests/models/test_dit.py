"""DiT^DH: parameter counts of the recipe (§9), shapes, init, RoPE, label dropout, precision."""
from __future__ import annotations

import math

import pytest
import torch

from rectok_core.errors import RectokError
from rectok_core.models.dit import (
    DIT_PRESETS,
    DDTBlock,
    DiTConfig,
    DiTDH,
    build_dit,
    rope_angles_2d,
    sincos_pos_embed_2d,
)
from rectok_core.models.layers import apply_rope


def _count(module: torch.nn.Module, trainable: bool = True) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad == trainable)


def _tiny(**overrides: object) -> DiTDH:
    torch.manual_seed(0)
    return build_dit("tiny", in_channels=16, input_size=8, num_classes=10, **overrides)


def _randomize(model: DiTDH) -> DiTDH:
    """Replace the zero init by small random weights so that every input influences the output."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    return model


def _inputs(batch: int = 4) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(2)
    return (torch.randn(batch, 16, 8, 8, generator=gen), torch.rand(batch, generator=gen),
            torch.randint(0, 10, (batch,), generator=gen))


# ---------------------------------------------------------------------------------------------------------
# Parameter counts (recipe §9), built on the meta device
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("preset, trainable, frozen", [
    ("XL", 835_021_268, 295_168),   # 835.02M (+0.30M frozen sin-cos PE and Fourier W)
    ("S", 193_489_364, 98_560),     # 193.49M
])
def test_param_counts_at_128_channels(preset: str, trainable: int, frozen: int) -> None:
    with torch.device("meta"):
        model = build_dit(preset, in_channels=128, input_size=16, num_classes=1000)
    assert _count(model) == trainable
    assert _count(model, trainable=False) == frozen
    assert round(trainable / 1e6, 2) == {"XL": 835.02, "S": 193.49}[preset]


@pytest.mark.parametrize("dim, heads, hidden, expected", [
    (1152, 16, 3072, 23_908_992),  # XL trunk block
    (2048, 16, 5461, 75_532_970),  # DDT head block
    (384, 6, 1024, 2_661_248),     # S trunk block
])
def test_block_counts(dim: int, heads: int, hidden: int, expected: int) -> None:
    with torch.device("meta"):
        block = DDTBlock(dim, heads, hidden)
    assert _count(block) == expected


def test_mlp_hidden_widths() -> None:
    xl = DiTConfig(**DIT_PRESETS["XL"])
    s = DiTConfig(**DIT_PRESETS["S"])
    assert (xl.mlp_hidden, xl.head_mlp_hidden, s.mlp_hidden) == (3072, 5461, 1024)


# ---------------------------------------------------------------------------------------------------------
# Construction and forward
# ---------------------------------------------------------------------------------------------------------
def test_unknown_preset_and_bad_config() -> None:
    with pytest.raises(RectokError, match="unknown DiT preset"):
        build_dit("XXL", 128, 16, 1000)
    with pytest.raises(ValueError, match="head size"):
        DiTConfig(width=64, depth=1, heads=4, head_width=96, head_heads=16)  # head size 6
    with pytest.raises(ValueError, match="head size"):
        DiTConfig(width=64, depth=1, heads=5)
    with pytest.raises(ValueError, match="patch_size"):
        DiTConfig(width=64, depth=1, heads=4, input_size=9, patch_size=2)


@pytest.mark.parametrize("patch_size", [1, 2])
def test_tiny_forward_shape_and_zero_init(patch_size: int) -> None:
    model = _tiny(patch_size=patch_size)
    x, t, y = _inputs()
    out = model(x, t, y)
    assert out.shape == x.shape
    assert out.dtype == torch.float32
    assert torch.equal(out, torch.zeros_like(out))  # zero adaLN outputs and final linear


def test_scalar_time_broadcasts() -> None:
    model = _randomize(_tiny()).eval()
    x, _, y = _inputs()
    t = torch.full((4,), 0.3)
    torch.testing.assert_close(model(x, torch.tensor(0.3), y), model(x, t, y))


def test_wrong_latent_shape_is_rejected() -> None:
    model = _tiny()
    with pytest.raises(ValueError, match="expects latents"):
        model(torch.zeros(2, 16, 4, 4), torch.zeros(2), torch.zeros(2, dtype=torch.long))


def test_frozen_tables_and_init() -> None:
    model = _tiny()
    assert not model.pos_embed.requires_grad and not model.t_embedder.W.requires_grad
    torch.testing.assert_close(model.pos_embed[0], sincos_pos_embed_2d(64, 8))
    assert model.y_embedder.embedding_table.weight.shape == (11, 64)  # + null row
    w = model.s_embedder.proj.weight
    bound = math.sqrt(6 / (w.shape[0] + w[0].numel()))  # Xavier-uniform as a linear layer
    assert w.abs().max() <= bound and torch.equal(model.s_embedder.proj.bias, torch.zeros(64))
    for block in model.blocks:
        assert torch.equal(block.adaLN_modulation[-1].weight, torch.zeros_like(block.adaLN_modulation[-1].weight))


def test_backward_reaches_trainable_only() -> None:
    model = _randomize(_tiny())
    x, t, y = _inputs()
    model(x, t, y).square().mean().backward()
    assert model.pos_embed.grad is None and model.t_embedder.W.grad is None
    assert model.s_embedder.proj.weight.grad is not None and model.s_embedder.proj.weight.grad.abs().sum() > 0


def test_bf16_autocast_close_to_fp32() -> None:
    model = _randomize(_tiny()).eval()
    x, t, y = _inputs()
    ref = model(x, t, y)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x, t, y)
    assert torch.isfinite(out).all()
    assert (out.float() - ref).abs().max() < 0.05 * ref.abs().max()


# ---------------------------------------------------------------------------------------------------------
# RoPE
# ---------------------------------------------------------------------------------------------------------
def test_rope_is_a_rotation() -> None:
    grid, head_dim = 6, 24
    angles = rope_angles_2d(grid, head_dim)
    cos, sin = angles.cos().float(), angles.sin().float()
    # adjacent channel pairs share one angle
    assert torch.equal(angles[:, 0::2], angles[:, 1::2])
    q = torch.randn(2, 3, grid * grid, head_dim)
    rotated = apply_rope(q, cos, sin)
    torch.testing.assert_close(rotated.norm(dim=-1), q.norm(dim=-1))
    # first half follows the row index, second half the column index (row-major tokens)
    rows = angles[:, : head_dim // 2].reshape(grid, grid, -1)
    cols = angles[:, head_dim // 2:].reshape(grid, grid, -1)
    assert torch.equal(rows[:, 0], rows[:, -1]) and torch.equal(cols[0], cols[-1])
    assert torch.equal(rows[1, 0, :2], torch.ones(2, dtype=angles.dtype))  # theta^0 · row 1


def test_rope_scores_depend_on_offsets_only() -> None:
    grid, head_dim = 5, 16
    angles = rope_angles_2d(grid, head_dim)
    cos, sin = angles.cos(), angles.sin()
    gen = torch.Generator().manual_seed(0)
    q, k = (torch.randn(head_dim, generator=gen, dtype=torch.float64).expand(grid * grid, head_dim)
            for _ in range(2))
    scores = apply_rope(q, cos, sin) @ apply_rope(k, cos, sin).T
    scores = scores.reshape(grid, grid, grid, grid)  # (row_q, col_q, row_k, col_k)
    torch.testing.assert_close(scores[1:, :, 1:, :], scores[:-1, :, :-1, :])
    torch.testing.assert_close(scores[:, 1:, :, 1:], scores[:, :-1, :, :-1])


# ---------------------------------------------------------------------------------------------------------
# Label dropout
# ---------------------------------------------------------------------------------------------------------
def test_label_dropout_uses_null_index() -> None:
    model = _randomize(_tiny()).eval()
    x, t, y = _inputs()
    null = torch.full_like(y, model.null_class)
    assert model.null_class == 10
    all_dropped = model(x, t, y, drop_mask=torch.ones(4, dtype=torch.bool))
    torch.testing.assert_close(all_dropped, model(x, t, null))
    mask = torch.tensor([True, False, True, False])
    torch.testing.assert_close(model(x, t, y, drop_mask=mask), model(x, t, torch.where(mask, null, y)))
    assert not torch.allclose(model(x, t, y), all_dropped)


def test_training_mode_dropout() -> None:
    x, t, y = _inputs()
    for rate, expected_labels in ((1.0, torch.full_like(y, 10)), (0.0, y)):
        model = _randomize(_tiny(class_dropout=rate))
        trained = model.train()(x, t, y)
        torch.testing.assert_close(trained, model.eval()(x, t, expected_labels))


def test_draw_drop_mask_is_reproducible() -> None:
    model = _tiny()
    a = model.draw_drop_mask(10_000, torch.Generator().manual_seed(3))
    b = model.draw_drop_mask(10_000, torch.Generator().manual_seed(3))
    assert a.dtype == torch.bool and torch.equal(a, b)
    assert abs(a.float().mean().item() - 0.1) < 0.01
