"""The compared methods as closed-loop policy functions ``policy_fn(obs_stack, key) -> [N, Tp, A]``.

Each closes over a diffusion policy and, where it steers, a guidance; all are traceable, so a
whole rollout of N environments compiles to one program (``eval.rollout.closed_loop``).
``obs_stack`` holds the policy's observation keys as ``[N, To, ...]`` (images uint8, ``proprio``
the robot state); guidance looks at the newest frame.

- ``base``: the unguided base policy (the original runs it as ``--scale 0 --ss 1``).
- ``dynaguide``: guided DDIM with the dynamics model and goal sets (scale s, M repeats).
- ``gc``: the goal-conditioned policy, given a goal image drawn at random from the goal set at
  every replan (calvin_env's ``get_goal`` draws one per call in the original's rollout loop).
- ``gpc``: best of N base-policy chunks by mean L2 of the predicted features to the goal frames'
  features (run_sampling_baseline.py); execute it from index 2 (``GPC_START``).
- ``itps``: position guidance toward a target xyz, integrated from the proprio's tcp position.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from dynaguide_jax.baselines.gpc import sample_and_rank
from dynaguide_jax.diffusion.sampler import guided_sample
from dynaguide_jax.guidance.base import Guidance
from dynaguide_jax.guidance.position import PositionGuidance
from dynaguide_jax.policy.diffusion_policy import DiffusionPolicy

METHODS = ("base", "dynaguide", "gc", "gpc", "itps")
GPC_START = 2  # the original's GPC pushes 16 actions into a deque(maxlen=14): chunk[2:16] runs


def _policy_obs(policy: DiffusionPolicy, obs_stack: dict) -> dict:
    missing = [k for k in policy.config.obs_keys if k not in obs_stack]
    if missing:
        raise KeyError(f"the observation stack lacks the policy's keys {missing} (has {sorted(obs_stack)})")
    return {k: obs_stack[k] for k in policy.config.obs_keys}


def guidance_view(obs_stack: dict, camera: str = "rgb_static", proprio: str | None = "proprio") -> dict:
    """The newest frame as DynaGuide's observation: ``{"images": [N, 1, H, W, 3], "proprio": [N, p]}``."""
    out = {"images": obs_stack[camera][:, -1][:, None]}
    if proprio is not None:
        out["proprio"] = obs_stack[proprio][:, -1].astype(jnp.float32)
    return out


def base_fn(policy: DiffusionPolicy, params, schedule, action_shape=(16, 7)) -> Callable:
    def fn(obs_stack, key):
        cond = policy.encode_obs(params, _policy_obs(policy, obs_stack))
        return guided_sample(policy.eps_fn, params, cond, key=key, scale=0.0, schedule=schedule,
                             action_shape=action_shape, repeats=1).actions
    return fn


def guided_fn(policy: DiffusionPolicy, params, schedule, guidance: Guidance, guidance_params, *, scale: float,
              repeats: int = 4, view: Callable = guidance_view, action_shape=(16, 7)) -> Callable:
    """DynaGuide (or any guidance whose observation ``view(obs_stack)`` builds)."""
    def fn(obs_stack, key):
        cond = policy.encode_obs(params, _policy_obs(policy, obs_stack))
        return guided_sample(policy.eps_fn, params, cond, guidance, guidance_params, view(obs_stack), key=key,
                             scale=scale, schedule=schedule, action_shape=action_shape, repeats=repeats).actions
    return fn


def gc_fn(policy: DiffusionPolicy, params, schedule, goal_images, goal_key: str = "rgb_static",
          action_shape=(16, 7), goal_mask=None) -> Callable:
    """``goal_images [K, H, W, 3]`` uint8: one drawn per environment at every replan (among the rows
    ``goal_mask [K]`` marks, when the set is padded)."""
    if not policy.config.goal_rgb_keys:
        raise ValueError("gc needs a goal-conditioned policy (PolicyConfig.goal_rgb_keys)")
    goal_images = jnp.asarray(goal_images)
    if goal_images.ndim != 4 or len(goal_images) == 0:
        raise ValueError(f"goal_images must be a non-empty [K, H, W, 3] array, got {goal_images.shape}")

    def fn(obs_stack, key):
        k_goal, k_sample = jax.random.split(key)
        n = obs_stack[policy.config.obs_keys[0]].shape[0]
        if goal_mask is None:
            pick = jax.random.randint(k_goal, (n,), 0, len(goal_images))
        else:
            pick = jax.random.categorical(k_goal, jnp.where(goal_mask, 0.0, -jnp.inf), shape=(n,))
        goal = {k: goal_images[pick] for k in policy.config.goal_rgb_keys}
        cond = policy.encode_obs(params, _policy_obs(policy, obs_stack), goal)
        return guided_sample(policy.eps_fn, params, cond, key=k_sample, scale=0.0, schedule=schedule,
                             action_shape=action_shape, repeats=1).actions
    return fn


def gpc_fn(policy: DiffusionPolicy, params, schedule, guidance: Guidance, guidance_params, goal_features, *,
           num_samples: int = 5, view: Callable = guidance_view, action_shape=(16, 7), goal_mask=None) -> Callable:
    """``goal_features [K, ...]``: encoder features of the goal frames (not predictions); ``goal_mask
    [K]``: its real rows when padded."""
    def fn(obs_stack, key):
        cond = policy.encode_obs(params, _policy_obs(policy, obs_stack))
        return sample_and_rank(policy.eps_fn, params, cond, guidance, guidance_params, view(obs_stack), key=key,
                               goals=goal_features, goal_mask=goal_mask, num_samples=num_samples, schedule=schedule,
                               action_shape=action_shape).actions
    return fn


def itps_fn(policy: DiffusionPolicy, params, schedule, target_xyz, *, scale: float, repeats: int = 4,
            proprio: str = "proprio", action_shape=(16, 7)) -> Callable:
    """Position guidance toward ``target_xyz [3]`` from the tcp position (robot_obs[:3])."""
    def view(obs_stack):
        return {"start_xyz": obs_stack[proprio][:, -1, :3].astype(jnp.float32)}

    return guided_fn(policy, params, schedule, PositionGuidance(), {"target": jnp.asarray(target_xyz, jnp.float32)},
                     scale=scale, repeats=repeats, view=view, action_shape=action_shape)
