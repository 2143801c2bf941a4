"""The built-in world as a host env (numpy in, numpy out, one environment per process): what the
vector env and the host-side loop drive in place of CALVIN, with the observation names of
``eval.rollout.tabletop_env`` (the parity tests of ``eval.host_loop`` rest on it)."""
from __future__ import annotations

import dataclasses
import multiprocessing as mp

import jax
import numpy as np

from dynaguide_jax.envs import tabletop


class TabletopHostEnv:
    """One tabletop world; ``images=False`` skips the renders (for policies that read state only)."""

    def __init__(self, config: tabletop.TabletopConfig = tabletop.TabletopConfig(), images: bool = True,
                 proprio_key: str = "proprio", scene_key: str = "scene"):
        self.config, self.images, self.keys = config, images, (proprio_key, scene_key)
        self.state, self._low = None, None

    def _observe(self) -> dict:
        obs = tabletop.observe(self.state, self.config, images=self.images)
        self._low = np.asarray(obs["robot_obs"]), np.asarray(obs["scene_obs"])
        out = {self.keys[0]: self._low[0], self.keys[1]: self._low[1]}
        if self.images:
            out = {"rgb_static": np.asarray(obs["rgb_static"]), "rgb_gripper": np.asarray(obs["rgb_gripper"]), **out}
        return out

    def reset(self, robot_obs, scene_obs) -> dict:
        """The state ``tabletop.reset`` builds from ``robot_obs`` [15] / ``scene_obs`` [24] (no randomness)."""
        self.state = tabletop.reset(jax.random.key(0), self.config, robot_obs=np.asarray(robot_obs, np.float32),
                                    scene_obs=np.asarray(scene_obs, np.float32))
        return self._observe()

    def step(self, action) -> dict:
        if self.state is None:
            raise RuntimeError("TabletopHostEnv.step before reset")
        self.state = tabletop.step(self.state, np.asarray(action, np.float32), self.config)
        return self._observe()

    def low_dim(self) -> tuple[np.ndarray, np.ndarray]:
        """``(robot_obs [15], scene_obs [24])`` of the current state."""
        if self._low is None:
            raise RuntimeError("TabletopHostEnv.low_dim before reset")
        return self._low

    def close(self) -> None:
        self.state, self._low = None, None


@dataclasses.dataclass(frozen=True)
class TabletopHostFactory:
    """Picklable recipe for ``VectorEnv``. ``cpu``: the worker's JAX uses the CPU only (N workers
    must not each claim the accelerator the policy runs on)."""

    config: tabletop.TabletopConfig = tabletop.TabletopConfig()
    images: bool = True
    proprio_key: str = "proprio"
    scene_key: str = "scene"
    cpu: bool = True

    def __call__(self, index: int) -> TabletopHostEnv:
        del index  # every tabletop env is alike; the start state comes with reset
        if self.cpu and mp.parent_process() is not None:  # a worker: leave the caller's own process alone
            jax.config.update("jax_platforms", "cpu")
        return TabletopHostEnv(self.config, self.images, self.proprio_key, self.scene_key)
