"""Host-side closed loop over a vector env of worker processes: the same rollouts as the jitted
``closed_loop`` on the built-in world (same start states, key and policy), and clear failures for
bad inputs, crashing workers and factories that cannot be sent to a worker."""
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dynaguide_jax.envs import tabletop
from dynaguide_jax.envs.tabletop_host import TabletopHostEnv, TabletopHostFactory
from dynaguide_jax.envs.vector_env import VectorEnv, VectorEnvError
from dynaguide_jax.eval.host_loop import host_closed_loop
from dynaguide_jax.eval.rollout import LoopConfig, closed_loop, tabletop_env

CONFIG = tabletop.TabletopConfig.small()


def reach_policy(obs, key):
    """Deterministic given (obs, key): head for the red block, drift with the oldest frame, key noise."""
    p, s = obs["proprio"], obs["scene"]
    n = p.shape[0]
    j = jnp.arange(16, dtype=jnp.float32)[None, :, None]
    base = jnp.clip(20.0 * (s[:, -1, 6:9] - p[:, -1, :3]), -1.0, 1.0)[:, None]
    xyz = base * (1.0 - 0.02 * j) + 5.0 * (p[:, :1, None, :3] - p[:, -1:, None, :3]).squeeze(2)
    xyz = xyz + 0.3 * jax.random.normal(key, (n, 16, 3))
    rot = jnp.zeros((n, 16, 3))
    grip = jnp.broadcast_to(jnp.where(j < 9, 1.0, -1.0), (n, 16, 1))
    return jnp.concatenate([xyz, rot, grip], -1)


def start_obs(n, seed=0):
    states = jax.vmap(lambda k: tabletop.reset(k, CONFIG))(jax.random.split(jax.random.key(seed), n))
    return np.asarray(jax.vmap(tabletop.robot_obs)(states)), np.asarray(jax.vmap(tabletop.scene_obs)(states))


class CrashFactory:
    """Worker ``crash_index`` dies (``os._exit``) or raises on its first step."""

    def __init__(self, crash_index, how):
        self.crash_index, self.how = crash_index, how

    def __call__(self, index):
        return _CrashEnv(index == self.crash_index, self.how)


class _CrashEnv:
    def __init__(self, crash, how):
        self.crash, self.how = crash, how

    def reset(self, robot_obs, scene_obs):
        self.low = (np.asarray(robot_obs, np.float32), np.asarray(scene_obs, np.float32))
        return {"proprio": self.low[0]}

    def step(self, action):
        if self.crash and self.how == "exit":
            os._exit(3)
        if self.crash and self.how == "hang":
            time.sleep(120)
        if self.crash:
            raise RuntimeError("simulator exploded")
        return {"proprio": self.low[0]}

    def low_dim(self):
        return self.low

    def close(self):
        pass


@pytest.mark.parametrize("start", [None, 2])
def test_host_loop_matches_the_jitted_closed_loop_on_the_tabletop_world(start):
    n, cfg = 2, LoopConfig(horizon=10, obs_horizon=2, action_horizon=4, start=start)  # 3 replans, the last cut
    robot, scene = start_obs(n)
    key = jax.random.key(7)
    states = jax.vmap(lambda r, s: tabletop.reset(jax.random.key(0), CONFIG, r, s))(robot, scene)
    env = tabletop_env(CONFIG)
    ref = jax.jit(lambda s, k: closed_loop(env, reach_policy, s, k, cfg))(states, key)
    with VectorEnv(TabletopHostFactory(CONFIG, images=False), n, timeout_s=300) as envs:
        out = host_closed_loop(envs, reach_policy, robot, scene, key, cfg, progress=True)
    assert out.robot_obs.shape == (n, 11, 15) and out.scene_obs.shape == (n, 11, 24) and out.actions.shape == (n, 10, 7)
    assert all(isinstance(x, np.ndarray) for x in out)
    # same programs up to XLA's fusion (one env per process vs vmapped in a scan): float32 rounding only
    np.testing.assert_allclose(out.actions, ref.actions, atol=1e-5)
    np.testing.assert_allclose(out.robot_obs, ref.robot_obs, atol=1e-5)
    np.testing.assert_allclose(out.scene_obs, ref.scene_obs, atol=1e-5)
    assert np.abs(np.diff(out.robot_obs[:, :, :3], axis=1)).max() > 1e-3  # the arm moved


