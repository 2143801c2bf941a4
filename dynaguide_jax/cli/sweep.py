"""``dynaguide sweep``: guidance scale x sigma x seed grid on the toy world, in one compiled call."""
from __future__ import annotations

import json
import os

from dynaguide_jax.cli.dataclass_args import add_dataclass_args, dataclass_from_args
from dynaguide_jax.outputs import prepare_output_dir


def add_parser(sub) -> None:
    from dynaguide_jax.toy_demo import ToySceneConfig

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
    sw.set_defaults(func=run)


def run(args) -> int:
    from dynaguide_jax.toy_demo import ToySceneConfig, format_sweep, run_sweep, save_sweep_plot

    cfg = dataclass_from_args(ToySceneConfig, args)
    prepare_output_dir(cfg.out_dir, "--out-dir")
    result = run_sweep(cfg, args.seeds, args.sigmas, progress=not args.quiet)
    print(format_sweep(result))
    os.makedirs(cfg.out_dir, exist_ok=True)
    with open(os.path.join(cfg.out_dir, "sweep.json"), "w") as f:
        json.dump(result, f, indent=2)
    print("\nwrote " + os.path.join(cfg.out_dir, "sweep.json") + ", "
          + save_sweep_plot(result, os.path.join(cfg.out_dir, "sweep.png")))
    return 0
