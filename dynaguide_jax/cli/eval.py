"""``dynaguide eval``: offline evaluation of trained models on held-out data (``eval dynamics``,
``eval policy``)."""
from __future__ import annotations

import argparse
import json
import os

from dynaguide_jax.outputs import prepare_output_dir


def add_parser(sub) -> None:
    ev = sub.add_parser("eval", help="evaluate trained models offline on held-out data")
    esub = ev.add_subparsers(dest="what", required=True, metavar="{dynamics,policy}")
    ed = esub.add_parser("dynamics", help="prediction error and behaviour retrieval of a trained dynamics model",
                         description="Prediction error on held-out windows next to the 'nothing moves' baseline, "
                         "and how well predictions pick the right behaviour's goal set with the guidance metric "
                         "(labelled data: CALVIN segments, toy-world episodes), and whether they depend on the "
                         "action chunk. Writes eval_dynamics.json and eval_dynamics.png. "
                         "Default: the toy-world run of `dynaguide train dynamics`, on fresh "
                         "held-out toy episodes.")
    ed.add_argument("--run", default="runs/dynamics", help="a `dynaguide train dynamics` run directory")
    ed.add_argument("--data", choices=["toy", "rlds"], default="toy")
    ed.add_argument("--rlds", default=None, help="prepared RLDS dataset (with --data rlds)")
    ed.add_argument("--features", default=None, help="feature cache of the evaluated split")
    ed.add_argument("--split", default="validation")
    ed.add_argument("--episodes", type=int, default=32, help="toy: held-out episodes")
    ed.add_argument("--data-seed", type=int, default=None, help="toy: default the run's seed + 1 (unseen data)")
    ed.add_argument("--sigma", type=float, default=30.0,
                    help="guidance metric temperature, applied as given (guidance on a model predicting fewer than "
                         "256 x 384 features applies the original's values scaled: guidance.paper_scaled_sigma)")
    ed.add_argument("--distance", choices=["l2", "squared_l2"], default="l2")
    ed.add_argument("--max-windows", type=int, default=2048, help="evenly spaced windows for the error figures")
    ed.add_argument("--phases", type=_fraction, nargs="+", default=None, metavar="F",
                    help="segment_end models: query each segment at these fractions of its length with its own and "
                         "another behaviour's action chunk (does the prediction use the actions?); default 0 0.25 0.5 "
                         "0.75")
    ed.add_argument("--batch-size", type=int, default=64)
    ed.add_argument("--out", default=None, help="default RUN/eval")
    ed.add_argument("--quiet", action="store_true")
    ed.set_defaults(func=run_dynamics)
    ep = esub.add_parser("policy", help="how well a trained base policy imitates held-out play, open and closed loop",
                         description="Open loop: at evenly spaced held-out windows, a sampled chunk against the "
                         "demonstration's actions (cosine of the net tcp move, the same between two samples, gripper "
                         "agreement, MSE), by phase of the behaviour segment. Closed loop: the built-in world reset to "
                         "the held-out play's states at fractions of each articulated segment, the policy run; how "
                         "often it finishes the segment's behaviour. Writes eval_policy.json and eval_policy.png. "
                         "Default: the base policy and dataset of `dynaguide demo` in runs/demo.")
    ep.add_argument("--demo-dir", default="runs/demo", help="a `dynaguide demo` output: its policy/ and rlds/ are used "
                    "unless --run / --rlds say otherwise")
    ep.add_argument("--run", default=None, help="a `dynaguide train policy` run directory (default DEMO_DIR/policy)")
    ep.add_argument("--rlds", default=None, help="prepared RLDS dataset with behaviour segments (default: the demo's); "
                    "the closed loop replays its states in the built-in world, so use built-in-world play there")
    ep.add_argument("--split", default="validation")
    ep.add_argument("--action-field", default="rel_action", help="the actions the policy was trained on")
    ep.add_argument("--windows", type=int, default=1024, help="open loop: evenly spaced windows")
    ep.add_argument("--fractions", type=float, nargs="*", default=[0.0, 0.5, 0.75],
                    help="closed loop: start points as fractions of each segment (none: skip the closed loop)")
    ep.add_argument("--horizon", type=int, default=84, help="closed loop: control steps per rollout")
    ep.add_argument("--repeats", type=int, default=2, help="closed loop: rollouts per segment and start")
    ep.add_argument("--ddim-steps", type=int, default=None, help="default: the run's")
    ep.add_argument("--seed", type=int, default=0)
    ep.add_argument("--out", default=None, help="default DEMO_DIR/eval_policy, or RUN/eval with --run")
    ep.add_argument("--quiet", action="store_true")
    ep.set_defaults(func=run_policy)


