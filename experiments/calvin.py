"""The experiments in CALVIN's simulator (calvin_env + pybullet, optional): converted or JAX-trained
policies and dynamics models, the user's goal files, the original's reset poses; N simulators in
worker processes (``envs.vector_env``), the policy and guidance batched over them once per replan
(``eval.host_loop``). Every file is checked, and calvin_env imported, before any rollout runs.

Inputs (``CalvinSources``): the base policy (a robomimic ``.pth`` or a ``dynaguide train policy``
directory), the GC policy for the ``gc`` method, the dynamics model (the original's ``.pth``, whose
frozen DinoV2 comes along, or a ``dynaguide train dynamics`` / ``convert dynamics`` directory with
``--encoder``), ``goals_<behaviour>.npz`` files (``dynaguide data goals`` on CALVIN's validation
split; ``goals_ood_<behaviour>.npz`` for UnderspecifiedObjectives, the original's OOD_Goal sets) and
the original's ``reset_poses/initial_calvin_robot_states_<name>.json``. Blocks are shuffled by the
simulator at every reset, as the original's resets leave them.
"""
from __future__ import annotations

import dataclasses
import os

import numpy as np

import jax
import jax.numpy as jnp

from dynaguide_jax.demo.config import DemoConfig
from dynaguide_jax.demo.evaluate import ACTION_HORIZON, DemoModels
from dynaguide_jax.envs.reset_states import load_reset_poses, sample_reset_pose, sample_scene_setup
from dynaguide_jax.eval import methods as M
from dynaguide_jax.eval.behaviours import detect_behaviours
from dynaguide_jax.eval.rollout import LoopConfig
from experiments import goals as G
from experiments.policies import Settings, method_policy_fn, sigma_key, target_key
from experiments.runner import (Cell, cell_reset_poses, eval_fields, method_horizon, path_fingerprint,
                                rollout_seed_key, stack_keys)

# robomimic's CALVIN observation names (the original's configs) -> the host env's
OBS_ALIASES = {"third_person": "rgb_static", "eye_in_hand": "rgb_gripper"}
GUIDED = ("dynaguide", "gpc")


@dataclasses.dataclass(frozen=True)
class CalvinSources:
    policy: str | None = None
    gc_policy: str | None = None
    dynamics: str | None = None
    goals_dir: str | None = None
    reset_poses_dir: str | None = None
    encoder: str | None = None
    workers: int = 4
    calvin_root: str | None = None  # the calvin_env checkout (default: next to the installed package)


def _need(path: str | None, flag: str, why: str) -> str:
    if not path:
        raise ValueError(f"--env calvin needs {flag} ({why})")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{flag}: {path} does not exist")
    return path


def load_policy(path: str):
    """``(policy, params, schedule, action_stats)`` from a robomimic checkpoint or a trained policy dir."""
    from dynaguide_jax.policy import DiffusionPolicy
    from dynaguide_jax.policy.convert import load_robomimic_policy
    from dynaguide_jax.policy.train import load_trained_policy

    if os.path.isdir(path):
        policy, params, schedule = load_trained_policy(path)
        return policy, params, schedule, None
    rp = load_robomimic_policy(path)
    return DiffusionPolicy(rp.config), rp.params, rp.schedule, rp.action_stats


def load_dynamics_and_encoder(path: str, encoder: str | None):
    from dynaguide_jax.dynamics.convert import load_dynamics, load_original_dynamics
    from dynaguide_jax.encoders import load_dinov2
    from dynaguide_jax.training.loop import load_trained_dynamics

    if os.path.isdir(path):  # a `dynaguide convert dynamics` folder, or a training run
        from dynaguide_jax import param_io

        cfg, params = (load_dynamics if param_io.is_saved_params(path) else load_trained_dynamics)(path)
        enc = None
    else:
        cfg, params, enc = load_original_dynamics(path)
    if encoder:
        enc = load_dinov2(encoder)
    if enc is None:
        raise ValueError(f"the dynamics model {path} carries no DinoV2 encoder: give its weights with --encoder")
    return cfg, params, enc[0], enc[1]


