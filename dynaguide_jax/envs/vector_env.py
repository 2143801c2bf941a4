"""N host-side environments stepped in parallel worker processes (CALVIN renders ~130 ms per step on
one CPU core, so environments run side by side while the policy runs batched on the accelerator).

A host env is any object with ``reset(robot_obs [15], scene_obs [24]) -> obs``, ``step(action [A])
-> obs`` (``obs``: a dict of numpy arrays), ``low_dim() -> (robot_obs, scene_obs)`` and ``close()``
(``calvin.CalvinHostEnv``, ``tabletop_host.TabletopHostEnv``). Worker ``i`` builds its own from a
picklable ``factory(i)`` (processes are spawned, not forked: pybullet and XLA do not survive a fork).
A worker that raises, dies or stops answering ends all of them and raises ``VectorEnvError`` naming
the worker; nothing waits forever.
"""
from __future__ import annotations

import multiprocessing as mp
import pickle
import time
import traceback
from multiprocessing.connection import wait
from typing import Callable

import numpy as np

from dynaguide_jax._checks import check_int, check_positive


class VectorEnvError(RuntimeError):
    """A worker failed: its exception, its exit, or no answer in time."""


def _stack(dicts: list[dict]) -> dict:
    return {k: np.stack([d[k] for d in dicts]) for k in dicts[0]}


def _run_chunk(env, actions: np.ndarray, keep: int):
    """Execute ``actions`` [T, A]; -> (the last ``keep`` obs stacked {k: [keep, ...]}, robot [T, 15],
    scene [T, 24])."""
    kept, robots, scenes = [], [], []
    for t, a in enumerate(actions):
        obs = env.step(a)
        robot, scene = env.low_dim()
        robots.append(np.asarray(robot, np.float32))
        scenes.append(np.asarray(scene, np.float32))
        if t >= len(actions) - keep:
            kept.append({k: np.asarray(v) for k, v in obs.items()})
    return _stack(kept), np.stack(robots), np.stack(scenes)


def _worker(index: int, conn, factory) -> None:
    env = None
    try:
        env = factory(index)
        conn.send(("ok", None))
        while True:
            cmd, arg = conn.recv()
            if cmd == "reset":
                obs = env.reset(*arg)
                robot, scene = env.low_dim()
                conn.send(("ok", ({k: np.asarray(v) for k, v in obs.items()}, np.asarray(robot, np.float32),
                                  np.asarray(scene, np.float32))))
            elif cmd == "step":
                conn.send(("ok", _run_chunk(env, *arg)))
            elif cmd == "close":
                break
            else:
                raise ValueError(f"unknown command {cmd!r}")
    except (KeyboardInterrupt, EOFError):
        pass  # the parent went away or was interrupted: just leave
    except BaseException as e:  # noqa: BLE001 -- reported to the parent, which raises
        try:
            conn.send(("error", f"{type(e).__name__}: {e}\n{traceback.format_exc()}"))
        except (OSError, ValueError):
            pass
    finally:
        if env is not None:
            try:
                env.close()
            except Exception:  # noqa: BLE001 -- closing a broken env must not hide the first error
                pass
        conn.close()