def heldout_windows(args, config, info: dict):
    """Held-out windows for ``eval dynamics`` with the inputs the run was trained on; returns
    ``(windows, labels, segments)``."""
    from dynaguide_jax.data import ActionTransform

    transform = ActionTransform.from_dict(info.get("action_transform", {"mode": "none"}))
    target = info.get("target", "horizon")  # runs that recorded no target predicted frame t+H
    if args.data == "toy":
        from dynaguide_jax.data.toy import toy_dynamics_data

        if info.get("source") != "toy":
            raise ValueError(f"{args.run} was trained on {info.get('source', 'unknown')} data, not the toy world: "
                             "pass --data rlds --rlds DATASET --features CACHE")
        seed = info["data_seed"] + 1 if args.data_seed is None else args.data_seed
        _, windows = toy_dynamics_data(os.path.join(args.out, "toy_data"), args.episodes, info["length"],
                                       config.horizon, seed=seed, encoder_path=info.get("encoder"),
                                       progress=not args.quiet, encoder_seed=info["data_seed"], target=target)
        windows.action_transform = transform
    else:
        from dynaguide_jax.data import load_feature_cache
        from dynaguide_jax.data.rlds import dynamics_windows, has_step_field

        if not args.rlds or not args.features:
            raise ValueError("--data rlds needs --rlds DATASET_DIR and --features CACHE_DIR of the split to evaluate")
        feats = load_feature_cache(args.features)
        if feats.shape[1:] != (config.num_cameras * config.patches_per_camera, config.feature_dim):
            raise ValueError(f"features {args.features} are {feats.shape[1:]} per frame; the model takes "
                             f"{(config.num_cameras * config.patches_per_camera, config.feature_dim)}")
        labelled = has_step_field(args.rlds, "behaviour") and has_step_field(args.rlds, "segment")
        windows = dynamics_windows(args.rlds, args.split, feats, config.horizon,
                                   tuple(info.get("proprio_fields", ["observation/robot_obs"])),
                                   info.get("action_field", "rel_action"), transform, labels=labelled, target=target)
    obs = windows.data.obs
    return windows, obs.get("behaviour"), obs.get("segment")


