"""A list of benchmark commands as one bounded run, so a short accelerator lease returns what fitted
instead of nothing (the GPU list itself is ``cli/gpu_suite.py``).

Each step runs as ``python -c <code> ARGS`` in a process group of its own, with the package's folder
on ``PYTHONPATH`` (a checkout runs it without an install). When the step ends, runs over its limit, or
the suite itself is interrupted (Ctrl-C, SIGTERM), the whole group is killed: nothing a step started
outlives it or keeps the accelerator's memory. The suite never imports JAX itself: a backend it
initialised would hold the memory the steps need. Everything lands in four files of ``out_dir``,
replaced atomically after every step, so an interrupted run keeps what finished: ``results.jsonl``
(every JSON line a step printed on stdout, with ``"suite_step"`` added), ``log.txt`` (each step's
command, stdout and stderr), ``summary.json`` and ``summary.md`` (status, seconds and the main
figures per step).
"""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable

PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # the checkout's root (the folder holding dynaguide_jax/)
GRACE_S = 5.0  # between SIGTERM and SIGKILL of a step's group
REAP_S = 10.0  # the longest wait for a killed step to be reaped
# modules a step may need beyond the benchmarks' own (jax, numpy): the environment step reports them
OPTIONAL_MODULES = ("flax", "optax", "chex", "orbax.checkpoint", "tqdm", "pytest", "torch", "tensorflow_datasets")

# what summary.md shows of a JSON row: its settings, then its figures (those present)
_SETTINGS = ("bench", "batch", "global_batch", "dtype", "input", "variant", "attention", "precompute", "pallas",
             "unroll", "remat", "feature_dtype", "prefetch")
_FIGURES = ("latency_ms", "step_ms", "ms_per_batch", "chunks_per_s", "samples_per_s", "model_tflop_s", "mfu",
            "kernels_per_iteration", "time_over_floor", "compile_s", "max_abs_diff_vs_first_variant",
            "feeds_h100_at_40pct_mfu")


@dataclasses.dataclass(frozen=True)
class SuiteStep:
    """One command: ``python -c code *args`` with ``env`` added (``XLA_FLAGS`` appended to the caller's),
    stopped after ``timeout_s``; skipped where the path it ``needs`` (relative to the run's folder) is
    missing."""
    name: str
    code: str
    args: tuple[str, ...] = ()
    timeout_s: float = 300.0
    env: tuple[tuple[str, str], ...] = ()
    needs: str = ""

    def __post_init__(self):
        if not self.name or not self.name.replace("_", "").isalnum():
            raise ValueError(f"a suite step's name must be letters, digits and '_', got {self.name!r}")
        if not self.timeout_s > 0:
            raise ValueError(f"step {self.name}: timeout_s must be > 0, got {self.timeout_s!r}")

    def command(self, python: str) -> list[str]:
        return [python, "-c", self.code, *self.args]

    def shell_line(self) -> str:
        """The command as one would type it (for ``--list`` and log.txt)."""
        env = "".join(f"{k}={v} " for k, v in self.env)
        return f"{env}python -c {self.code!r} " + " ".join(self.args)


def print_environment() -> None:
    """One JSON line: the device, versions and which optional modules import (a suite's first step)."""
    import importlib

    import jax

    from dynaguide_jax.bench.timing import environment

    env = {**environment(), "devices": len(jax.devices())}  # the backend first, as in the benchmark steps
    missing = []
    for name in OPTIONAL_MODULES:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - any failure to import counts as missing
            missing.append(name)
    print(json.dumps({"bench": "environment", **env, "missing_modules": missing}))


def _killpg(pgid: int, sig) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass  # the group is empty (all reaped) or gone


def _end_group(proc: subprocess.Popen, graceful: bool) -> bool:
    """Kill the step's whole group (SIGTERM first when ``graceful``, SIGKILL after ``GRACE_S``) and reap
    the step; False if it could not be reaped within ``REAP_S``."""
    if graceful and proc.poll() is None:
        _killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=GRACE_S)
        except subprocess.TimeoutExpired:
            pass
    _killpg(proc.pid, signal.SIGKILL)  # always: children a finished step left behind go too
    try:
        proc.wait(timeout=REAP_S)
        return True
    except subprocess.TimeoutExpired:
        return False


def json_rows(text: str) -> list[dict]:
    """The JSON objects printed one per line in ``text`` (other lines ignored)."""
    rows = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict):
                rows.append(row)
    return rows


def _step_env(step: SuiteStep) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PACKAGE_ROOT), env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    for k, v in step.env:
        env[k] = f"{env[k]} {v}" if k == "XLA_FLAGS" and env.get(k) else v
    return env


