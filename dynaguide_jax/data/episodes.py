"""In-memory episodes: per-frame arrays concatenated over episodes, with their boundaries."""
from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass
class EpisodeData:
    """Per-frame arrays concatenated over episodes; ``episode_ends`` are exclusive cumulative ends."""

    obs: dict[str, np.ndarray]  # {key: [N, ...]} images uint8 [N, H, W, 3]
    actions: np.ndarray  # [N, A]
    episode_ends: np.ndarray  # [E]

    def __post_init__(self):
        n = len(self.actions)
        ends = np.asarray(self.episode_ends, np.int64)
        if ends.ndim != 1 or len(ends) == 0 or ends[-1] != n or (np.diff(np.r_[0, ends]) <= 0).any():
            raise ValueError(f"episode_ends must be increasing, positive lengths, ending at {n} frames; "
                             f"got {ends[:5]}...")
        for k, v in self.obs.items():
            if len(v) != n:
                raise ValueError(f"obs[{k!r}] has {len(v)} frames, actions have {n}")
        self.episode_ends = ends
        starts = np.r_[0, ends[:-1]]
        self.frame_start = np.repeat(starts, ends - starts)
        self.frame_end = np.repeat(ends, ends - starts)

    @property
    def num_frames(self) -> int:
        return len(self.actions)
