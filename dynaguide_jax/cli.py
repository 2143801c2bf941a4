"""The ``dynaguide`` command. Every subcommand has ``--help``; defaults run offline on CPU."""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np


_UNSET = object()  # a demo flag the user did not give: its preset decides


def _output_dir(path, name: str = "--out") -> None:
    """Create a command's output directory and check it is writable before any work (one message
    naming the path when a component is a file or permission is denied)."""
    from dynaguide_jax.outputs import prepare_output_dir

    prepare_output_dir(path, name)


def _demo(args) -> int:
    from dynaguide_jax.demo import DemoConfig, run_demo

    explicit = {k: tuple(v) if isinstance(v, list) else v for k, v in vars(args).items()
                if k in DemoConfig.__dataclass_fields__ and k != "preset" and v is not _UNSET}
    cfg = DemoConfig.for_preset(args.preset, **explicit)
    _output_dir(cfg.out_dir, "--out-dir")
    run_demo(cfg, fresh=args.fresh, progress=not args.quiet)
    return 0


def _sweep(args) -> int:
    import json

    from dynaguide_jax.cli_config import dataclass_from_args
    from dynaguide_jax.toy_demo import ToySceneConfig, format_sweep, run_sweep, save_sweep_plot

    cfg = dataclass_from_args(ToySceneConfig, args)
    _output_dir(cfg.out_dir, "--out-dir")
    result = run_sweep(cfg, args.seeds, args.sigmas, progress=not args.quiet)
    print(format_sweep(result))
    os.makedirs(cfg.out_dir, exist_ok=True)
    with open(os.path.join(cfg.out_dir, "sweep.json"), "w") as f:
        json.dump(result, f, indent=2)
    print("\nwrote " + os.path.join(cfg.out_dir, "sweep.json") + ", "
          + save_sweep_plot(result, os.path.join(cfg.out_dir, "sweep.png")))
    return 0


def _convert_dinov2(args) -> int:
    from dynaguide_jax.encoders import load_dinov2, save_dinov2

    cfg, params = load_dinov2(args.src, num_heads=args.num_heads)
    _output_dir(args.out, "OUT")
    save_dinov2(args.out, cfg, params)
    print(f"converted {args.src} -> {args.out}\n{cfg.to_json()}")
    return 0


def _convert_dynamics(args) -> int:
    from dynaguide_jax.dynamics import load_original_dynamics, save_dynamics
    from dynaguide_jax.encoders import save_dinov2

    cfg, params, encoder = load_original_dynamics(args.src, num_heads=args.num_heads,
                                                  patches_per_camera=args.patches_per_camera,
                                                  encoder_num_heads=args.encoder_num_heads)
    _output_dir(args.out, "OUT")
    save_dynamics(os.path.join(args.out, "dynamics"), cfg, params)
    print(f"dynamics -> {os.path.join(args.out, 'dynamics')}\n{cfg.to_json()}")
    if encoder is not None:
        save_dinov2(os.path.join(args.out, "encoder"), *encoder)
        print(f"encoder (state_encoder.*) -> {os.path.join(args.out, 'encoder')}")
    return 0


