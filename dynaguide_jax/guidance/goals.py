"""Building goal embeddings: from goal images (the paper's φ(g)) or from the dynamics model's
prediction at the end of goal trajectories (what the original code does)."""
from __future__ import annotations

import jax.numpy as jnp

from dynaguide_jax.dynamics.config import DynamicsConfig
from dynaguide_jax.dynamics.model import predict_future_patches
from dynaguide_jax.encoders.dinov2_config import DinoV2Config
from dynaguide_jax.guidance.dynaguide import encode_cameras


def goals_from_images(encoder: DinoV2Config, encoder_params, images, image_size: int = 224,
                      num_tokens: int | None = None):
    """Goal images ``[K, H, W, 3]`` (uint8 / 0..255) -> ``[K, P*D]`` flattened DinoV2 patches.

    ``num_tokens`` keeps the first tokens only, to match a dynamics model that predicts fewer.
    """
    images = jnp.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"goal images must be [K, H, W, 3], got shape {images.shape}")
    if images.shape[0] == 0:
        raise ValueError("no goal images given")
    patches = encode_cameras(encoder, encoder_params, images[:, None], image_size)
    if num_tokens is not None:
        patches = patches[:, :num_tokens]
    return patches.reshape(patches.shape[0], -1)


def goals_from_trajectory_ends(dynamics: DynamicsConfig, dynamics_params, patches, proprio,
                               actions):
    """The dynamics prediction at the last step of each goal trajectory -> ``[K, P'*D]``.

    ``patches [K, C*P, D]`` / ``proprio [K, p]`` / ``actions [K, H, A]`` are each trajectory's
    final observation and action chunk.
    """
    if patches.shape[0] == 0:
        raise ValueError("no goal trajectories given")
    z = predict_future_patches(dynamics, dynamics_params, patches, proprio, actions)
    return z.reshape(z.shape[0], -1)
