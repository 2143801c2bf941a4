"""``--jobs``: worker processes for the independent stages of the demo and the experiments."""
from __future__ import annotations


def add_jobs_arg(parser) -> None:
    parser.add_argument("--jobs", type=int, default=None, metavar="N",
                        help="worker processes for independent stages (features + dynamics, base policy, GC policy) "
                             "and for the evaluation's methods, each pinned to its own cores (default: one per CPU "
                             "core on a CPU backend, 1 on a GPU or TPU; 1 runs everything in this process)")


def resolve_jobs(jobs: int | None) -> int:
    if jobs is None:
        from dynaguide_jax.demo.parallel import default_jobs

        return default_jobs()
    if jobs < 1:
        raise ValueError(f"--jobs must be >= 1, got {jobs}")
    return jobs
