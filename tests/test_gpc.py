"""The sample-and-rank (GPC) baseline: candidates are exactly the base policy's samples, the default
"mean_l2" score matches the original's run_rejection_sampling (tests/oracles/gpc.py), the "metric"
option picks the LSE metric's argmax, both prefer the goal behaviour in the toy world, and bad
inputs fail clearly."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from dynaguide_jax.baselines import sample_and_rank
from dynaguide_jax.baselines.gpc import mean_goal_distance
from dynaguide_jax.toy_demo import ACTION_DIM, HORIZON, ToySceneConfig, goal_rates, prepare_scene
from dynaguide_jax.diffusion import guided_sample
from dynaguide_jax.guidance import NoGuidance
from dynaguide_jax.policy import mixture_eps
from tests.oracles.gpc import good_final_states, run_rejection_sampling

# torch.cdist's own float32 error is ~1e-5 relative at 256 x 384 features (vs float64); ours ~1e-7
RTOL, ATOL = 5e-5, 1e-5


@pytest.fixture(scope="module")
def scene():
    # 150 steps: future-patch MSE ~0.17 (copying the frame: ~0.72); the goal rates below are the same as
    # after 300 steps (base ~0.2-0.35, best of 5 ~0.75-0.8 for keys 0-2), at half the training time
    cfg = ToySceneConfig(samples=64, train_steps=150)
    return cfg, prepare_scene(cfg, progress=False)


def rank(cfg, scene, n, key=0, **kw):
    params = {"dynamics": scene["dyn_params"], "goals": scene["goals"], "sigma": cfg.sigma}
    kw.setdefault("goals", scene["gpc_goals"])
    return sample_and_rank(mixture_eps, scene["policy"], jnp.zeros((cfg.samples, 1)), scene["guide"], params,
                           scene["obs"], key=jax.random.key(key), num_samples=n, schedule=scene["schedule"],
                           action_shape=(HORIZON, ACTION_DIM), **kw), params


def test_mean_goal_distance_matches_the_original_at_full_size(rng):
    p, d, k, n = 256, 384, 7, 5  # the original's 16 x 16 DinoV2-S patches
    base = rng.normal(size=(1, p, d)).astype(np.float32) * 2 + 10  # a large common offset
    preds = (base + 0.1 * rng.normal(size=(n, 1, p, d)) * np.arange(1, n + 1)[:, None, None, None])
    preds = preds.astype(np.float32)[::-1].copy()  # the closest candidate is the last
    goals = good_final_states([torch.tensor((base + 0.05 * rng.normal(size=(1, p, d))).astype(np.float32))
                               for _ in range(k)])
    model = lambda state, i: (torch.tensor(preds[int(i)]), None)  # noqa: E731
    closest, ref = run_rejection_sampling(model, [torch.tensor(i) for i in range(n)], goals, None)
    ours = mean_goal_distance(jnp.asarray(preds[:, 0]), jnp.asarray(goals.numpy()))
    np.testing.assert_allclose(np.asarray(ours), np.array(ref), rtol=RTOL, atol=ATOL)
    assert int(jnp.argmin(ours)) == int(closest) == n - 1


def test_default_score_matches_the_original(scene):
    cfg, sc = scene
    out, params = rank(cfg, sc, 5)
    assert out.scores.shape == (cfg.samples, 5) and out.candidates.shape == (cfg.samples, 5, HORIZON, ACTION_DIM)
    p, d = sc["dyn"].patches_per_camera, sc["dyn"].feature_dim
    goals = good_final_states([torch.tensor(np.asarray(g).reshape(1, p, d)) for g in sc["gpc_goals"]])
    for b in range(0, cfg.samples, 9):  # the original ranks one observation at a time
        obs_b = {k: v[b:b + 1] for k, v in sc["obs"].items()}

        def model(state, action):
            return torch.tensor(np.asarray(sc["guide"].predict(params, obs_b, jnp.asarray(action.numpy())))), None

        actions_list = [torch.tensor(np.asarray(out.candidates[b, i:i + 1])) for i in range(5)]
        closest, ref = run_rejection_sampling(model, actions_list, goals, None)
        np.testing.assert_allclose(np.asarray(out.scores[b]), np.array(ref), rtol=RTOL, atol=ATOL)
        assert int(out.best[b]) == int(closest)
    np.testing.assert_array_equal(out.actions, out.candidates[np.arange(cfg.samples), out.best])
    np.testing.assert_allclose(out.score, np.asarray(out.scores).min(1), rtol=1e-6)


def test_metric_option_picks_the_metric_argmax_of_the_base_samples(scene):
    cfg, sc = scene
    out, params = rank(cfg, sc, 5, score="metric", goals=None)
    base = guided_sample(mixture_eps, sc["policy"], jnp.zeros((cfg.samples, 1)), key=jax.random.key(0),
                         schedule=sc["schedule"], action_shape=(HORIZON, ACTION_DIM), repeats=1, particles=5)
    np.testing.assert_allclose(out.candidates, base.actions, atol=1e-6)
    feats = sc["guide"].prepare(params, sc["obs"])
    direct = np.stack([sc["guide"].metric(params, feats, out.candidates[:, i]) for i in range(5)], 1)
    # the metric's expanded-form float32 distance loses ~1e-4 near a goal; jit and eager round differently
    np.testing.assert_allclose(out.scores, direct, rtol=1e-4, atol=5e-4)
    top2 = np.sort(direct, 1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] > 1e-3  # no near-tie
    assert clear.mean() > 0.5
    np.testing.assert_array_equal(np.asarray(out.best)[clear], direct.argmax(1)[clear])
    np.testing.assert_array_equal(out.best, np.asarray(out.scores).argmax(1))
    np.testing.assert_array_equal(out.actions, out.candidates[np.arange(cfg.samples), out.best])
    np.testing.assert_allclose(out.score, direct.max(1), rtol=1e-4, atol=5e-4)
    default, _ = rank(cfg, sc, 5)
    np.testing.assert_array_equal(default.candidates, out.candidates)  # same samples, other ranking


@pytest.mark.parametrize("score", ["mean_l2", "metric"])
def test_ranking_prefers_the_goal_behaviour(scene, score):
    cfg, sc = scene
    one, _ = rank(cfg, sc, 1, score=score)
    five, _ = rank(cfg, sc, 5, score=score)
    base_rate, gpc_rate = goal_rates(cfg, sc, one.actions), goal_rates(cfg, sc, five.actions)
    assert gpc_rate > base_rate + 0.25, (base_rate, gpc_rate)
    better = np.less if score == "mean_l2" else np.greater
    assert better(float(five.score.mean()), float(one.score.mean()))


def test_bad_inputs(scene):
    cfg, sc = scene
    with pytest.raises(ValueError, match="num_samples must be >= 1"):
        rank(cfg, sc, 0)
    with pytest.raises(TypeError, match="num_samples must be an integer"):
        rank(cfg, sc, 2.5)
    k = sc["gpc_goals"].shape[0]
    with pytest.raises(ValueError, match=r"goal_mask must be \[K\]"):
        rank(cfg, sc, 2, goal_mask=np.ones(k + 1, bool))
    with pytest.raises(ValueError, match="goal_mask marks no real goal"):
        rank(cfg, sc, 2, goal_mask=np.zeros(k, bool))
    with pytest.raises(ValueError, match="score must be one of"):
        rank(cfg, sc, 2, score="lse")
    with pytest.raises(ValueError, match="needs goals"):
        rank(cfg, sc, 2, goals=None)
    with pytest.raises(ValueError, match="non-empty"):
        rank(cfg, sc, 2, goals=jnp.zeros((0, 4)))
    with pytest.raises(ValueError, match="flatten to"):
        rank(cfg, sc, 2, goals=sc["gpc_goals"][:, :-1])
    with pytest.raises(FloatingPointError, match="GPC goals"):
        rank(cfg, sc, 2, goals=sc["gpc_goals"].at[0, 0].set(jnp.nan))
    with pytest.raises(TypeError, match="predict"):
        sample_and_rank(mixture_eps, sc["policy"], jnp.zeros((2, 1)), NoGuidance(), {}, sc["obs"],
                        key=jax.random.key(0), goals=sc["gpc_goals"])
    with pytest.raises(ValueError, match="needs a guidance"):
        sample_and_rank(mixture_eps, sc["policy"], jnp.zeros((2, 1)), None, None, None, key=jax.random.key(0))
    with pytest.raises(ValueError, match="action_shape"):
        sample_and_rank(mixture_eps, sc["policy"], jnp.zeros((2, 1)), sc["guide"], {}, sc["obs"],
                        key=jax.random.key(0), goals=sc["gpc_goals"], action_shape=(16,))
