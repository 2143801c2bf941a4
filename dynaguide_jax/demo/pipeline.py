"""``dynaguide demo``: the paper's ArticulatedParts experiment on the built-in world, end to end.

play (raw CALVIN files) -> RLDS -> DinoV2 feature cache -> goal sets -> base policy, GC policy,
dynamics model -> closed-loop rollouts of every method for the 8 articulated targets -> tables, a
bar plot and rollout GIFs in ``OUT/`` (``results.json``, ``table.md``, ``table.csv``,
``success.png``, ``gifs/``). Each stage caches its artefacts in ``OUT/<stage>/`` (``stages.py``).
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import NamedTuple

import numpy as np

import jax

from dynaguide_jax.demo.config import STAGE_DEPENDS, TARGET_SETUPS, DemoConfig
from dynaguide_jax.demo.evaluate import (DemoModels, EvalStarts, TargetGoals, eval_starts, goal_summary,
                                         load_demo_reset_poses, load_goals, render_rollout, run_method)
from dynaguide_jax.demo.parallel import Task, run_parallel, usable_jobs
from dynaguide_jax.demo.stages import RLDS_PATH_FILE, Stages, rlds_path
from dynaguide_jax.demo.train import train_demo_dynamics, train_demo_policy
from dynaguide_jax.dynamics import DynamicsConfig
from dynaguide_jax.encoders import DinoV2Config, init_dinov2, load_dinov2
from dynaguide_jax.envs import TabletopConfig, tabletop_for_image_size, write_world_play
from dynaguide_jax.eval.behaviours import BEHAVIOURS, behaviour_labels
from dynaguide_jax.eval.tables import bar_plot, format_markdown, save_gif, summarize, write_results
from dynaguide_jax.guidance import paper_scaled_sigma
from dynaguide_jax.training.loop import read_run_config

EXPERIMENT = "ArticulatedParts"
TARGETS = tuple(TARGET_SETUPS)


def world_config(cfg: DemoConfig) -> TabletopConfig:
    return tabletop_for_image_size(cfg.image_size)


def demo_encoder(cfg: DemoConfig) -> tuple[DinoV2Config, dict, str]:
    """``(config, params, description)``: real weights from ``cfg.encoder``, else a random ViT-S/14."""
    if cfg.encoder:
        enc, params = load_dinov2(cfg.encoder)
        return enc, params, f"DinoV2 weights from {cfg.encoder}"
    enc = DinoV2Config.preset("vits14").replace(pos_grid=cfg.encoder_size // 14)
    return (enc, init_dinov2(enc, jax.random.key(cfg.seed + 7), cfg.encoder_size),
            "a RANDOM-initialised ViT-S/14-shaped DinoV2 (no pretrained weights offline; --encoder PATH for real ones)")


def _play(cfg: DemoConfig, progress: bool):
    def run(d):
        return write_world_play(os.path.join(d, "raw"), cfg.seed, cfg.play_streams, cfg.play_steps,
                                cfg.validation_streams, cfg.image_size, overwrite=True, progress=progress,
                                block_weight=cfg.block_play_weight, perturb_rate=cfg.play_perturb)
    return run


class PreparedModels(NamedTuple):
    """What the training stages leave behind: the stage book-keeping, the frozen encoder and the RLDS path."""
    stages: Stages
    encoder: DinoV2Config
    encoder_params: dict
    encoder_text: str
    rlds: str


# the stages between the RLDS dataset and the evaluation: independent but for features -> dynamics
MODEL_STAGES = {"features": "DinoV2 patch features of the training split's static camera",
                "goals": "goal sets and robot reset poses from the validation split's segments",
                "policy": "base diffusion policy", "gc": "goal-conditioned policy (GC baseline)",
                "dynamics": "latent dynamics model"}


def _model_stage(name: str, cfg: DemoConfig, st: Stages, rlds: str, progress: bool, log, encoder=None):
    """``fn(stage_dir)`` of one of ``MODEL_STAGES``; ``encoder``: the ``(config, params)`` the caller
    already holds (a worker builds its own)."""
    if name == "features":
        def cache(d):
            from dynaguide_jax.data.features import build_feature_cache
            from dynaguide_jax.data.rlds import FrameStream

            enc, enc_params = encoder or demo_encoder(cfg)[:2]
            build_feature_cache(d, FrameStream(rlds, "train", "observation/rgb_static"), enc, enc_params,
                                cfg.encoder_size, progress=progress)
        return cache
    if name == "goals":
        return lambda d: _goals(cfg, rlds, d, log)
    if name in ("policy", "gc"):
        return lambda d: train_demo_policy(rlds, cfg, d, name == "gc", progress)

    def dynamics(d):
        from dynaguide_jax.data import load_feature_cache

        return train_demo_dynamics(rlds, load_feature_cache(st.dir("features")), cfg, d, progress)
    return dynamics


def _stage_in_worker(cfg: DemoConfig, name: str, rlds: str, progress: bool, *, log) -> float:
    """One of ``MODEL_STAGES`` in a worker process (``parallel.run_parallel``); returns its seconds."""
    st = Stages(cfg, cfg.out_dir, log=log)
    st.run(name, MODEL_STAGES[name], _model_stage(name, cfg, st, rlds, progress, log))
    return st.seconds[name]


def stage_costs(cfg: DemoConfig) -> dict[str, float]:
    """Estimated seconds of ``MODEL_STAGES`` on one CPU core (the small preset's, measured on this
    project's 2-core machine, scaled by frames and steps): they order the parallel stages."""
    frames = (cfg.play_streams - cfg.validation_streams) * cfg.play_steps
    batch = cfg.policy_batch / 64
    return {"features": 167 * frames / 15000 * (cfg.encoder_size / 56) ** 2, "goals": 2.0,
            "policy": 30 + 0.04 * batch * cfg.policy_steps,
            "gc": 30 + 0.18 * batch * cfg.gc_steps * (cfg.gc_goal_size / 64) ** 2,
            "dynamics": 30 + 0.19 * cfg.dynamics_batch / 64 * cfg.dynamics_steps}


def prepare_models(cfg: DemoConfig, fresh: bool = False, progress: bool = True, log=print,
                   jobs: int = 1) -> PreparedModels:
    """Run (or resume, or reuse) every stage before the evaluation into ``cfg.out_dir``: play, RLDS,
    features, goal sets, base policy, GC policy, dynamics model. The experiments share these.
    ``jobs > 1``: the stages after the RLDS dataset run side by side in that many worker processes (at
    most one per core)."""
    st, jobs = Stages(cfg, cfg.out_dir, fresh=fresh, log=log), usable_jobs(jobs)
    enc, enc_params, enc_text = demo_encoder(cfg)
    log(f"encoder: {enc_text}")
    raw = os.path.join(st.dir("play"), "raw")
    st.run("play", f"play data: {cfg.play_streams} streams x {cfg.play_steps} steps -> raw CALVIN files",
           _play(cfg, progress))

    def build(d):
        from data_pipelines.calvin.builder import build_calvin

        path = build_calvin(raw, d, progress=progress)
        with open(os.path.join(d, RLDS_PATH_FILE), "w") as f:
            f.write(os.path.relpath(path, d))
    st.run("rlds", "RLDS dataset (TFDS CALVIN builder, behaviour segmentation)", build)
    rlds = rlds_path(st.dir("rlds"))
    todo = [n for n in MODEL_STAGES if not st.done(n)]
    if jobs > 1 and len(todo) > 1:
        costs = stage_costs(cfg)
        tasks = {n: Task(_stage_in_worker, (cfg, n, rlds, progress), tuple(d for d in STAGE_DEPENDS[n] if d in todo),
                         costs[n]) for n in todo}
        log(f"stages {', '.join(todo)} in {min(jobs, len(todo))} worker processes")

        st.seconds.update(run_parallel(tasks, jobs, log=log))
    for name in (n for n in MODEL_STAGES if n not in st.seconds):
        st.run(name, MODEL_STAGES[name], _model_stage(name, cfg, st, rlds, progress, log, (enc, enc_params)))
    return PreparedModels(st, enc, enc_params, enc_text, rlds)


def _goals(cfg: DemoConfig, rlds: str, d: str, log) -> None:
    from dynaguide_jax.data.rlds import export_goal_sets_with_fallback, export_reset_poses_with_fallback

    written, source = export_goal_sets_with_fallback(rlds, d, TARGETS, image_field="observation/rgb_static",
                                                     seed=cfg.seed, keep_fraction=cfg.keep_fraction,
                                                     max_per_behaviour=cfg.max_goals)
    elsewhere = [t for t in TARGETS if source.get(t) != "validation"]
    if elsewhere:  # a short validation play may lack a behaviour: its goals come from the training split
        log(f"  WARNING: the validation play has no segment of {', '.join(elsewhere)}: goals from the training "
            "split instead (more play, --play-steps, avoids this)")
    log("  goal sets: " + _counts_by_source(written, source))
    poses, source = export_reset_poses_with_fallback(rlds, d)  # a short validation play: lists from training
    missing = [name for name, n in poses.items() if not n]
    if missing:
        log(f"  WARNING: no segment of the play gives a {', '.join(missing)} reset pose: those targets start "
            "from the world's random robot")
    log("  robot reset poses (the original's lists): " + _counts_by_source(poses, source))


def _counts_by_source(written: dict, source: dict) -> str:
    """``name count`` per entry, "(training split)" where the fallback split gave it."""
    return ", ".join(f"{k} {n}" + (" (training split)" if source.get(k) == "train" else "")
                     for k, n in written.items())


def run_demo(cfg: DemoConfig, fresh: bool = False, progress: bool = True, log=print, jobs: int = 1) -> dict:
    """Run (or resume) every stage into ``cfg.out_dir``; returns the results dict (``results.json``).
    ``jobs > 1``: independent stages, and the evaluation's methods, run in that many worker processes (at
    most one per core)."""
    t_start, jobs = time.perf_counter(), usable_jobs(jobs)
    prep = prepare_models(cfg, fresh, progress, log, jobs)
    st = prep.stages
    results = st.run("eval", f"closed loop: {len(cfg.methods)} methods x {len(TARGETS)} targets x {cfg.rollouts} "
                     f"rollouts of {cfg.horizon} steps", lambda d: _evaluate(cfg, prep, jobs, log))
    if results is None:
        with open(os.path.join(st.dir("eval"), "results.json")) as f:
            results = json.load(f)
    _publish(cfg, st, results)
    log(f"\ntotal {time.perf_counter() - t_start:.0f} s; stage seconds {json.dumps(st.seconds)}")
    return results


def load_demo_models(st: Stages, enc, enc_params) -> DemoModels:
    from dynaguide_jax.policy.train import load_trained_policy
    from dynaguide_jax.training.loop import load_trained_dynamics

    policy, params, schedule = load_trained_policy(st.dir("policy"))
    gc_policy, gc_params, _ = load_trained_policy(st.dir("gc"))
    dyn, dyn_params = load_trained_dynamics(st.dir("dynamics"))
    return DemoModels(policy, params, gc_policy, gc_params, schedule, enc, enc_params, dyn, dyn_params)


# seconds of each method's rollouts on one CPU core (small preset, measured): they order parallel methods
METHOD_COSTS = {"base": 20.0, "dynaguide": 205.0, "gc": 24.0, "gpc": 86.0, "itps": 32.0}


class EvalContext(NamedTuple):
    models: DemoModels
    goals: TargetGoals
    starts: EvalStarts
    env: TabletopConfig


def eval_context(cfg: DemoConfig, st: Stages, enc, enc_params) -> EvalContext:
    """The trained models, every target's goal sets and the start states that every method shares."""
    models = load_demo_models(st, enc, enc_params)
    if models.schedule.num_inference_steps != cfg.ddim_steps:
        models = models._replace(schedule=dataclasses.replace(models.schedule, num_inference_steps=cfg.ddim_steps))
    env = world_config(cfg)
    return EvalContext(models, load_goals(st.dir("goals"), TARGETS, models, cfg), eval_starts(
        cfg.seed, TARGETS, cfg.rollouts, env, load_demo_reset_poses(st.dir("goals"))), env)


def finished_demo_context(demo_dir: str) -> tuple[DemoConfig, EvalContext]:
    """``(config, eval_context)`` of a finished ``dynaguide demo`` run in ``demo_dir`` (its ``results.json``
    settings), for scripts that replay its evaluation; FileNotFoundError naming what to rerun when the
    run or a stage the evaluation loads is missing."""
    results = os.path.join(demo_dir, "results.json")
    if not os.path.exists(results):
        raise FileNotFoundError(f"{results} is missing: run `dynaguide demo --out-dir {demo_dir}` first")
    cfg = DemoConfig.from_results(results)
    st = Stages(cfg, demo_dir, log=lambda *_: None)
    for stage in ("features", "goals", "policy", "gc", "dynamics"):  # what eval_context loads
        if not st.done(stage):
            raise FileNotFoundError(f"{demo_dir}: the {stage} stage is not finished with this code's settings: "
                                    f"rerun `dynaguide demo --out-dir {demo_dir}`")
    enc, enc_params, _ = demo_encoder(cfg)
    return cfg, eval_context(cfg, st, enc, enc_params)


def _method_file(eval_dir: str, method: str) -> str:
    return os.path.join(eval_dir, "methods", f"{method}.npy")


def evaluate_method(ctx: EvalContext, cfg: DemoConfig, method: str, eval_dir: str, log) -> None:
    """Roll ``method`` out for every target; saves the detected behaviours ``[T, N]`` (an interrupted
    evaluation keeps its finished methods) and the method's GIFs."""
    t0 = time.perf_counter()
    out = run_method(method, ctx.models, ctx.goals, ctx.starts, cfg, ctx.env)
    os.makedirs(os.path.join(eval_dir, "gifs"), exist_ok=True)
    for j in range(min(cfg.gifs, cfg.rollouts)):
        name = behaviour_labels(out.detected[0, j:j + 1])[0]
        frames = render_rollout(out.robot_obs[0, j], out.scene_obs[0, j], ctx.env)
        save_gif(frames, os.path.join(eval_dir, "gifs", f"{method}_{TARGETS[0]}_{j}_{name}.gif"))
    path = _method_file(eval_dir, method)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "wb") as f:
        np.save(f, np.asarray(out.detected))
    os.replace(path + ".tmp", path)
    hits = [float(np.mean(out.detected[i] == BEHAVIOURS.index(t))) for i, t in enumerate(TARGETS)]
    log(f"  {method:>9}: mean success {np.mean(hits):.0%} ({time.perf_counter() - t0:.0f} s)")


