"""The resumable runner of ``dynaguide experiment``: every (method, target) cell, rollout by rollout.

A cell's rollouts run in chunks; each finished chunk is written at once
(``OUT/cells/<method>/<target>/chunk_<first>.npz``: detected behaviour, counted events, step), so a
killed run continues where it stopped and finished rollouts are never redone. A cell records the
hash of everything its rollouts depend on (the target's settings, the method, the evaluation sizes,
the models' stage keys); a cell whose inputs changed is cleared and rerun. Rollout ``i`` of a
target starts from a state drawn from ``(seed, target, i)`` only, with its own key, so results do
not depend on the chunk size and every method starts from the same states (paired comparisons).
Base runs of experiments with ``control_base`` run once from the control setup (every part random,
the original's ``Control_N``) and are scored for every target.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import time
import zlib
from typing import Callable, NamedTuple

import numpy as np
from tqdm.auto import tqdm

import jax
import jax.numpy as jnp

from dynaguide_jax.demo.config import DemoConfig

CONTROL = "control"  # the base cell of control_base experiments


class Cell(NamedTuple):
    method: str
    name: str  # a target name, or CONTROL
    target_index: int  # row of the stacked goals (0 for CONTROL; unused by base)
    env_setup: tuple  # the reset's fixed parts


def plan_cells(experiment, methods) -> list[Cell]:
    cells = []
    for m in methods:
        if m == "base" and experiment.control_base:
            cells.append(Cell(m, CONTROL, 0, ()))
            continue
        cells += [Cell(m, t.name, i, t.env_setup) for i, t in enumerate(experiment.targets)]
    return cells


def rollout_seed_key(seed: int, cell_name: str, env_setup) -> jax.Array:
    """The key of a cell's start states: the same for every method with that target (or the control)."""
    return jax.random.fold_in(jax.random.key(seed + 12345), zlib.crc32(json.dumps([cell_name, env_setup]).encode()))


def _hash(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


class CellStore:
    """``OUT/cells/<method>/<name>/``: ``cell.json`` (the input hash) and one ``chunk_<first>.npz`` per chunk."""

    def __init__(self, out_dir: str, cell: Cell, key: str):
        self.dir = os.path.join(out_dir, "cells", cell.method, cell.name)
        self.key = key
        record = os.path.join(self.dir, "cell.json")
        try:
            with open(record) as f:
                same = json.load(f).get("key") == key
        except (FileNotFoundError, json.JSONDecodeError):
            same = False
        if not same:
            shutil.rmtree(self.dir, ignore_errors=True)
            os.makedirs(self.dir)
            with open(record, "w") as f:
                json.dump({"key": key, "cell": cell._asdict()}, f)

    def _path(self, first: int) -> str:
        return os.path.join(self.dir, f"chunk_{first:05d}.npz")

    def has(self, first: int) -> bool:
        return os.path.exists(self._path(first))

    def save(self, first: int, result: dict) -> None:
        tmp = self._path(first) + ".tmp.npz"
        np.savez(tmp, **result)
        os.replace(tmp, self._path(first))

    def load(self, rollouts: int, chunk: int) -> dict:
        parts = []
        for first in range(0, rollouts, chunk):
            with np.load(self._path(first)) as z:
                parts.append({k: z[k] for k in z.files})
        return {k: np.concatenate([p[k] for p in parts])[:rollouts] for k in parts[0]}


@dataclasses.dataclass(frozen=True)
class RunSizes:
    rollouts: int
    horizon: int
    chunk: int
    seed: int

    def __post_init__(self):
        for name in ("rollouts", "horizon", "chunk"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {getattr(self, name)!r}")


def run_cells(experiment, cells: list[Cell], sizes: RunSizes, out_dir: str, cell_key: Callable[[Cell], dict],
              run_chunk: Callable, progress: bool = True, log=print) -> dict:
    """Run every missing chunk of every cell; returns ``{(method, name): {"index", "counted", "step"}}``.

    ``run_chunk(cell, first, count) -> {"index" [count], "counted" [count, B], "step" [count]}`` rolls
    out rollouts ``first .. first + count - 1`` of ``cell`` (``count`` is always ``sizes.chunk``; the
    last chunk's rollouts past ``sizes.rollouts`` are dropped); ``cell_key(cell)`` its inputs (hashed)."""
    stores = {c: CellStore(out_dir, c, _hash(cell_key(c))) for c in cells}
    todo = [(c, first) for c in cells for first in range(0, sizes.rollouts, sizes.chunk) if not stores[c].has(first)]
    total = sizes.rollouts * len(cells)
    done = total - sum(min(sizes.chunk, sizes.rollouts - f) for _, f in todo)
    if done:
        log(f"  resuming: {done} of {total} rollouts were finished earlier")
    bar = tqdm(total=total, initial=done, unit="rollout", disable=not progress, desc=experiment.title,
               dynamic_ncols=True)
    t0 = time.perf_counter()
    for cell, first in todo:
        count = min(sizes.chunk, sizes.rollouts - first)
        bar.set_postfix_str(f"{cell.method}/{cell.name}")
        # always a whole chunk (one compiled shape); rollouts past the end are dropped, they change nothing
        result = run_chunk(cell, first, sizes.chunk)
        stores[cell].save(first, {k: np.asarray(v)[:count] for k, v in result.items()})
        bar.update(count)
    bar.close()
    if todo:
        log(f"  {total - done} rollouts in {time.perf_counter() - t0:.0f} s")
    return {(c.method, c.name): stores[c].load(sizes.rollouts, sizes.chunk) for c in cells}


def detections_by_target(experiment, results: dict, methods) -> tuple[dict, dict]:
    """``({method: {target: index [n]}}, {method: {target: counted [n, B]}})``; control runs score every target."""
    index, counted = {}, {}
    for m in methods:
        index[m], counted[m] = {}, {}
        for t in experiment.targets:
            r = results[(m, CONTROL)] if (m == "base" and experiment.control_base) else results[(m, t.name)]
            index[m][t.name], counted[m][t.name] = r["index"], r["counted"]
    return index, counted


def success_sets(experiment) -> dict:
    return {t.name: tuple(t.success) for t in experiment.targets}


def eval_fields(cfg: DemoConfig) -> dict:
    return {k: getattr(cfg, k) for k in ("ddim_steps", "encoder_size", "gc_goal_size")}


def stack_keys(key: jax.Array, first: int, count: int) -> jax.Array:
    return jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(first, first + count))
