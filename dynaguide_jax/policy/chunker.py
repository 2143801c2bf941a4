"""Receding-horizon execution of a chunked policy inside a control loop.

Keeps the last ``obs_horizon`` observations (the first one repeated at the start of an episode,
as robomimic's frame stacking does), samples a chunk of ``prediction_horizon`` actions when no
planned action is left, and executes the steps ``[start, start + Ta)`` one per ``act`` call,
``start = To - 1`` by default. The original executes 14 actions under guidance (8 in the config);
its GPC baseline (run_sampling_baseline.py) pushes the whole 16-step chunk into robomimic's
``deque(maxlen=14)`` action queue, which keeps the LAST 14: ``start=2`` replays that.
"""
from __future__ import annotations

from collections import deque
from typing import Callable

import jax
import numpy as np


class ActionChunker:
    def __init__(self, sample_fn: Callable[[dict, jax.Array], jax.Array], obs_horizon: int, action_horizon: int,
                 start: int | None = None):
        """``sample_fn(obs_stack {k: [1, To, ...]}, key) -> actions [1, Tp, A]``; ``start``: the first
        executed step of a chunk (default ``obs_horizon - 1``)."""
        if obs_horizon < 1 or action_horizon < 1:
            raise ValueError("obs_horizon and action_horizon must be >= 1")
        if start is not None and start < 0:
            raise ValueError(f"start must be >= 0, got {start}")
        self.sample_fn = sample_fn
        self.obs_horizon = obs_horizon
        self.action_horizon = action_horizon
        self.start = obs_horizon - 1 if start is None else int(start)
        self.reset()

    def reset(self) -> None:
        self._obs: deque = deque(maxlen=self.obs_horizon)
        self._plan: deque = deque()
        self.chunks_sampled = 0

    def observation_stack(self) -> dict:
        return {k: np.stack([o[k] for o in self._obs])[None] for k in self._obs[0]}

    def act(self, obs: dict, key: jax.Array) -> np.ndarray:
        """Push the newest single-frame observation; return the action to execute now."""
        if not self._obs:
            for _ in range(self.obs_horizon):
                self._obs.append(obs)
        else:
            self._obs.append(obs)
        if not self._plan:
            chunk = np.asarray(self.sample_fn(self.observation_stack(), key))
            if chunk.ndim != 3 or chunk.shape[0] != 1:
                raise ValueError(f"sample_fn must return [1, T, A] actions, got {chunk.shape}")
            if not np.isfinite(chunk).all():
                steps = sorted({int(t) for t in np.argwhere(~np.isfinite(chunk))[:, 1]})
                raise FloatingPointError(
                    f"ActionChunker: chunk {self.chunks_sampled} (0-based, this episode) from sample_fn holds "
                    f"non-finite actions at steps {steps} of {chunk.shape[1]}; refusing to execute it "
                    "(check the guidance scale, goal features and policy params)")
            start = self.start
            if chunk.shape[1] < start + self.action_horizon:
                raise ValueError(f"chunk of {chunk.shape[1]} steps is too short to execute "
                                 f"{self.action_horizon} actions after {start} observation steps")
            self._plan.extend(chunk[0, start:start + self.action_horizon])
            self.chunks_sampled += 1
        return self._plan.popleft()