def _rlds_policy_data(args):
    """Cameras and proprio of an RLDS split, in memory (fits datasets up to a few 100k frames)."""
    from dynaguide_jax.data.episodes import split_at_segments
    from dynaguide_jax.data.rlds import has_step_field, read_episodes
    from dynaguide_jax.policy import PolicyConfig

    if not args.rlds:
        raise ValueError("--data rlds needs --rlds DATASET_DIR")
    cams = tuple(args.cameras)
    segmented = has_step_field(args.rlds, "segment")
    fields = ("observation/robot_obs", *(f"observation/{c}" for c in cams), *(("segment",) if segmented else ()))
    data = read_episodes(args.rlds, args.split, fields, args.action_field,
                         rename={"observation/robot_obs": "proprio"})
    if segmented:  # robomimic trains on one demo per behaviour segment (CALVIN), not on play ranges
        data = split_at_segments(data, data.obs.pop("segment"))
    data.actions = np.clip(data.actions, -1.0, 1.0)  # the original clips rel_actions for training
    if args.goal_conditioned and args.goal_camera not in cams:
        raise ValueError(f"--goal-camera {args.goal_camera} is not among --cameras {list(cams)}")
    # the original's GC config: one observation frame (To = 1), the goal from the static camera
    pcfg = PolicyConfig(action_dim=data.actions.shape[1], obs_keys=("proprio", *cams),
                        rgb_shapes=tuple((c, tuple(data.obs[c].shape[1:3])) for c in cams),
                        low_dim=(("proprio", data.obs["proprio"].shape[1]),),
                        obs_horizon=1 if args.goal_conditioned else 2,
                        goal_rgb_keys=(args.goal_camera,) if args.goal_conditioned else ())
    if args.model == "small":
        small = PolicyConfig.preset("small")
        pcfg = pcfg.replace(down_dims=small.down_dims, n_groups=small.n_groups, step_embed_dim=small.step_embed_dim,
                            feature_dim=small.feature_dim, num_keypoints=small.num_keypoints,
                            backbone_widths=small.backbone_widths)
    return pcfg, data


def _train_policy(args) -> int:
    from dynaguide_jax.cli_config import dataclass_from_args
    from dynaguide_jax.policy import DiffusionPolicy
    from dynaguide_jax.policy.toy import toy_episodes, toy_policy_config
    from dynaguide_jax.policy.train import PolicyTrainConfig, train_policy
    from dynaguide_jax.policy.windows import policy_batch

    cfg = dataclass_from_args(PolicyTrainConfig, args)
    _output_dir(args.out)
    if args.data == "toy":
        pcfg = toy_policy_config(args.goal_conditioned)
        data = toy_episodes(args.data_seed, args.episodes, args.length)
    else:
        pcfg, data = _rlds_policy_data(args)
    batches = lambda step: policy_batch(data, pcfg, cfg.batch_size, cfg.seed, step, args.goal_mode)  # noqa: E731
    result = train_policy(DiffusionPolicy(pcfg), batches, cfg, args.out, progress=not args.quiet,
                          stop_after=args.stop_after)
    if result.resumed_from is not None:
        print(f"resumed from step {result.resumed_from}")
    last = result.losses[-1] if result.losses else None
    print(f"trained {pcfg.rgb_keys} policy on {len(data.episode_ends)} {args.data} episodes; "
          f"last logged (step, loss) = {last}; run directory {args.out}")
    return 0


def _rlds_dynamics_data(args):
    from dynaguide_jax.data import load_feature_cache
    from dynaguide_jax.data.rlds import dynamics_windows
    from dynaguide_jax.dynamics import DynamicsConfig

    if not args.rlds or not args.features:
        raise ValueError("--data rlds needs --rlds DATASET_DIR and --features CACHE_DIR (dynaguide data cache)")
    feats = load_feature_cache(args.features)
    windows = dynamics_windows(args.rlds, args.split, feats, args.horizon, tuple(args.proprio_fields),
                               args.action_field, args.action_norm, target=args.target)
    transform = windows.action_transform
    cfg = DynamicsConfig.preset(args.model).replace(
        feature_dim=feats.shape[2], patches_per_camera=feats.shape[1], action_dim=windows.data.actions.shape[1],
        proprio_dim=windows.data.obs["proprio"].shape[1], horizon=args.horizon)
    info = {"source": "rlds", "rlds": os.path.abspath(args.rlds), "split": args.split,
            "features": os.path.abspath(args.features), "proprio_fields": list(args.proprio_fields),
            "action_field": args.action_field, "action_transform": transform.to_dict(), "target": windows.target}
    return cfg, windows, info


