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

from dynaguide_jax.demo.config import TARGET_SETUPS, DemoConfig
from dynaguide_jax.demo.evaluate import DemoModels, eval_starts, load_goals, render_rollout, run_method
from dynaguide_jax.demo.stages import Stages
from dynaguide_jax.demo.train import train_demo_dynamics, train_demo_policy
from dynaguide_jax.encoders import DinoV2Config, init_dinov2, load_dinov2
from dynaguide_jax.envs import TabletopConfig, tabletop_for_image_size, write_world_play
from dynaguide_jax.eval.behaviours import BEHAVIOURS, behaviour_labels
from dynaguide_jax.eval.tables import bar_plot, format_markdown, save_gif, summarize, write_results

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
                                block_weight=cfg.block_play_weight)
    return run


class PreparedModels(NamedTuple):
    """What the training stages leave behind: the stage book-keeping, the frozen encoder and the RLDS path."""
    stages: Stages
    encoder: DinoV2Config
    encoder_params: dict
    encoder_text: str
    rlds: str


def prepare_models(cfg: DemoConfig, fresh: bool = False, progress: bool = True, log=print) -> PreparedModels:
    """Run (or resume, or reuse) every stage before the evaluation into ``cfg.out_dir``: play, RLDS,
    features, goal sets, base policy, GC policy, dynamics model. The experiments share these."""
    st = Stages(cfg, cfg.out_dir, fresh=fresh, log=log)
    enc, enc_params, enc_text = demo_encoder(cfg)
    log(f"encoder: {enc_text}")
    raw = os.path.join(st.dir("play"), "raw")
    st.run("play", f"play data: {cfg.play_streams} streams x {cfg.play_steps} steps -> raw CALVIN files",
           _play(cfg, progress))

    def build(d):
        from data_pipelines.calvin.builder import build_calvin

        path = build_calvin(raw, d)
        with open(os.path.join(d, "path.txt"), "w") as f:
            f.write(os.path.relpath(path, d))
    st.run("rlds", "RLDS dataset (TFDS CALVIN builder, behaviour segmentation)", build)
    with open(os.path.join(st.dir("rlds"), "path.txt")) as f:
        rlds = os.path.join(st.dir("rlds"), f.read().strip())

    def cache(d):
        from dynaguide_jax.data.features import build_feature_cache
        from dynaguide_jax.data.rlds import FrameStream

        build_feature_cache(d, FrameStream(rlds, "train", "observation/rgb_static"), enc, enc_params,
                            cfg.encoder_size, progress=progress)
    st.run("features", "DinoV2 patch features of the training split's static camera", cache)
    st.run("goals", "goal sets from the validation split's segments", lambda d: _goals(cfg, rlds, d, log))
    st.run("policy", "base diffusion policy", lambda d: train_demo_policy(rlds, cfg, d, False, progress))
    st.run("gc", "goal-conditioned policy (GC baseline)", lambda d: train_demo_policy(rlds, cfg, d, True, progress))

    def dynamics(d):
        from dynaguide_jax.data import load_feature_cache

        return train_demo_dynamics(rlds, load_feature_cache(st.dir("features")), cfg, d, progress)
    st.run("dynamics", "latent dynamics model", dynamics)
    return PreparedModels(st, enc, enc_params, enc_text, rlds)


def _goals(cfg: DemoConfig, rlds: str, d: str, log) -> None:
    from dynaguide_jax.data.rlds import export_goal_sets_with_fallback

    written, source = export_goal_sets_with_fallback(rlds, d, TARGETS, image_field="observation/rgb_static",
                                                     seed=cfg.seed, keep_fraction=cfg.keep_fraction,
                                                     max_per_behaviour=cfg.max_goals)
    elsewhere = [t for t in TARGETS if source.get(t) != "validation"]
    if elsewhere:  # a short validation play may lack a behaviour: its goals come from the training split
        log(f"  WARNING: the validation play has no segment of {', '.join(elsewhere)}: goals from the training "
            "split instead (more play, --play-steps, avoids this)")
    written = {t: f"{n} (training split)" if source.get(t) == "train" else n for t, n in written.items()}
    log("  goal sets: " + ", ".join(f"{t} {n}" for t, n in written.items()))


def run_demo(cfg: DemoConfig, fresh: bool = False, progress: bool = True, log=print) -> dict:
    """Run (or resume) every stage into ``cfg.out_dir``; returns the results dict (``results.json``)."""
    t_start = time.perf_counter()
    prep = prepare_models(cfg, fresh, progress, log)
    st = prep.stages
    results = st.run("eval", f"closed loop: {len(cfg.methods)} methods x {len(TARGETS)} targets x {cfg.rollouts} "
                     f"rollouts of {cfg.horizon} steps",
                     lambda d: _evaluate(cfg, st, prep.encoder, prep.encoder_params, prep.encoder_text, log))
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


def _evaluate(cfg: DemoConfig, st: Stages, enc, enc_params, enc_text: str, log) -> dict:
    d = st.dir("eval")
    models = load_demo_models(st, enc, enc_params)
    if models.schedule.num_inference_steps != cfg.ddim_steps:
        models = models._replace(schedule=dataclasses.replace(models.schedule, num_inference_steps=cfg.ddim_steps))
    goals = load_goals(st.dir("goals"), TARGETS, models, cfg)
    env = world_config(cfg)
    starts = eval_starts(cfg.seed, TARGETS, cfg.rollouts, env)
    detected, gifs = {}, []
    os.makedirs(os.path.join(d, "gifs"), exist_ok=True)
    for method in cfg.methods:
        t0 = time.perf_counter()
        out = run_method(method, models, goals, starts, cfg, env)
        detected[method] = {t: out.detected[i] for i, t in enumerate(TARGETS)}
        hits = [float(np.mean(out.detected[i] == BEHAVIOURS.index(t))) for i, t in enumerate(TARGETS)]
        log(f"  {method:>9}: mean success {np.mean(hits):.0%} ({time.perf_counter() - t0:.0f} s)")
        for j in range(min(cfg.gifs, cfg.rollouts)):
            name = behaviour_labels(out.detected[0, j:j + 1])[0]
            frames = render_rollout(out.robot_obs[0, j], out.scene_obs[0, j], env)
            gifs.append(save_gif(frames, os.path.join(d, "gifs", f"{method}_{TARGETS[0]}_{j}_{name}.gif")))
    config = {**cfg.to_dict(), "encoder_description": enc_text, "goal_counts": goals.counts,
              "itps_targets": {t: goals.xyz[i].tolist() for i, t in enumerate(TARGETS)},
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
        ratio = m["dynaguide"] / m["base"] if m["base"] > 0 else float("inf")
        lines.append(f"DynaGuide {m['dynaguide']:.0%} vs base {m['base']:.0%}: {ratio:.1f}x (paper: 70 %, 8.7x)")
    for other in ("gpc", "gc", "itps"):
        if other in m and "dynaguide" in m:
            lines.append(f"DynaGuide {'above' if m['dynaguide'] > m[other] else 'NOT above'} {other} "
                         f"({m[other]:.0%})")
    return "; ".join(lines)
