"""Closed-loop evaluation of the demo: every method, every target, one compiled program per method.

Per target the rollouts start from the world's random reset with the target's part fixed as the
original's experiment JSON fixes it (``TARGET_SETUPS``: e.g. the drawer closed for drawer_open),
the other adjustable parts at a random end of their ranges (``sample_scene_setup``), and the robot
at a pose drawn from the target's reset-pose list (``TARGET_RESET_POSES``), picked from the
validation play as the original picks its lists (``data/reset_poses.py``). The goal sets
of all targets are padded to one size with masks (exact: padded goals drop out of the metric, the
GPC mean and the GC draw), stacked, and the closed loop is ``vmap``-ed over targets, so each
method compiles once. The first behaviour detected (the original's rules) is the outcome.
"""
from __future__ import annotations

import os
from typing import NamedTuple

import numpy as np

import jax
import jax.numpy as jnp

from dynaguide_jax.data.reset_poses import POSE_SETS, reset_pose_file
from dynaguide_jax.demo.config import TARGET_RESET_POSES, TARGET_SETUPS, DemoConfig
from dynaguide_jax.demo.train import resize_frames
from dynaguide_jax.diffusion import DDIMSchedule
from dynaguide_jax.dynamics import DynamicsConfig
from dynaguide_jax.encoders import DinoV2Config
from dynaguide_jax.envs import tabletop
from dynaguide_jax.envs.expert import loc_target
from dynaguide_jax.envs.reset_states import load_reset_poses, sample_reset_pose, sample_scene_setup
from dynaguide_jax.eval import methods
from dynaguide_jax.eval.behaviours import detect_behaviours
from dynaguide_jax.eval.rollout import LoopConfig, closed_loop, tabletop_env
from dynaguide_jax.guidance import DynaGuide, GoalSet, encode_cameras, goals_from_trajectory_ends, paper_scaled_sigma
from dynaguide_jax.policy import DiffusionPolicy

ACTION_HORIZON = 14  # executed per chunk, as the original's guided rollouts


class DemoModels(NamedTuple):
    policy: DiffusionPolicy
    policy_params: dict
    gc_policy: DiffusionPolicy
    gc_params: dict
    schedule: DDIMSchedule
    encoder: DinoV2Config
    encoder_params: dict
    dynamics: DynamicsConfig
    dynamics_params: dict


class TargetGoals(NamedTuple):
    """Goal sets of every target, padded to ``K`` rows: leading axis = target."""
    mask: np.ndarray  # [T, K] bool
    dynamics_goals: np.ndarray  # [T, K, P*D] the dynamics model's prediction at the goal trajectories' ends
    features: np.ndarray  # [T, K, P, D] encoder patches of the goal frames (GPC)
    images: np.ndarray  # [T, K, H, W, 3] the goal frames
    gc_images: np.ndarray  # [T, K, g, g, 3] the goal frames at the GC policy's goal size
    xyz: np.ndarray  # [T, 3] the ITPS target: the part's location (``itps_targets``)
    counts: dict  # {target: K_t}


def _read_goal_sets(goal_dir: str, targets) -> list[dict]:
    sets = []
    for t in targets:
        path = os.path.join(goal_dir, f"goals_{t}.npz")
        if not os.path.exists(path):
            raise FileNotFoundError(f"no goal set for target {t!r} ({path}): the validation play has no {t} segment; "
                                    "generate more play (--play-steps / --play-streams)")
        with np.load(path) as g:
            sets.append({k: g[k] for k in ("images", "proprio", "actions")})
    return sets


def itps_targets(targets) -> np.ndarray:
    """``[T, 3]`` each target's position-guidance target: its part's location with the part where the
    target's reset puts it (``envs.expert.loc_target``, the original's ``loc_target``)."""
    return np.stack([loc_target(t) for t in targets])


def _summary(targets, sets: list[dict]) -> tuple[dict, np.ndarray]:
    return {t: int(len(s["images"])) for t, s in zip(targets, sets)}, itps_targets(targets)


