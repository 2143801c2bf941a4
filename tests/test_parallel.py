"""The demo's worker processes (dynaguide_jax/demo/parallel.py): core groups, the start order with the
smallest makespan, results and logs coming back, dependencies respected, failures raised with the
worker's traceback."""
import os
import time

import pytest

from dynaguide_jax.demo.parallel import Task, WorkerFailed, core_groups, plan, run_parallel, simulate


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
    with pytest.raises(WorkerFailed, match="(?s)'bad' failed in its worker.*ZeroDivisionError: no luck"):
        run_parallel(tasks, 2, log=lambda *_: None)
    assert time.perf_counter() - t0 < 25 and not slow.exists()  # the slow worker was stopped, not waited for
    with pytest.raises(ValueError, match="unknown tasks"):
        run_parallel({"a": Task(_fail, (), ("missing",))}, 2)
