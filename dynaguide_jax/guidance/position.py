"""Position guidance (ITPS, arXiv 2411.16627), the paper's baseline, as the original applies it.

Positions are integrated from the action chunk, ``p_t = start_xyz + cumsum(a[:, :3] / 40)``, and
the direction on the xyz action dimensions is ``target - p_t`` (not an autograd gradient).
"""
from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from dynaguide_jax.guidance.base import Guidance


@dataclasses.dataclass(frozen=True)
class PositionGuidance(Guidance):
    """params: ``{"target": [3] or [B, 3]}``; features: ``{"start_xyz": [B, 3]}``."""

    downscaling: float = 40.0

    def positions(self, features, actions):
        start = jnp.asarray(features["start_xyz"], jnp.float32)
        if start.ndim != 2 or start.shape[-1] != 3:
            raise ValueError(f"start_xyz must be [B, 3], got {start.shape}")
        return start[:, None, :] + jnp.cumsum(actions[..., :3] / self.downscaling, axis=1)

    def direction(self, params, features, actions):
        target = jnp.asarray(params["target"], jnp.float32)
        delta = target.reshape(-1, 1, 3) - self.positions(features, actions)
        return jnp.zeros_like(actions).at[..., :3].set(delta.astype(actions.dtype))

    def metric(self, params, features, actions):
        """Negative distance between the chunk's final position and the target."""
        target = jnp.asarray(params["target"], jnp.float32).reshape(-1, 3)
        return -jnp.linalg.norm(self.positions(features, actions)[:, -1] - target, axis=-1)