class VectorEnv:
    """``num_envs`` host envs, one per spawned worker process. Use as a context manager (or call
    ``close``). ``timeout_s``: how long one call (or the start) may wait for a worker."""

    def __init__(self, factory: Callable, num_envs: int, *, timeout_s: float = 600.0, start_method: str = "spawn"):
        self.num_envs = check_int("num_envs", num_envs)
        self.timeout_s = check_positive("timeout_s", timeout_s)
        try:
            pickle.dumps(factory)
        except Exception as e:
            raise TypeError(f"factory must be picklable (a module-level class or function; workers are spawned), "
                            f"got {factory!r}: {e}") from e
        ctx = mp.get_context(start_method)
        self._conns, self._procs, self._closed = [], [], False
        try:
            for i in range(self.num_envs):
                parent, child = ctx.Pipe()
                proc = ctx.Process(target=_worker, args=(i, child, factory), name=f"dynaguide-env-{i}", daemon=True)
                proc.start()
                child.close()
                self._conns.append(parent)
                self._procs.append(proc)
            self._gather("start")
        except BaseException:
            self.close()
            raise

    # --- plumbing --------------------------------------------------------------------------------
    def _recv(self, i: int, what: str):
        conn, proc = self._conns[i], self._procs[i]
        remaining = self.timeout_s - (time.monotonic() - self._t0)
        ready = wait([conn, proc.sentinel], timeout=max(remaining, 0.0))
        if conn in ready:
            try:
                status, payload = conn.recv()
            except (EOFError, OSError):
                proc.join(1.0)
                raise VectorEnvError(f"worker {i} (pid {proc.pid}) died during {what} (exit code {proc.exitcode})")
            if status == "error":
                raise VectorEnvError(f"worker {i} (pid {proc.pid}) failed during {what}: {payload}")
            return payload
        if proc.sentinel in ready:
            proc.join(1.0)
            raise VectorEnvError(f"worker {i} (pid {proc.pid}) died during {what} (exit code {proc.exitcode})")
        raise VectorEnvError(f"worker {i} (pid {proc.pid}) did not answer {what} within {self.timeout_s:g} s")

    def _gather(self, what: str) -> list:
        self._t0 = time.monotonic()
        try:
            return [self._recv(i, what) for i in range(self.num_envs)]
        except BaseException:
            self.close(grace_s=1.0)  # a worker is broken or hung: do not wait long for the others
            raise

    def _send_all(self, cmd: str, args: list, what: str) -> list:
        if self._closed:
            raise VectorEnvError(f"VectorEnv.{cmd} after close")
        for i, (conn, arg) in enumerate(zip(self._conns, args)):
            try:
                conn.send((cmd, arg))
            except (BrokenPipeError, OSError) as e:
                self.close(grace_s=1.0)
                raise VectorEnvError(f"worker {i} (pid {self._procs[i].pid}) is gone ({what}): {e}") from e
        return self._gather(what)

    def _check_batch(self, name: str, x, tail: tuple, layout: str) -> np.ndarray:
        x = np.asarray(x)
        if x.ndim != 1 + len(tail) or x.shape[0] != self.num_envs or any(t is not None and s != t
                                                                          for s, t in zip(x.shape[1:], tail)):
            raise ValueError(f"{name} must be {layout} with N = num_envs = {self.num_envs}, got shape {x.shape}")
        if not np.isfinite(x).all():
            raise ValueError(f"{name} contains non-finite values")
        return x

    # --- the interface ---------------------------------------------------------------------------
    def reset(self, robot_obs, scene_obs) -> tuple[dict, np.ndarray, np.ndarray]:
        """``robot_obs`` [N, 15], ``scene_obs`` [N, 24] -> (obs {k: [N, ...]}, robot [N, 15], scene [N, 24])."""
        robot = self._check_batch("robot_obs", robot_obs, (15,), "[N, 15]")
        scene = self._check_batch("scene_obs", scene_obs, (24,), "[N, 24]")
        out = self._send_all("reset", list(zip(robot, scene)), "reset")
        return _stack([o[0] for o in out]), np.stack([o[1] for o in out]), np.stack([o[2] for o in out])

    def step(self, actions, keep_obs: int = 1) -> tuple[dict, np.ndarray, np.ndarray]:
        """Execute ``actions`` [N, T, A] (T steps each) -> (the last ``min(keep_obs, T)`` observations
        {k: [N, K, ...]}, robot_obs [N, T, 15], scene_obs [N, T, 24] after every step)."""
        acts = self._check_batch("actions", actions, (None, None), "[N, T, A]")
        if acts.shape[1] < 1:
            raise ValueError(f"actions must hold at least one step, got shape {acts.shape}")
        keep = min(check_int("keep_obs", keep_obs), acts.shape[1])
        out = self._send_all("step", [(a, keep) for a in acts], "step")
        return _stack([o[0] for o in out]), np.stack([o[1] for o in out]), np.stack([o[2] for o in out])

    def close(self, grace_s: float = 5.0) -> None:
        """Stop every worker (asked first, terminated after ``grace_s``, killed 5 s later); idempotent."""
        if self._closed:
            return
        self._closed = True
        for conn, proc in zip(self._conns, self._procs):
            if proc.is_alive():
                try:
                    conn.send(("close", None))
                except (BrokenPipeError, OSError):
                    pass
        deadline = time.monotonic() + grace_s
        for proc in self._procs:
            proc.join(max(deadline - time.monotonic(), 0.0))
            if proc.is_alive():
                proc.terminate()
                proc.join(5.0)
            if proc.is_alive():
                proc.kill()
                proc.join()
        for conn in self._conns:
            conn.close()

    def __enter__(self) -> VectorEnv:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        if getattr(self, "_procs", None) is not None and not getattr(self, "_closed", True):
            self.close()
