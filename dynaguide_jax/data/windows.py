"""Training windows for the dynamics model: ``(patches_t, proprio_t, a_t..a_{t+H-1}, patches_{t+H})``.

Only times whose ``t + H`` lies in the same episode are used (the future frame must exist). Batches
are a pure function of ``(seed, step)``: a resumed run continues the exact data stream, and every
process takes its own rows of the same global batch, so the global batch does not depend on how
many hosts read it.
"""
from __future__ import annotations

import numpy as np

from dynaguide_jax.data.episodes import EpisodeData


class DynamicsWindows:
    def __init__(self, data: EpisodeData, features: np.ndarray, horizon: int, proprio_key: str | None = "proprio",
                 action_stats: dict | None = None):
        """``features [N, C*P, D]``: per-frame encoder patches (e.g. a ``FeatureCache``'s array)."""
        if len(features) != data.num_frames:
            raise ValueError(f"features have {len(features)} frames, episodes have {data.num_frames}")
        if proprio_key is not None and proprio_key not in data.obs:
            raise KeyError(f"episodes have no {proprio_key!r} observation (keys: {sorted(data.obs)})")
        self.data, self.features, self.horizon, self.proprio_key = data, features, horizon, proprio_key
        self.valid = np.flatnonzero(np.arange(data.num_frames) + horizon < data.frame_end)
        if len(self.valid) == 0:
            raise ValueError(f"no episode is longer than the horizon {horizon}")
        self.action_stats = action_stats

    def batch(self, step: int, global_batch: int, seed: int = 0, rows: slice | None = None) -> dict:
        rng = np.random.default_rng([seed, step])
        t = self.valid[rng.integers(0, len(self.valid), global_batch)]
        if rows is not None:
            t = t[rows]
        acts = self.data.actions[t[:, None] + np.arange(self.horizon)[None]].astype(np.float32)
        if self.action_stats is not None:
            acts = (acts - self.action_stats["offset"]) / self.action_stats["scale"]
        out = {"patches": np.asarray(self.features[t], np.float32), "actions": acts,
               "future_patches": np.asarray(self.features[t + self.horizon], np.float32)}
        if self.proprio_key is not None:
            out["proprio"] = self.data.obs[self.proprio_key][t].astype(np.float32)
        return out


def action_normalization(actions: np.ndarray) -> dict:
    """Min/max statistics mapping actions to [-1, 1] (robomimic's ``scale`` / ``offset`` form)."""
    lo, hi = actions.min(0), actions.max(0)
    scale = np.where(hi > lo, (hi - lo) / 2.0, 1.0).astype(np.float32)
    return {"scale": scale, "offset": ((hi + lo) / 2.0).astype(np.float32)}
