"""Position guidance (ITPS, arXiv 2411.16627), the paper's baseline, as the original applies it.

Positions are integrated from the action chunk, ``p_t = start_xyz + cumsum(a[:, :3] / 40)``, and
the direction on the xyz action dimensions is ``target - p_t`` (not an autograd gradient).
"""
from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from dynaguide_jax._checks import check_finite, check_positive
from dynaguide_jax.guidance.base import Guidance


@dataclasses.dataclass(frozen=True)
class PositionGuidance(Guidance):
    """params: ``{"target": [3] or [B, 3]}``; features: ``{"start_xyz": [B, 3]}``."""

    downscaling: float = 40.0

    def __post_init__(self):
        check_positive("PositionGuidance downscaling", self.downscaling)

    def positions(self, features, actions):
        if "start_xyz" not in features:
            raise KeyError(f"position guidance features need 'start_xyz' [B, 3], got keys {sorted(features)}")
        start = jnp.asarray(features["start_xyz"], jnp.float32)
        if start.ndim != 2 or start.shape[-1] != 3:
            raise ValueError(f"start_xyz must be [B, 3], got {start.shape}")
        if actions.ndim != 3 or actions.shape[0] != start.shape[0] or actions.shape[-1] < 3:
            raise ValueError(f"position guidance needs actions [B={start.shape[0]}, T, A >= 3] (xyz first) for "
                             f"start_xyz {start.shape}, got {actions.shape}")
        check_finite("start_xyz", start)
        return start[:, None, :] + jnp.cumsum(actions[..., :3] / self.downscaling, axis=1)

    def target(self, params, batch: int):
        if "target" not in params:
            raise KeyError(f"position guidance params need 'target' [3] or [B, 3], got keys {sorted(params)}")
        target = jnp.asarray(params["target"], jnp.float32)
        if target.shape not in ((3,), (1, 3), (batch, 3)):
            raise ValueError(f"target must be [3] or [B={batch}, 3], got {target.shape}")
        check_finite("target", target)
        return target.reshape(-1, 3)

    def direction(self, params, features, actions):
        delta = self.target(params, actions.shape[0])[:, None] - self.positions(features, actions)
        return jnp.zeros_like(actions).at[..., :3].set(delta.astype(actions.dtype))

    def metric(self, params, features, actions):
        """Negative distance between the chunk's final position and the target."""
        target = self.target(params, actions.shape[0])
        return -jnp.linalg.norm(self.positions(features, actions)[:, -1] - target, axis=-1)
