"""``dynaguide eval``: offline evaluation of trained models on held-out data (``eval dynamics``)."""
from __future__ import annotations

import json
import os

from dynaguide_jax.outputs import prepare_output_dir


def add_parser(sub) -> None:
    ev = sub.add_parser("eval", help="evaluate trained models offline on held-out data")
    esub = ev.add_subparsers(dest="what", required=True, metavar="{dynamics}")
    ed = esub.add_parser("dynamics", help="prediction error and behaviour retrieval of a trained dynamics model",
                         description="Prediction error on held-out windows next to the 'nothing moves' baseline, "
                         "and how well predictions pick the right behaviour's goal set with the guidance metric "
                         "(labelled data: CALVIN segments, toy-world episodes). Writes eval_dynamics.json and "
                         "eval_dynamics.png. Default: the toy-world run of `dynaguide train dynamics`, on fresh "
                         "held-out toy episodes.")
    ed.add_argument("--run", default="runs/dynamics", help="a `dynaguide train dynamics` run directory")
    ed.add_argument("--data", choices=["toy", "rlds"], default="toy")
    ed.add_argument("--rlds", default=None, help="prepared RLDS dataset (with --data rlds)")
    ed.add_argument("--features", default=None, help="feature cache of the evaluated split")
    ed.add_argument("--split", default="validation")
    ed.add_argument("--episodes", type=int, default=32, help="toy: held-out episodes")
    ed.add_argument("--data-seed", type=int, default=None, help="toy: default the run's seed + 1 (unseen data)")
    ed.add_argument("--sigma", type=float, default=30.0, help="guidance metric temperature")
    ed.add_argument("--distance", choices=["l2", "squared_l2"], default="l2")
    ed.add_argument("--max-windows", type=int, default=2048, help="evenly spaced windows for the error figures")
    ed.add_argument("--batch-size", type=int, default=64)
    ed.add_argument("--out", default=None, help="default RUN/eval")
    ed.add_argument("--quiet", action="store_true")
    ed.set_defaults(func=run_dynamics)


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
                               progress=not args.quiet)
    report["run"], report["data"] = os.path.abspath(args.run), args.data
    print(format_report(report))
    path = os.path.join(args.out, "eval_dynamics.json")
    with open(path, "w") as f:
        json.dump(report, f, indent=2)
    print(f"\nwrote {path}, {save_report_plot(report, os.path.join(args.out, 'eval_dynamics.png'))}")
    return 0
