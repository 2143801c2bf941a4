"""Independent work of the demo run side by side: one worker process per group of CPU cores.

XLA runs these small models' programs on about one core each, so on a CPU the demo's independent
stages (features + dynamics model, base policy, GC policy) and the evaluation's methods finish
sooner in parallel processes, each pinned to its own cores (Linux; elsewhere unpinned). A task is a
module-level function and its arguments (both picklable: workers are spawned, not forked, since
JAX's runtime does not survive a fork). Tasks start as soon as their dependencies are done and a
worker is free, in the order that gives the smallest makespan under the estimated costs (every
order is tried for up to ``EXHAUSTIVE`` tasks, longest-path-first otherwise).
"""
from __future__ import annotations

import contextlib
import itertools
import multiprocessing as mp
import os
import pickle
import threading
import time
import traceback
from multiprocessing.connection import wait
from typing import Any, Callable, NamedTuple

EXHAUSTIVE = 7  # tasks up to which every start order is simulated


class Task(NamedTuple):
    fn: Callable  # module-level: fn(*args, log=...) runs in the worker; its return value comes back
    args: tuple
    deps: tuple[str, ...] = ()
    cost: float = 1.0  # estimated seconds (only their ratios matter)


class WorkerFailed(RuntimeError):
    """A task raised in its worker (the worker's traceback is the message) or its worker died."""


def available_cores() -> list[int]:
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))


def default_jobs() -> int:
    """Workers for a run that was not told: one per core on a CPU backend, 1 on an accelerator (one
    device is shared better by one process)."""
    import jax

    return max(1, len(available_cores())) if jax.default_backend() == "cpu" else 1


def usable_jobs(jobs: int) -> int:
    """``jobs`` capped at the cores this process may use (each worker gets at least one)."""
    return max(1, min(jobs, len(available_cores())))


def core_groups(jobs: int, cores: list[int] | None = None) -> list[list[int]]:
    """``cores`` split into ``jobs`` contiguous groups as even as possible (fewer when there are fewer cores)."""
    cores = available_cores() if cores is None else list(cores)
    jobs = max(1, min(jobs, len(cores)))
    size, extra = divmod(len(cores), jobs)
    out, i = [], 0
    for j in range(jobs):
        n = size + (j < extra)
        out.append(cores[i:i + n])
        i += n
    return out


def simulate(order: list[str], tasks: dict[str, Task], workers: int) -> float:
    """Makespan of list scheduling: a free worker takes the first task in ``order`` whose deps are done."""
    free, done_at, pending = [0.0] * workers, {}, list(order)
    now = 0.0
    while pending:
        ready = [n for n in pending if all(d in done_at and done_at[d] <= now for d in tasks[n].deps)]
        idle = [w for w in range(workers) if free[w] <= now]
        if ready and idle:
            name = ready[0]
            pending.remove(name)
            free[idle[0]] = done_at[name] = now + tasks[name].cost
            continue
        later = [t for t in (*free, *done_at.values()) if t > now]
        if not later:
            raise ValueError(f"tasks {pending} depend on tasks that are not given")
        now = min(later)
    return max([0.0, *done_at.values()])


def _levels(tasks: dict[str, Task]) -> dict[str, float]:
    """Each task's cost plus the longest chain of tasks that depend on it."""
    memo: dict[str, float] = {}

    def level(n):
        if n not in memo:
            memo[n] = tasks[n].cost + max([0.0, *(level(m) for m, t in tasks.items() if n in t.deps)])
        return memo[n]
    return {n: level(n) for n in tasks}


def plan(tasks: dict[str, Task], workers: int) -> list[str]:
    """The start order with the smallest simulated makespan (ties: longest path first)."""
    lv = _levels(tasks)
    base = sorted(tasks, key=lambda n: (-lv[n], n))
    if len(tasks) > EXHAUSTIVE or workers <= 1:
        return base
    return min(itertools.permutations(base), key=lambda o: simulate(list(o), tasks, workers))


