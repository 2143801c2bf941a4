"""Action-independent precompute (dynamics/context.py): the same predictions, gradients and guided
chunks as the plain model, in fewer kernels per guidance iteration."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dynaguide_jax.diffusion import DDIMSchedule, guided_sample
from dynaguide_jax.dynamics import DynamicsConfig, init_dynamics, predict_future_patches
from dynaguide_jax.dynamics.context import observation_context, predict_with_context
from dynaguide_jax.guidance import DynaGuide, GoalSet
from dynaguide_jax.policy import line_prototypes, mixture_eps, mixture_params

SMALL = DynamicsConfig.preset("small")


def inputs(cfg, b=3, seed=0):
    ks = jax.random.split(jax.random.key(seed), 4)
    patches = jax.random.normal(ks[0], (b, cfg.num_cameras * cfg.patches_per_camera, cfg.feature_dim))
    proprio = None if cfg.proprio_dim is None else jax.random.normal(ks[1], (b, cfg.proprio_dim))
    return init_dynamics(cfg, ks[2]), patches, proprio, jax.random.normal(ks[3], (b, cfg.horizon, cfg.action_dim))


@pytest.mark.parametrize("mode", ["projections", "attention"])
@pytest.mark.parametrize("cfg", [SMALL, SMALL.replace(proprio_dim=None, num_cameras=2, num_layers=1)],
                         ids=["proprio", "two-cameras-one-layer"])
def test_prediction_and_action_gradient_match_plain_model(cfg, mode):
    params, patches, proprio, actions = inputs(cfg)
    ctx = observation_context(cfg, params, patches, proprio, mode)
    plain = lambda a: predict_future_patches(cfg, params, patches, proprio, a)  # noqa: E731
    split = lambda a: predict_with_context(cfg, params, ctx, a)  # noqa: E731
    np.testing.assert_allclose(split(actions), plain(actions), atol=1e-5, rtol=1e-5)
    loss = lambda f: lambda a: jnp.sum(jnp.sin(f(a)))  # noqa: E731
    np.testing.assert_allclose(jax.grad(loss(split))(actions), jax.grad(loss(plain))(actions), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("mode", ["projections", "attention"])
def test_bfloat16_within_rounding(mode):
    cfg = SMALL.replace(dtype="bfloat16")
    params, patches, proprio, actions = inputs(cfg)
    split = predict_with_context(cfg, params, observation_context(cfg, params, patches, proprio, mode), actions)
    plain = predict_future_patches(cfg, params, patches, proprio, actions)
    assert float(jnp.max(jnp.abs(split - plain))) < 0.05 * float(jnp.max(jnp.abs(plain)))


def policy():
    return mixture_params(line_prototypes(4, 16, 7), DDIMSchedule(), std=0.3)


def guided(precompute, b=2, repeats=2, particles=None):
    params, patches, proprio, _ = inputs(SMALL, b)
    goals = GoalSet.create(jax.random.normal(jax.random.key(7), (4, SMALL.predicted_tokens * SMALL.feature_dim)))
    gp = {"dynamics": params, "goals": goals, "sigma": 1.0}
    schedule = DDIMSchedule()
    return guided_sample(mixture_eps, policy(), jnp.zeros((b, 1)),
                         DynaGuide(dynamics=SMALL, precompute=precompute), gp, {"patches": patches, "proprio": proprio},
                         key=jax.random.key(0), scale=50.0, schedule=schedule, repeats=repeats, particles=particles)


@pytest.mark.parametrize("mode", ["projections", "attention"])
def test_guided_sample_identical_with_and_without_precompute(mode):
    on, off = guided(mode), guided("none")
    unguided = guided_sample(mixture_eps, policy(), jnp.zeros((2, 1)), key=jax.random.key(0), repeats=2).actions
    assert float(jnp.max(jnp.abs(off.actions - unguided))) > 0.5  # the guidance matters here
    np.testing.assert_allclose(on.actions, off.actions, atol=1e-5)
    np.testing.assert_allclose(on.metric, off.metric, atol=1e-4, rtol=1e-5)
    if mode == "projections":
        np.testing.assert_allclose(guided(mode, particles=2).actions, guided("none", particles=2).actions, atol=1e-5)


def test_prepare_adds_the_context_once_and_checks_inputs():
    params, patches, proprio, actions = inputs(SMALL, 2)
    guide = DynaGuide(dynamics=SMALL)
    feats = guide.prepare({"dynamics": params}, {"patches": patches, "proprio": proprio})
    ctx = feats["dynamics_context"]
    assert ctx.q.shape == (2, 17, 4, 16) and ctx.row_acc is None and ctx.w_act.shape == (112, 256)
    assert guide.prepare({"dynamics": params}, feats) is feats
    ctx = DynaGuide(dynamics=SMALL, precompute="attention").prepare({"dynamics": params}, {"patches": patches,
                                                                                           "proprio": proprio})
    assert ctx["dynamics_context"].row_acc.shape == (2, 17, 4, 16)
    assert "dynamics_context" not in DynaGuide(dynamics=SMALL, precompute="none").prepare(
        {"dynamics": params}, {"patches": patches, "proprio": proprio})
    with pytest.raises(ValueError, match="precompute must be one of"):
        DynaGuide(dynamics=SMALL, precompute=True)
    with pytest.raises(ValueError, match="precompute mode must be one of"):
        observation_context(SMALL, params, patches, proprio, "all")
    with pytest.raises(ValueError, match=r"patches must be \[B, 16, 64\]"):
        guide.prepare({"dynamics": params}, {"patches": patches[:, :3], "proprio": proprio})
    with pytest.raises(ValueError, match=r"proprio must be \[B=2, 15\]"):
        guide.prepare({"dynamics": params}, {"patches": patches, "proprio": proprio[:, :3]})
    with pytest.raises(ValueError, match=r"actions must be \[B=2, 16, 7\]"):
        guide.predict({"dynamics": params}, feats, actions[:, :3])
    with pytest.raises(FloatingPointError, match="dynamics model input patches"):
        guide.prepare({"dynamics": params}, {"patches": patches * jnp.nan, "proprio": proprio})
