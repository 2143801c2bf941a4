"""Timing helpers shared by the benchmarks: median latency, per-step time without compiles, and the
device and versions every JSON row carries."""
from __future__ import annotations

import platform
import statistics
import time

import jax


def timed(fn, reps: int) -> float:
    """Median seconds of ``reps`` calls of ``fn`` (its result waited for)."""
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def time_steps(jitted, run_step, n: int) -> tuple[float, float]:
    """``(compile seconds, seconds per call)`` of ``run_step(i)`` (which calls ``jitted``). A settling
    call comes first: a step's outputs may carry other shardings than its first inputs, which
    compiles once more. Raises if a timed call compiled."""
    t0 = time.perf_counter()
    jax.block_until_ready(run_step(0))
    compile_s = time.perf_counter() - t0
    jax.block_until_ready(run_step(1))
    programs = jitted._cache_size()
    t0 = time.perf_counter()
    for i in range(n):
        out = run_step(i + 2)
    jax.block_until_ready(out)
    sec = (time.perf_counter() - t0) / n
    if jitted._cache_size() != programs:
        raise RuntimeError("a timed step compiled: the figures would include compile time")
    return compile_s, sec


def environment() -> dict:
    """The device, platform and versions of this run (every benchmark row carries them)."""
    dev = jax.devices()[0]
    return {"device": dev.device_kind, "platform": dev.platform, "jax": jax.__version__,
            "python": platform.python_version(), "cpu": platform.processor() or platform.machine()}
