"""Closed-loop rollouts of a chunked policy in host-side environments (CALVIN's simulator, run as a
``VectorEnv`` of worker processes): the same semantics as ``eval.rollout.closed_loop``, stepped from
Python.

Per replan: the last ``To`` observations of every environment (the first one repeated at the start)
go to ONE jitted, batched ``policy_fn`` call (policy and guidance on the accelerator for all N
environments at once), which gets the replan's key from ``jax.random.split(key, replans)`` exactly as
``closed_loop`` does; the workers then execute ``Ta`` actions of each chunk from index
``LoopConfig.first``. Records (robot_obs, scene_obs) start at the reset state and stop at the horizon;
the last chunk is executed only up to it (``closed_loop`` runs it to its end and cuts the records,
which comes to the same thing).
"""
from __future__ import annotations

from collections import deque
from typing import Callable

import jax
import numpy as np

from dynaguide_jax.eval.rollout import LoopConfig, Rollouts


def _stack_history(history: deque) -> dict:
    """``To`` dicts of ``[N, ...]`` arrays -> ``{k: [N, To, ...]}`` (as ``rollout.stack_frames``)."""
    return {k: np.stack([h[k] for h in history], axis=1) for k in history[0]}


def host_closed_loop(envs, policy_fn: Callable, robot_obs, scene_obs, key: jax.Array, config: LoopConfig, *,
                     jit: bool = True, progress: bool = False) -> Rollouts:
    """Run ``config.horizon`` control steps of ``envs`` (a ``VectorEnv`` of N) from ``robot_obs`` [N, 15]
    / ``scene_obs`` [N, 24]; -> numpy ``Rollouts`` (robot_obs [N, horizon + 1, 15], scene_obs
    [N, horizon + 1, 24], actions [N, horizon, A]).

    ``policy_fn(obs_stack {k: [N, To, ...]}, key) -> [N, Tp, A]`` as for ``closed_loop``; it is jitted
    here unless ``jit=False`` (already jitted, or host code). ``progress``: a tqdm bar over the steps.
    """
    cfg = config
    if not isinstance(cfg, LoopConfig):
        raise TypeError(f"config must be a LoopConfig, got {type(cfg).__name__}")
    n = envs.num_envs
    policy = jax.jit(policy_fn) if jit else policy_fn
    obs0, robot0, scene0 = envs.reset(robot_obs, scene_obs)
    history = deque([obs0] * cfg.obs_horizon, maxlen=cfg.obs_horizon)
    robots, scenes, actions = [robot0[:, None]], [scene0[:, None]], []
    keys = jax.random.split(key, cfg.replans)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.horizon, desc="rollout", unit="step")
    try:
        done = 0
        for r in range(cfg.replans):
            chunk = np.asarray(policy(_stack_history(history), keys[r]))
            if chunk.ndim != 3 or chunk.shape[0] != n or chunk.shape[1] < cfg.first + cfg.action_horizon:
                raise ValueError(f"policy chunks {chunk.shape} cannot execute {cfg.action_horizon} actions from "
                                 f"index {cfg.first} in {n} environments")
            steps = min(cfg.action_horizon, cfg.horizon - done)
            acts = chunk[:, cfg.first:cfg.first + steps]
            obs, robot, scene = envs.step(acts, keep_obs=cfg.obs_horizon)
            for t in range(next(iter(obs.values())).shape[1]):
                history.append({k: v[:, t] for k, v in obs.items()})
            robots.append(robot)
            scenes.append(scene)
            actions.append(acts)
            done += steps
            if bar is not None:
                bar.update(steps)
    finally:
        if bar is not None:
            bar.close()
    return Rollouts(np.concatenate(robots, 1), np.concatenate(scenes, 1), np.concatenate(actions, 1))
