"""Closed-loop guidance sweep on the built-in world: DynaGuide's success on one target for every
(scale, M, σ) of a grid, all grid points and rollouts in one compiled program, the same start states
and keys for every point. Models come from --models-dir (trained there by the demo's stages when
missing). Writes OUT/{sweep.json,sweep.md,sweep.png} (success against the scale, one line per M and σ)."""
from __future__ import annotations

from dynaguide_jax.cli.dataclass_args import add_dataclass_args, given_fields
from dynaguide_jax.outputs import prepare_output_dir

SKIP = ("preset", "out_dir", "methods", "gifs", "scale", "repeats", "sigma", "gpc_samples", "itps_scale")
SWEEPABLE = ("articulated_parts", "movable_objects", "underspecified_objectives", "multi_objectives")


def add_parser(sub) -> None:
    from dynaguide_jax.demo import PRESETS, DemoConfig

    sw = sub.add_parser("sweep", help="closed-loop scale x M x sigma grid on the built-in world, one program",
                        description=__doc__)
    sw.add_argument("--experiment", choices=SWEEPABLE, default="articulated_parts",
                    help="whose target, goal set and reset setup (default: %(default)s)")
    sw.add_argument("--target", default="switch_on", help="the target (default: %(default)s)")
    sw.add_argument("--scales", nargs="+", type=float, default=[0.0, 0.5, 1.0, 1.5, 2.0, 3.0],
                    help="guidance scales (default: 0.0 0.5 1.0 1.5 2.0 3.0)")
    sw.add_argument("--repeats", nargs="+", type=int, default=[1, 4], help="M values (default: 1 4)")
    sw.add_argument("--sigmas", nargs="+", type=float, default=[30.0],
                    help="metric temperatures on the original's scale (its --alpha, set for 256 x 384 predicted "
                    "features), applied scaled to the dynamics model's (guidance.paper_scaled_sigma: x 1/4 on the "
                    "small preset) (default: 30.0)")
    sw.add_argument("--preset", choices=PRESETS, default="small", help="(default: %(default)s)")
    sw.add_argument("--models-dir", help="trained models (default: runs/demo for the small preset, else "
                    "runs/demo-PRESET)")
    sw.add_argument("--out-dir", default="runs/sweep", help="(default: %(default)s)")
    add_dataclass_args(sw, DemoConfig, skip=SKIP, only_given=True)
    sw.add_argument("--quiet", action="store_true", help="no progress bars")
    sw.set_defaults(func=run)


def run(args) -> int:

    from dynaguide_jax.demo import DemoConfig
    from experiments import get_experiment
    from experiments.run import default_models_dir
    from experiments.sweep import check_grid, closed_loop_sweep, format_sweep_table, write_sweep
    from experiments.tabletop import TabletopBackend

    explicit = given_fields(DemoConfig, args, SKIP)
    cfg = DemoConfig.for_preset(args.preset, **explicit)
    experiment = get_experiment(args.experiment).with_targets([args.target])
    for name, values, integer in (("scales", args.scales, False), ("repeats", args.repeats, True),
                                  ("sigmas", args.sigmas, False)):
        check_grid(name, values, integer)  # before any model is trained
    prepare_output_dir(args.out_dir, "--out-dir")
    models_dir = args.models_dir or default_models_dir(cfg.preset)
    prepare_output_dir(models_dir, "--models-dir")
    backend = TabletopBackend(experiment, cfg, models_dir, args.out_dir, progress=not args.quiet)
    result = closed_loop_sweep(backend, args.target, args.scales, args.repeats, args.sigmas, cfg)
    print(format_sweep_table(result))
    print("\nwrote " + ", ".join(write_sweep(result, args.out_dir)))
    return 0
