"""Policy training data from the built-in toy world (the default ``--data`` of the CLI)."""
from __future__ import annotations

import jax

from dynaguide_jax import toyworld
from dynaguide_jax.policy.config import PolicyConfig
from dynaguide_jax.policy.mixture import line_prototypes
from dynaguide_jax.data.episodes import EpisodeData

IMAGE_SIZE = 56


def toy_policy_config(goal_conditioned: bool = False, dtype: str = "float32") -> PolicyConfig:
    """The small policy preset sized for the toy world's 56 px camera and 4-d proprio; the GC variant
    sees one observation frame, as the original's GC config (To = 1)."""
    return PolicyConfig.preset("small").replace(
        rgb_shapes=(("camera", (IMAGE_SIZE, IMAGE_SIZE)),), obs_horizon=1 if goal_conditioned else 2,
        goal_rgb_keys=("camera",) if goal_conditioned else (), dtype=dtype)


def toy_episodes(seed: int = 0, episodes: int = 64, length: int = 32, behaviours: int = 4) -> EpisodeData:
    obs, actions, ends, _ = toyworld.demonstrations(jax.random.key(seed), episodes, length,
                                                    line_prototypes(behaviours, 16, 7), IMAGE_SIZE)
    return EpisodeData(obs=obs, actions=actions, episode_ends=ends)
