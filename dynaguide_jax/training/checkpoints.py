"""Resumable training state on disk (orbax ``CheckpointManager``, keeps the newest N).

A run directory holds ``checkpoints/<step>/`` (the pytree state), ``metrics.jsonl`` (one line per
logged step) and ``config.json``. Saving is atomic per step (orbax writes to a temporary
directory and renames), so a killed run resumes from the last complete checkpoint; metric lines
past that step (and a line torn by a crash) are dropped on resume so the curve has no duplicates.
A full disk while writing any of these (however orbax, TensorStore or asyncio wrap the ENOSPC) is
one ``DiskFullError`` naming the run directory and the checkpoint a rerun resumes from; the
background writers are stopped without a traceback per pending write.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil

import jax
import numpy as np

from dynaguide_jax.outputs import NO_SPACE, DiskFullError, is_disk_full, quiet_disk_full_reports, write_json_atomic

_TMP_SUFFIX = ".orbax-checkpoint-tmp"  # orbax's name for a step it has not finished writing


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
        self._writers = []  # closed with the manager, and quietly after a full disk
        self._quiet = quiet_disk_full_reports()

    @property
    def latest_step(self) -> int | None:
        return self._mgr.latest_step()

    def save(self, step: int, state) -> None:
        self._guarded(self._mgr.save, step, args=self._ocp.args.StandardSave(state))

    def wait(self) -> None:
        self._guarded(self._mgr.wait_until_finished)

    def attach(self, writer):
        """Close ``writer`` (e.g. a TensorBoard ``SummaryWriter`` in the run directory) with the manager."""
        self._writers.append(writer)
        return writer

    def write_json(self, name: str, obj) -> None:
        """Write ``name`` in the run directory atomically (never a truncated file)."""
        self._guarded(write_json_atomic, os.path.join(self.directory, name), obj, indent=2)

    def restore(self, like, step: int | None = None):
        """Restore into the structure (and dtypes) of ``like`` (arrays, or ``jax.ShapeDtypeStruct``s as
        ``jax.eval_shape`` gives them); newest step by default."""
        step = self.latest_step if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint under {self.directory}")
        def spec(x):  # keep each array's sharding, so a sharded state restores sharded
            if isinstance(x, jax.ShapeDtypeStruct):  # an abstract template (jax.eval_shape): on one device
                return x if x.sharding is not None else jax.ShapeDtypeStruct(
                    x.shape, x.dtype, sharding=jax.sharding.SingleDeviceSharding(jax.local_devices()[0]))
            if isinstance(x, jax.Array):
                return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
            return jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype)

        abstract = jax.tree.map(spec, like)
        return self._mgr.restore(step, args=self._ocp.args.StandardRestore(abstract))

    def log(self, record: dict) -> None:
        self._guarded(self._append_metrics, record)

    def _append_metrics(self, record: dict) -> None:
        with open(self.metrics_path, "a") as f:
            f.write(json.dumps(record) + "\n")

    def truncate_metrics(self, after_step: int) -> None:
        """Drop metric lines logged after ``after_step`` (work lost with an interrupted run)."""
        if not os.path.exists(self.metrics_path):
            return
        rows = [r for r in self.metrics() if r.get("step", -1) <= after_step]
        self._guarded(self._rewrite_metrics, rows)

    def _rewrite_metrics(self, rows: list[dict]) -> None:
        tmp = self.metrics_path + ".tmp"
        with open(tmp, "w") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
        os.replace(tmp, self.metrics_path)

    def metrics(self) -> list[dict]:
        """The logged lines; a line cut short (a crash or a full disk while logging) is skipped."""
        if not os.path.exists(self.metrics_path):
            return []
        rows = []
        with open(self.metrics_path) as f:
            for line in f:
                with contextlib.suppress(ValueError):
                    if line.strip():
                        rows.append(json.loads(line))
        return rows

    def complete_steps(self) -> list[int]:
        """Steps whose checkpoint is fully written (orbax renames a finished step to its number)."""
        ckpts = os.path.join(self.directory, "checkpoints")
        names = os.listdir(ckpts) if os.path.isdir(ckpts) else []
        return sorted(int(n) for n in names if n.isdigit())

    def close(self) -> None:
        self._guarded(self._close)
        self._quiet.release()

    def _close(self) -> None:
        self._mgr.wait_until_finished()
        self._mgr.close()
        while self._writers:
            self._writers.pop().close()

    def _guarded(self, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as e:
            if not is_disk_full(e):
                raise
            self._quiet.disk_full()
            self.abort()
            steps = self.complete_steps()
            kept = (f"the last complete checkpoint (step {steps[-1]}) is kept and the rerun resumes from it"
                    if steps else "no checkpoint was complete yet, so the rerun starts from step 0")
            raise DiskFullError(f"{NO_SPACE} while writing {self.directory}: free space and rerun; {kept}",
                                self.directory) from e

    def abort(self) -> None:
        """After a failed write: let the background writes end, close the manager and the attached
        writers, and delete the unfinished step (it would never read as a checkpoint, but it holds
        disk space). Never raises."""
        for stop in (self._mgr.wait_until_finished, self._mgr.close):
            with contextlib.suppress(Exception):
                stop()
        while self._writers:
            _close_quietly(self._writers.pop())
        ckpts = os.path.join(self.directory, "checkpoints")
        if jax.process_index() == 0 and os.path.isdir(ckpts):
            for name in os.listdir(ckpts):
                if _TMP_SUFFIX in name:
                    shutil.rmtree(os.path.join(ckpts, name), ignore_errors=True)


def _close_quietly(closer) -> None:
    """Close a writer whose flush may fail on the full disk: its buffered data is dropped."""
    if closer is None:
        return
    with contextlib.suppress(Exception):
        closer.close()
        return
    # tensorboardX: a failed close leaves each event file open with its thread running, and its
    # atexit hook retries the flush; stop the threads and mark the files closed instead
    for fw in (getattr(closer, "all_writers", None) or {}).values():
        ew = getattr(fw, "event_writer", None)
        with contextlib.suppress(Exception):
            ew._worker.stop()
        with contextlib.suppress(Exception):
            ew._closed = True


def read_run_json(run_dir: str | os.PathLike, kind: str, keys: tuple[str, ...]) -> dict:
    """The ``config.json`` of a ``dynaguide train <kind>`` run, which must hold ``keys``; every
    failure (no directory, no file, bad JSON, missing keys) names the path."""
    run_dir = os.fspath(run_dir)
    path = os.path.join(run_dir, "config.json")
    if not os.path.isdir(run_dir):
        raise FileNotFoundError(f"{run_dir}: no such {kind} run directory")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} is missing: {run_dir} is not a `dynaguide train {kind}` run (train one "
                                f"with `dynaguide train {kind} --out DIR`)")
    try:
        with open(path) as f:
            meta = json.load(f)
    except (OSError, ValueError) as e:  # JSONDecodeError is a ValueError
        raise ValueError(f"{path}: not a {kind} run config ({e})") from None
    missing = [k for k in keys if k not in meta] if isinstance(meta, dict) else list(keys)
    if missing:
        raise ValueError(f"{path}: not a {kind} run config (lacks {missing})")
    return meta


def restore_latest(run_dir: str | os.PathLike, like, kind: str, keep: int = 3):
    """The newest complete checkpoint of a run, restored into ``like``'s structure; a missing,
    empty or unreadable ``checkpoints/`` is one error naming the path (nothing is created)."""
    run_dir = os.fspath(run_dir)
    ckpt_dir = os.path.join(run_dir, "checkpoints")
    if not os.path.isdir(ckpt_dir):  # checked here: CheckpointManager would create it
        raise FileNotFoundError(f"{ckpt_dir} is missing: the run {run_dir} never saved a checkpoint")
    mgr = CheckpointManager(run_dir, keep=keep)
    try:
        step = mgr.latest_step
        if step is None:
            raise FileNotFoundError(f"{ckpt_dir} holds no complete checkpoint")
        try:
            return mgr.restore(like, step)
        except Exception as e:  # orbax / tensorstore raise many types for corrupt or mismatched files
            detail = str(e).strip().splitlines()[0][:300] if str(e).strip() else ""
            raise ValueError(f"{os.path.join(ckpt_dir, str(step))}: cannot restore the {kind} state of "
                             f"{os.path.join(run_dir, 'config.json')}'s model ({type(e).__name__}: {detail})") from e
    finally:
        mgr.close()