class CalvinBackend:
    """The runner's backend in CALVIN's simulator (``run_chunk`` rolls out one chunk of one cell)."""

    def __init__(self, experiment, methods, cfg: DemoConfig, sources: CalvinSources, progress: bool = True,
                 log=print):
        from dynaguide_jax.envs.calvin import CalvinConfig, import_calvin_env

        self.experiment, self.methods, self.cfg, self.sources, self.log = experiment, methods, cfg, sources, log
        self.progress = progress
        import_calvin_env()  # a clear install message before anything else
        reduced = [t.name for t in experiment.targets if t.policy_fraction is not None]
        if reduced:
            raise ValueError(f"{experiment.title} needs a base policy per data fraction ({', '.join(reduced)}): on "
                             "CALVIN train them on the reduced datasets and run each with --policy and --targets")
        _need(sources.policy, "--policy", "the base policy")
        if "gc" in methods:
            _need(sources.gc_policy, "--gc-policy", "the goal-conditioned policy of the gc method")
        guided = any(m in GUIDED for m in methods)
        if guided:
            _need(sources.dynamics, "--dynamics", "the dynamics model of DynaGuide and GPC")
        if "itps" in methods:
            missing = [t.name for t in experiment.targets if t.loc_target is None]
            if missing:
                raise ValueError(f"itps on CALVIN steers toward each target's loc_target (the original's experiment "
                                 f"JSON gives it); none for {', '.join(missing)}")
        if any(m != "base" for m in methods):
            goals_dir = _need(sources.goals_dir, "--goals-dir", "goals_<behaviour>.npz files")
            ood = experiment.goal_quality == "underspecified"
            for b in experiment.goal_files():
                path = G.goal_file(goals_dir, b, ood)
                if not os.path.exists(path):
                    raise FileNotFoundError(f"--goals-dir: no goal file for {b!r} ({path})")
        self.poses = {}
        names = [t.reset_poses for t in experiment.targets]
        if "base" in methods and experiment.control_base:
            names.append(experiment.control_reset_poses)
        for name in names:
            if name is None:
                raise ValueError("a target names no reset poses: CALVIN runs start the robot from them")
            if name not in self.poses:
                d = _need(sources.reset_poses_dir, "--reset-poses-dir", "the original's reset_poses/*.json")
                self.poses[name] = load_reset_poses(os.path.join(d, f"initial_calvin_robot_states_{name}.json"))
        if sources.workers < 1:
            raise ValueError(f"--workers must be >= 1, got {sources.workers}")
        policy, params, schedule, stats = load_policy(sources.policy)
        self.action_stats = {"policy": stats, "gc": None}
        gc_policy, gc_params = policy, params
        if "gc" in methods:
            gc_policy, gc_params, _, self.action_stats["gc"] = load_policy(sources.gc_policy)
        dyn = dyn_params = enc = enc_params = None
        if guided:
            dyn, dyn_params, enc, enc_params = load_dynamics_and_encoder(sources.dynamics, sources.encoder)
            grid = cfg.encoder_size // 14
            if cfg.encoder_size % 14 or grid * grid != dyn.patches_per_camera:
                raise ValueError(f"--encoder-size {cfg.encoder_size} gives {grid}x{grid} DinoV2 patches per camera; "
                                 f"the dynamics model reads {dyn.patches_per_camera} (224 for the original's 16x16)")
        if schedule.num_inference_steps != cfg.ddim_steps:
            schedule = dataclasses.replace(schedule, num_inference_steps=cfg.ddim_steps)
        self.models = DemoModels(policy, params, gc_policy, gc_params, schedule, enc, enc_params, dyn, dyn_params)
        gc_size = None  # the goal frames as they are, unless the GC policy reads another size
        if "gc" in methods and gc_policy.config.goal_rgb_keys:
            gc_size = dict(gc_policy.config.rgb_shapes).get(gc_policy.config.goal_rgb_keys[0], (None,))[0]
        self.goals, self.goal_counts = {}, {}
        if any(m != "base" for m in methods):
            per_target = [G.target_goals(t, sources.goals_dir, self.models, cfg.encoder_size, gc_size,
                                         experiment.goal_quality, None, cfg.seed) for t in experiment.targets]
            self.goal_counts = G.goal_counts(experiment, per_target)
            self.goals = G.stack_target_goals(per_target)
        self.env_config = CalvinConfig(shuffle_blocks=True, seed=cfg.seed, root=sources.calvin_root)
        self.fingerprints = {k: path_fingerprint(v) for k, v in dataclasses.asdict(sources).items()
                             if k not in ("workers", "calvin_root")}
        self._compiled = {}

    pad_chunks = False  # a simulated rollout is expensive: only the ones asked for

    def cell_key(self, cell: Cell) -> dict:
        """What a cell's rollouts read: its method's model files (path, size, time), the target's settings
        and goals where the method uses them, the evaluation sizes, the start setup and poses."""
        t = self.experiment.targets[cell.target_index]
        f = self.fingerprints
        files = {"policy": f["gc_policy"]} if cell.method == "gc" else {"policy": f["policy"]}
        if cell.method in GUIDED:
            files.update(dynamics=f["dynamics"], encoder=f["encoder"])
        key = {"method": cell.method, "env": "calvin", "files": files, "eval": eval_fields(self.cfg),
               "seed": self.cfg.seed, "horizon": self.horizon(cell.method), "env_setup": list(cell.env_setup),
               "poses": cell_reset_poses(self.experiment, cell)}
        if cell.method != "base":
            key.update(goals=f["goals_dir"], goal_quality=self.experiment.goal_quality,
                       **target_key(cell.method, t, self.goals, cell.target_index),
                       **sigma_key(cell.method, t, self.models.dynamics))
        return key

    def horizon(self, method: str) -> int:
        return method_horizon(self.experiment, self.cfg.horizon, method)

    def _policy_fn(self, cell: Cell, target):
        """The cell's jitted ``policy_fn(obs_stack, key)``; goals, settings and params are traced arguments
        (one program per method and target, no constants baked in)."""
        from dynaguide_jax.policy.diffusion_policy import unnormalize_actions

        models = self.models
        goals = {k: jnp.asarray(v[cell.target_index]) for k, v in self.goals.items()}
        settings = Settings(jnp.float32(target.scale), jnp.float32(target.sigma),
                            jnp.float32(target.itps_scale or 0.0))
        params = models.gc_params if cell.method == "gc" else models.policy_params
        stats = self.action_stats["gc" if cell.method == "gc" else "policy"]

        @jax.jit
        def run(params, obs_stack, key, goals, settings):
            fn = method_policy_fn(cell.method, models, params, goals, settings, target.repeats, target.gpc_samples,
                                  self.cfg.encoder_size)
            obs = {**obs_stack, **{a: obs_stack[b] for a, b in OBS_ALIASES.items() if b in obs_stack}}
            actions = fn(obs, key)
            return actions if stats is None else unnormalize_actions(stats, actions)

        return lambda obs_stack, key: run(params, obs_stack, key, goals, settings)

    def run_chunk(self, cell: Cell, first: int, count: int) -> dict:
        from dynaguide_jax.envs.calvin import CalvinEnvFactory
        from dynaguide_jax.envs.vector_env import VectorEnv
        from dynaguide_jax.eval.host_loop import host_closed_loop

        t = self.experiment.targets[cell.target_index]
        policy = self.models.gc_policy if cell.method == "gc" else self.models.policy
        loop = LoopConfig(horizon=self.horizon(cell.method), obs_horizon=policy.config.obs_horizon,
                          action_horizon=ACTION_HORIZON, start=M.GPC_START if cell.method == "gpc" else None)
        key = rollout_seed_key(self.cfg.seed, cell.env_setup)
        keys = stack_keys(key, first, count)
        scene = np.zeros((count, 24), np.float32)
        scene[:, :6] = np.asarray(jax.vmap(lambda k: sample_scene_setup(k, dict(cell.env_setup)))(keys))
        poses = jnp.asarray(self.poses[cell_reset_poses(self.experiment, cell)], jnp.float32)
        robot = np.asarray(jax.vmap(lambda k: sample_reset_pose(jax.random.fold_in(k, 2), poses))(keys))
        sig = (cell.method, cell.name)
        if sig not in self._compiled:
            self._compiled[sig] = self._policy_fn(cell, t)
        table_only = bool(dict(cell.env_setup).get("cubes_table_only", False))
        out = []
        for lo in range(0, count, self.sources.workers):
            n = min(self.sources.workers, count - lo)
            # worker i's simulator is seeded by its rollout's index: block layouts never repeat across batches
            factory = CalvinEnvFactory(dataclasses.replace(self.env_config, seed=self.cfg.seed * 100_003 + first + lo,
                                                           cubes_table_only=table_only))
            with VectorEnv(factory, n) as envs:
                r = host_closed_loop(envs, self._compiled[sig], robot[lo:lo + n], scene[lo:lo + n],
                                     jax.random.fold_in(key, 10**6 + first + lo), loop, jit=False,
                                     progress=self.progress)
            out.append(r)
        det = detect_behaviours(np.concatenate([r.scene_obs for r in out]), np.concatenate([r.robot_obs for r in out]))
        return {"index": np.asarray(det.index), "counted": np.asarray(det.counted), "step": np.asarray(det.step)}

    def config(self) -> dict:
        return {**self.cfg.to_dict(), "env": "calvin", "sources": dataclasses.asdict(self.sources),
                "goal_counts": self.goal_counts, "devices": [str(d) for d in jax.devices()]}
