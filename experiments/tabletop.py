"""The experiments on the built-in tabletop world: models from the demo's stages, one compiled
program per method (the per-target settings and goal sets are traced arguments, so every target of
a method shares it), rollouts vmapped over start states, each with its own key.

Models come from ``dynaguide_jax.demo.pipeline.prepare_models`` (play -> RLDS -> features -> base
policy, GC policy, dynamics), in ``models_dir`` (a ``dynaguide demo`` output of the same preset can
be reused). Base policies trained on reduced data (UnderrepresentedBehaviors) are trained once each
into ``models_dir/policy_<variant>/``. ``policy``: a ``dynaguide train policy`` run on built-in-world
play that replaces the demo's base policy (the GC policy, dynamics model and goals stay the demo's).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os

import numpy as np

import jax
import jax.numpy as jnp

from dynaguide_jax.demo.config import STAGE_FIELDS, DemoConfig
from dynaguide_jax.demo.evaluate import ACTION_HORIZON, DemoModels, load_demo_reset_poses, setup_start_states
from dynaguide_jax.demo.pipeline import PreparedModels, load_demo_models, prepare_models, world_config
from dynaguide_jax.demo.train import train_demo_policy
from dynaguide_jax.envs import tabletop
from dynaguide_jax.eval import methods as M
from dynaguide_jax.eval.behaviours import detect_behaviour
from dynaguide_jax.eval.rollout import LoopConfig, closed_loop, tabletop_env
from experiments import goals as G
from experiments.policies import Settings, method_policy_fn, sigma_key, target_key
from experiments.runner import (Cell, cell_reset_poses, eval_fields, method_horizon, path_fingerprint,
                                rollout_seed_key, stack_keys)

VARIANT_FIELDS = STAGE_FIELDS["policy"]  # a reduced-data base policy is rebuilt when one of these changes


def start_states(key: jax.Array, env_setup, first: int, count: int, env: tabletop.TabletopConfig, poses=None):
    """Rollouts ``first .. first + count - 1``' start states (``demo.evaluate.setup_start_states``; the robot
    from ``poses [N, 15]``, or the world's random robot when None)."""
    return setup_start_states(stack_keys(key, first, count), env_setup, env, poses)


def compile_method(method: str, models: DemoModels, env: tabletop.TabletopConfig, horizon: int, repeats: int,
                   gpc_samples: int, encoder_size: int):
    """``f(params, states [n], keys [n], goals (one target's slice), settings) -> (index, counted, step)``, jitted."""
    policy = models.gc_policy if method == "gc" else models.policy
    loop = LoopConfig(horizon=horizon, obs_horizon=policy.config.obs_horizon, action_horizon=ACTION_HORIZON,
                      start=M.GPC_START if method == "gpc" else None)
    env_fns = tabletop_env(env)

    def one(params, state, key, goals, settings):
        fn = method_policy_fn(method, models, params, goals, settings, repeats, gpc_samples, encoder_size)
        out = closed_loop(env_fns, fn, jax.tree.map(lambda x: x[None], state), key, loop)
        det = detect_behaviour(out.scene_obs[0], out.robot_obs[0])
        return det.index, det.counted, det.step

    return jax.jit(jax.vmap(one, in_axes=(None, 0, 0, None, None)))


def _stage_key(prep: PreparedModels, name: str) -> str:
    return prep.stages.key(name)


WORLD_OBS = ("proprio", "scene", "rgb_static", "rgb_gripper")  # what the built-in world observes (rollout.tabletop_env)


def load_world_policy(path: str, env: tabletop.TabletopConfig):
    """``(policy, params)`` of a ``dynaguide train policy`` run whose inputs the built-in world provides
    (its observation keys, camera sizes, 16 x 7 action chunks); anything else is refused by name."""
    from dynaguide_jax.policy.train import load_trained_policy

    if not os.path.isdir(path):
        raise ValueError(f"--policy {path}: on the built-in world the base policy is a `dynaguide train policy` run "
                         "directory trained on built-in-world play (robomimic .pth files run with --env calvin)")
    policy, params, _ = load_trained_policy(path)
    c = policy.config
    sizes = {"rgb_static": (env.static_size,) * 2, "rgb_gripper": (env.gripper_size,) * 2}
    problems = [f"input {k!r} (the world observes {', '.join(WORLD_OBS)})" for k in c.obs_keys if k not in WORLD_OBS]
    problems += [f"{k} at {tuple(hw)} px (the world renders {sizes[k]})" for k, hw in c.rgb_shapes
                 if k in sizes and tuple(hw) != sizes[k]]
    if c.goal_rgb_keys:
        problems.append("goal images (a GC policy; the base policy has none)")
    if (c.prediction_horizon, c.action_dim) != (16, tabletop.ACTION_DIM):
        problems.append(f"{c.prediction_horizon} x {c.action_dim} action chunks (the methods sample 16 x 7)")
    if problems:
        raise ValueError(f"--policy {path} does not fit the built-in world: " + "; ".join(problems))
    return policy, params


