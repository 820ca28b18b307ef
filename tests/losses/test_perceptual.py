"""LPIPS (VGG16 key mapping, refusal to run without a real backbone), the ConvNeXt-S term, and the PatchGAN
discriminator with its hinge losses. CPU only, no network, no real weights."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from rectok_core.errors import CheckpointError, RectokError, WeightsNotFound
from rectok_core.losses import perceptual as P
from rectok_core.losses.perceptual import (
    LPIPS,
    PerceptualLoss,
    build_lpips,
)
from rectok_core.models.discriminator import (
    NLayerDiscriminator,
    hinge_d_loss,
)


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    """Offline, with an empty torch hub cache."""
    monkeypatch.setenv("RECTOK_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))


@pytest.fixture(scope="module")
def random_lpips() -> LPIPS:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RECTOK_OFFLINE", "1")
        mp.setenv("TORCH_HOME", "/nonexistent/rectok-test-torch-home")
        return build_lpips(allow_random=True)


@pytest.fixture(scope="module")
def vgg_features_file(tmp_path_factory) -> tuple[Path, torch.nn.Sequential]:
    """A torchvision-layout VGG16 state dict (random features + a stand-in classifier tensor)."""
    from torchvision.models.vgg import cfgs, make_layers

    torch.manual_seed(0)
    features = make_layers(cfgs["D"]).eval()
    sd = {f"features.{k}": v for k, v in features.state_dict().items()}
    sd["classifier.6.bias"] = torch.zeros(1000)  # ignored by the mapping
    path = tmp_path_factory.mktemp("vgg") / P.VGG16_FILE
    torch.save(sd, path)
    return path, features


def _images(b: int = 3, size: int = 32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, size, size, generator=g) * 2 - 1


# ------------------------------------------------------------------------------------------------------- LPIPS


def test_random_lpips_metric_properties(random_lpips):
    assert random_lpips.real is False and not random_lpips.training
    x, y = _images(seed=0), _images(seed=1)
    d_xx = random_lpips(x, x)
    assert d_xx.shape == (3,) and torch.all(d_xx == 0)
    d_xy, d_yx = random_lpips(x, y), random_lpips(y, x)
    assert torch.all(d_xy > 0)
    torch.testing.assert_close(d_xy, d_yx)
    torch.testing.assert_close(random_lpips(x.bfloat16(), y), d_xy, rtol=0.05, atol=1e-3)  # mixed dtypes work
    random_lpips.train()  # lpips's dropout layers must never switch on
    assert not any(m.training for m in random_lpips.modules())
    torch.testing.assert_close(random_lpips(x, y), d_xy, rtol=0, atol=0)
    assert all(not p.requires_grad for p in random_lpips.parameters())
    xg = x.clone().requires_grad_(True)
    random_lpips(xg, y).mean().backward()
    assert xg.grad is not None and xg.grad.abs().sum() > 0


def test_lpips_linear_layers_are_the_shipped_ones(random_lpips):
    import hashlib

    import lpips as lpips_pkg

    lin_file = Path(lpips_pkg.__file__).parent / "weights" / "v0.1" / "vgg.pth"
    assert hashlib.md5(lin_file.read_bytes()).hexdigest() == "d507d7349b931f0638a25a48a722f98a"  # = taming's
    shipped = torch.load(lin_file, map_location="cpu", weights_only=True)
    own = random_lpips.model.state_dict()
    for k, v in shipped.items():
        torch.testing.assert_close(own[k], v, rtol=0, atol=0)


def test_vgg_weights_key_mapping(vgg_features_file):
    """Loading a torchvision VGG16 state dict reproduces LPIPS computed directly on torchvision's features."""
    path, features = vgg_features_file
    lp = build_lpips(str(path))
    assert lp.real and lp.source == str(path)
    x, y = _images(2, 32, 0), _images(2, 32, 1)

    # independent LPIPS: torchvision feature indices of relu1_2, relu2_2, relu3_3, relu4_3, relu5_3
    taps = (3, 8, 15, 22, 29)
    shift = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
    scale = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)
    lins = [lp.model.state_dict()[f"lin{i}.model.1.weight"] for i in range(5)]

    def feats(img):
        out, h = [], (img - shift) / scale
        for i, layer in enumerate(features):
            h = layer(h)
            if i in taps:
                out.append(h.clone())
        return out

    with torch.no_grad():
        total = 0
        for fx, fy, w in zip(feats(x), feats(y), lins):
            nx = fx / (fx.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            ny = fy / (fy.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            total = total + F.conv2d((nx - ny) ** 2, w).mean(dim=(1, 2, 3))
    torch.testing.assert_close(lp(x, y), total, rtol=1e-5, atol=1e-7)


def test_vgg_weights_from_hub_cache(vgg_features_file, tmp_path):
    path, _ = vgg_features_file
    cache = tmp_path / "torch_home" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    (cache / P.VGG16_FILE).write_bytes(path.read_bytes())
    lp = build_lpips()
    assert lp.real and lp.source == str(cache / P.VGG16_FILE)


def test_lpips_missing_or_wrong_weights(tmp_path):
    with pytest.raises(WeightsNotFound) as info:
        build_lpips()
    assert str(info.value) == ("the perceptual loss (LPIPS) needs VGG16 ImageNet weights: pass --lpips-vgg FILE "
                               "(vgg16-397923af.pth) or use --perceptual none")
    with pytest.raises(WeightsNotFound, match="--lpips-vgg .*no such file"):
        build_lpips(str(tmp_path / "missing.pth"))
    bad = tmp_path / "resnet.pth"
    torch.save({"features.0.weight": torch.zeros(64, 3, 3, 3), "fc.weight": torch.zeros(2, 2)}, bad)
    with pytest.raises(CheckpointError, match="not a torchvision VGG16 state dict"):
        build_lpips(str(bad))
    with pytest.raises(WeightsNotFound):
        PerceptualLoss("lpips")  # the loss refuses too


def test_vgg_mapping_slices():
    sd = {f"features.{i}.weight": torch.zeros(1) for i in (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)}
    mapped = P.vgg16_to_lpips_state_dict(sd | {"classifier.0.weight": torch.zeros(1)})
    assert sorted(mapped) == sorted([
        "slice1.0.weight", "slice1.2.weight", "slice2.5.weight", "slice2.7.weight", "slice3.10.weight",
        "slice3.12.weight", "slice3.14.weight", "slice4.17.weight", "slice4.19.weight", "slice4.21.weight",
        "slice5.24.weight", "slice5.26.weight", "slice5.28.weight"])


# ---------------------------------------------------------------------------------------- combined perceptual


def test_perceptual_lpips_only(random_lpips):
    loss = PerceptualLoss("lpips", lpips_module=random_lpips)
    assert loss.kind == "lpips" and loss.real is False
    x, y = _images(seed=0), _images(seed=1)
    torch.testing.assert_close(loss(x, y), random_lpips(x, y))
    with pytest.raises(RectokError, match="unknown --perceptual"):
        PerceptualLoss("vgg", lpips_module=random_lpips)


def test_perceptual_with_convnext(random_lpips):
    with pytest.raises(WeightsNotFound, match="--convnext-weights"):
        PerceptualLoss("lpips+convnext", lpips_module=random_lpips)
    auto = PerceptualLoss("auto", lpips_module=random_lpips)  # no ConvNeXt weights: LPIPS alone
    assert auto.kind == "lpips" and auto.convnext is None

    torch.manual_seed(0)
    loss = PerceptualLoss("lpips+convnext", lpips_module=random_lpips, allow_random=True)
    assert loss.kind == "lpips+convnext" and loss.real is False
    loss.train()
    assert not any(m.training for m in loss.modules())  # stochastic depth stays off
    x, y = _images(2, 32, 0), _images(2, 32, 1)
    inputs, logits = [], []
    model = loss.convnext.model
    h1 = model.register_forward_pre_hook(lambda mod, args: inputs.append(args[0]))
    h2 = model.register_forward_hook(lambda mod, args, out: logits.append(out))
    try:
        got = loss(x, y)
    finally:
        h1.remove()
        h2.remove()
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    for img, seen in zip((x, y), inputs):
        img01 = F.interpolate((img + 1) / 2, size=(224, 224), mode="bilinear", align_corners=False, antialias=True)
        torch.testing.assert_close(seen, (img01 - mean) / std)
    assert logits[0].shape == (2, 1000)
    with torch.no_grad():
        mse = (logits[0] - logits[1]).pow(2).mean(dim=1)
        expected = (1.0 * random_lpips(x, y) + 0.1 * mse) / 1.1
    torch.testing.assert_close(got, expected)


def test_convnext_strict_loading(tmp_path):
    bad = tmp_path / "cnx.pth"
    torch.save({"features.0.0.weight": torch.zeros(96, 3, 4, 4)}, bad)
    with pytest.raises(CheckpointError, match="ConvNeXt-S"):
        P.build_convnext_small(str(bad))


# ----------------------------------------------------------------------------------------------- discriminator


def test_discriminator_params_and_shape():
    d = NLayerDiscriminator()
    assert sum(p.numel() for p in d.parameters()) == 2_765_633  # recipe: 2.77M
    convs = [m for m in d.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.bias is not None for c in convs] == [True, False, False, False, True]
    assert [c.stride for c in convs] == [(2, 2), (2, 2), (2, 2), (1, 1), (1, 1)]
    with torch.no_grad():
        assert d(torch.rand(1, 3, 256, 256)).shape == (1, 1, 30, 30)
    sync = NLayerDiscriminator(norm="sync")
    assert sum(p.numel() for p in sync.parameters()) == 2_765_633
    assert any(isinstance(m, torch.nn.SyncBatchNorm) for m in sync.modules())
    assert sync(torch.rand(2, 3, 32, 32)).shape == (2, 1, 2, 2)  # plain BatchNorm behaviour off DDP
    with pytest.raises(RectokError):
        NLayerDiscriminator(norm="group")


def test_hinge_losses_by_hand():
    real = torch.tensor([2.0, 0.5, -1.0, 1.0])
    fake = torch.tensor([-2.0, 0.0, 0.5, -0.5])
    # relu(1 - real) = [0, .5, 2, 0] → mean .625 ; relu(1 + fake) = [0, 1, 1.5, .5] → mean .75
    torch.testing.assert_close(hinge_d_loss(real, fake), torch.tensor(0.5 * (0.625 + 0.75)))
    torch.testing.assert_close(hinge_d_loss(torch.full((2, 1, 3, 3), 1.0), torch.full((2, 1, 3, 3), -1.0)),
                               torch.tensor(0.0))
