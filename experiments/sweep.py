"""Closed-loop guidance sweeps: scale x M x σ grids on the built-in world, the whole grid one program.

Every grid point rolls out the same start states with the same keys (paired), so the differences
are the settings'. M is a traced argument too (the sampler's repeat loop runs as a while loop under
``vmap``, each point stopping at its own M), so the grid compiles once. Success is the target's
(an ArticulatedParts or MovableObjects target, its goal set and reset setup) per grid point, with
95 % Wilson intervals; ``sweep.png`` plots success against the scale, one line per (M, σ).
"""
from __future__ import annotations

import itertools
import json
import os
import time

import numpy as np

import jax
import jax.numpy as jnp

from dynaguide_jax.demo.config import DemoConfig
from dynaguide_jax.demo.evaluate import ACTION_HORIZON
from dynaguide_jax.diffusion.sampler import sample_chunk
from dynaguide_jax.eval.behaviours import BEHAVIOURS, detect_behaviour
from dynaguide_jax.eval.methods import guidance_view
from dynaguide_jax.eval.rollout import LoopConfig, closed_loop, tabletop_env
from dynaguide_jax.eval.tables import wilson_interval
from dynaguide_jax.guidance import DynaGuide, GoalSet, paper_scaled_sigma
from experiments.runner import Cell, rollout_seed_key, stack_keys
from experiments.tabletop import TabletopBackend, start_states


def check_grid(name: str, values, integer: bool = False) -> tuple:
    values = tuple(values)
    if not values:
        raise ValueError(f"{name}: give at least one value")
    for v in values:
        bad = (not isinstance(v, (int, np.integer)) or v < 1) if integer else (not np.isfinite(v) or v < 0)
        if bad:
            raise ValueError(f"{name} must be {'integers >= 1' if integer else 'finite numbers >= 0'}, got {v!r}")
    if name == "sigmas" and any(v <= 0 for v in values):
        raise ValueError(f"sigmas must be > 0, got {values}")
    return values


