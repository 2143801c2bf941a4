"""Image preprocessing for DinoV2: the transform the original dynamics model applies.

The original takes 0..255 float images, ``Resize((224, 224))`` (torchvision, bilinear, antialias on
tensors) and ``Normalize(mean=(123.675, 116.28, 103.53), std=(58.395, 57.12, 57.375))``, i.e. the
ImageNet statistics on the 0..255 scale.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from dynaguide_jax._checks import check_rank
from dynaguide_jax.encoders.resize import resize_hw

IMAGENET_MEAN_255 = (123.675, 116.28, 103.53)
IMAGENET_STD_255 = (58.395, 57.12, 57.375)


def preprocess(
    images,
    size: int | tuple[int, int] = 224,
    *,
    method: str = "bilinear",
    antialias: bool = True,
    mean=IMAGENET_MEAN_255,
    std=IMAGENET_STD_255,
) -> jax.Array:
    """uint8 or 0..255 float images ``[B, H, W, 3]`` -> resized, normalized float32 ``[B, h, w, 3]``.

    A single image ``[H, W, 3]`` is accepted too and keeps its rank. Channels-first input is
    rejected with a hint, since silently transposing would hide a layout bug upstream.
    """
    images = jnp.asarray(images)
    single = images.ndim == 3
    if single:
        images = images[None]
    check_rank("images", images, 4, "[B, H, W, 3]")
    if images.shape[-1] != 3:
        hint = " (looks channels-first: transpose to [B, H, W, 3])" if images.shape[1] == 3 else ""
        raise ValueError(f"images must have 3 channels last, got shape {images.shape}{hint}")
    if not (jnp.issubdtype(images.dtype, jnp.integer) or jnp.issubdtype(images.dtype, jnp.floating)):
        raise TypeError(f"images must be uint8 or float, got {images.dtype}")
    hw = (size, size) if isinstance(size, int) else tuple(size)
    x = images.astype(jnp.float32)
    if x.shape[1:3] != hw:
        x = resize_hw(x, hw, method=method, antialias=antialias)
    x = (x - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)
    return x[0] if single else x

