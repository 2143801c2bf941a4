"""Run one of the paper's experiments (ArticulatedParts, MovableObjects, UnderspecifiedObjectives,
MultiObjectives, UnderrepresentedBehaviors) with the original's settings for every target, every
method, closed loop. --env tabletop (the default) runs it offline on the built-in world with models
trained by the demo's stages in --models-dir (reused when present; a `dynaguide demo` output of the
same preset works); --env calvin runs it in the CALVIN simulator (calvin_env + pybullet) with your
converted or JAX-trained models. Resumable: finished rollouts are kept in OUT/cells/ and never redone;
rerun the same command after an interruption. Writes OUT/{results.json,table.md,table.csv} and the
experiment's figure (PNG). World, model and evaluation sizes come from --preset; any flag overrides it."""
from __future__ import annotations

from dynaguide_jax.cli.dataclass_args import add_dataclass_args, given_fields
from dynaguide_jax.cli.jobs import add_jobs_arg, resolve_jobs
from dynaguide_jax.outputs import prepare_output_dir

# per-target settings come from the experiment's config, not from flags
SKIP = ("preset", "out_dir", "methods", "gifs", "scale", "repeats", "sigma", "gpc_samples", "itps_scale")


def add_parser(sub) -> None:
    from dynaguide_jax.demo import PRESETS, DemoConfig
    from experiments import EXPERIMENTS
    from experiments.run import ENVS

    p = sub.add_parser("experiment", help="one of the paper's five experiments, every method and target (resumable)",
                       description=__doc__)
    p.add_argument("name", choices=sorted(EXPERIMENTS), help="the experiment")
    p.add_argument("--env", choices=ENVS, default="tabletop", help="where the rollouts run (default: %(default)s)")
    p.add_argument("--preset", choices=PRESETS, help="(default: small with --env tabletop, paper with --env calvin: "
                   "horizon 400, 100 rollouts, DinoV2 at 224 px)")
    p.add_argument("--targets", nargs="+", help="run only these targets (default: all of the experiment's)")
    p.add_argument("--methods", nargs="+", help="run only these methods (default: all of the experiment's)")
    p.add_argument("--out-dir", help="results (default: runs/experiments/NAME-PRESET)")
    p.add_argument("--models-dir", help="trained models on the built-in world (default: runs/demo, the demo's "
                   "output, for the small preset; runs/demo-PRESET for the others)")
    p.add_argument("--chunk", type=int, default=8, help="rollouts per compiled call and per saved file "
                   "(default: %(default)s)")
    calvin = p.add_argument_group("--env calvin (the CALVIN simulator)")
    calvin.add_argument("--policy", help="base policy: a robomimic checkpoint (.pth) or a `dynaguide train policy` "
                        "dir; also with --env tabletop: a `dynaguide train policy` run on built-in-world play in "
                        "place of the demo's (the GC policy, dynamics model and goals stay the demo's)")
    calvin.add_argument("--gc-policy", help="goal-conditioned policy (same formats), for the GC method")
    calvin.add_argument("--dynamics", help="dynamics model: the original's .pth or a `dynaguide train dynamics` dir")
    calvin.add_argument("--goals-dir", help="goal sets: goals_<behaviour>.npz files (`dynaguide data goals`)")
    calvin.add_argument("--reset-poses-dir", help="the original's reset_poses/*.json (robot start poses)")
    calvin.add_argument("--workers", type=int, default=4, help="simulator processes (default: %(default)s)")
    add_dataclass_args(p, DemoConfig, skip=SKIP, only_given=True)
    p.add_argument("--fresh", action="store_true", help="retrain the models and rerun every rollout")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_jobs_arg(p, "the model stages (features + dynamics, base policy, GC policy)")
    p.set_defaults(func=run)


def run(args) -> int:
    import os

    from dynaguide_jax.demo import DemoConfig
    from experiments import get_experiment
    from experiments.run import run_experiment, select

    explicit = given_fields(DemoConfig, args, SKIP)
    cfg = DemoConfig.for_preset(args.preset or ("paper" if args.env == "calvin" else "small"), **explicit)
    experiment, methods = select(get_experiment(args.name), args.targets, args.methods)
    jobs = resolve_jobs(args.jobs)
    if args.chunk < 1:
        raise ValueError(f"--chunk must be >= 1, got {args.chunk}")
    out = args.out_dir or os.path.join("runs", "experiments", f"{experiment.name}-{cfg.preset}")
    prepare_output_dir(out, "--out-dir")
    calvin = None
    if args.env == "calvin":
        from experiments.calvin import CalvinSources

        calvin = CalvinSources(policy=args.policy, gc_policy=args.gc_policy, dynamics=args.dynamics,
                               goals_dir=args.goals_dir, reset_poses_dir=args.reset_poses_dir, encoder=cfg.encoder,
                               workers=args.workers)
    else:
        given = [f for f in ("gc_policy", "dynamics", "goals_dir", "reset_poses_dir") if getattr(args, f)]
        if given:
            raise ValueError(f"{', '.join('--' + f.replace('_', '-') for f in given)} apply to --env calvin only "
                             "(the built-in world uses the demo's models in --models-dir; --policy replaces its base "
                             "policy)")
        if args.policy and not os.path.exists(args.policy):
            raise FileNotFoundError(f"--policy: {args.policy} does not exist")
        if args.models_dir:
            prepare_output_dir(args.models_dir, "--models-dir")
    run_experiment(experiment, cfg, out, env=args.env, models_dir=args.models_dir, methods=methods, chunk=args.chunk,
                   fresh=args.fresh, progress=not args.quiet, calvin=calvin, jobs=jobs,
                   policy=args.policy if args.env == "tabletop" else None)
    return 0
