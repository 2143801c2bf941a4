"""Building goal embeddings: from goal images (the paper's φ(g)) or from the dynamics model's
prediction at the end of goal trajectories (what the original code does)."""
from __future__ import annotations

import jax.numpy as jnp

from dynaguide_jax._checks import check_finite

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


def repeat_last_action(last_actions, horizon: int):
    """``[K, A]`` -> ``[K, horizon, A]``: the chunk the original feeds at a trajectory's last step
    (``MultiviewDataset.get_labeled_item`` with pad_mode "repeat": everything past the end is padded
    with the last action)."""
    last_actions = jnp.asarray(last_actions)
    if last_actions.ndim != 2:
        raise ValueError(f"last actions must be [K, A], got shape {last_actions.shape}")
    return jnp.repeat(last_actions[:, None], horizon, axis=1)


def goals_from_trajectory_ends(dynamics: DynamicsConfig, dynamics_params, patches, proprio,
                               actions):
    """The dynamics prediction at the last step of each goal trajectory -> ``[K, P'*D]``, as the
    original builds goal embeddings (``core/dynaguide.py`` ``calculate_classifier_guidance``).

    ``patches [K, C*P, D]`` / ``proprio [K, p]``: each trajectory's final observation. ``actions``:
    its last action ``[K, A]``, repeated to the model's horizon here, or that repeat chunk
    ``[K, H, A]`` (``export_guidance_conditions`` writes both), in the model's action space
    (CALVIN: clipped to [-1, 1]).
    """
    actions, patches = jnp.asarray(actions), jnp.asarray(patches)
    proprio = None if proprio is None else jnp.asarray(proprio)
    if patches.ndim != 3:
        raise ValueError(f"goal patches must be [K, C*P, D], got shape {patches.shape}")
    if patches.shape[0] == 0:
        raise ValueError("no goal trajectories given")
    check_finite("goal actions", actions)
    if actions.ndim == 2:
        actions = repeat_last_action(actions, dynamics.horizon)
    if actions.shape != (patches.shape[0], dynamics.horizon, dynamics.action_dim):
        raise ValueError(f"goal actions must be [K={patches.shape[0]}, A={dynamics.action_dim}] last actions or "
                         f"[K, H={dynamics.horizon}, A] chunks, got shape {actions.shape}")
    z = predict_future_patches(dynamics, dynamics_params, patches, proprio, actions)
    return z.reshape(z.shape[0], -1)