@contextlib.contextmanager
def _environ(**values):
    """``os.environ`` with ``values`` while a spawned worker starts (it copies the environment)."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _exit_with_parent() -> None:
    """A daemon thread that ends this worker when its parent process is gone (killed, not cleaned up)."""
    parent = mp.parent_process()
    if parent is not None:
        threading.Thread(target=lambda: (wait([parent.sentinel]), os._exit(1)), daemon=True).start()


def _picklable(e: BaseException) -> BaseException | None:
    try:
        pickle.loads(pickle.dumps(e))
        return e
    except Exception:  # noqa: BLE001 -- any exception that cannot travel comes back as text only
        return None


def _worker(cores, fn, args, conn) -> None:
    _exit_with_parent()
    if cores and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, cores)  # before JAX starts: XLA sizes its thread pool from the affinity

    def log(msg):
        conn.send(("log", msg))
    try:
        conn.send(("ok", fn(*args, log=log)))
    except BaseException as e:  # noqa: BLE001 -- everything goes back to the parent, which raises it
        conn.send(("error", (traceback.format_exc(), _picklable(e) if isinstance(e, Exception) else None)))
    finally:
        conn.close()


def _check_acyclic(tasks: dict[str, Task]) -> None:
    state: dict[str, int] = {}  # 1: on the path, 2: done

    def visit(n, path):
        if state.get(n) == 1:
            raise ValueError(f"tasks depend on each other in a cycle: {' -> '.join([*path, n])}")
        if state.get(n) != 2:
            state[n] = 1
            for d in tasks[n].deps:
                visit(d, [*path, n])
            state[n] = 2
    for n in tasks:
        visit(n, [])


def run_parallel(tasks: dict[str, Task], jobs: int, log=print, on_done=None) -> dict[str, Any]:
    """Run ``tasks`` (name -> Task; deps name other tasks) in up to ``jobs`` worker processes; returns
    each task's value. ``on_done(name, value, seconds)`` is called in the parent as each finishes. The
    first failure stops every worker and raises the task's exception (its type, so callers handle it as
    they would in one process) from a ``WorkerFailed`` holding the worker's traceback; an exception
    that cannot be pickled raises the ``WorkerFailed``. Workers end with their parent process."""
    missing = {d for t in tasks.values() for d in t.deps if d not in tasks}
    if missing:
        raise ValueError(f"tasks depend on unknown tasks {sorted(missing)}")
    _check_acyclic(tasks)
    groups = core_groups(min(jobs, len(tasks)))  # no more workers than tasks: spare cores go to them
    order, ctx = plan(tasks, len(groups)), mp.get_context("spawn")
    results: dict[str, Any] = {}
    running: dict[Any, tuple] = {}  # connection -> (name, process, worker index, start time)
    idle = list(range(len(groups)))
    try:
        while len(results) < len(tasks):
            for name in [n for n in order if n not in results and all(d in results for d in tasks[n].deps)]:
                if not idle or any(r[0] == name for r in running.values()):
                    continue
                w = idle.pop(0)
                parent, child = ctx.Pipe(duplex=False)
                p = ctx.Process(target=_worker, args=(groups[w], tasks[name].fn, tasks[name].args, child), daemon=True)
                with _environ(TQDM_POSITION=str(w)):  # each worker's progress bars on a line of their own
                    p.start()
                child.close()
                running[parent] = (name, p, w, time.perf_counter())
                log(f"  [{name}] started in a worker on core{'s' if len(groups[w]) > 1 else ''} "
                    f"{','.join(map(str, groups[w]))}")
            for conn in wait(list(running)):
                name, p, w, t0 = running[conn]
                try:
                    kind, value = conn.recv()
                except EOFError:
                    p.join()
                    raise WorkerFailed(f"the worker of {name!r} died (exit code {p.exitcode})") from None
                if kind == "log":
                    log(value)
                    continue
                if kind == "error":
                    failed = WorkerFailed(f"{name!r} failed in its worker:\n{value[0]}")
                    if value[1] is None:
                        raise failed
                    raise value[1] from failed
                del running[conn]
                conn.close()
                p.join()
                idle.append(w)
                idle.sort()
                results[name] = value
                if on_done is not None:
                    on_done(name, value, time.perf_counter() - t0)
    finally:
        for conn, (_, p, _, _) in running.items():
            p.terminate()
            p.join()
            conn.close()
    return results
