"""The original's image transform: Resize((224, 224)) on 0..255 tensors, then ImageNet Normalize."""
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from dynaguide_jax.encoders import preprocess

MEAN = torch.tensor((123.675, 116.28, 103.53)).view(1, 3, 1, 1)
STD = torch.tensor((58.395, 57.12, 57.375)).view(1, 3, 1, 1)


def torch_transform(images_uint8):
    x = torch.tensor(images_uint8).permute(0, 3, 1, 2).float()
    x = torch.nn.functional.interpolate(x, size=(224, 224), mode="bilinear", align_corners=False,
                                        antialias=True)
    return ((x - MEAN) / STD).permute(0, 2, 3, 1).numpy()


@pytest.mark.parametrize("hw", [(200, 200), (84, 84), (256, 320), (224, 224)])
def test_matches_original_transform(rng, hw):
    imgs = rng.integers(0, 256, (2, *hw, 3), dtype=np.uint8)
    ours = np.asarray(preprocess(imgs))
    assert ours.shape == (2, 224, 224, 3) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, torch_transform(imgs), atol=1e-5)


def test_uint8_and_float_agree_and_single_image(rng):
    imgs = rng.integers(0, 256, (1, 200, 200, 3), dtype=np.uint8)
    a = preprocess(imgs)
    b = preprocess(imgs.astype(np.float32))
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert preprocess(imgs[0]).shape == (224, 224, 3)


def test_bad_inputs():
    with pytest.raises(ValueError, match="channels-first"):
        preprocess(np.zeros((2, 3, 64, 64), np.uint8))
    with pytest.raises(ValueError, match="B, H, W, 3"):
        preprocess(np.zeros((64, 64), np.uint8))
    with pytest.raises(TypeError, match="uint8 or float"):
        preprocess(jnp.zeros((1, 8, 8, 3), bool))