def _train_dynamics(args) -> int:
    from dynaguide_jax.cli_config import dataclass_from_args
    from dynaguide_jax.training import DynamicsTrainConfig, init_distributed, train_dynamics

    if args.coordinator:
        init_distributed(args.coordinator, args.num_processes, args.process_id)
    cfg = dataclass_from_args(DynamicsTrainConfig, args)
    _output_dir(args.out)
    if args.data == "toy":
        from dynaguide_jax.data.toy import toy_dynamics_data

        model_cfg, windows = toy_dynamics_data(args.out, args.episodes, args.length, seed=args.data_seed,
                                               encoder_path=args.encoder, progress=not args.quiet,
                                               target=args.target)
        info = {"source": "toy", "data_seed": args.data_seed, "episodes": args.episodes, "length": args.length,
                "encoder": args.encoder and os.path.abspath(args.encoder),
                "action_transform": windows.action_transform.to_dict(), "target": windows.target}
    else:
        model_cfg, windows, info = _rlds_dynamics_data(args)
    result = train_dynamics(model_cfg, lambda step, rows: windows.batch(step, cfg.global_batch, cfg.seed, rows),
                            cfg, args.out, progress=not args.quiet, stop_after=args.stop_after, data_info=info)
    import jax

    if jax.process_index() == 0:
        if result.resumed_from is not None:
            print(f"resumed from step {result.resumed_from}")
        print(f"trained the dynamics model on {jax.device_count()} device(s), {jax.process_count()} process(es); "
              f"last metrics {result.last_metrics}; run directory {args.out}")
    return 0


def _eval_windows(args, config, info: dict):
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


def _eval_dynamics(args) -> int:
    import json

    from dynaguide_jax.eval.dynamics import evaluate_dynamics, format_report, save_report_plot
    from dynaguide_jax.training.loop import load_trained_dynamics, read_run_config

    info = read_run_config(args.run).get("data", {})
    args.out = args.out or os.path.join(args.run, "eval")
    _output_dir(args.out)
    config, params = load_trained_dynamics(args.run)
    windows, labels, segments = _eval_windows(args, config, info)
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


def _data_build(args) -> int:
    _output_dir(args.out, "OUT")
    if args.format == "calvin":
        from data_pipelines.calvin.builder import build_calvin

        path = build_calvin(args.raw, args.out)
    else:
        from data_pipelines.umi.builder import build_umi

        path = build_umi(args.raw, args.out)
    print(f"RLDS dataset ready at {path}")
    return 0


def _data_cache(args) -> int:
    from dynaguide_jax.data.features import build_feature_cache
    from dynaguide_jax.data.rlds import FrameStream
    from dynaguide_jax.data.toy import toy_encoder

    _output_dir(args.out, "OUT")
    enc_cfg, enc_params, size = toy_encoder(args.encoder)
    if args.image_size:
        size = args.image_size
    frames = FrameStream(args.rlds, args.split, args.camera)
    feats = build_feature_cache(args.out, frames, enc_cfg, enc_params, size, batch_size=args.batch_size,
                                progress=not args.quiet)
    print(f"cached {feats.shape} features of {args.camera} ({args.split}) in {args.out}")
    return 0


