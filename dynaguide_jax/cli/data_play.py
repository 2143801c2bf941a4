"""Generate scripted play in the built-in tabletop world (behaviours chained as in CALVIN's
teleoperated play) and write it in the raw CALVIN layout: OUT/training/ and OUT/validation/ (the last
--validation-streams streams) with one .npz per frame, ep_start_end_ids.npy, language annotations and
statistics.yaml. The defaults are `dynaguide demo`'s small preset; build the RLDS dataset with
`dynaguide data build calvin OUT TFDS_DIR`. OUT must be new, empty, or an earlier play (replaced)."""
# `dynaguide data play --help` shows the docstring; the demo's first stage writes the same files
from __future__ import annotations

import argparse
import os

from dynaguide_jax.outputs import prepare_output_dir


def _count(minimum: int):
    """An argparse type: an integer >= ``minimum`` (argparse names the flag in its error)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}")
        return value
    return parse


def add_parser(dsub) -> None:
    from dynaguide_jax.demo.config import DemoConfig  # the defaults: the demo's small preset

    dp = dsub.add_parser("play", help="the built-in world's play data -> raw CALVIN files", description=__doc__)
    dp.add_argument("--out", default="runs/play", help="raw CALVIN folder (default: %(default)s)")
    dp.add_argument("--seed", type=int, default=DemoConfig.seed, help="play seed (default: %(default)s)")
    dp.add_argument("--streams", type=_count(1), default=DemoConfig.play_streams,
                    help="independent play streams, each from a reset (default: %(default)s)")
    dp.add_argument("--steps", type=_count(1), default=DemoConfig.play_steps,
                    help="frames per stream (default: %(default)s)")
    dp.add_argument("--validation-streams", type=_count(0), default=DemoConfig.validation_streams,
                    help="streams written to validation/, fewer than --streams (default: %(default)s)")
    dp.add_argument("--image-size", type=_count(16), default=DemoConfig.image_size,
                    help="static camera size (even); the gripper camera is half of it, or 84 with 200 as in CALVIN "
                         "(default: %(default)s)")
    dp.add_argument("--block-weight", type=float, default=DemoConfig.block_play_weight,
                    help="how often block behaviours (lift, push) are chosen relative to each articulated one; "
                         "1 = all alike (default: %(default)s)")
    dp.add_argument("--perturb", type=float, default=DemoConfig.play_perturb,
                    help="recoveries: per step of an expert's approach, the chance that a push of 4..10 steps starts; "
                         "the recorded action is the expert's correction (default: %(default)s)")
    dp.add_argument("--quiet", action="store_true", help="no progress bar")
    dp.set_defaults(func=run)


def run(args) -> int:
    from dynaguide_jax.envs import write_world_play

    if args.validation_streams >= args.streams:
        raise ValueError(f"--validation-streams {args.validation_streams} must be less than --streams "
                         f"{args.streams}: at least one stream trains")
    if not 0 <= args.block_weight < float("inf"):
        raise ValueError(f"--block-weight must be a finite number >= 0, got {args.block_weight}")
    if not 0 <= args.perturb <= 1:
        raise ValueError(f"--perturb must be a probability in [0, 1], got {args.perturb}")
    if args.image_size % 2:
        raise ValueError(f"--image-size must be even (the gripper camera is half of it), got {args.image_size}")
    out = prepare_output_dir(args.out)
    if os.listdir(out) and not os.path.isfile(os.path.join(out, "play_config.json")):
        raise ValueError(f"--out {out} holds other files: pass a new or empty directory (an earlier "
                         "`dynaguide data play` output is replaced)")
    summary = write_world_play(out, args.seed, args.streams, args.steps, args.validation_streams, args.image_size,
                               overwrite=True, progress=not args.quiet, block_weight=args.block_weight,
                               perturb_rate=args.perturb)
    for split, s in summary["splits"].items():
        print(f"{split:>10}: {s['frames']} frames, {s['ranges']} play ranges, {s['annotations']} annotated "
              "behaviours")
    print(f"raw CALVIN play in {out} ({summary['generate_seconds']:.0f} s generating, "
          f"{summary['write_seconds']:.0f} s writing); next: dynaguide data build calvin {out} TFDS_DIR")
    return 0