def run_step(step: SuiteStep, timeout_s: float, cwd: Path, python: str, scratch: Path) -> dict:
    """Run one step for at most ``timeout_s``: ``{"name", "status", "seconds", "returncode", "stdout",
    "stderr", "rows"}``; status ``ok``, ``failed`` (non-zero exit), ``timeout`` or ``interrupted`` (the
    suite was stopped: the group is killed, the result kept, and the interruption raised again). The
    output printed until the end is kept in every case."""
    paths = [scratch / f".{step.name}.{s}" for s in ("stdout", "stderr")]
    t0 = time.monotonic()
    interrupted = None
    with open(paths[0], "w") as out, open(paths[1], "w") as err:
        proc = subprocess.Popen(step.command(python), cwd=cwd, env=_step_env(step), stdout=out, stderr=err,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            try:
                proc.wait(timeout=timeout_s)
                status = "ok" if proc.returncode == 0 else "failed"
            except subprocess.TimeoutExpired:
                status = "timeout"
            reaped = _end_group(proc, graceful=status == "timeout")
        except BaseException as e:  # KeyboardInterrupt, SystemExit from SIGTERM: the step must not outlive us
            interrupted, status = e, "interrupted"
            reaped = _end_group(proc, graceful=False)
    if not reaped:
        status += " (not reaped)"
    stdout, stderr = (p.read_text(errors="replace") for p in paths)
    for p in paths:
        p.unlink()
    result = {"name": step.name, "status": status, "seconds": round(time.monotonic() - t0, 1),
              "returncode": proc.returncode, "stdout": stdout, "stderr": stderr, "rows": json_rows(stdout)}
    if interrupted is not None:
        raise _Interrupted(result) from interrupted
    return result


class _Interrupted(Exception):
    def __init__(self, result: dict):
        super().__init__(result["name"])
        self.result = result


def _fmt(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def summary_markdown(results: list[dict], budget_s: float) -> str:
    env_row = next((row for r in results for row in r["rows"] if row.get("bench") == "environment"), None)
    lines = ["# Benchmark suite", ""]
    if env_row:
        lines += [f"Device: {env_row.get('device')} ({env_row.get('platform')}), jax {env_row.get('jax')}, python "
                  f"{env_row.get('python')}; missing modules: {', '.join(env_row.get('missing_modules')) or 'none'}.",
                  ""]
    total = sum(r["seconds"] for r in results)
    lines += [f"Budget {budget_s:.0f} s, used {total:.0f} s.", "", "| step | status | seconds | JSON rows |",
              "| --- | --- | --- | --- |"]
    lines += [f"| {r['name']} | {r['status']} | {r['seconds']} | {len(r['rows'])} |" for r in results]
    for r in results:
        rows = [row for row in r["rows"] if row.get("bench") != "environment"]
        if rows:
            keys = [k for k in _SETTINGS + _FIGURES if any(k in row for row in rows)]
            lines += ["", f"## {r['name']}", "", "| " + " | ".join(keys) + " |", "|" + " --- |" * len(keys)]
            lines += ["| " + " | ".join(_fmt(row.get(k, "")) for k in keys) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _replace(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)  # atomic: a kill mid-write never leaves a truncated file


def write_outputs(out_dir: Path, results: list[dict], budget_s: float) -> None:
    """The four files from the results so far."""
    rows = [json.dumps({**row, "suite_step": r["name"]}) + "\n" for r in results for row in r["rows"]]
    _replace(out_dir / "results.jsonl", "".join(rows))
    log = [f"===== {r['name']}: {r['status']} after {r['seconds']} s (exit {r['returncode']})\n$ {r['command']}\n"
           f"--- stdout\n{r['stdout']}\n--- stderr\n{r['stderr']}\n" for r in results]
    _replace(out_dir / "log.txt", "".join(log))
    summary = [{k: r[k] for k in ("name", "status", "seconds", "returncode")} | {"rows": len(r["rows"])}
               for r in results]
    _replace(out_dir / "summary.json", json.dumps({"budget_s": budget_s, "steps": summary}, indent=1) + "\n")
    _replace(out_dir / "summary.md", summary_markdown(results, budget_s))


def _skipped(step: SuiteStep, why: str) -> dict:
    return {"name": step.name, "status": f"skipped: {why}", "seconds": 0.0, "returncode": None, "stdout": "",
            "stderr": "", "rows": []}


def _sigterm_to_exit(signum, frame):
    raise SystemExit(128 + signum)


def run_suite(steps, out_dir, budget_s: float = 540.0, cwd=None, python: str = sys.executable,
              min_step_s: float = 30.0, progress: Callable[[str], None] | None = None) -> list[dict]:
    """Run ``steps`` in order within ``budget_s`` seconds in all: each gets its own limit or what is
    left of the budget (less the kill's grace), whichever is less; a step is skipped once less than
    ``min_step_s`` is left, or where the path it ``needs`` is missing under ``cwd`` (default: the
    checkout's root). Writes the four files after every step, and on an interruption (Ctrl-C,
    SIGTERM) with the running step recorded as ``interrupted`` before it re-raises. Returns the
    per-step results (with each step's stdout and stderr)."""
    if not budget_s > 0:
        raise ValueError(f"budget_s must be > 0, got {budget_s!r}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cwd = Path(cwd) if cwd is not None else PACKAGE_ROOT
    progress = progress or (lambda msg: print(msg, file=sys.stderr, flush=True))
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _sigterm_to_exit) if in_main else None
    start, results = time.monotonic(), []
    try:
        for i, step in enumerate(steps, 1):
            left = budget_s - (time.monotonic() - start) - GRACE_S
            if step.needs and not (cwd / step.needs).exists():
                result = _skipped(step, f"no {step.needs}")
            elif left < min_step_s:
                result = _skipped(step, "budget")
            else:
                limit = min(step.timeout_s, left)
                progress(f"[{i}/{len(steps)}] {step.name} (at most {limit:.0f} s; {left:.0f} s of the budget left)")
                try:
                    result = run_step(step, limit, cwd, python, out_dir)
                except _Interrupted as e:
                    results.append({**e.result, "command": step.shell_line()})
                    write_outputs(out_dir, results, budget_s)
                    raise e.__cause__ from None
            results.append({**result, "command": step.shell_line()})
            progress(f"[{i}/{len(steps)}] {step.name}: {result['status']} ({result['seconds']} s, "
                     f"{len(result['rows'])} JSON rows)")
            write_outputs(out_dir, results, budget_s)
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, previous)
    return results
