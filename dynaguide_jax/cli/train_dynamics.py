"""``dynaguide train dynamics``: the latent dynamics model, sharded over all devices (multi-host too)."""
from __future__ import annotations

import os

from dynaguide_jax.cli.dataclass_args import add_dataclass_args, dataclass_from_args
from dynaguide_jax.outputs import prepare_output_dir


def add_parser(tsub) -> None:
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
    td.add_argument("--dropout", type=float, default=None,
                    help="dropout after attention and in the feed-forward block (default: the model's: paper 0.1)")
    td.add_argument("--attention-dropout", type=float, default=None,
                    help="dropout on the attention probabilities (default: --dropout, as torch's layer and the "
                         "original; 0 lets the attention run as one fused kernel)")
    td.add_argument("--episodes", type=int, default=64)
    td.add_argument("--length", type=int, default=40)
    td.add_argument("--data-seed", type=int, default=0)
    td.add_argument("--encoder", default=None, help="DinoV2 weights (HF dir, hub .pth or converted dir)")
    td.add_argument("--out", default="runs/dynamics")
    td.add_argument("--stop-after", type=int, default=None,
                    help="stop (checkpointed, resumable) after this many steps (default: none, run all --steps)")
    td.add_argument("--coordinator", default=None, help="HOST:PORT of process 0 (multi-process runs)")
    td.add_argument("--num-processes", type=int, default=1)
    td.add_argument("--process-id", type=int, default=0)
    td.add_argument("--quiet", action="store_true")
    add_dataclass_args(td, DynamicsTrainConfig)
    td.set_defaults(func=run)


def rlds_dynamics_data(args):
    """``(DynamicsConfig, DynamicsWindows, data info recorded in the run)`` of an RLDS split and its
    feature cache."""
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


def with_dropout(cfg, dropout: float | None, attention_dropout: float | None):
    """``cfg`` with the given dropout rates (``None`` keeps the model's); bad rates fail in the config."""
    if dropout is not None:
        cfg = cfg.replace(dropout=dropout)
    if attention_dropout is not None:
        cfg = cfg.replace(attention_dropout=attention_dropout)
    return cfg


def run(args) -> int:
    from dynaguide_jax.training import DynamicsTrainConfig, init_distributed, train_dynamics

    if args.coordinator:
        init_distributed(args.coordinator, args.num_processes, args.process_id)
    cfg = dataclass_from_args(DynamicsTrainConfig, args)
    for flag, rate in (("--dropout", args.dropout), ("--attention-dropout", args.attention_dropout)):
        if rate is not None and not 0.0 <= rate < 1.0:
            raise ValueError(f"{flag} must be in [0, 1), got {rate}")
    import jax

    from dynaguide_jax.layers import pallas_interpreted

    interpreted = cfg.attention == "pallas" and pallas_interpreted()  # other backends: refused before any work
    prepare_output_dir(args.out)
    if interpreted and jax.process_index() == 0:
        print("attention: the Pallas kernel runs interpreted on this CPU backend (a correctness mode, slower than "
              "--attention xla; it compiles on NVIDIA GPUs)")
    if args.data == "toy":
        from dynaguide_jax.data.toy import toy_dynamics_data

        model_cfg, windows = toy_dynamics_data(args.out, args.episodes, args.length, seed=args.data_seed,
                                               encoder_path=args.encoder, progress=not args.quiet,
                                               target=args.target)
        info = {"source": "toy", "data_seed": args.data_seed, "episodes": args.episodes, "length": args.length,
                "encoder": args.encoder and os.path.abspath(args.encoder),
                "action_transform": windows.action_transform.to_dict(), "target": windows.target}
    else:
        model_cfg, windows, info = rlds_dynamics_data(args)
    model_cfg = with_dropout(model_cfg, args.dropout, args.attention_dropout)
    result = train_dynamics(model_cfg, lambda step, rows: windows.batch(step, cfg.global_batch, cfg.seed, rows),
                            cfg, args.out, progress=not args.quiet, stop_after=args.stop_after, data_info=info)
    if jax.process_index() == 0:
        if result.resumed_from is not None:
            print(f"resumed from step {result.resumed_from}")
        print(f"trained the dynamics model on {jax.device_count()} device(s), {jax.process_count()} process(es); "
              f"last metrics {result.last_metrics}; run directory {args.out}")
    return 0
