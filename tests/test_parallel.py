"""The demo's worker processes (dynaguide_jax/demo/parallel.py): core groups, the start order with the
smallest makespan, results and logs coming back, dependencies respected, failures raised with the
worker's traceback."""
import multiprocessing as mp
import os
import re
import subprocess
import sys
import time

import pytest

from dynaguide_jax.demo.parallel import (Task, WorkerFailed, available_cores, core_groups, plan, run_parallel,
                                         simulate)


def _write(path, text, delay=0.0, *, log):
    time.sleep(delay)
    log(f"writing {os.path.basename(path)}")
    with open(path, "w") as f:
        f.write(text)
    return os.getpid(), sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None


def _concat(out, parts, *, log):
    with open(out, "w") as f:
        for p in parts:
            with open(p) as g:
                f.write(g.read())
    return "joined"


def _fail(*, log):
    raise ZeroDivisionError("no luck in the worker")


class _Unpicklable(Exception):
    def __init__(self, message, handle):
        super().__init__(message)
        self.handle = handle


def _fail_unpicklable(*, log):
    raise _Unpicklable("cannot travel", lambda: None)


def test_core_groups_split_evenly_and_never_exceed_the_cores():
    assert core_groups(2, [0, 1]) == [[0], [1]]
    assert core_groups(2, [0, 1, 2]) == [[0, 1], [2]]
    assert core_groups(4, [3, 5]) == [[3], [5]]
    assert core_groups(1, [0, 1, 2, 3]) == [[0, 1, 2, 3]]


def test_plan_finds_the_shortest_two_worker_schedule_of_the_demo_stages():
    # the demo's stages with their one-core seconds: dynamics needs features; the rest are independent
    costs = {"features": 167, "goals": 2, "policy": 466, "gc": 574, "dynamics": 365}
    tasks = {n: Task(print, (), ("features",) if n == "dynamics" else (), c) for n, c in costs.items()}
    # longest path first starts gc and features; dynamics then waits for gc's worker: 574 + 365
    assert simulate(["gc", "features", "policy", "dynamics", "goals"], tasks, 2) == 939
    # the best: policy then dynamics on one worker (831 s), features, goals and gc on the other (743 s)
    order = plan(tasks, 2)
    assert simulate(order, tasks, 2) == 831
    assert simulate(order, tasks, 1) == sum(costs.values())
    with pytest.raises(ValueError, match="not given"):
        simulate(["a"], {"a": Task(print, (), ("b",), 1.0)}, 2)


def test_tasks_run_in_workers_after_their_dependencies(tmp_path):
    a, b, out = tmp_path / "a.txt", tmp_path / "b.txt", tmp_path / "ab.txt"
    logs, finished = [], []
    tasks = {"a": Task(_write, (str(a), "A", 1.0), cost=2), "b": Task(_write, (str(b), "B"), cost=1),
             "ab": Task(_concat, (str(out), [str(a), str(b)]), deps=("a", "b"), cost=1)}
    results = run_parallel(tasks, 2, log=logs.append, on_done=lambda n, v, s: finished.append(n))
    assert out.read_text() == "AB" and results["ab"] == "joined"
    pids = {results[n][0] for n in "ab"}
    assert len(pids) == 2 and os.getpid() not in pids  # two worker processes, not this one
    if hasattr(os, "sched_getaffinity") and len(os.sched_getaffinity(0)) >= 2:
        assert sorted(len(results[n][1]) for n in "ab") == [1, 1]  # each pinned to a core of its own
    assert finished[-1] == "ab" and set(finished) == {"a", "b", "ab"}
    assert "writing a.txt" in logs and "writing b.txt" in logs  # the workers' log lines come back


def test_a_failing_task_raises_its_traceback_and_stops_the_others(tmp_path):
    slow = tmp_path / "slow.txt"
    # "bad" goes first on one core too (the longer estimate); on two both start
    tasks = {"bad": Task(_fail, (), cost=2), "slow": Task(_write, (str(slow), "x", 30.0), cost=1)}
    t0 = time.perf_counter()
    with pytest.raises(ZeroDivisionError, match="no luck in the worker") as raised:  # its own type, as in one process
        run_parallel(tasks, 2, log=lambda *_: None)
    assert isinstance(raised.value.__cause__, WorkerFailed)  # ... from the worker's traceback
    assert re.search("(?s)'bad' failed in its worker.*Traceback.*_fail", str(raised.value.__cause__))
    assert time.perf_counter() - t0 < 25 and not slow.exists()  # the slow worker was stopped, not waited for
    assert not mp.active_children()  # every worker process has ended
    with pytest.raises(WorkerFailed, match="(?s)'u' failed in its worker.*cannot travel"):
        run_parallel({"u": Task(_fail_unpicklable, ())}, 1)
    with pytest.raises(ValueError, match="unknown tasks"):
        run_parallel({"a": Task(_fail, (), ("missing",))}, 2)
    with pytest.raises(ValueError, match="cycle: a -> b -> a"):
        run_parallel({"a": Task(_fail, (), ("b",)), "b": Task(_fail, (), ("a",))}, 2)


def test_one_task_gets_every_core_and_workers_end_with_their_parent(tmp_path):
    single = run_parallel({"a": Task(_write, (str(tmp_path / "a.txt"), "A"))}, 8, log=lambda *_: None)["a"]
    if single[1] is not None:
        assert single[1] == sorted(os.sched_getaffinity(0))  # no idle worker holds cores back
    pid_file = tmp_path / "worker.pid"
    script = (f"from dynaguide_jax.demo.parallel import Task, run_parallel\n"
              f"from tests.test_parallel import _record_pid_and_sleep\n"
              f"if __name__ == '__main__':\n"
              f"    run_parallel({{'w': Task(_record_pid_and_sleep, ({str(pid_file)!r},))}}, 1)\n")
    parent = subprocess.Popen([sys.executable, "-c", script], cwd=os.path.dirname(os.path.dirname(__file__)))
    try:
        deadline = time.time() + 60
        while not pid_file.exists() and time.time() < deadline:
            time.sleep(0.1)
        worker = int(pid_file.read_text())
        parent.kill()  # SIGKILL: the parent cleans nothing up
        parent.wait()
        deadline = time.time() + 10
        while _alive(worker) and time.time() < deadline:
            time.sleep(0.1)
        assert not _alive(worker)
    finally:
        parent.kill()


def _record_pid_and_sleep(path, *, log):
    with open(path + ".tmp", "w") as f:
        f.write(str(os.getpid()))
    os.replace(path + ".tmp", path)
    time.sleep(120)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie (exited, not yet reaped by init) counts as ended
        return f.read().split(") ")[1][0] != "Z"


def test_jobs_flag_defaults_and_refusals(monkeypatch):
    import jax

    from dynaguide_jax.cli.jobs import resolve_jobs

    assert resolve_jobs(None) == len(available_cores())  # one per core on a CPU backend
    assert resolve_jobs(3) == 3  # more than the cores is allowed: run_parallel caps it
    with pytest.raises(ValueError, match="--jobs must be >= 1, got 0"):
        resolve_jobs(0)
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert resolve_jobs(None) == 1 and resolve_jobs(1) == 1
    with pytest.raises(ValueError, match="--jobs 2 runs CPU worker processes; on the gpu backend use --jobs 1"):
        resolve_jobs(2)
