"""``dynaguide bench`` and the scripts in ``benchmarks/``: command-line front ends of the benchmarks in
``dynaguide_jax.bench`` (each owns its flags, one per config field, and prints JSON lines)."""
from __future__ import annotations

import dataclasses
import json

from dynaguide_jax.cli.dataclass_args import dataclass_from_args, dataclass_parser


def add_parser(sub) -> None:
    """A placeholder listed in ``dynaguide --help``: ``main`` hands ``dynaguide bench ...`` to
    ``run_guided_inference`` before parsing."""
    sub.add_parser("bench", help="guided-inference benchmark printing JSON lines (dynaguide bench --help)")


def guided_inference_parser(prog: str | None = None):
    from dynaguide_jax.bench import guided_inference

    p = dataclass_parser(guided_inference.BenchConfig, guided_inference.__doc__, prog)
    p.add_argument("--out", help="also append the JSON lines to this file")
    return p


def run_guided_inference(argv=None, prog: str | None = None) -> int:
    """``python benchmarks/guided_inference.py`` and ``dynaguide bench``."""
    import jax

    from dynaguide_jax.bench.guided_inference import BenchConfig, run_benchmark, run_policy_benchmark

    args = guided_inference_parser(prog).parse_args(argv)
    cfg = dataclass_from_args(BenchConfig, args)
    if jax.devices()[0].platform == "cpu" and args.batch_sizes == list(BenchConfig.batch_sizes):
        # a batch-64 guided chunk is ~60 TFLOP: minutes per repetition on a laptop-class CPU
        cfg = dataclasses.replace(cfg, batch_sizes=(1, 4))
    rows = run_benchmark(cfg)
    if cfg.policy:
        rows += run_policy_benchmark(cfg)
    if args.out:
        with open(args.out, "a") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
    return 0


def dynamics_training_parser(prog: str | None = None):
    from dynaguide_jax.bench import dynamics_training

    return dataclass_parser(dynamics_training.TrainBenchConfig, dynamics_training.__doc__, prog)


def run_dynamics_training(argv=None) -> int:
    """``python benchmarks/dynamics_training.py``."""
    import jax

    from dynaguide_jax.bench.dynamics_training import TrainBenchConfig, run

    args = dynamics_training_parser().parse_args(argv)
    cfg = dataclass_from_args(TrainBenchConfig, args)
    if jax.devices()[0].platform == "cpu" and cfg.global_batch == TrainBenchConfig.global_batch:
        cfg = dataclasses.replace(cfg, global_batch=(8,), steps=3)  # a CPU cannot do 256 in useful time
    run(cfg)
    return 0


def input_pipeline_parser(prog: str | None = None):
    from dynaguide_jax.bench import input_pipeline

    return dataclass_parser(input_pipeline.InputBenchConfig, input_pipeline.__doc__, prog)


def run_input_pipeline(argv=None) -> int:
    """``python benchmarks/input_pipeline.py``."""
    from dynaguide_jax.bench.input_pipeline import InputBenchConfig, run

    run(dataclass_from_args(InputBenchConfig, input_pipeline_parser().parse_args(argv)))
    return 0


def gpu_suite_parser(prog: str | None = None):
    import argparse

    from dynaguide_jax.bench import suite

    p = argparse.ArgumentParser(prog=prog, description=suite.__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/bench_suite",
                   help="folder for results.jsonl, log.txt, summary.json, summary.md (default: %(default)s)")
    p.add_argument("--budget-s", type=float, default=540.0,
                   help="seconds for the whole suite; each step also has its own limit (default: %(default)s)")
    p.add_argument("--steps", nargs="+", choices=suite.STEP_NAMES, metavar="STEP",
                   help="run only these steps, in the suite's order (default: all; --list shows their commands): "
                   + ", ".join(suite.STEP_NAMES))
    p.add_argument("--list", action="store_true", help="print the steps and their commands, run nothing")
    return p


def run_gpu_suite(argv=None) -> int:
    """``python benchmarks/gpu_suite.py``: the README's GPU benchmark list in one bounded run."""
    from dynaguide_jax.bench.suite import run_suite, select_steps

    args = gpu_suite_parser().parse_args(argv)
    if not args.budget_s > 0:
        gpu_suite_parser().error(f"--budget-s must be > 0, got {args.budget_s}")
    steps = select_steps(args.steps)
    if args.list:
        for s in steps:
            env = " ".join(f"{k}={v}" for k, v in s.env)
            print(f"{s.name} (at most {s.timeout_s:.0f} s): {env + ' ' if env else ''}python -c {s.code!r} "
                  + " ".join(s.args))
        return 0
    results = run_suite(steps, args.out, budget_s=args.budget_s)
    print(f"wrote {args.out}/summary.md: " + ", ".join(f"{r['name']} {r['status']}" for r in results))
    return 0 if all(r["status"] in ("ok",) or r["status"].startswith("skipped") for r in results) else 1


# every benchmark's parser, for the --help checks
PARSERS = {"bench": guided_inference_parser, "dynamics_training": dynamics_training_parser,
           "input_pipeline": input_pipeline_parser, "gpu_suite": gpu_suite_parser}
