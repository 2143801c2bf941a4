"""Closed-loop rollouts of a chunked policy in a JAX environment: one compiled program for N envs.

The loop replays the original's execution (robomimic/algo/diffusion_policy.py, guided path): at
every replan the policy sees the last ``To`` observations (the first one repeated at the start, as
robomimic's frame stacking does), samples a chunk, and the environments execute ``Ta`` actions of
it starting at index ``start`` (``To - 1``, or 2 for the original's GPC, see ``ActionChunker``).
An outer ``lax.scan`` runs the replans, an inner one the control steps, so the policy (the
expensive part) is called once per replan for all environments at once, never under a ``cond``.
Images are rendered only where the policy looks at them; the low-dimensional state of every step
is kept for behaviour detection.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from dynaguide_jax._checks import check_int
from dynaguide_jax.envs import tabletop


class EnvFns(NamedTuple):
    """One environment as pure functions (the runner vmaps them): ``step(state, action[A]) -> state``,
    ``observe(state) -> {name: array}`` (what the policy sees) and ``low_dim(state) -> (robot_obs,
    scene_obs)`` (what is recorded every step)."""

    step: Callable
    observe: Callable
    low_dim: Callable


@dataclasses.dataclass(frozen=True)
class LoopConfig:
    horizon: int = 400  # control steps (the original's CALVIN rollouts)
    obs_horizon: int = 2  # To
    action_horizon: int = 14  # Ta executed per chunk (the original's guided path)
    start: int | None = None  # first executed index of a chunk; default To - 1

    def __post_init__(self):
        for name in ("horizon", "obs_horizon", "action_horizon"):
            check_int(f"LoopConfig.{name}", getattr(self, name), minimum=None)
        if self.start is not None:
            check_int("LoopConfig.start", self.start, minimum=None)
        if self.horizon < 1 or self.obs_horizon < 1 or self.action_horizon < 1:
            raise ValueError(f"horizon, obs_horizon and action_horizon must be >= 1, got {self}")
        if self.start is not None and self.start < 0:
            raise ValueError(f"start must be >= 0, got {self.start}")

    @property
    def first(self) -> int:
        return self.obs_horizon - 1 if self.start is None else self.start

    @property
    def replans(self) -> int:
        return math.ceil(self.horizon / self.action_horizon)


class Rollouts(NamedTuple):
    robot_obs: jax.Array  # [N, horizon + 1, 15] from the initial state on
    scene_obs: jax.Array  # [N, horizon + 1, 24]
    actions: jax.Array  # [N, horizon, A] executed


def tabletop_env(config, proprio_key: str = "proprio", scene_key: str = "scene") -> EnvFns:
    """The built-in world as ``EnvFns``; the policy sees ``rgb_static``, ``rgb_gripper``, the robot
    state under ``proprio_key`` (robomimic's name for CALVIN's robot_obs in the original) and the
    scene state under ``scene_key`` (for state-based policies). What a policy does not read is not
    computed: the rollout is one jitted program and XLA drops unused outputs (e.g. the renders)."""
    def observe(state):
        obs = tabletop.observe(state, config)
        return {"rgb_static": obs["rgb_static"], "rgb_gripper": obs["rgb_gripper"], proprio_key: obs["robot_obs"],
                scene_key: obs["scene_obs"]}

    return EnvFns(step=lambda s, a: tabletop.step(s, a, config), observe=observe,
                  low_dim=lambda s: (tabletop.robot_obs(s), tabletop.scene_obs(s)))


def stack_frames(frames: list[dict]) -> dict:
    """``To`` observation dicts of ``[N, ...]`` arrays -> ``{k: [N, To, ...]}``."""
    return {k: jnp.stack([f[k] for f in frames], axis=1) for k in frames[0]}


def closed_loop(env: EnvFns, policy_fn: Callable, states, key: jax.Array, config: LoopConfig) -> Rollouts:
    """Run ``config.horizon`` control steps of N environments (``states``: a pytree with leading N).

    ``policy_fn(obs_stack {k: [N, To, ...]}, key) -> actions [N, Tp, A]`` samples one chunk per
    environment (e.g. ``guided_sample`` behind a closure); it must be traceable: jit the caller
    (``jax.jit(lambda s, k: closed_loop(env, policy_fn, s, k, cfg))``). The last replan may run past
    the horizon (``ceil(horizon / Ta)`` chunks); the records stop at it.
    """
    cfg = config
    obs_v, step_v, low_v = jax.vmap(env.observe), jax.vmap(env.step), jax.vmap(env.low_dim)

    def replan(carry, k):
        history = carry  # the last To states, oldest first
        chunk = policy_fn(stack_frames([obs_v(s) for s in history]), k)
        if chunk.ndim != 3 or chunk.shape[1] < cfg.first + cfg.action_horizon:
            raise ValueError(f"policy chunks {chunk.shape} cannot execute {cfg.action_horizon} actions from "
                             f"index {cfg.first}")
        acts = jnp.swapaxes(chunk[:, cfg.first:cfg.first + cfg.action_horizon], 0, 1)  # [Ta, N, A]

        def control(hist, a):
            nxt = step_v(hist[-1], a)
            robot, scene = low_v(nxt)
            return (*hist[1:], nxt), (robot, scene, a)

        history, (robot, scene, a) = jax.lax.scan(control, tuple(history), acts)
        return history, (robot, scene, a)

    history = tuple(states for _ in range(cfg.obs_horizon))
    _, (robot, scene, acts) = jax.lax.scan(replan, history, jax.random.split(key, cfg.replans))
    robot0, scene0 = low_v(states)

    def flat(x):  # [R, Ta, N, ...] -> [N, R * Ta, ...], cut at the horizon
        x = jnp.moveaxis(x.reshape(-1, *x.shape[2:]), 0, 1)
        return x[:, : cfg.horizon]

    robot, scene = flat(robot), flat(scene)
    return Rollouts(jnp.concatenate([robot0[:, None], robot], 1), jnp.concatenate([scene0[:, None], scene], 1),
                    flat(acts))


def shard_envs(states):
    """Spread the environments' leading axis over all devices when it divides evenly (a no-op on one
    device): the jitted rollout then runs data-parallel across them."""
    devices = jax.devices()
    n = jax.tree.leaves(states)[0].shape[0]
    if len(devices) == 1 or n % len(devices):
        return states
    sharding = NamedSharding(Mesh(devices, ("envs",)), PartitionSpec("envs"))
    return jax.device_put(states, sharding)
