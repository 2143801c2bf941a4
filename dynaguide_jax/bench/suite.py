"""The GPU benchmark list as one bounded run: every command of the README's "Benchmarks" list, most
important first, each in its own process with a time limit, the whole within a budget, so a short
accelerator lease returns what fitted instead of nothing.

Each step runs as ``python -c <entry point> ARGS`` in a new process group (killed whole when its
limit is reached) with the package's folder on ``PYTHONPATH``, so it runs from a checkout without an
install. The parent process never imports JAX: a backend it initialised would hold the accelerator's
memory the steps need. Everything lands in four files of ``out_dir``, rewritten after every step so an
interrupted run keeps what finished: ``results.jsonl`` (every JSON line the steps printed, with
``"suite_step"`` added), ``log.txt`` (each step's command and full output), ``summary.json`` and
``summary.md`` (status, seconds and the main figures per step).
"""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

_ENTRY = "import sys; from dynaguide_jax.cli.bench import {fn}; sys.exit({fn}(sys.argv[1:]))"
_GUIDED, _TRAINING, _INPUT = (_ENTRY.format(fn=f) for f in
                              ("run_guided_inference", "run_dynamics_training", "run_input_pipeline"))
_ENVIRONMENT = "from dynaguide_jax.bench.suite import print_environment; print_environment()"
_PYTEST = "import sys, pytest; sys.exit(pytest.main(sys.argv[1:]))"
# modules a step may need that are not dependencies of the benchmarks themselves
_OPTIONAL_MODULES = ("flax", "optax", "chex", "orbax.checkpoint", "tqdm", "pytest", "torch", "tensorflow_datasets")


@dataclasses.dataclass(frozen=True)
class SuiteStep:
    """One command: ``python -c code *args`` with ``env`` added, stopped after ``timeout_s``."""
    name: str
    code: str
    args: tuple[str, ...] = ()
    timeout_s: float = 300.0
    env: tuple[tuple[str, str], ...] = ()
    needs: str = ""  # a path (relative to the checkout) the step needs; skipped where it is missing

    def __post_init__(self):
        if not self.name or not self.name.replace("_", "").isalnum():
            raise ValueError(f"a suite step's name must be letters, digits and '_', got {self.name!r}")
        if not self.timeout_s > 0:
            raise ValueError(f"step {self.name}: timeout_s must be > 0, got {self.timeout_s!r}")

    def command(self, python: str) -> list[str]:
        return [python, "-c", self.code, *self.args]


_BF16_GUIDED = ("--dtypes", "bfloat16", "--policy", "false")
GPU_STEPS = (  # most important first: issue 13's figures, then the kernel choices, then the rest
    SuiteStep("environment", _ENVIRONMENT, timeout_s=90),
    SuiteStep("guided_bf16", _GUIDED, _BF16_GUIDED, timeout_s=240),
    SuiteStep("flash_attention_compiled", _PYTEST, ("-q", "-p", "no:cacheprovider", "tests/test_flash_attention.py"),
              timeout_s=180, env=(("JAX_PLATFORMS", "cuda"),), needs="tests/test_flash_attention.py"),
    SuiteStep("training_bf16", _TRAINING, ("--dtypes", "bfloat16", "--modes", "features"), timeout_s=240),
    SuiteStep("precompute_pallas", _GUIDED, _BF16_GUIDED + ("--attention", "xla", "cudnn", "--precompute", "none",
                                                           "projections", "attention", "--pallas", "off", "on"),
              timeout_s=300),
    SuiteStep("paper_policy", _GUIDED, ("--dtypes", "bfloat16", "--attention", "xla", "cudnn"), timeout_s=300),
    SuiteStep("guided_fp32", _GUIDED, ("--dtypes", "float32", "--policy", "false", "--attention", "xla"),
              timeout_s=240),
    SuiteStep("training_sweep", _TRAINING, ("--global-batch", "128", "256", "512", "--remat", "false", "true",
                                            "--dtypes", "bfloat16", "--modes", "features"), timeout_s=360),
    SuiteStep("training_pixels", _TRAINING, ("--modes", "pixels"), timeout_s=240),
    SuiteStep("command_buffers", _GUIDED, _BF16_GUIDED + ("--attention", "xla"), timeout_s=240,
              env=(("XLA_FLAGS", "--xla_gpu_enable_command_buffer=+WHILE,+CONDITIONAL"),)),
    SuiteStep("unroll", _GUIDED, _BF16_GUIDED + ("--attention", "xla", "--unroll", "1", "4", "--batch-sizes", "1"),
              timeout_s=300),
    SuiteStep("input_pipeline", _INPUT, timeout_s=300),
)
STEP_NAMES = tuple(s.name for s in GPU_STEPS)
PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # the checkout's root (the folder holding dynaguide_jax/)

# what summary.md shows of a JSON row: its settings, then its figures (those present)
_SETTINGS = ("bench", "batch", "global_batch", "dtype", "input", "attention", "precompute", "pallas", "unroll",
             "remat", "feature_dtype", "prefetch")
_FIGURES = ("latency_ms", "chunks_per_s", "samples_per_s", "model_tflop_s", "mfu", "kernels_per_iteration",
            "time_over_floor", "compile_s", "max_abs_diff_vs_first_variant", "input_wait_frac")


def print_environment() -> None:
    """One JSON line: the device, versions and which optional modules import (the suite's first step)."""
    import importlib

    from dynaguide_jax.bench.timing import environment

    missing = []
    for name in _OPTIONAL_MODULES:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - any failure to import counts as missing
            missing.append(name)
    import jax

    print(json.dumps({"bench": "environment", **environment(), "devices": len(jax.devices()),
                      "missing_modules": missing}))


