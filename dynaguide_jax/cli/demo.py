"""Generate play data in the built-in tabletop world, build the RLDS dataset, cache DinoV2 features,
train the base policy, the GC policy and the dynamics model, then roll out every method (base,
DynaGuide, GC, GPC, ITPS) in closed loop for the 8 articulated targets. Writes
OUT/{results.json,table.md,table.csv,success.png} and GIFs; each stage is cached in OUT/<stage>/ (a
rerun skips finished stages and resumes interrupted ones; --fresh rebuilds). The defaults shown are
the small preset's; --preset tiny (a CI smoke run) and --preset paper (the paper's sizes; a GPU job)
change them, and any flag given overrides its preset."""  # `dynaguide demo --help` shows this text
from __future__ import annotations

from dynaguide_jax.cli.dataclass_args import add_dataclass_args, given_fields
from dynaguide_jax.cli.jobs import add_jobs_arg, resolve_jobs
from dynaguide_jax.outputs import prepare_output_dir


def add_parser(sub) -> None:
    from dynaguide_jax.demo import PRESETS, DemoConfig

    demo = sub.add_parser("demo", help="the paper's ArticulatedParts experiment on the built-in world (offline)",
                          description=__doc__)
    demo.add_argument("--preset", choices=PRESETS, default="small", help="(default: %(default)s)")
    add_dataclass_args(demo, DemoConfig, skip=("preset",), only_given=True)  # unset: the preset decides
    demo.add_argument("--fresh", action="store_true", help="rebuild every stage from scratch")
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    add_jobs_arg(demo)
    demo.set_defaults(func=run)


def run(args) -> int:
    from dynaguide_jax.demo import DemoConfig, run_demo

    explicit = given_fields(DemoConfig, args, ("preset",))
    cfg = DemoConfig.for_preset(args.preset, **explicit)
    jobs = resolve_jobs(args.jobs)
    prepare_output_dir(cfg.out_dir, "--out-dir")
    run_demo(cfg, fresh=args.fresh, progress=not args.quiet, jobs=jobs)
    return 0