def _fraction(text: str) -> float:
    """A fraction of a segment in [0, 1), checked while parsing (before a model is loaded)."""
    value = float(text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not a fraction of a segment in [0, 1)")
    return value


def run_dynamics(args) -> int:
    from dynaguide_jax.eval.dynamics import evaluate_dynamics, format_report, save_report_plot
    from dynaguide_jax.training.loop import load_trained_dynamics, read_run_config

    info = read_run_config(args.run).get("data", {})
    args.out = args.out or os.path.join(args.run, "eval")
    prepare_output_dir(args.out)
    config, params = load_trained_dynamics(args.run)
    windows, labels, segments = heldout_windows(args, config, info)
    report = evaluate_dynamics(config, params, windows, labels=labels, segments=segments, sigma=args.sigma,
                               distance=args.distance, max_windows=args.max_windows, batch_size=args.batch_size,
                               progress=not args.quiet, **({} if args.phases is None else {"phases": args.phases}))
    report["run"], report["data"] = os.path.abspath(args.run), args.data
    _write_report(report, args.out, "eval_dynamics", format_report, save_report_plot)
    return 0


def _write_report(report: dict, out: str, name: str, text_fn, plot_fn) -> None:
    """Print ``text_fn(report)``, write ``OUT/NAME.json`` and the plot ``OUT/NAME.png``."""
    print(text_fn(report))
    path = os.path.join(out, f"{name}.json")
    with open(path, "w") as f:
        json.dump(report, f, indent=2)
    print(f"\nwrote {path}, {plot_fn(report, os.path.join(out, f'{name}.png'))}")


def _require_finished_stage(demo_dir: str, stage: str, flag: str) -> str:
    """``DEMO_DIR/stage`` when the demo finished that stage; else a one-line error naming ``flag``."""
    from dynaguide_jax.demo.stages import stage_record

    d = os.path.join(demo_dir, stage)
    if stage_record(d).get("done") is not True:
        raise FileNotFoundError(f"{demo_dir} has no finished {stage} stage: run `dynaguide demo --out-dir {demo_dir}` "
                                f"(it resumes) or pass {flag}")
    return d


def run_policy(args) -> int:
    import dataclasses

    import jax

    from dynaguide_jax._checks import check_int
    from dynaguide_jax.data.rlds import has_step_field, read_policy_segments
    from dynaguide_jax.demo.stages import rlds_path
    from dynaguide_jax.envs import tabletop_for_image_size
    from dynaguide_jax.eval import methods
    from dynaguide_jax.eval.policy import (completion_from_play, format_policy_report, open_loop_agreement,
                                           save_policy_report_plot, segment_labels, segment_windows)
    from dynaguide_jax.policy.train import load_trained_policy

    for name in ("windows", "horizon", "repeats"):
        check_int(f"--{name}", getattr(args, name))
    if args.ddim_steps is not None:
        check_int("--ddim-steps", args.ddim_steps)
    bad = [f for f in args.fractions if not 0.0 <= f < 1.0]
    if bad:
        raise ValueError(f"--fractions must be in [0, 1), got {bad}")
    run = args.run or _require_finished_stage(args.demo_dir, "policy", "--run")
    rlds = args.rlds or rlds_path(_require_finished_stage(args.demo_dir, "rlds", "--rlds"))
    for field in ("segment", "behaviour"):
        if not has_step_field(rlds, field):
            raise ValueError(f"{rlds} has no per-step {field!r} labels (CALVIN-format data built by `dynaguide data "
                             "build calvin` has them)")
    policy, params, schedule = load_trained_policy(run)
    cfg = policy.config
    if cfg.goal_rgb_keys:
        raise ValueError(f"{run} is a goal-conditioned policy; `eval policy` evaluates policies without goals")
    if args.ddim_steps is not None:
        schedule = dataclasses.replace(schedule, num_inference_steps=args.ddim_steps)
    args.out = args.out or (os.path.join(run, "eval") if args.run else os.path.join(args.demo_dir, "eval_policy"))
    prepare_output_dir(args.out)
    rename = {"observation/robot_obs": "proprio", "observation/scene_obs": "scene"}
    fields = ("observation/robot_obs", "observation/scene_obs", "behaviour",
              *(f"observation/{k}" for k in cfg.rgb_keys))
    data = read_policy_segments(rlds, args.split, fields, args.action_field, rename=rename)
    behaviour = data.obs.pop("behaviour")
    sample = methods.base_fn(policy, params, schedule, (cfg.prediction_horizon, cfg.action_dim))
    key = jax.random.key(args.seed)
    obs, actions, phase = segment_windows(data, cfg, args.windows)
    log = (lambda *_: None) if args.quiet else print
    log(f"open loop: {len(phase)} windows of {rlds} ({args.split}) ...")
    report = {"run": os.path.abspath(run), "rlds": os.path.abspath(rlds), "split": args.split,
              "ddim_steps": schedule.num_inference_steps,
              "open_loop": open_loop_agreement(sample, obs, actions, phase, jax.random.fold_in(key, 0),
                                               first=cfg.obs_horizon - 1, executed=cfg.action_horizon)}
    if args.fractions:
        size = dict(cfg.rgb_shapes).get("rgb_static", (64, 64))[0]  # the cameras the policy sees; a state policy: none
        log(f"closed loop: starts at {args.fractions} of each articulated segment, {args.horizon} steps ...")
        report["completion"] = completion_from_play(
            sample, tabletop_for_image_size(size), data.obs["proprio"], data.obs["scene"],
            segment_labels(behaviour, data.episode_ends), data.episode_ends, jax.random.fold_in(key, 1),
            fractions=tuple(args.fractions), horizon=args.horizon, obs_horizon=cfg.obs_horizon,
            action_horizon=cfg.action_horizon, repeats=args.repeats)
    _write_report(report, args.out, "eval_policy", format_policy_report, save_policy_report_plot)
    return 0