def select_steps(names) -> tuple[SuiteStep, ...]:
    """The steps named (in the suite's order), or all of them for ``None``; unknown names raise."""
    if names is None:
        return GPU_STEPS
    unknown = sorted(set(names) - set(STEP_NAMES))
    if unknown:
        raise ValueError(f"unknown suite step(s) {unknown}; the steps are {list(STEP_NAMES)}")
    return tuple(s for s in GPU_STEPS if s.name in set(names))


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=5)
    except ProcessLookupError:
        return
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _json_rows(text: str) -> list[dict]:
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


def run_step(step: SuiteStep, timeout_s: float, cwd: Path, python: str, log_dir: Path) -> dict:
    """Run one step for at most ``timeout_s``: ``{"name", "status", "seconds", "returncode", "output",
    "rows"}``; status is ``ok``, ``failed`` (non-zero exit) or ``timeout`` (the group was killed;
    the output printed until then is kept)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PACKAGE_ROOT), env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(dict(step.env))
    out_path = log_dir / f".{step.name}.out"
    t0 = time.monotonic()
    with open(out_path, "w") as out:
        proc = subprocess.Popen(step.command(python), cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            rc = proc.wait(timeout=timeout_s)
            status = "ok" if rc == 0 else "failed"
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            rc, status = proc.returncode, "timeout"
    seconds = time.monotonic() - t0
    output = out_path.read_text(errors="replace")
    out_path.unlink()
    return {"name": step.name, "status": status, "seconds": round(seconds, 1), "returncode": rc,
            "output": output, "rows": _json_rows(output)}


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def summary_markdown(results: list[dict], budget_s: float, env_row: dict | None) -> str:
    lines = ["# Benchmark suite", ""]
    if env_row:
        lines.append(f"Device: {env_row.get('device')} ({env_row.get('platform')}), jax {env_row.get('jax')}, "
                     f"python {env_row.get('python')}; missing modules: {env_row.get('missing_modules') or 'none'}.")
        lines.append("")
    total = sum(r["seconds"] for r in results)
    lines += [f"Budget {budget_s:.0f} s, used {total:.0f} s.", "", "| step | status | seconds | JSON rows |",
              "| --- | --- | --- | --- |"]
    lines += [f"| {r['name']} | {r['status']} | {r['seconds']} | {len(r['rows'])} |" for r in results]
    for r in results:
        rows = [row for row in r["rows"] if row.get("bench") != "environment"]
        if not rows:
            continue
        keys = [k for k in _SETTINGS + _FIGURES if any(k in row for row in rows)]
        lines += ["", f"## {r['name']}", "", "| " + " | ".join(keys) + " |", "|" + " --- |" * len(keys)]
        lines += ["| " + " | ".join(_fmt(row.get(k, "")) for k in keys) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _write(out_dir: Path, results: list[dict], budget_s: float) -> None:
    env_row = next((row for r in results for row in r["rows"] if row.get("bench") == "environment"), None)
    with open(out_dir / "results.jsonl", "w") as f:
        for r in results:
            for row in r["rows"]:
                f.write(json.dumps({**row, "suite_step": r["name"]}) + "\n")
    with open(out_dir / "log.txt", "w") as f:
        for r in results:
            f.write(f"===== {r['name']}: {r['status']} after {r['seconds']} s (exit {r['returncode']})\n")
            f.write(f"$ {r.get('command', '')}\n{r['output']}\n")
    summary = [{k: r[k] for k in ("name", "status", "seconds", "returncode")} | {"rows": len(r["rows"])}
               for r in results]
    (out_dir / "summary.json").write_text(json.dumps({"budget_s": budget_s, "steps": summary}, indent=1) + "\n")
    (out_dir / "summary.md").write_text(summary_markdown(results, budget_s, env_row))


def run_suite(steps, out_dir, budget_s: float = 540.0, cwd=None, python: str = sys.executable,
              min_step_s: float = 30.0, progress: Callable[[str], None] | None = None) -> list[dict]:
    """Run ``steps`` in order within ``budget_s`` seconds in all: each gets its own limit or what is
    left of the budget, whichever is less; a step is skipped once less than ``min_step_s`` is left
    (or where the path it ``needs`` is missing under ``cwd``, by default the checkout's root). Writes
    the four files after every step; returns the per-step results (``output``: each step's output)."""
    if not budget_s > 0:
        raise ValueError(f"budget_s must be > 0, got {budget_s!r}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cwd = Path(cwd) if cwd is not None else PACKAGE_ROOT
    progress = progress or (lambda msg: print(msg, file=sys.stderr, flush=True))
    start, results = time.monotonic(), []
    for i, step in enumerate(steps, 1):
        left = budget_s - (time.monotonic() - start)
        command = " ".join(step.command("python")[:1] + ["-c", repr(step.code)] + list(step.args))
        if step.needs and not (cwd / step.needs).exists():
            result = {"name": step.name, "status": f"skipped: no {step.needs}", "seconds": 0.0,
                      "returncode": None, "output": "", "rows": []}
        elif left < min_step_s:
            result = {"name": step.name, "status": "skipped: budget", "seconds": 0.0, "returncode": None,
                      "output": "", "rows": []}
        else:
            limit = min(step.timeout_s, left)
            progress(f"[{i}/{len(steps)}] {step.name} (at most {limit:.0f} s; {left:.0f} s of the budget left)")
            result = run_step(step, limit, cwd, python, out_dir)
        result["command"] = command
        results.append(result)
        progress(f"[{i}/{len(steps)}] {step.name}: {result['status']} ({result['seconds']} s, "
                 f"{len(result['rows'])} JSON rows)")
        _write(out_dir, results, budget_s)
    return results