def _methods_in_worker(cfg: DemoConfig, methods: tuple[str, ...], *, log) -> None:
    st = Stages(cfg, cfg.out_dir, log=log)
    enc, enc_params, _ = demo_encoder(cfg)
    ctx = eval_context(cfg, st, enc, enc_params)  # loaded once per worker: models, goal sets, start states
    for method in methods:
        evaluate_method(ctx, cfg, method, st.dir("eval"), log)


def method_groups(methods, jobs: int) -> list[tuple[str, ...]]:
    """``methods`` split into at most ``jobs`` groups of about equal estimated seconds (``METHOD_COSTS``;
    longest first, each to the lightest group), one worker each."""
    groups: list[list[str]] = [[] for _ in range(min(jobs, len(methods)))]
    load = [0.0] * len(groups)
    for m in sorted(methods, key=lambda m: -METHOD_COSTS.get(m, 1.0)):
        i = load.index(min(load))
        groups[i].append(m)
        load[i] += METHOD_COSTS.get(m, 1.0)
    return [tuple(g) for g in groups if g]


def _evaluate(cfg: DemoConfig, prep: PreparedModels, jobs: int, log) -> dict:
    st, d = prep.stages, prep.stages.dir("eval")
    dyn = DynamicsConfig.from_dict(read_run_config(st.dir("dynamics"))["dynamics"])
    sigma = paper_scaled_sigma(cfg.sigma, dyn)
    if "dynaguide" in cfg.methods:
        log(f"  DynaGuide: scale {cfg.scale:g}, M {cfg.repeats}, sigma {cfg.sigma:g} on the original's scale, "
            f"{sigma:g} applied ({dyn.predicted_tokens} x {dyn.feature_dim} predicted features)")
    todo = [m for m in cfg.methods if not os.path.exists(_method_file(d, m))]
    if len(todo) < len(cfg.methods):
        log(f"  reusing the finished rollouts of {', '.join(m for m in cfg.methods if m not in todo)}")
    if jobs > 1 and len(todo) > 1:
        groups = method_groups(todo, jobs)
        log(f"  methods in {len(groups)} worker processes: {'; '.join(', '.join(g) for g in groups)}")
        run_parallel({"+".join(g): Task(_methods_in_worker, (cfg, g), cost=sum(METHOD_COSTS.get(m, 1.0) for m in g))
                      for g in groups}, jobs, log)
    elif todo:
        ctx = eval_context(cfg, st, prep.encoder, prep.encoder_params)
        for method in todo:
            evaluate_method(ctx, cfg, method, d, log)
    detected = {m: dict(zip(TARGETS, np.load(_method_file(d, m)))) for m in cfg.methods}
    counts, xyz = goal_summary(st.dir("goals"), TARGETS)
    config = {**cfg.to_dict(), "sigma_applied": sigma, "encoder_description": prep.encoder_text, "goal_counts": counts,
              "itps_targets": {t: xyz[i].tolist() for i, t in enumerate(TARGETS)},
              "devices": [str(x) for x in jax.devices()]}
    results = summarize(detected, TARGETS, BEHAVIOURS, experiment=EXPERIMENT, preset=cfg.preset, config=config)
    write_results(results, d)
    return results