class TabletopBackend:
    """Everything the runner needs on the built-in world; ``run_chunk`` is its rollout function."""

    def __init__(self, experiment, cfg: DemoConfig, models_dir: str, out_dir: str, fresh: bool = False,
                 progress: bool = True, log=print, jobs: int = 1, policy: str | None = None):
        self.experiment, self.cfg, self.log, self.policy_path = experiment, cfg, log, policy
        self.env = world_config(cfg)
        if policy is not None and any(t.policy_variant != "full" for t in experiment.targets):
            raise ValueError(f"--policy replaces the full-data base policy, but {experiment.name} trains its own "
                             "reduced-data base policies from the demo's recipe: run it without --policy")
        override = load_world_policy(policy, self.env) if policy is not None else None  # checked before training
        self.prep = prepare_models(dataclasses.replace(cfg, out_dir=models_dir), fresh=fresh, progress=progress,
                                   log=log, jobs=jobs)
        models = load_demo_models(self.prep.stages, self.prep.encoder, self.prep.encoder_params)
        if models.schedule.num_inference_steps != cfg.ddim_steps:
            models = models._replace(schedule=dataclasses.replace(models.schedule, num_inference_steps=cfg.ddim_steps))
        if override is not None:
            models = models._replace(policy=override[0], policy_params=override[1])
            log(f"base policy: {policy} (in place of the demo's)")
        self.models = models
        self.poses = load_demo_reset_poses(self.prep.stages.dir("goals"))  # the original's lists, from the play
        self.pool = os.path.join(out_dir, "goal_pool")
        self.pool_key = self._goal_pool()
        per_target = [G.target_goals(t, self.pool, models, cfg.encoder_size, cfg.gc_goal_size,
                                     experiment.goal_quality, self.env, cfg.seed) for t in experiment.targets]
        self.goal_counts = G.goal_counts(experiment, per_target)
        self.goals = G.stack_target_goals(per_target)
        full = _stage_key(self.prep, "policy") if policy is None else path_fingerprint(policy)
        self.variants, self.variant_keys = {"full": models.policy_params}, {"full": full}
        for t in experiment.targets:  # after the goals: a missing goal file fails before any training
            if t.policy_variant not in self.variants:
                self.variants[t.policy_variant], self.variant_keys[t.policy_variant] = self._variant_params(
                    t, models_dir, progress)
        self._compiled = {}

    def _goal_pool(self) -> dict:
        key = {"rlds": _stage_key(self.prep, "rlds"), "seed": self.cfg.seed, "keep": self.cfg.keep_fraction}
        marker = os.path.join(self.pool, "pool.json")
        try:
            with open(os.path.join(self.pool, "key.json")) as f:
                same = json.load(f) == key and os.path.exists(marker)
        except (FileNotFoundError, json.JSONDecodeError):
            same = False
        if same:
            return key
        os.makedirs(self.pool, exist_ok=True)
        self.log("[goal_pool] every behaviour's goal segments of the validation play ...")
        record = G.export_goal_pool(self.prep.rlds, self.pool, self.cfg.seed, self.cfg.keep_fraction, self.log)
        self.log("  goals: " + ", ".join(f"{b} {n}" for b, n in record["goals"].items()))
        with open(os.path.join(self.pool, "key.json"), "w") as f:
            json.dump(key, f)
        return key

    def _variant_params(self, target, models_dir: str, progress: bool):
        from dynaguide_jax.policy.train import load_trained_policy

        d = os.path.join(models_dir, f"policy_{target.policy_variant}")
        key = {"policy": self.cfg.settings(*VARIANT_FIELDS), "rlds": _stage_key(self.prep, "rlds"),
               "reduce": [target.reduced, target.policy_fraction], "seed": self.cfg.seed}
        marker = os.path.join(d, "variant.json")
        try:
            with open(marker) as f:
                done = json.load(f).get("key") == key
        except (FileNotFoundError, json.JSONDecodeError):
            done = False
        if not done:
            self.log(f"[policy_{target.policy_variant}] base policy with {target.reduced} cut to "
                     f"{target.policy_fraction:.0%} of its segments ...")
            if os.path.exists(marker):  # trained from other settings: do not resume its checkpoints
                import shutil
                shutil.rmtree(d)
            info = train_demo_policy(self.prep.rlds, self.cfg, d, False, progress,
                                     reduce=(target.reduced, target.policy_fraction, self.cfg.seed))
            self.log(f"  kept {info['reduced']['kept']} of {info['reduced']['of']} {target.reduced} segments")
            with open(marker, "w") as f:
                json.dump({"key": key, "info": info}, f)
        _, params, _ = load_trained_policy(d)
        return params, hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]

    def cell_key(self, cell: Cell) -> dict:
        """What a cell's rollouts read (hashed by the runner): its method's models, the goal pool and the
        target's settings where the method uses them, the evaluation sizes and the start setup."""
        t = self.experiment.targets[cell.target_index]
        method = cell.method
        models = {"gc": _stage_key(self.prep, "gc")} if method == "gc" else {"policy": self.variant_keys[
            t.policy_variant]}
        if method in ("dynaguide", "gpc"):
            models.update(dynamics=_stage_key(self.prep, "dynamics"), features=_stage_key(self.prep, "features"))
        key = {"method": method, "models": models, "eval": eval_fields(self.cfg), "seed": self.cfg.seed,
               "horizon": self.horizon(method), "env_setup": list(cell.env_setup), **self._poses_key(cell)}
        if method != "base":  # what of the target the method reads
            key.update(goal_pool=self.pool_key, goal_quality=self.experiment.goal_quality,
                       **target_key(method, t, self.goals, cell.target_index),
                       **sigma_key(method, t, self.models.dynamics))
        return key

    def cell_poses(self, cell: Cell):
        """The robot reset poses ``[N, 15]`` a cell starts from (None: the world's random robot)."""
        name = cell_reset_poses(self.experiment, cell)
        return None if name is None else self.poses.get(name)

    def _poses_key(self, cell: Cell) -> dict:
        if self.cell_poses(cell) is None:
            return {}
        return {"poses": cell_reset_poses(self.experiment, cell), "poses_from": _stage_key(self.prep, "goals")}

    def horizon(self, method: str) -> int:
        return method_horizon(self.experiment, self.cfg.horizon, method)

    def run_chunk(self, cell: Cell, first: int, count: int) -> dict:
        t = self.experiment.targets[cell.target_index]
        repeats, samples = t.repeats, t.gpc_samples
        sig = (cell.method, repeats if cell.method in ("dynaguide", "itps") else 0,
               samples if cell.method == "gpc" else 0)
        if sig not in self._compiled:
            self._compiled[sig] = compile_method(cell.method, self.models, self.env, self.horizon(cell.method),
                                                 repeats, samples, self.cfg.encoder_size)
        key = rollout_seed_key(self.cfg.seed, cell.env_setup)
        states = start_states(key, cell.env_setup, first, count, self.env, self.cell_poses(cell))
        keys = stack_keys(jax.random.fold_in(key, 1), first, count)
        goals = {k: jnp.asarray(v[cell.target_index]) for k, v in self.goals.items()}
        settings = Settings(jnp.float32(t.scale), jnp.float32(t.sigma), jnp.float32(t.itps_scale or 0.0))
        params = self.models.gc_params if cell.method == "gc" else self.variants[t.policy_variant]
        index, counted, step = self._compiled[sig](params, states, keys, goals, settings)
        return {"index": np.asarray(index), "counted": np.asarray(counted), "step": np.asarray(step)}

    def config(self) -> dict:
        return {**self.cfg.to_dict(), "encoder_description": self.prep.encoder_text, "goal_counts": self.goal_counts,
                "policy_variants": {t.name: t.policy_variant for t in self.experiment.targets},
                "policy": os.path.abspath(self.policy_path) if self.policy_path else None,
                "devices": [str(d) for d in jax.devices()]}
