"""``--jobs``: worker processes for the independent stages of the demo and the experiments."""
from __future__ import annotations

DEMO_WORK = "independent stages (features + dynamics, base policy, GC policy) and the evaluation's methods"


def add_jobs_arg(parser, work: str = DEMO_WORK) -> None:
    parser.add_argument("--jobs", type=int, default=None, metavar="N",
                        help=f"worker processes for {work}, each pinned to its own cores (default: one per CPU "
                             "core on a CPU backend, 1 on a GPU or TPU; 1 runs everything in this process)")


def resolve_jobs(jobs: int | None) -> int:
    """``--jobs`` as given, or the default; more than one worker only on a CPU backend (workers on one
    accelerator would each claim its memory)."""
    from dynaguide_jax.demo.parallel import default_jobs

    if jobs is None:
        return default_jobs()
    if jobs < 1:
        raise ValueError(f"--jobs must be >= 1, got {jobs}")
    if jobs > 1 and default_jobs() == 1:
        import jax

        if jax.default_backend() != "cpu":
            raise ValueError(f"--jobs {jobs} runs CPU worker processes; on the {jax.default_backend()} backend "
                             "use --jobs 1 (the default there)")
    return jobs