def test_tabletop_host_env_observes_like_the_builtin_world():
    robot, scene = start_obs(1, seed=3)
    env = TabletopHostEnv(CONFIG, images=True)
    obs = env.reset(robot[0], scene[0])
    assert set(obs) == {"rgb_static", "rgb_gripper", "proprio", "scene"}
    assert obs["rgb_static"].shape == (64, 64, 3) and obs["rgb_static"].dtype == np.uint8
    assert obs["rgb_gripper"].shape == (32, 32, 3)
    np.testing.assert_allclose(obs["proprio"], robot[0], atol=1e-6)
    obs = env.step(np.array([1.0, 0, 0, 0, 0, 0, 1.0]))
    np.testing.assert_array_equal(env.low_dim()[0], obs["proprio"])
    assert obs["proprio"][0] > robot[0, 0]


def test_vector_env_rejects_a_wrong_number_of_envs_and_bad_actions():
    robot, scene = start_obs(3)
    with VectorEnv(CrashFactory(-1, "none"), 2, timeout_s=60) as envs:
        with pytest.raises(ValueError, match=r"robot_obs must be \[N, 15\] with N = num_envs = 2, got shape \(3, 15\)"):
            envs.reset(robot, scene[:2])
        envs.reset(robot[:2], scene[:2])
        with pytest.raises(ValueError, match=r"actions must be \[N, T, A\] with N = num_envs = 2"):
            envs.step(np.zeros((3, 4, 7)))
        with pytest.raises(ValueError, match="actions contains non-finite"):
            envs.step(np.full((2, 4, 7), np.nan))
        with pytest.raises(ValueError, match="policy chunks .* in 2 environments"):
            host_closed_loop(envs, lambda o, k: jnp.zeros((3, 16, 7)), robot[:2], scene[:2], jax.random.key(0),
                             LoopConfig(horizon=4, action_horizon=4))
        obs, r, s = envs.step(np.zeros((2, 3, 7)), keep_obs=2)
        assert obs["proprio"].shape == (2, 2, 15) and r.shape == (2, 3, 15) and s.shape == (2, 3, 24)
    with pytest.raises(VectorEnvError, match="after close"):
        envs.step(np.zeros((2, 1, 7)))
    with pytest.raises(ValueError, match="num_envs must be >= 1"):
        VectorEnv(CrashFactory(-1, "none"), 0)
    with pytest.raises(TypeError, match="factory must be picklable"):
        VectorEnv(lambda i: None, 1)


@pytest.mark.parametrize("how,match", [("exit", r"worker 1 \(pid \d+\) died during step \(exit code 3\)"),
                                       ("raise", r"worker 1 \(pid \d+\) failed during step: RuntimeError: "
                                                 "simulator exploded"),
                                       ("hang", r"worker 1 \(pid \d+\) did not answer step within 2 s")])
def test_a_crashing_worker_raises_naming_it_and_stops_all(how, match):
    robot, scene = start_obs(2)
    envs = VectorEnv(CrashFactory(1, how), 2, timeout_s=60)
    envs.reset(robot, scene)
    envs.timeout_s = 2.0  # per call: a hung step is given up after 2 s
    with pytest.raises(VectorEnvError, match=match):
        envs.step(np.zeros((2, 2, 7)))
    assert not any(p.is_alive() for p in envs._procs)
    envs.close()  # idempotent


def broken_factory(index):
    raise OSError(f"no display for env {index}")


def test_a_failing_factory_is_reported_at_start():
    with pytest.raises(VectorEnvError, match=r"worker 0 \(pid \d+\) failed during start: OSError: no display for env"):
        VectorEnv(broken_factory, 1, timeout_s=60)