def closed_loop_sweep(backend: TabletopBackend, target_name: str, scales, repeats, sigmas, cfg: DemoConfig,
                      progress_log=print, chunk: int = 8) -> dict:
    """Success of DynaGuide on ``target_name`` for every (scale, M, σ), ``cfg.rollouts`` rollouts each
    (``chunk`` rollouts of every grid point per call of the one compiled program)."""
    scales, repeats = check_grid("scales", scales), check_grid("repeats", repeats, integer=True)
    sigmas = check_grid("sigmas", sigmas)
    exp = backend.experiment
    ti = [t.name for t in exp.targets].index(target_name)
    target, models, env = exp.targets[ti], backend.models, backend.env
    grid = list(itertools.product(scales, repeats, sigmas))
    goals = {k: jnp.asarray(v[ti]) for k, v in backend.goals.items()}
    guide = DynaGuide(dynamics=models.dynamics, encoder=models.encoder, image_size=cfg.encoder_size)
    policy, params = models.policy, backend.variants[target.policy_variant]
    loop = LoopConfig(horizon=cfg.horizon, obs_horizon=policy.config.obs_horizon, action_horizon=ACTION_HORIZON)
    env_fns = tabletop_env(env)
    def one(state, key, scale, m, sigma, goals):  # goals traced: the masks' checks stay out of the loop
        goal_set = GoalSet(positive=goals.get("pos_dyn"), positive_mask=goals.get("pos_mask"),
                           negative=goals.get("neg_dyn"), negative_mask=goals.get("neg_mask"))
        gparams = {"dynamics": models.dynamics_params, "encoder": models.encoder_params,
                   "sigma": paper_scaled_sigma(sigma, models.dynamics),
                   "goals": goal_set}

        def policy_fn(obs_stack, k):
            cond = policy.encode_obs(params, {n: obs_stack[n] for n in policy.config.obs_keys})
            return sample_chunk(policy.eps_fn, params, cond, guide, gparams, guidance_view(obs_stack), k, scale,
                                schedule=models.schedule, action_shape=(16, 7), repeats=m).actions

        out = closed_loop(env_fns, policy_fn, jax.tree.map(lambda x: x[None], state), key, loop)
        return detect_behaviour(out.scene_obs[0], out.robot_obs[0]).index

    over_rollouts = jax.vmap(one, in_axes=(0, 0, None, None, None, None))
    program = jax.jit(jax.vmap(over_rollouts, in_axes=(None, None, 0, 0, 0, None)))
    key = rollout_seed_key(cfg.seed, target.env_setup)
    poses = backend.cell_poses(Cell("dynaguide", target.name, ti, target.env_setup))  # the experiment's starts
    chunk = min(chunk, cfg.rollouts)
    t0 = time.perf_counter()
    progress_log(f"[sweep] {len(grid)} grid points x {cfg.rollouts} rollouts of {cfg.horizon} steps, one program "
                 f"(rollouts {chunk} at a time) ...")
    settings = (jnp.asarray([g[0] for g in grid], jnp.float32), jnp.asarray([g[1] for g in grid], jnp.int32),
                jnp.asarray([g[2] for g in grid], jnp.float32))
    parts = []
    for first in range(0, cfg.rollouts, chunk):  # bounded memory; the same compiled shape every time
        states = start_states(key, target.env_setup, first, chunk, env, poses)
        keys = stack_keys(jax.random.fold_in(key, 1), first, chunk)
        parts.append(np.asarray(program(states, keys, *settings, goals)))
    index = np.concatenate(parts, axis=1)[:, :cfg.rollouts]
    wanted = [BEHAVIOURS.index(b) for b in target.success]
    rows = []
    for (s, m, sg), idx in zip(grid, index):
        hits = int(np.isin(idx, wanted).sum())
        counts = np.bincount(idx, minlength=len(BEHAVIOURS))
        rows.append({"scale": float(s), "repeats": int(m), "sigma": float(sg),
                     "sigma_applied": float(paper_scaled_sigma(float(sg), models.dynamics)), "success": hits / len(idx),
                     "n": int(len(idx)), "ci95": list(wilson_interval(hits, int(len(idx)))),
                     "distribution": {b: float(c / len(idx)) for b, c in zip(BEHAVIOURS, counts)}})
    progress_log(f"  {time.perf_counter() - t0:.0f} s")
    return {"target": target.name, "success_behaviours": list(target.success), "rows": rows,
            "config": {**backend.config(), "experiment": exp.name}}


def format_sweep_table(result: dict) -> str:
    lines = ["| scale | M | σ (applied) | success [95% CI] (n) |", "| --- | --- | --- | --- |"]
    for r in result["rows"]:
        lo, hi = r["ci95"]
        applied = r.get("sigma_applied", r["sigma"])
        lines.append(f"| {r['scale']:g} | {r['repeats']} | {r['sigma']:g} ({applied:g}) | {r['success']:.0%} "
                     f"[{lo:.0%}, {hi:.0%}] ({r['n']}) |")
    return "\n".join(lines)


def sweep_plot(result: dict, path: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4))
    lines = sorted({(r["repeats"], r["sigma"]) for r in result["rows"]})
    for m, sg in lines:
        rows = sorted((r for r in result["rows"] if (r["repeats"], r["sigma"]) == (m, sg)), key=lambda r: r["scale"])
        x = [r["scale"] for r in rows]
        ax.plot(x, [r["success"] for r in rows], "o-", label=f"M={m}, σ={sg:g}")
        ax.fill_between(x, [r["ci95"][0] for r in rows], [r["ci95"][1] for r in rows], alpha=0.12)
    ax.set(xlabel="guidance scale s", ylabel=f"success ({result['target']})", ylim=(0, 1),
           title="DynaGuide closed-loop sweep")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_sweep(result: dict, out_dir: str) -> list[str]:
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "sweep.json"), "w") as f:
        json.dump(result, f, indent=2)
    with open(os.path.join(out_dir, "sweep.md"), "w") as f:
        f.write(f"# closed-loop sweep: {result['target']}\n\n{format_sweep_table(result)}\n")
    return [os.path.join(out_dir, "sweep.json"), os.path.join(out_dir, "sweep.md"),
            sweep_plot(result, os.path.join(out_dir, "sweep.png"))]

