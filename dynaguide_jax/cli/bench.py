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
    if not (cfg.stand_in or cfg.policy):
        guided_inference_parser(prog).error("--stand-in false --policy false leaves nothing to time")
    rows = run_benchmark(cfg) if cfg.stand_in else []
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
    from dynaguide_jax.cli.gpu_suite import parser

    return parser(prog)


# every benchmark's parser, for the --help checks
PARSERS = {"bench": guided_inference_parser, "dynamics_training": dynamics_training_parser,
           "input_pipeline": input_pipeline_parser, "gpu_suite": gpu_suite_parser}