def goal_summary(goal_dir: str, targets) -> tuple[dict, np.ndarray]:
    """``({target: goal count}, ITPS targets [T, 3])`` without encoding the goals."""
    return _summary(targets, _read_goal_sets(goal_dir, targets))


def load_goals(goal_dir: str, targets, models: DemoModels, cfg: DemoConfig) -> TargetGoals:
    sets = _read_goal_sets(goal_dir, targets)
    size = max(len(s["images"]) for s in sets)
    out = {k: [] for k in ("mask", "dynamics_goals", "features", "images")}
    for s in sets:
        k = len(s["images"])
        patches = encode_cameras(models.encoder, models.encoder_params, jnp.asarray(s["images"])[:, None],
                                 cfg.encoder_size)
        z = goals_from_trajectory_ends(models.dynamics, models.dynamics_params, patches,
                                       jnp.asarray(s["proprio"], jnp.float32), jnp.asarray(s["actions"]))
        pad = lambda x: np.concatenate([np.asarray(x), np.repeat(np.asarray(x)[:1], size - k, 0)])  # noqa: E731
        out["mask"].append(np.arange(size) < k)
        out["dynamics_goals"].append(pad(z))
        out["features"].append(pad(patches))
        out["images"].append(pad(s["images"]))
    images = np.stack(out.pop("images"))
    counts, xyz = _summary(targets, sets)
    return TargetGoals(**{k: np.stack(v) for k, v in out.items()}, images=images,
                       gc_images=resize_frames(images, cfg.gc_goal_size), xyz=xyz, counts=counts)


def setup_start_states(keys: jax.Array, env_setup, env: tabletop.TabletopConfig, poses=None):
    """One reset per key ``[n]``: a random world with ``env_setup``'s parts fixed and the other adjustable
    parts at a random end (the original's ``generate_reset_state``); the robot at a pose drawn from
    ``poses [N, 15]`` (the original's ``random.choice(initial_positions)``), or the world's random robot
    when ``poses`` is None."""
    setup = dict(env_setup)
    poses = None if poses is None else jnp.asarray(poses, jnp.float32)

    def one(k):
        k_world, k_parts = jax.random.split(k)
        s = tabletop.reset(k_world, env)
        robot = tabletop.robot_obs(s) if poses is None else sample_reset_pose(jax.random.fold_in(k, 1), poses)
        scene = tabletop.scene_obs(s).at[:6].set(sample_scene_setup(k_parts, setup))
        return tabletop.reset(k_world, env, robot_obs=robot, scene_obs=scene)

    return jax.vmap(one)(keys)


def start_states(key, target: str, n: int, env: tabletop.TabletopConfig, poses=None):
    """``n`` resets with ``target``'s part fixed (``TARGET_SETUPS``), the other parts at random ends, the
    robot from ``poses`` (``setup_start_states``)."""
    return setup_start_states(jax.random.split(key, n), TARGET_SETUPS[target], env, poses)


class EvalStarts(NamedTuple):
    """What every method starts from: the same resets and keys, so methods differ only in how they act."""
    states: tabletop.TabletopState  # leading axes [T, N]
    keys: jax.Array  # [T] one rollout key per target


def eval_starts(seed: int, targets, n: int, env: tabletop.TabletopConfig, poses: dict | None = None) -> EvalStarts:
    """``n`` start states per target (``start_states``) and the rollout keys, stacked over targets. ``poses``:
    ``{list name: [N, 15]}``; each target's robot starts from its list (``TARGET_RESET_POSES``) where given."""
    base_key, poses = jax.random.key(seed + 12345), poses or {}
    states = [start_states(jax.random.fold_in(base_key, i), t, n, env, poses.get(TARGET_RESET_POSES[t]))
              for i, t in enumerate(targets)]
    return EvalStarts(states=jax.tree.map(lambda *x: jnp.stack(x), *states),
                      keys=jax.random.split(jax.random.fold_in(base_key, 10**6), len(targets)))


def load_demo_reset_poses(goal_dir: str) -> dict:
    """``{list name: [N, 15]}`` of the reset-pose lists the goals stage wrote (lists it found no pose for
    are left out)."""
    out = {}
    for name in POSE_SETS:
        path = reset_pose_file(goal_dir, name)
        if os.path.exists(path):
            out[name] = load_reset_poses(path)
    return out


