"""``python benchmarks/gpu_suite.py``: the README's GPU benchmark list as one bounded run
(``bench/suite.py`` runs it). The steps come most important first: what issue 13's figures need, then
the kernel choices, then the rest, so a budget cut short loses the least."""
from __future__ import annotations

import argparse

from dynaguide_jax.bench.suite import SuiteStep

_ENTRY = "import sys; from dynaguide_jax.cli.bench import {fn}; sys.exit({fn}(sys.argv[1:]))"
GUIDED, TRAINING, INPUT = (_ENTRY.format(fn=f) for f in
                           ("run_guided_inference", "run_dynamics_training", "run_input_pipeline"))
_ENVIRONMENT = "from dynaguide_jax.bench.suite import print_environment; print_environment()"
_PYTEST = "import sys, pytest; sys.exit(pytest.main(sys.argv[1:]))"
_BF16_GUIDED = ("--dtypes", "bfloat16", "--policy", "false")

GPU_STEPS = (
    SuiteStep("environment", _ENVIRONMENT, timeout_s=90),
    SuiteStep("guided_bf16", GUIDED, _BF16_GUIDED, timeout_s=240),
    SuiteStep("flash_attention_compiled", _PYTEST,
              ("-q", "-p", "no:cacheprovider", "tests/test_flash_attention.py", "-k", "compiled"),
              timeout_s=150, env=(("JAX_PLATFORMS", "cuda"),), needs="tests/test_flash_attention.py"),
    SuiteStep("training_bf16", TRAINING, ("--dtypes", "bfloat16", "--modes", "features"), timeout_s=240),
    SuiteStep("precompute_pallas", GUIDED, _BF16_GUIDED + ("--attention", "xla", "cudnn", "--precompute", "none",
                                                          "projections", "attention", "--pallas", "off", "on"),
              timeout_s=300),
    SuiteStep("paper_policy", GUIDED, ("--dtypes", "bfloat16", "--stand-in", "false"), timeout_s=240),
    SuiteStep("guided_fp32", GUIDED, ("--dtypes", "float32", "--policy", "false", "--attention", "xla"),
              timeout_s=240),
    SuiteStep("training_sweep", TRAINING, ("--global-batch", "128", "256", "512", "--remat", "false", "true",
                                           "--dtypes", "bfloat16", "--modes", "features"), timeout_s=360),
    SuiteStep("training_pixels", TRAINING, ("--modes", "pixels"), timeout_s=240),
    SuiteStep("command_buffers", GUIDED, _BF16_GUIDED + ("--attention", "xla"), timeout_s=240,
              env=(("XLA_FLAGS", "--xla_gpu_enable_command_buffer=+WHILE,+CONDITIONAL"),)),
    SuiteStep("unroll", GUIDED, _BF16_GUIDED + ("--attention", "xla", "--unroll", "1", "4", "--batch-sizes", "1"),
              timeout_s=300),
    SuiteStep("input_pipeline", INPUT, timeout_s=300),
)
STEP_NAMES = tuple(s.name for s in GPU_STEPS)


def select_steps(names) -> tuple[SuiteStep, ...]:
    """The steps named (in the suite's order), or all of them for ``None``; unknown names raise."""
    if names is None:
        return GPU_STEPS
    unknown = sorted(set(names) - set(STEP_NAMES))
    if unknown:
        raise ValueError(f"unknown suite step(s) {unknown}; the steps are {list(STEP_NAMES)}")
    return tuple(s for s in GPU_STEPS if s.name in set(names))


def parser(prog: str | None = None) -> argparse.ArgumentParser:
    from dynaguide_jax.bench import suite

    p = argparse.ArgumentParser(prog=prog, description=suite.__doc__ + "\n" + __doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/bench_suite",
                   help="folder for results.jsonl, log.txt, summary.json, summary.md (default: %(default)s)")
    p.add_argument("--budget-s", type=float, default=540.0,
                   help="seconds for the whole suite; each step also has its own limit (default: %(default)s)")
    p.add_argument("--steps", nargs="+", choices=STEP_NAMES, metavar="STEP",
                   help="run only these steps, in the suite's order (default: all; --list shows their commands): "
                   + ", ".join(STEP_NAMES))
    p.add_argument("--list", action="store_true", help="print the steps and their commands, run nothing")
    return p


def run_gpu_suite(argv=None) -> int:
    from dynaguide_jax.bench.suite import run_suite

    args = parser().parse_args(argv)
    if not args.budget_s > 0:
        parser().error(f"--budget-s must be > 0, got {args.budget_s}")
    steps = select_steps(args.steps)
    if args.list:
        for s in steps:
            print(f"{s.name} (at most {s.timeout_s:.0f} s): {s.shell_line()}")
        return 0
    results = run_suite(steps, args.out, budget_s=args.budget_s)
    print(f"wrote {args.out}/summary.md: " + ", ".join(f"{r['name']} {r['status']}" for r in results))
    return 0 if all(r["status"] == "ok" or r["status"].startswith("skipped") for r in results) else 1