def _publish(cfg: DemoConfig, st: Stages, results: dict) -> None:
    """Copy the tables to ``OUT/``, draw the bar plot, print the table and the verdict."""
    out = os.path.abspath(cfg.out_dir)
    paths = write_results(results, out)
    paths.append(bar_plot(results, os.path.join(out, "success.png")))
    gif_dir = os.path.join(st.dir("eval"), "gifs")
    print(f"\n{EXPERIMENT} ({cfg.preset} preset), success rate [95% Wilson interval] (rollouts per cell):\n")
    print(format_markdown(results))
    print("\n" + verdict(results))
    print("\nwrote " + ", ".join(paths) + f", GIFs in {gif_dir}")


def verdict(results: dict) -> str:
    """The paper's claims checked on these numbers (DynaGuide >= 50 % and >= 3x base, above GPC)."""
    m = {k: v["mean_success"] for k, v in results["methods"].items()}
    lines = []
    if "dynaguide" in m and "base" in m:
        if m["base"] > 0:
            ratio = f"{m['dynaguide'] / m['base']:.1f}x"
        else:  # no ratio to a base policy that never succeeds
            ratio = "base never succeeds" if m["dynaguide"] > 0 else "neither succeeds"
        lines.append(f"DynaGuide {m['dynaguide']:.0%} vs base {m['base']:.0%}: {ratio} (paper: 70 %, 8.7x)")
    for other in ("gpc", "gc", "itps"):
        if other in m and "dynaguide" in m:
            lines.append(f"DynaGuide {'above' if m['dynaguide'] > m[other] else 'NOT above'} {other} "
                         f"({m[other]:.0%})")
    return "; ".join(lines)
