"""Training windows for the policy from in-memory episodes (small data; the RLDS loader feeds the
same batch format for large datasets).

Windows follow robomimic's SequenceDataset with frame stacking: at time ``t`` the observation frames
are ``t - To + 1 .. t`` and the actions ``t - To + 1 .. t - To + Tp``, both padded by repeating the
episode's first / last frame. Episodes are the behaviour segments robomimic trains on (one hdf5
demo per segment in the original; ``split_at_segments`` cuts CALVIN's play ranges so). Batches
are a pure function of ``(seed, step)``, so a resumed run sees exactly the batches an
uninterrupted run would.
"""
from __future__ import annotations

import numpy as np

from dynaguide_jax._checks import check_int
from dynaguide_jax.data.episodes import EpisodeData
from dynaguide_jax.policy.config import PolicyConfig

GOAL_MODES = ("last", "future")


def check_episode_data(data: EpisodeData, config: PolicyConfig) -> None:
    """Raise unless ``data`` holds every observation the policy reads, with its frame shapes, and
    actions of its ``action_dim``."""
    rgb, low = dict(config.rgb_shapes), dict(config.low_dim)
    for k in dict.fromkeys((*config.obs_keys, *config.goal_rgb_keys)):
        if k not in data.obs:
            raise KeyError(f"episodes have no {k!r} observation, which the policy reads (keys: {sorted(data.obs)})")
        want = (*rgb[k], 3) if k in rgb else (low[k],)
        if data.obs[k].shape[1:] != want:
            raise ValueError(f"obs[{k!r}] frames are {data.obs[k].shape[1:]}, the policy config expects {want}")
    if data.actions.shape[1] != config.action_dim:
        raise ValueError(f"episode actions have {data.actions.shape[1]} dims, the policy config's action_dim is "
                         f"{config.action_dim}")


def window_indices(data: EpisodeData, config: PolicyConfig, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Frame indices of the windows at frames ``t`` ``[B]``: observations ``[B, To]`` (``t - To + 1 .. t``)
    and actions ``[B, Tp]`` (``t - To + 1 ..``), clipped to each frame's episode (robomimic's padding)."""
    lo, hi = data.frame_start[t], data.frame_end[t] - 1
    to, tp = config.obs_horizon, config.prediction_horizon
    obs_idx = np.clip(t[:, None] + np.arange(-to + 1, 1)[None], lo[:, None], hi[:, None])
    act_idx = np.clip(t[:, None] + np.arange(-to + 1, -to + 1 + tp)[None], lo[:, None], hi[:, None])
    return obs_idx, act_idx


def policy_batch(data: EpisodeData, config: PolicyConfig, batch_size: int, seed: int, step: int,
                 goal_mode: str = "last") -> dict:
    """One batch of windows: ``obs {k: [B, To, ...]}``, ``actions [B, Tp, A]`` (normalized by the
    caller if needed) and, for goal-conditioned configs, ``goal {camera: [B, H, W, 3]}``: the
    episode's final frame (``goal_mode="last"``, the original's GC policy: robomimic's
    ``goal_mode: "last"`` in configs/diffusion_policy_image_calvin_ddim_gc.json) or, as an option,
    a uniformly drawn later frame of the episode (``"future"``, hindsight relabelling)."""
    if goal_mode not in GOAL_MODES:
        raise ValueError(f"goal_mode must be one of {GOAL_MODES}, got {goal_mode!r}")
    check_int("batch_size", batch_size)
    check_episode_data(data, config)
    rng = np.random.default_rng([seed, step])
    n = len(data.actions)
    t = rng.integers(0, n, batch_size)
    obs_idx, act_idx = window_indices(data, config, t)
    hi = data.frame_end[t] - 1
    batch = {"obs": {k: data.obs[k][obs_idx] for k in config.obs_keys},
             "actions": data.actions[act_idx].astype(np.float32)}
    if config.goal_rgb_keys:
        if goal_mode == "last":
            g = hi
        else:  # hindsight: any later frame of the same episode
            g = t + (rng.random(batch_size) * (hi - t + 1)).astype(np.int64)
        batch["goal"] = {k: data.obs[k][g] for k in config.goal_rgb_keys}
    return batch
