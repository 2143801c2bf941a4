"""``dynaguide data``: RLDS datasets from raw data, frozen-encoder feature caches, goal sets, and the
built-in world's play as raw CALVIN files (``data_play``)."""
from __future__ import annotations

from dynaguide_jax.cli import data_play
from dynaguide_jax.outputs import prepare_output_dir


def add_parser(sub) -> None:
    data = sub.add_parser("data", help="build RLDS datasets, feature caches and goal sets")
    dsub = data.add_subparsers(dest="what", required=True, metavar="{build,cache,goals,reset-poses,play}")
    db = dsub.add_parser("build", help="raw CALVIN / UMI data -> RLDS (TFDS)")
    db.add_argument("format", choices=["calvin", "umi"])
    db.add_argument("raw", help="CALVIN: folder with training/ and validation/; UMI: dataset.zarr.zip")
    db.add_argument("out", help="TFDS data directory")
    db.add_argument("--quiet", action="store_true", help="no progress bars")
    db.set_defaults(func=run_build)
    dc = dsub.add_parser("cache", help="encode every frame of a split once with DinoV2 (resumable)")
    dc.add_argument("rlds", help="prepared dataset directory (.../calvin_rlds/1.1.0)")
    dc.add_argument("out", help="feature cache directory")
    dc.add_argument("--split", default="train")
    dc.add_argument("--camera", default="observation/rgb_static")
    dc.add_argument("--encoder", default=None, help="DinoV2 weights (default: the small random-weight ViT)")
    dc.add_argument("--image-size", type=int, default=None,
                    help="input size in px (default: the encoder's: 224 with --encoder, 56 for the random ViT)")
    dc.add_argument("--batch-size", type=int, default=64)
    dc.add_argument("--quiet", action="store_true")
    dc.set_defaults(func=run_cache)
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
    dg.set_defaults(func=run_goals)
    dr = dsub.add_parser("reset-poses", help="the original's robot reset-pose lists from a split's segments",
                         description="The robot 8 frames into each labelled segment, kept with the gripper open "
                         "(width >= 0.075) and the tcp at z >= 0.53 m: initial_calvin_robot_states_midpoint.json, "
                         "and ..._right_side_midpoint.json with x in [0, 0.35] too (the original's "
                         "retrieve_initial_robot_states.py; read by `dynaguide experiment --reset-poses-dir`).")
    dr.add_argument("rlds")
    dr.add_argument("out")
    dr.add_argument("--split", default="validation", help="(default: %(default)s)")
    dr.set_defaults(func=run_reset_poses)
    data_play.add_parser(dsub)


def run_build(args) -> int:
    prepare_output_dir(args.out, "OUT")
    if args.format == "calvin":
        from data_pipelines.calvin.builder import build_calvin

        path = build_calvin(args.raw, args.out, progress=not args.quiet)
    else:
        from data_pipelines.umi.builder import build_umi

        path = build_umi(args.raw, args.out, progress=not args.quiet)
    print(f"RLDS dataset ready at {path}")
    return 0


def run_cache(args) -> int:
    from dynaguide_jax.data.features import build_feature_cache
    from dynaguide_jax.data.rlds import FrameStream
    from dynaguide_jax.data.toy import toy_encoder

    prepare_output_dir(args.out, "OUT")
    enc_cfg, enc_params, size = toy_encoder(args.encoder)
    if args.image_size:
        size = args.image_size
    frames = FrameStream(args.rlds, args.split, args.camera)
    feats = build_feature_cache(args.out, frames, enc_cfg, enc_params, size, batch_size=args.batch_size,
                                progress=not args.quiet)
    print(f"cached {feats.shape} features of {args.camera} ({args.split}) in {args.out}")
    return 0


def run_goals(args) -> int:
    from dynaguide_jax.data.rlds import export_guidance_conditions

    prepare_output_dir(args.out, "OUT")
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


def run_reset_poses(args) -> int:
    from dynaguide_jax.data.reset_poses import reset_pose_file
    from dynaguide_jax.data.rlds import export_reset_poses

    prepare_output_dir(args.out, "OUT")
    counts = export_reset_poses(args.rlds, args.out, args.split)
    if not any(counts.values()):
        raise ValueError(f"no segment of the {args.split} split gives a reset pose (the robot 8 frames in with the "
                         "gripper open and z >= 0.53 m): nothing written")
    for name, n in counts.items():
        print(f"{name}: {n} poses" + (f" -> {reset_pose_file(args.out, name)}" if n else
                                      " (no segment passes: not written)"))
    return 0
