"""The tokenizer's architecture and equations, pinned against the recipe and hand-computed values."""
import math

import pytest
import torch

from rectok_core.flow.noise import (
    noise_latents,
    sample_noise_level,
    timestep_shift,
)
from rectok_core.losses.tokenizer import mse01, semantic_loss
from rectok_core.models.layers import apply_rope, rope_table
from rectok_core.models.tokenizer import (
    DiagonalGaussian,
    RecTok,
    TokenizerModelConfig,
    cosine_loss_map,
    count_params,
    masked_token_flags,
    random_masking,
)

TINY = dict(image_size=32, patch_size=4, width=64, depth=2, heads=4, dim=16, sem_width=32, sem_depth=1,
            sem_heads=2, teacher_dim=24)


def test_base_parameter_counts_match_recipe():
    with torch.device("meta"):
        m = RecTok(TokenizerModelConfig())  # base: ViT-B/16, C = 128, 1024-d teacher (DINOv3-L)
    assert count_params(m.encoder) == 86_033_920
    assert count_params(m.decoder) == 85_936_980
    assert count_params(m.encoder) + count_params(m.decoder) == 171_970_900  # 171.97M
    assert count_params(m.sem_decoder) == 1_606_336  # 1.606M


def test_shift_is_dimension_dependent():
    assert timestep_shift(16, 16, 128) == pytest.approx(2 * math.sqrt(2))
    assert timestep_shift(16, 16, 32) == pytest.approx(math.sqrt(2))
    assert timestep_shift(16, 16, 16) == pytest.approx(1.0)


def test_shifted_t_median_and_distribution():
    s = 2 * math.sqrt(2)
    # the map u → s·u/(1+(s−1)u) is monotone, so quantiles map through it: the median (u = 1/2) is s/(1+s)
    assert s / (1 + s) == pytest.approx(0.73879, abs=1e-5)
    g = torch.Generator().manual_seed(0)
    t = sample_noise_level(200_000, "shift", s, g)
    assert t.median().item() == pytest.approx(0.7388, abs=0.005)
    assert (t >= 0).all() and (t <= 1).all()
    # empirical CDF at a hand-computed quantile: P(t <= q(0.25)) = 0.25 with q(0.25) = s/4 / (1 + (s−1)/4)
    q25 = s * 0.25 / (1 + (s - 1) * 0.25)
    assert q25 == pytest.approx(0.48528, abs=1e-5)
    assert (t <= q25).float().mean().item() == pytest.approx(0.25, abs=0.005)
    u = sample_noise_level(100_000, "uniform", s, g)
    assert u.median().item() == pytest.approx(0.5, abs=0.01)
    ln = sample_noise_level(100_000, "lognorm", s, g)
    assert ln.median().item() == pytest.approx(0.5, abs=0.01)


def test_noise_latents_is_the_straight_path():
    z, eps = torch.full((2, 3, 4), 2.0), torch.full((2, 3, 4), -1.0)
    t = torch.tensor([0.0, 0.25])
    x = noise_latents(z, t, eps)
    assert torch.equal(x[0], z[0])
    assert torch.allclose(x[1], torch.full((3, 4), 0.75 * 2 - 0.25))


@pytest.mark.parametrize("ratio,expected", [(0.0, 256), (0.1, 231), (0.4, 154), (0.39, 157), (0.001, 256)])
def test_visible_token_count_is_ceil(ratio, expected):
    keep, masked, restore = random_masking(3, 256, ratio, torch.device("cpu"), torch.Generator().manual_seed(0))
    assert keep.shape == (3, math.ceil(256 * (1 - ratio))) == (3, expected)
    assert masked.shape == (3, 256 - expected)
    # ids_restore puts every token back: cat(keep, masked)[restore] == arange
    full = torch.cat([keep, masked], 1)
    assert torch.equal(torch.gather(full, 1, restore), torch.arange(256).expand(3, -1))
    flags = masked_token_flags(restore, expected, 256, 3, torch.device("cpu"))
    assert flags.sum(1).tolist() == [256 - expected] * 3
    for b in range(3):
        assert set(torch.nonzero(flags[b]).flatten().tolist()) == set(masked[b].tolist())


def test_kl_formula_hand_computed():
    mean = torch.tensor([[[1.0, 0.0]], [[0.0, 2.0]]])  # (B=2, N=1, C=2)
    logvar = torch.tensor([[[0.0, math.log(4.0)]], [[0.0, 0.0]]])
    post = DiagonalGaussian(torch.cat([mean, logvar], -1))
    # 0.5·Σ(μ² + σ² − 1 − log σ²): sample 0: 0.5·((1+1−1−0) + (0+4−1−log4)); sample 1: 0.5·(0 + 4)
    expected0 = 0.5 * (1 + (3 - math.log(4)))
    assert post.kl().tolist() == pytest.approx([expected0, 2.0])


def test_logvar_is_clamped():
    post = DiagonalGaussian(torch.cat([torch.zeros(1, 1, 2), torch.tensor([[[-100.0, 100.0]]])], -1))
    assert post.logvar.tolist() == [[[-30.0, 20.0]]]


def test_rope_rotation_preserves_norms_official_does_not():
    x = torch.randn(2, 4, 64, 16, dtype=torch.float64)
    ang = rope_table((8, 8), 16, "rotation").double()
    y = apply_rope(x, ang.cos(), ang.sin())
    assert torch.allclose(y.norm(dim=-1), x.norm(dim=-1), atol=1e-10)
    ang_o = rope_table((8, 8), 16, "official").double()
    y_o = apply_rope(x, ang_o.cos(), ang_o.sin())
    assert not torch.allclose(y_o.norm(dim=-1), x.norm(dim=-1), atol=1e-3)


