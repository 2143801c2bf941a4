"""Resumable training state on disk (orbax ``CheckpointManager``, keeps the newest N).

A run directory holds ``checkpoints/<step>/`` (the pytree state), ``metrics.jsonl`` (one line per
logged step) and ``config.json``. Saving is atomic per step (orbax writes to a temporary
directory and renames), so a killed run resumes from the last complete checkpoint; metric lines
past that step are dropped on resume so the curve has no duplicates.
"""
from __future__ import annotations

import json
import os

import jax
import numpy as np


class CheckpointManager:
    def __init__(self, directory: str | os.PathLike, keep: int = 3, async_save: bool = False):
        import orbax.checkpoint as ocp

        self.directory = os.path.abspath(os.fspath(directory))
        os.makedirs(self.directory, exist_ok=True)
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                               enable_async_checkpointing=async_save)
        self._ocp = ocp
        self._mgr = ocp.CheckpointManager(os.path.join(self.directory, "checkpoints"), options=options)
        self.metrics_path = os.path.join(self.directory, "metrics.jsonl")

    @property
    def latest_step(self) -> int | None:
        return self._mgr.latest_step()

    def save(self, step: int, state) -> None:
        self._mgr.save(step, args=self._ocp.args.StandardSave(state))

    def wait(self) -> None:
        self._mgr.wait_until_finished()

    def restore(self, like, step: int | None = None):
        """Restore into the structure (and dtypes) of ``like``; newest step by default."""
        step = self.latest_step if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint under {self.directory}")
        def spec(x):  # keep each array's sharding, so a sharded state restores sharded
            if isinstance(x, jax.Array):
                return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
            return jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype)

        abstract = jax.tree.map(spec, like)
        return self._mgr.restore(step, args=self._ocp.args.StandardRestore(abstract))

    def log(self, record: dict) -> None:
        with open(self.metrics_path, "a") as f:
            f.write(json.dumps(record) + "\n")

    def truncate_metrics(self, after_step: int) -> None:
        """Drop metric lines logged after ``after_step`` (work lost with an interrupted run)."""
        if not os.path.exists(self.metrics_path):
            return
        with open(self.metrics_path) as f:
            rows = [json.loads(line) for line in f if line.strip()]
        with open(self.metrics_path, "w") as f:
            for r in rows:
                if r.get("step", -1) <= after_step:
                    f.write(json.dumps(r) + "\n")

    def metrics(self) -> list[dict]:
        if not os.path.exists(self.metrics_path):
            return []
        with open(self.metrics_path) as f:
            return [json.loads(line) for line in f if line.strip()]

    def close(self) -> None:
        self._mgr.wait_until_finished()
        self._mgr.close()