def _policy_fn(method: str, models: DemoModels, cfg: DemoConfig, goals: dict):
    """``goals``: one target's slice of ``TargetGoals`` (traced)."""
    m, shape = models, (16, 7)
    guide = DynaGuide(dynamics=m.dynamics, encoder=m.encoder, image_size=cfg.encoder_size)
    gparams = {"dynamics": m.dynamics_params, "encoder": m.encoder_params,
               "sigma": paper_scaled_sigma(cfg.sigma, m.dynamics),
               "goals": GoalSet(positive=goals["dynamics_goals"], positive_mask=goals["mask"])}
    if method == "base":
        return methods.base_fn(m.policy, m.policy_params, m.schedule, shape)
    if method == "dynaguide":
        return methods.guided_fn(m.policy, m.policy_params, m.schedule, guide, gparams, scale=cfg.scale,
                                 repeats=cfg.repeats, action_shape=shape)
    if method == "gc":
        return methods.gc_fn(m.gc_policy, m.gc_params, m.schedule, goals["gc_images"], action_shape=shape,
                             goal_mask=goals["mask"])
    if method == "gpc":
        return methods.gpc_fn(m.policy, m.policy_params, m.schedule, guide, gparams, goals["features"],
                              num_samples=cfg.gpc_samples, action_shape=shape, goal_mask=goals["mask"])
    if method == "itps":
        return methods.itps_fn(m.policy, m.policy_params, m.schedule, goals["xyz"], scale=cfg.itps_scale,
                               repeats=cfg.repeats, action_shape=shape)
    raise ValueError(f"unknown method {method!r}; choose from {methods.METHODS}")


class MethodRollouts(NamedTuple):
    detected: np.ndarray  # [T, N] behaviour index (eval.behaviours.BEHAVIOURS)
    robot_obs: np.ndarray  # [T, N, horizon + 1, 15]
    scene_obs: np.ndarray  # [T, N, horizon + 1, 24]


def run_method(method: str, models: DemoModels, goals: TargetGoals, starts: EvalStarts, cfg: DemoConfig,
               env: tabletop.TabletopConfig) -> MethodRollouts:
    """The rollouts from ``starts`` (``eval_starts``) of every target, in one jitted, vmapped program."""
    policy = models.gc_policy if method == "gc" else models.policy
    loop = LoopConfig(horizon=cfg.horizon, obs_horizon=policy.config.obs_horizon, action_horizon=ACTION_HORIZON,
                      start=methods.GPC_START if method == "gpc" else None)
    env_fns = tabletop_env(env)

    def one_target(states, key, target_goals):
        out = closed_loop(env_fns, _policy_fn(method, models, cfg, target_goals), states, key, loop)
        return detect_behaviours(out.scene_obs, out.robot_obs).index, out.robot_obs, out.scene_obs

    stacked = {"mask": goals.mask, "dynamics_goals": goals.dynamics_goals, "features": goals.features,
               "gc_images": goals.gc_images, "xyz": goals.xyz}
    detected, robot, scene = jax.jit(jax.vmap(one_target))(starts.states, starts.keys,
                                                            jax.tree.map(jnp.asarray, stacked))
    return MethodRollouts(*jax.device_get((detected, robot, scene)))


def render_rollout(robot_obs, scene_obs, env: tabletop.TabletopConfig, every: int = 2) -> np.ndarray:
    """Static-camera frames ``[T', H, W, 3]`` of one recorded rollout (states rebuilt from the obs)."""
    idx = np.arange(0, len(robot_obs), every)

    @jax.jit
    def frames(robot, scene):
        def one(r, s):
            state = tabletop.reset(jax.random.key(0), env, robot_obs=r, scene_obs=s)
            return tabletop.observe(state, env)["rgb_static"]
        return jax.vmap(one)(robot, scene)

    return np.asarray(frames(jnp.asarray(robot_obs[idx]), jnp.asarray(scene_obs[idx])))
