"""Closed-loop runner: the compiled loop equals a step-by-step Python loop with ``ActionChunker``
(frame stacking, replan times, executed slices), for every start index the methods use."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dynaguide_jax.eval.rollout import EnvFns, LoopConfig, closed_loop, shard_envs
from dynaguide_jax.policy.chunker import ActionChunker


def point_env():
    def step(s, a):
        return s + 0.1 * a[:3]

    def observe(s):
        return {"pos": s, "img": jnp.broadcast_to(s[0], (2, 2, 3))}

    def low_dim(s):
        return jnp.zeros(15).at[:3].set(s), jnp.zeros(24).at[6:9].set(2 * s)

    return EnvFns(step, observe, low_dim)


def policy(obs, key):
    """Chunk j: (j, oldest frame's x, newest frame's x, image mean, key-dependent noise = 0)."""
    n = obs["pos"].shape[0]
    j = jnp.arange(16, dtype=jnp.float32)
    cols = [jnp.broadcast_to(j, (n, 16)), jnp.broadcast_to(obs["pos"][:, :1, 0], (n, 16)),
            jnp.broadcast_to(obs["pos"][:, -1:, 0], (n, 16)),
            jnp.broadcast_to(obs["img"].mean(axis=(1, 2, 3, 4))[:, None], (n, 16))]
    return jnp.stack(cols + [jnp.zeros((n, 16))] * 3, axis=-1)


@pytest.mark.parametrize("obs_horizon,start", [(2, None), (2, 2), (1, None)])
def test_closed_loop_equals_a_python_loop_with_the_chunker(obs_horizon, start):
    env = point_env()
    cfg = LoopConfig(horizon=30, obs_horizon=obs_horizon, action_horizon=14, start=start)
    states = jnp.asarray(np.random.default_rng(0).normal(size=(3, 3)), jnp.float32)
    out = jax.jit(lambda s, k: closed_loop(env, policy, s, k, cfg))(states, jax.random.key(0))
    assert out.robot_obs.shape == (3, 31, 15) and out.scene_obs.shape == (3, 31, 24) and out.actions.shape == (3, 30, 7)
    for i in range(3):
        chunker = ActionChunker(lambda o, k: np.asarray(policy(o, k)), obs_horizon, 14, start=start)
        s, acts, pos = states[i], [], [np.asarray(states[i])]
        for t in range(30):
            a = chunker.act({k: np.asarray(v) for k, v in env.observe(s).items()}, jax.random.key(t))
            acts.append(a)
            s = env.step(s, jnp.asarray(a))
            pos.append(np.asarray(s))
        np.testing.assert_allclose(out.actions[i], np.stack(acts), atol=1e-5)
        np.testing.assert_allclose(out.robot_obs[i, :, :3], np.stack(pos), atol=1e-5)  # jit fuses the sums
        np.testing.assert_allclose(out.scene_obs[i, :, 6:9], 2 * np.stack(pos), atol=2e-5)
        assert chunker.chunks_sampled == 3
    first = cfg.first
    np.testing.assert_array_equal(out.actions[0, :14, 0], np.arange(first, first + 14))


def test_bad_loop_settings_and_short_chunks_fail_clearly():
    with pytest.raises(ValueError, match="horizon, obs_horizon and action_horizon"):
        LoopConfig(horizon=0)
    with pytest.raises(ValueError, match="start must be"):
        LoopConfig(start=-1)
    cfg = LoopConfig(horizon=5, action_horizon=14, start=4)
    with pytest.raises(ValueError, match="cannot execute 14 actions from index 4"):
        closed_loop(point_env(), policy, jnp.zeros((2, 3)), jax.random.key(0), cfg)
    s = jnp.zeros((4, 3))
    assert shard_envs(s).shape == (4, 3)


def test_loop_config_rejects_bad_settings():
    for kw, msg in ((dict(horizon=2.5), "LoopConfig.horizon must be an integer"), (dict(horizon=0), ">= 1"),
                    (dict(start=-1), "start must be >= 0"), (dict(action_horizon="14"), "must be an integer")):
        with pytest.raises((ValueError, TypeError), match=msg):
            LoopConfig(**kw)
