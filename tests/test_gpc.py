"""The sample-and-rank (GPC) baseline: candidates are exactly the base policy's samples, the pick is
the metric's argmax, it prefers the goal behaviour in the toy world, and bad inputs fail clearly."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dynaguide_jax.baselines import sample_and_rank
from dynaguide_jax.demo import ACTION_DIM, HORIZON, DemoConfig, goal_rates, prepare_scene
from dynaguide_jax.diffusion import guided_sample
from dynaguide_jax.policy import mixture_eps


@pytest.fixture(scope="module")
def scene():
    cfg = DemoConfig(samples=64, train_steps=300)
    return cfg, prepare_scene(cfg, progress=False)


def rank(cfg, scene, n, key=0, **kw):
    params = {"dynamics": scene["dyn_params"], "goals": scene["goals"], "sigma": cfg.sigma}
    return sample_and_rank(mixture_eps, scene["policy"], jnp.zeros((cfg.samples, 1)), scene["guide"], params,
                           scene["obs"], key=jax.random.key(key), num_samples=n, schedule=scene["schedule"],
                           action_shape=(HORIZON, ACTION_DIM), **kw), params


def test_candidates_are_base_samples_and_the_pick_is_the_best(scene):
    cfg, sc = scene
    out, params = rank(cfg, sc, 5)
    base = guided_sample(mixture_eps, sc["policy"], jnp.zeros((cfg.samples, 1)), key=jax.random.key(0),
                         schedule=sc["schedule"], action_shape=(HORIZON, ACTION_DIM), repeats=1, particles=5)
    np.testing.assert_allclose(out.candidates, base.actions, atol=1e-6)
    assert out.candidates.shape == (cfg.samples, 5, HORIZON, ACTION_DIM) and out.scores.shape == (cfg.samples, 5)
    feats = sc["guide"].prepare(params, sc["obs"])
    direct = np.stack([sc["guide"].metric(params, feats, out.candidates[:, i]) for i in range(5)], 1)
    np.testing.assert_allclose(out.scores, direct, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(out.best, direct.argmax(1))
    np.testing.assert_array_equal(out.actions, out.candidates[np.arange(cfg.samples), out.best])
    np.testing.assert_allclose(out.metric, direct.max(1), rtol=1e-5, atol=1e-5)


def test_ranking_prefers_the_goal_behaviour(scene):
    cfg, sc = scene
    one, _ = rank(cfg, sc, 1)
    five, _ = rank(cfg, sc, 5)
    base_rate, gpc_rate = goal_rates(cfg, sc, one.actions), goal_rates(cfg, sc, five.actions)
    assert gpc_rate > base_rate + 0.25, (base_rate, gpc_rate)
    assert float(five.metric.mean()) > float(one.metric.mean())


def test_bad_inputs(scene):
    cfg, sc = scene
    with pytest.raises(ValueError, match="num_samples must be >= 1"):
        rank(cfg, sc, 0)
    with pytest.raises(ValueError, match="needs a guidance"):
        sample_and_rank(mixture_eps, sc["policy"], jnp.zeros((2, 1)), None, None, None, key=jax.random.key(0))
    with pytest.raises(ValueError, match="action_shape"):
        sample_and_rank(mixture_eps, sc["policy"], jnp.zeros((2, 1)), sc["guide"], {}, sc["obs"],
                        key=jax.random.key(0), action_shape=(16,))