def test_official_rope_table_matches_recipe():
    D = 64
    ang = rope_table((16, 16), D, "official").double()
    f = [7.0 * (7.0 / 7e-4) ** (-k / (D // 4 - 1)) for k in range(D // 4)]
    freqs = torch.tensor(f + f, dtype=torch.float64)  # concatenated with itself
    coords = torch.linspace(0, 1, 16, dtype=torch.float64)
    tok = 5 * 16 + 11  # row 5, column 11
    expected = torch.cat([coords[5] * freqs, coords[11] * freqs]) * 2 * math.pi
    assert torch.allclose(ang[tok], expected, atol=1e-5)


def test_cosine_loss_on_hand_made_vectors():
    pred = torch.tensor([[[1.0, 0.0], [0.0, 3.0], [1.0, 1.0]]])
    target = torch.tensor([[[2.0, 0.0], [0.0, -1.0], [1.0, 0.0]]])
    per = cosine_loss_map(pred, target)
    assert per.tolist()[0] == pytest.approx([0.0, 2.0, 1 - 1 / math.sqrt(2)])


def test_semantic_loss_covers_masked_and_visible_tokens():
    pred = torch.tensor([[[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [1.0, 0.0]]])
    target = torch.tensor([[[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]])  # per-token losses 0, 2, 1, 0
    masked = torch.tensor([[False, True, True, False]])
    assert semantic_loss(pred, target, masked, "rec+align").item() == pytest.approx(3 / 4)
    assert semantic_loss(pred, target, masked, "align").item() == pytest.approx(0.0)
    assert semantic_loss(pred, target, masked, "rec").item() == pytest.approx(3 / 2)
    assert semantic_loss(pred, target, torch.zeros_like(masked), "rec").item() == 0.0


def test_mse_is_on_the_unit_scale():
    a, b = torch.full((1, 3, 2, 2), 1.0), torch.full((1, 3, 2, 2), -1.0)
    assert mse01(a, b).item() == pytest.approx(1.0)  # [0,1] scale: (1 − 0)²


def test_tiny_forward_shapes_and_masked_tokens_reach_both_decoders():
    torch.manual_seed(0)
    cfg = TokenizerModelConfig(**TINY)
    m = RecTok(cfg)
    img = torch.rand(2, 3, 32, 32) * 2 - 1
    g = torch.Generator().manual_seed(0)
    keep, _, restore = random_masking(2, 64, 0.3, torch.device("cpu"), g)
    out = m(img, keep, restore, torch.tensor([0.2, 0.9]), "noisy", 1.0, g)
    assert out["recon"].shape == (2, 3, 32, 32)
    assert out["sem"].shape == (2, 64, 24)
    assert out["z"].shape == (2, keep.shape[1], 16)
    assert out["kl"].shape == (2,)
    loss = out["recon"].pow(2).mean() + out["sem"].pow(2).mean()
    loss.backward()
    for name, p in m.named_parameters():
        assert p.grad is not None, name  # every parameter, mask tokens included, is in the graph
    assert m.decoder.mask_token.grad.abs().sum() > 0
    # no masking: mask tokens stay in the graph (zero gradient) so DDP never sees unused parameters
    m.zero_grad()
    out = m(img, None, None, None)
    (out["recon"].mean() + out["sem"].mean()).backward()
    assert m.decoder.mask_token.grad is not None and m.decoder.mask_token.grad.abs().sum() == 0


def test_encoder_sees_visible_tokens_only():
    torch.manual_seed(0)
    m = RecTok(TokenizerModelConfig(**TINY)).eval()
    img = torch.rand(1, 3, 32, 32) * 2 - 1
    keep = torch.tensor([[0, 5, 9]])
    a = m.encoder(img, keep)
    img2 = img.clone()
    img2[:, :, 16:, 16:] = 0  # change pixels of tokens that are not kept (rows 4-7, cols 4-7)
    b = m.encoder(img2, keep)
    assert a.shape == (1, 3, 32)
    assert torch.allclose(a, b)


def test_pixel_shuffle_channel_order():
    cfg = TokenizerModelConfig(**TINY)
    m = RecTok(cfg, semantic=False)
    dec = m.decoder
    h = w = 8
    p = cfg.patch_size
    head_out = torch.arange(p * p * 3 * h * w, dtype=torch.float32).view(1, p * p * 3, h, w)
    x = head_out.view(1, p, p, 3, h, w).permute(0, 3, 4, 1, 5, 2).reshape(1, 3, h * p, w * p)
    # channel index (p1, p2, c) of token (i, j) lands at pixel (i·p + p1, j·p + p2), colour c
    i, j, p1, p2, c = 2, 5, 1, 3, 2
    ch = (p1 * p + p2) * 3 + c
    assert x[0, c, i * p + p1, j * p + p2] == head_out[0, ch, i, j]
    assert dec.head.out_channels == p * p * 3


def test_rope_default_is_the_official_variant_and_rotation_differs():
    torch.manual_seed(0)
    a = RecTok(TokenizerModelConfig(**TINY))
    assert TokenizerModelConfig().rope == "official"  # recipe §1.2: what the official code trains
    assert torch.equal(a.encoder.rope.cos, RecTok(TokenizerModelConfig(**TINY, rope="official")).encoder.rope.cos)
    assert not torch.allclose(a.encoder.rope.cos, RecTok(TokenizerModelConfig(**TINY, rope="rotation")).encoder.rope.cos)