def _data_goals(args) -> int:
    from dynaguide_jax.data.rlds import export_guidance_conditions

    _output_dir(args.out, "OUT")
    counts = export_guidance_conditions(args.rlds, args.out, args.split, args.camera, horizon=args.horizon,
                                        seed=args.seed, keep_fraction=args.keep_fraction,
                                        max_per_behaviour=args.max_per_behaviour or None)
    print(f"{'behaviour':>16}  available  kept  capped  written")
    for name, c in counts["behaviours"].items():
        print(f"{name:>16}  {c['available']:>9}  {c['kept']:>4}  {c['capped']:>6}  {c['written']:>7}")
    dropped = ", ".join(f"{k} {v}" for k, v in counts["dropped"].items()) or "none"
    print(f"dropped (*_displace): {dropped}; unlabelled segments skipped: {counts['unlabelled_segments']}")
    print(f"goal sets written to {args.out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from dynaguide_jax.cli_config import add_dataclass_args
    from dynaguide_jax.demo import PRESETS
    from dynaguide_jax.demo import DemoConfig
    from dynaguide_jax.toy_demo import ToySceneConfig

    p = argparse.ArgumentParser(prog="dynaguide", description="DynaGuide in JAX: steer frozen diffusion "
                                "policies with latent-dynamics guidance.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser("demo", help="the paper's ArticulatedParts experiment on the built-in world (offline)",
                          description="Generate play data in the built-in tabletop world, build the RLDS dataset, "
                          "cache DinoV2 features, train the base policy, the GC policy and the dynamics model, "
                          "then roll out every method (base, DynaGuide, GC, GPC, ITPS) in closed loop for the 8 "
                          "articulated targets. Writes OUT/{results.json,table.md,table.csv,success.png} and GIFs; "
                          "each stage is cached in OUT/<stage>/ (a rerun skips finished stages and resumes "
                          "interrupted ones; --fresh rebuilds). The defaults shown are the small preset's; "
                          "--preset tiny (a CI smoke run) and --preset paper (the paper's sizes; a GPU job) "
                          "change them, and any flag given overrides its preset.")
    demo.add_argument("--preset", choices=PRESETS, default="small", help="(default: %(default)s)")
    add_dataclass_args(demo, DemoConfig, skip=("preset",))
    demo.set_defaults(**{f: _UNSET for f in DemoConfig.__dataclass_fields__ if f != "preset"})
    demo.add_argument("--fresh", action="store_true", help="rebuild every stage from scratch")
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    demo.set_defaults(func=_demo)

    sw = sub.add_parser("sweep", help="guidance scale x sigma x seed grid in one compiled call (toy world)",
                        description="Sweep guidance strength and metric temperature over several seeds in one "
                        "vmapped, jitted call and report the goal-behaviour rate (table + heat map).")
    add_dataclass_args(sw, ToySceneConfig, skip=("out_dir", "gpc_samples", "gpc_score"))
    sw.add_argument("--sigmas", nargs="+", type=float, default=[0.5, 1.0, 2.0],
                    help="metric temperatures of the grid (default: 0.5 1.0 2.0)")
    sw.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2],
                    help="sampling seeds of the grid, averaged in the table (default: 0 1 2); --seed seeds the "
                         "scene (data, models)")
    sw.add_argument("--out-dir", dest="out_dir", default="runs/sweep", help="(default: %(default)s)")
    sw.add_argument("--quiet", action="store_true", help="no progress bar")
    sw.set_defaults(func=_sweep)

    conv = sub.add_parser("convert", help="convert PyTorch weights to orbax params")
    csub = conv.add_subparsers(dest="what", required=True, metavar="{dinov2,dynamics}")
    d = csub.add_parser("dinov2", help="HF snapshot dir or torch-hub .pth -> orbax",
                        description="Convert DinoV2 weights once; load the result with load_dinov2(OUT).")
    d.add_argument("src", help="HF snapshot directory (config.json + weights) or torch-hub .pth file")
    d.add_argument("out", help="output directory")
    d.add_argument("--num-heads", type=int, default=None, help="hub files only (default: width / 64)")
    d.set_defaults(func=_convert_dinov2)
    y = csub.add_parser("dynamics", help="original FinalStatePredictionDino .pth -> orbax",
                        description="Convert a dynamics checkpoint of the original code; writes OUT/dynamics "
                        "and, when the file holds the frozen encoder, OUT/encoder.")
    y.add_argument("src")
    y.add_argument("out")
    y.add_argument("--num-heads", type=int, default=8)
    y.add_argument("--patches-per-camera", type=int, default=256)
    y.add_argument("--encoder-num-heads", type=int, default=None)
    y.set_defaults(func=_convert_dynamics)

    data = sub.add_parser("data", help="build RLDS datasets, feature caches and goal sets")
    dsub = data.add_subparsers(dest="what", required=True, metavar="{build,cache,goals}")
    db = dsub.add_parser("build", help="raw CALVIN / UMI data -> RLDS (TFDS)")
    db.add_argument("format", choices=["calvin", "umi"])
    db.add_argument("raw", help="CALVIN: folder with training/ and validation/; UMI: dataset.zarr.zip")
    db.add_argument("out", help="TFDS data directory")
    db.set_defaults(func=_data_build)
    dc = dsub.add_parser("cache", help="encode every frame of a split once with DinoV2 (resumable)")
    dc.add_argument("rlds", help="prepared dataset directory (.../calvin_rlds/1.1.0)")
    dc.add_argument("out", help="feature cache directory")
    dc.add_argument("--split", default="train")
    dc.add_argument("--camera", default="observation/rgb_static")
    dc.add_argument("--encoder", default=None, help="DinoV2 weights (default: the small random-weight ViT)")
    dc.add_argument("--image-size", type=int, default=None)
    dc.add_argument("--batch-size", type=int, default=64)
    dc.add_argument("--quiet", action="store_true")
    dc.set_defaults(func=_data_cache)
    dg = dsub.add_parser("goals", help="per-behaviour goal sets (images, proprio, action chunks) from a split",
                         description="Goal sets as the original makes them: the labelled segments' last frames, "
                         "*_displace dropped, a seeded random keep_fraction of the segments, at most "
                         "max_per_behaviour per behaviour; counts.json reports the numbers.")
    dg.add_argument("rlds")
    dg.add_argument("out")
    dg.add_argument("--split", default="validation", help="(default: %(default)s)")
    dg.add_argument("--camera", nargs="+", default=["observation/rgb_static"],
                    help="image field(s); the first is `images` (default: %(default)s)")
    dg.add_argument("--horizon", type=int, default=16,
                    help="length of the repeated-action chunk (default: %(default)s)")
    dg.add_argument("--seed", type=int, default=0, help="seed of the keep draw and the shuffle (default: %(default)s)")
    dg.add_argument("--keep-fraction", type=float, default=0.7,
                    help="probability of keeping each segment (default: %(default)s)")
    dg.add_argument("--max-per-behaviour", type=int, default=20,
                    help="cap per behaviour after a seeded shuffle, 0: none (default: %(default)s)")
    dg.set_defaults(func=_data_goals)

    train = sub.add_parser("train", help="train models (resumes automatically from OUT)")
    tsub = train.add_subparsers(dest="what", required=True, metavar="{policy,dynamics}")
    from dynaguide_jax.policy.train import PolicyTrainConfig

    tp = tsub.add_parser("policy", help="train the diffusion policy (JAX), EMA + orbax checkpoints",
                         description="Train the image diffusion policy; rerunning with the same --out resumes "
                         "exactly where a killed run stopped. --data toy: demonstrations from the built-in "
                         "toy world.")
    tp.add_argument("--data", choices=["toy", "rlds"], default="toy")
    tp.add_argument("--rlds", default=None, help="prepared RLDS dataset (with --data rlds)")
    tp.add_argument("--split", default="train")
    tp.add_argument("--cameras", nargs="+", default=["rgb_gripper", "rgb_static"])
    tp.add_argument("--action-field", default="rel_action")
    tp.add_argument("--model", choices=["paper", "small"], default="paper", help="policy size preset")
    tp.add_argument("--episodes", type=int, default=64)
    tp.add_argument("--length", type=int, default=32)
    tp.add_argument("--data-seed", type=int, default=0)
    tp.add_argument("--goal-conditioned", action="store_true", help="the GC baseline (goal image: --goal-mode)")
    tp.add_argument("--goal-mode", choices=["last", "future"], default="last",
                    help="GC goal: last = the episode's (segment's) final frame, as the original (default); "
                         "future = a random later frame (hindsight)")
    tp.add_argument("--goal-camera", default="rgb_static",
                    help="GC goal image camera (default: rgb_static, the original's third_person)")
    tp.add_argument("--out", default="runs/policy")
    tp.add_argument("--stop-after", type=int, default=None, help="stop after this many total steps")
    tp.add_argument("--quiet", action="store_true")
    add_dataclass_args(tp, PolicyTrainConfig)
    tp.set_defaults(func=_train_policy)

    from dynaguide_jax.training.loop import DynamicsTrainConfig

    td = tsub.add_parser("dynamics", help="train the latent dynamics model, sharded over all devices",
                         description="Data-parallel (or --fsdp N) dynamics training with orbax checkpoints; "
                         "rerunning with the same --out resumes exactly. Multi-host: start one process per "
                         "host with --coordinator HOST:PORT --num-processes N --process-id I. --data toy: "
                         "toy-world demonstrations encoded once into a feature cache under OUT/features.")
    td.add_argument("--data", choices=["toy", "rlds"], default="toy")
    td.add_argument("--rlds", default=None, help="prepared RLDS dataset (with --data rlds)")
    td.add_argument("--features", default=None, help="feature cache of that split (dynaguide data cache)")
    td.add_argument("--split", default="train")
    td.add_argument("--action-field", default="rel_action", help="UMI: action")
    td.add_argument("--proprio-fields", nargs="+", default=["observation/robot_obs"],
                    help="concatenated into the proprio token (UMI: observation/eef_pos observation/eef_rot_axis_angle "
                         "observation/gripper_width)")
    td.add_argument("--action-norm", choices=["clip", "minmax", "none"], default="clip",
                    help="dataset actions -> model actions; keep it the policy's action space (clip: as the "
                         "original and `train policy`); recorded in the run for eval and guidance")
    td.add_argument("--horizon", type=int, default=16, help="action chunk length H (default: 16)")
    td.add_argument("--target", choices=["segment_end", "horizon"], default="segment_end",
                    help="what the model predicts: segment_end (default, the original's) = the final frame of "
                         "the behaviour segment the window starts in, actions zero-filled past its end "
                         "(CALVIN: the segmentation's segments, spanning play ranges; toy world and UMI: "
                         "episodes); horizon = the frame t+H inside the episode")
    td.add_argument("--model", choices=["paper", "small"], default="paper", help="dynamics size preset")
    td.add_argument("--episodes", type=int, default=64)
    td.add_argument("--length", type=int, default=40)
    td.add_argument("--data-seed", type=int, default=0)
    td.add_argument("--encoder", default=None, help="DinoV2 weights (HF dir, hub .pth or converted dir)")
    td.add_argument("--out", default="runs/dynamics")
    td.add_argument("--stop-after", type=int, default=None)
    td.add_argument("--coordinator", default=None, help="HOST:PORT of process 0 (multi-process runs)")
    td.add_argument("--num-processes", type=int, default=1)
    td.add_argument("--process-id", type=int, default=0)
    td.add_argument("--quiet", action="store_true")
    add_dataclass_args(td, DynamicsTrainConfig)
    td.set_defaults(func=_train_dynamics)

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
    ed.set_defaults(func=_eval_dynamics)

    sub.add_parser("bench", help="guided-inference benchmark printing JSON lines (dynaguide bench --help)")
    return p


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["bench"]:  # the benchmark owns its flags (and its --help)
        from dynaguide_jax.benchmark import main as bench_main

        return bench_main(argv[1:], prog="dynaguide bench")
    args = build_parser().parse_args(argv)
    from dynaguide_jax.outputs import NO_SPACE, OutputError, is_disk_full, quiet_disk_full_reports

    try:
        with quiet_disk_full_reports():  # a full disk: this one message, not a traceback per pending write
            return args.func(args)
    except Exception as e:
        if isinstance(e, OutputError):  # names the path and what to do (a full disk during training too)
            msg = str(e)
        elif is_disk_full(e):
            out = next((v for v in (getattr(args, "out", None), getattr(args, "out_dir", None))
                        if isinstance(v, str)), None)
            msg = f"{NO_SPACE} while writing {os.path.abspath(out)}" if out else NO_SPACE
            msg += ": free space and rerun"
        elif isinstance(e, (FileNotFoundError, KeyError, ValueError)):
            msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        else:
            raise
        print(f"dynaguide {args.command}: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
