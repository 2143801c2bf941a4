"""Resampling equals torch.nn.functional.interpolate (the kernels torchvision's Resize uses)."""
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from dynaguide_jax.encoders.resize import resize_hw, resize_weights

CASES = [(200, 200, 224, 224), (256, 240, 224, 224), (37, 37, 16, 16), (37, 37, 20, 30), (5, 7, 11, 3)]


def torch_resize(x, size, method, antialias, scale_factor=None):
    t = torch.tensor(x).permute(0, 3, 1, 2)
    kw = {"scale_factor": scale_factor} if scale_factor else {"size": size}
    out = torch.nn.functional.interpolate(t, mode=method, align_corners=False, antialias=antialias, **kw)
    return out.permute(0, 2, 3, 1).numpy()


@pytest.mark.parametrize("h,w,oh,ow", CASES)
@pytest.mark.parametrize("method", ["bilinear", "bicubic"])
@pytest.mark.parametrize("antialias", [False, True])
def test_matches_torch(rng, h, w, oh, ow, method, antialias):
    x = rng.uniform(-2, 2, (2, h, w, 3)).astype(np.float32)
    ours = np.asarray(resize_hw(jnp.asarray(x), (oh, ow), method, antialias))
    # float32 weights computed as torch does; a few outputs differ by summation order
    # (~1e-5 relative to the data range of 4)
    np.testing.assert_allclose(ours, torch_resize(x, (oh, ow), method, antialias), atol=5e-5)


def test_scale_factor_path_matches_torch(rng):
    """The hub DinoV2 resamples position embeddings with scale_factor=(n + 0.1) / grid."""
    x = rng.normal(size=(1, 37, 37, 8)).astype(np.float32)
    sf = (16.1 / 37, 16.1 / 37)
    ours = np.asarray(resize_hw(jnp.asarray(x), (16, 16), "bicubic", False, sf))
    np.testing.assert_allclose(ours, torch_resize(x, None, "bicubic", False, sf), atol=1e-5)


def test_weights_rows_sum_to_one():
    for aa in (False, True):
        w = resize_weights(37, 16, "bicubic", aa)
        np.testing.assert_allclose(w.sum(1), 1.0, atol=1e-6)


def test_bad_arguments():
    with pytest.raises(ValueError, match="method"):
        resize_weights(4, 4, "nearest")
    with pytest.raises(ValueError, match="positive"):
        resize_weights(0, 4)
    with pytest.raises(ValueError, match="H, W, C"):
        resize_hw(jnp.zeros((4, 4)), (2, 2))
