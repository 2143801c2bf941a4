"""``run_experiment``: one experiment end to end (models, goal sets, every cell's rollouts, tables, figures)."""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time

from dynaguide_jax.demo.config import DemoConfig
from dynaguide_jax.eval.behaviours import BEHAVIOURS
from dynaguide_jax.eval.tables import format_markdown, summarize, write_results
from experiments import analysis
from experiments.runner import RunSizes, detections_by_target, plan_cells, run_cells, success_sets
from experiments.spec import Experiment

ENVS = ("tabletop", "calvin")


def default_models_dir(preset: str) -> str:
    """Where ``dynaguide demo`` leaves its models for the small preset (``runs/demo``), so an experiment
    after the demo trains nothing; other presets get their own folder (a preset's stages would rebuild
    another's)."""
    return os.path.join("runs", "demo" if preset == "small" else f"demo-{preset}")


def select(experiment: Experiment, targets=None, methods=None) -> tuple[Experiment, tuple[str, ...]]:
    """The experiment restricted to ``targets`` (names) and its methods to ``methods``; unknown names raise."""
    if targets:
        experiment = experiment.with_targets(targets)
    methods = tuple(methods) if methods else experiment.methods
    unknown = [m for m in methods if m not in experiment.methods]
    if unknown:
        raise ValueError(f"{experiment.title} runs the methods {list(experiment.methods)}; not {unknown}")
    return experiment, methods


def run_experiment(experiment: Experiment, cfg: DemoConfig, out_dir: str, *, env: str = "tabletop",
                   models_dir: str | None = None, methods=None, chunk: int = 8, fresh: bool = False,
                   progress: bool = True, log=print, calvin=None, backend=None, jobs: int = 1,
                   policy: str | None = None) -> dict:
    """Run (or resume) ``experiment`` into ``out_dir``; returns the ``results.json`` dict.

    ``cfg`` gives the world and model sizes and the evaluation sizes (rollouts, horizon, DDIM steps;
    ``DemoConfig.for_preset``); ``models_dir`` holds the trained models (``default_models_dir``).
    ``calvin``: the ``experiments.calvin.CalvinSources`` of ``env="calvin"``; ``backend`` (tests) replaces
    the backend the env names; ``jobs``: worker processes for the built-in world's model stages
    (``demo.pipeline.prepare_models``); ``policy``: on the built-in world, a ``dynaguide train policy`` run
    in place of the demo's base policy (``calvin`` names the policies of ``env="calvin"``)."""
    if env not in ENVS:
        raise ValueError(f"env must be one of {ENVS}, got {env!r}")
    experiment, methods = select(experiment, methods=methods)
    sizes = RunSizes(rollouts=cfg.rollouts, horizon=cfg.horizon, chunk=min(chunk, cfg.rollouts), seed=cfg.seed)
    t_start = time.perf_counter()
    if fresh:  # every rollout again (the backend retrains the models)
        shutil.rmtree(os.path.join(out_dir, "cells"), ignore_errors=True)
    os.makedirs(out_dir, exist_ok=True)
    if backend is None:
        if env == "calvin":
            from experiments.calvin import CalvinBackend

            if calvin is None:
                raise ValueError("env='calvin' needs calvin=CalvinSources(policy=..., ...)")
            backend = CalvinBackend(experiment, methods, cfg, calvin, progress=progress, log=log)
        else:
            from experiments.tabletop import TabletopBackend

            models_dir = models_dir or default_models_dir(cfg.preset)
            backend = TabletopBackend(experiment, cfg, models_dir, out_dir, fresh=fresh, progress=progress, log=log,
                                      jobs=jobs, policy=policy)
    cells = plan_cells(experiment, methods)
    log(f"[rollouts] {experiment.title}: {len(cells)} cells ({', '.join(methods)}) x {sizes.rollouts} rollouts "
        f"of {cfg.horizon} steps")
    raw = run_cells(experiment, cells, sizes, out_dir, backend.cell_key, backend.run_chunk, progress, log,
                    pad=getattr(backend, "pad_chunks", True))
    index, counted = detections_by_target(experiment, raw, methods)
    config = {"experiment": experiment.to_dict(), "env": env, "models_dir": models_dir, **backend.config()}
    results = summarize(index, [t.name for t in experiment.targets], BEHAVIOURS, experiment=experiment.title,
                        preset=cfg.preset, config=config, success=success_sets(experiment))
    for m in methods:  # the original's "Full distribution": simultaneous block events each count
        for t in experiment.targets:
            c = counted[m][t.name].sum(0)
            results["methods"][m]["per_target"][t.name]["counted_distribution"] = {
                b: float(v / max(c.sum(), 1)) for b, v in zip(BEHAVIOURS, c)}
    paths = write_results(results, out_dir)
    fractions = {t.name: 100 * t.policy_fraction for t in experiment.targets if t.policy_fraction is not None}
    paths += analysis.figure(results, experiment.figure, out_dir, fractions)
    extra = ""
    if experiment.figure == "objects":
        extra = "\n\nsuccess / another object / nothing:\n\n" + analysis.format_objects(results)
    elif experiment.figure == "bars" and set(results["targets"]) <= set(BEHAVIOURS[:8]):
        extra = "\n\nper object (both directions averaged, the paper's collapsed figure):\n\n" + \
            analysis.format_object_means(results)
    with open(os.path.join(out_dir, "table.md"), "a") as f:
        f.write(extra + "\n" if extra else "")
    log(f"\n{experiment.title} ({cfg.preset} preset, {env}), success rate [95% Wilson interval] (rollouts):\n")
    log(format_markdown(results) + extra)
    log("\nwrote " + ", ".join(paths) + f" ({time.perf_counter() - t_start:.0f} s)")
    with open(os.path.join(out_dir, "settings.json"), "w") as f:
        json.dump({"config": dataclasses.asdict(cfg), "methods": list(methods), "chunk": sizes.chunk}, f, indent=2)
    return results
