"""Pallas kernels (interpret mode on CPU) against their plain-JAX references and the plain model path."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dynaguide_jax.diffusion import DDIMSchedule, guided_sample
from dynaguide_jax.dynamics import DynamicsConfig, init_dynamics, predict_future_patches
from dynaguide_jax.dynamics.loss import dynamics_loss
from dynaguide_jax.guidance import DynaGuide, GoalSet
from dynaguide_jax.kernels.dense_layernorm import dense_residual_layernorm, reference
from dynaguide_jax.policy import line_prototypes, mixture_eps, mixture_params

SMALL = DynamicsConfig.preset("small")


def operands(rows=18, k=32, d=24, dtype=jnp.float32):
    ks = jax.random.split(jax.random.key(0), 6)
    return (jax.random.normal(ks[0], (2, rows, k)).astype(dtype), 0.2 * jax.random.normal(ks[1], (k, d)),
            jax.random.normal(ks[2], (d,)), jax.random.normal(ks[3], (2, rows, d)).astype(dtype),
            1.0 + 0.1 * jax.random.normal(ks[4], (d,)), jax.random.normal(ks[5], (d,)))


# padded last block, one block, exact blocks; contraction whole / in 4 slices / whole (16 does not divide 24)
@pytest.mark.parametrize("rows,block,k,block_k", [(18, 16, 32, 512), (8, 128, 32, 8), (32, 8, 24, 16)])
def test_kernel_matches_reference_and_its_gradients(rows, block, k, block_k):
    ops = operands(rows, k)
    fused = lambda *a: dense_residual_layernorm(*a, 1e-5, block, True, block_k)  # noqa: E731
    np.testing.assert_allclose(fused(*ops), reference(*ops, 1e-5), atol=1e-5)
    loss = lambda f: lambda *a: jnp.sum(jnp.sin(3.0 * f(*a)))  # noqa: E731
    got = jax.grad(loss(fused), argnums=tuple(range(6)))(*ops)
    want = jax.grad(loss(lambda *a: reference(*a, 1e-5)), argnums=tuple(range(6)))(*ops)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, atol=1e-4, rtol=1e-5)
    batched = jax.vmap(lambda r: fused(ops[0], ops[1], ops[2], r, ops[4], ops[5]))(jnp.stack([ops[3], -ops[3]]))
    np.testing.assert_allclose(batched[1], reference(*ops[:3], -ops[3], *ops[4:], 1e-5), atol=1e-5)


def test_kernel_bfloat16_keeps_dtype_within_rounding():
    ops = operands(dtype=jnp.bfloat16)
    out = dense_residual_layernorm(*ops, 1e-5, 16, True)
    assert out.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(out, np.float32), np.asarray(reference(*ops, 1e-5), np.float32), atol=2e-2)


def model_inputs(b=2):
    ks = jax.random.split(jax.random.key(1), 3)
    return (jax.random.normal(ks[0], (b, 16, 64)), jax.random.normal(ks[1], (b, 15)),
            jax.random.normal(ks[2], (b, 16, 7)))


def test_dynamics_model_with_pallas_epilogues_matches_plain():
    fused_cfg = SMALL.replace(pallas="interpret")
    params = init_dynamics(SMALL, jax.random.key(0))
    same = jax.tree.map(lambda a, b: bool(jnp.array_equal(a, b)), params, init_dynamics(fused_cfg, jax.random.key(0)))
    assert jax.tree.all(same)  # same parameter tree and initial values: checkpoints load either way
    patches, proprio, actions = model_inputs()
    f = lambda cfg: lambda a: predict_future_patches(cfg, params, patches, proprio, a)  # noqa: E731
    np.testing.assert_allclose(f(fused_cfg)(actions), f(SMALL)(actions), atol=1e-5)
    g = lambda cfg: jax.grad(lambda a: jnp.sum(jnp.sin(f(cfg)(a))))(actions)  # noqa: E731
    np.testing.assert_allclose(g(fused_cfg), g(SMALL), atol=1e-5)
    with pytest.raises(ValueError, match="pallas must be one of"):
        SMALL.replace(pallas="yes")
    with pytest.raises(ValueError, match="train with pallas='off'"):
        dynamics_loss(SMALL.replace(pallas="interpret", dropout=0.1), params,
                      {"patches": patches, "proprio": proprio, "actions": actions, "future_patches": patches},
                      jax.random.key(0))


@pytest.mark.parametrize("precompute", ["none", "projections"])
def test_guided_sample_with_pallas_matches_plain(precompute):
    dyn = SMALL.replace(num_layers=1)
    params = init_dynamics(dyn, jax.random.key(0))
    patches, proprio, _ = model_inputs()
    goals = GoalSet.create(jax.random.normal(jax.random.key(7), (3, 16 * 64)))
    schedule = DDIMSchedule(num_inference_steps=3)
    pol = mixture_params(line_prototypes(4, 16, 7), schedule, std=0.3)

    def run(cfg):
        return guided_sample(mixture_eps, pol, jnp.zeros((2, 1)), DynaGuide(dynamics=cfg, precompute=precompute),
                             {"dynamics": params, "goals": goals, "sigma": 1.0},
                             {"patches": patches, "proprio": proprio}, key=jax.random.key(0), scale=20.0,
                             schedule=schedule, repeats=2).actions

    np.testing.assert_allclose(run(dyn.replace(pallas="interpret")), run(dyn), atol=1e-5)
