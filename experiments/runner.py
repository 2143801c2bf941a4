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


def cell_reset_poses(experiment, cell: Cell) -> str | None:
    """The robot reset-pose list a cell starts from: the control's (orig: control.json) or its target's."""
    if cell.name == CONTROL:
        return experiment.control_reset_poses
    return experiment.targets[cell.target_index].reset_poses


def rollout_seed_key(seed: int, env_setup) -> jax.Array:
    """The key of a cell's start states and rollouts: a function of the reset setup only, so every method
    and every target with that setup (the control: none fixed) starts from the same states."""
    return jax.random.fold_in(jax.random.key(seed + 12345), zlib.crc32(json.dumps(list(env_setup)).encode()))


def _hash(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


class CellStore:
    """``OUT/cells/<method>/<name>/<key>/``: ``cell.json`` (what the key hashes) and ``chunk_<first>_<n>.npz``
    files holding the results of rollouts ``first .. first + n - 1`` (their indices in ``rollouts``).

    Results are addressed by rollout index, so a later run with another chunk size or more rollouts
    reuses every finished one; inputs that change give another key folder, and going back to earlier
    inputs finds their rollouts again (nothing is deleted)."""

    def __init__(self, out_dir: str, cell: Cell, key: str, inputs: dict | None = None):
        self.dir = os.path.join(out_dir, "cells", cell.method, cell.name, key)
        os.makedirs(self.dir, exist_ok=True)
        record = os.path.join(self.dir, "cell.json")
        if not os.path.exists(record):
            with open(record, "w") as f:
                json.dump({"key": key, "cell": cell._asdict(), "inputs": inputs}, f, default=str)
        self._rows: dict[int, dict] = {}
        for name in sorted(os.listdir(self.dir)):
            if name.startswith("chunk_") and name.endswith(".npz") and ".tmp" not in name:
                try:
                    with np.load(os.path.join(self.dir, name)) as z:
                        part = {k: z[k] for k in z.files}
                except (OSError, ValueError, EOFError):  # a torn file: its rollouts run again
                    continue
                for j, r in enumerate(part.pop("rollouts").tolist()):
                    self._rows[r] = {k: v[j] for k, v in part.items()}

    def done(self) -> set[int]:
        return set(self._rows)

    def save(self, first: int, result: dict) -> None:
        n = len(next(iter(result.values())))
        path = os.path.join(self.dir, f"chunk_{first:05d}_{n}.npz")
        tmp = path + ".tmp.npz"
        np.savez(tmp, rollouts=np.arange(first, first + n), **result)
        os.replace(tmp, path)
        for j in range(n):
            self._rows[first + j] = {k: v[j] for k, v in result.items()}

    def load(self, rollouts: int) -> dict:
        rows = [self._rows[i] for i in range(rollouts)]
        return {k: np.stack([r[k] for r in rows]) for k in rows[0]}


def missing_blocks(done: set[int], rollouts: int, chunk: int) -> list[tuple[int, int]]:
    """``(first, count)`` runs of consecutive rollouts not in ``done``, each at most ``chunk`` long."""
    blocks, i = [], 0
    while i < rollouts:
        if i in done:
            i += 1
            continue
        j = i
        while j < rollouts and j not in done and j - i < chunk:
            j += 1
        blocks.append((i, j - i))
        i = j
    return blocks


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
              run_chunk: Callable, progress: bool = True, log=print, pad: bool = True) -> dict:
    """Run every rollout not finished earlier; returns ``{(method, name): {"index", "counted", "step"}}``.

    ``run_chunk(cell, first, count) -> {"index" [count], "counted" [count, B], "step" [count]}`` rolls
    out rollouts ``first .. first + count - 1`` of ``cell``; with ``pad`` it is always asked for
    ``sizes.chunk`` of them (one compiled shape; the ones past the block are dropped: results depend on
    the rollout index only). ``cell_key(cell)``: everything the cell's rollouts depend on (hashed)."""
    stores = {}
    for c in cells:
        inputs = cell_key(c)
        stores[c] = CellStore(out_dir, c, _hash(inputs), inputs)
    todo = [(c, first, n) for c in cells for first, n in missing_blocks(stores[c].done(), sizes.rollouts,
                                                                          sizes.chunk)]
    total = sizes.rollouts * len(cells)
    done = total - sum(n for _, _, n in todo)
    if done:
        log(f"  resuming: {done} of {total} rollouts were finished earlier")
    bar = tqdm(total=total, initial=done, unit="rollout", disable=not progress, desc=experiment.title,
               dynamic_ncols=True)
    t0 = time.perf_counter()
    for cell, first, count in todo:
        bar.set_postfix_str(f"{cell.method}/{cell.name}")
        result = run_chunk(cell, first, sizes.chunk if pad else count)
        stores[cell].save(first, {k: np.asarray(v)[:count] for k, v in result.items()})
        bar.update(count)
    bar.close()
    if todo:
        log(f"  {total - done} rollouts in {time.perf_counter() - t0:.0f} s")
    return {(c.method, c.name): stores[c].load(sizes.rollouts) for c in cells}


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


def method_horizon(experiment, horizon: int, method: str) -> int:
    """Control steps of ``method``'s rollouts: GPC runs the original planner's shorter horizon (200 of 400)."""
    if method == "gpc":
        return max(1, round(horizon * experiment.gpc_horizon_fraction))
    return horizon


def path_fingerprint(path: str | None):
    """A file's or folder's identity for the cell keys: its path, size and modification time (a checkpoint
    replaced in place reruns the cells that read it)."""
    if not path or not os.path.exists(path):
        return path
    if os.path.isdir(path):
        stats = [os.stat(os.path.join(r, n)) for r, _, names in os.walk(path) for n in names]
        return [os.path.abspath(path), sum(x.st_size for x in stats), max((x.st_mtime for x in stats), default=0)]
    st = os.stat(path)
    return [os.path.abspath(path), st.st_size, st.st_mtime]


def eval_fields(cfg: DemoConfig) -> dict:
    return {k: getattr(cfg, k) for k in ("ddim_steps", "encoder_size", "gc_goal_size")}


def stack_keys(key: jax.Array, first: int, count: int) -> jax.Array:
    return jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(first, first + count))
