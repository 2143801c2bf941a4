"""The Pallas flash-attention kernel with dropout (interpret mode on CPU) against its plain-JAX reference,
the dropout mask's statistics, and the kernel inside the dynamics model and its trainer."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dynaguide_jax.dynamics import DynamicsConfig, init_dynamics, predict_future_patches
from dynaguide_jax.dynamics.loss import dynamics_loss
from dynaguide_jax.kernels.flash_attention import dropout_keep_mask, flash_attention, reference
from dynaguide_jax.layers import attend

SEED = jnp.array([12345], jnp.uint32)


def qkv(b=2, t_q=37, t_k=37, h=3, d=12, dtype=jnp.float32):
    ks = jax.random.split(jax.random.key(0), 3)
    shapes = ((b, t_q, h, d), (b, t_k, h, d), (b, t_k, h, d))
    return tuple(jax.random.normal(key, shape).astype(dtype) for key, shape in zip(ks, shapes))


def kernel(rate, block_q=16, block_k=16, seed=SEED):
    return lambda q, k, v: flash_attention(q, k, v, dropout_rate=rate, seed=seed, block_q=block_q, block_k=block_k,
                                           interpret=True)


def loss_of(f):
    return lambda *a: jnp.sum(jnp.sin(2.0 * f(*a)))


# rate 0: plain softmax attention; padded query and key blocks (37 = 2*16+5), head dim 12 padded to 16,
# more keys than queries; one block for short sequences
@pytest.mark.parametrize("rate,t_q,t_k,d", [(0.0, 37, 37, 12), (0.1, 37, 37, 12), (0.5, 21, 40, 16), (0.3, 5, 3, 4)])
def test_kernel_matches_reference_values_and_gradients(rate, t_q, t_k, d):
    q, k, v = qkv(t_q=t_q, t_k=t_k, d=d)
    ref = lambda *a: reference(*a, SEED, rate)  # noqa: E731
    np.testing.assert_allclose(kernel(rate)(q, k, v), ref(q, k, v), atol=2e-6)
    got = jax.grad(loss_of(kernel(rate)), argnums=(0, 1, 2))(q, k, v)
    want = jax.grad(loss_of(ref), argnums=(0, 1, 2))(q, k, v)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, atol=1e-5, rtol=1e-5)


def test_without_dropout_it_is_softmax_attention():
    q, k, v = qkv()
    np.testing.assert_allclose(kernel(0.0, seed=None)(q, k, v), jax.nn.dot_product_attention(q, k, v), atol=2e-6)


def test_mask_does_not_depend_on_blocks_and_follows_the_seed():
    q, k, v = qkv()
    a = kernel(0.2, 16, 16)(q, k, v)
    np.testing.assert_allclose(kernel(0.2, 64, 64)(q, k, v), a, atol=2e-6)
    np.testing.assert_allclose(kernel(0.2, 16, 32)(q, k, v), a, atol=2e-6)
    other = kernel(0.2, 16, 16, seed=SEED + 1)(q, k, v)
    assert float(jnp.max(jnp.abs(other - a))) > 0.1


def test_batch_offset_draws_the_whole_batchs_masks():
    q, k, v = qkv(b=4)
    whole = kernel(0.3)(q, k, v)
    part = flash_attention(q[2:], k[2:], v[2:], dropout_rate=0.3, seed=SEED, batch_offset=2, block_q=16, block_k=16,
                           interpret=True)
    np.testing.assert_allclose(part, whole[2:], atol=2e-6)
    np.testing.assert_allclose(reference(q[2:], k[2:], v[2:], SEED, 0.3, batch_offset=2), whole[2:], atol=2e-6)
    grad_whole = jax.grad(lambda q: jnp.sum(jnp.sin(kernel(0.3)(q, k, v)[2:])))(q)
    grad_part = jax.grad(lambda p: jnp.sum(jnp.sin(flash_attention(
        p, k[2:], v[2:], dropout_rate=0.3, seed=SEED, batch_offset=2, interpret=True))))(q[2:])
    np.testing.assert_allclose(grad_part, grad_whole[2:], atol=1e-5)


def test_pallas_attention_under_a_mesh_splits_the_batch_with_the_same_masks():
    q, k, v = qkv(b=4)
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]).reshape(1, 1), ("data", "fsdp"))
    f = jax.jit(lambda q, k, v: attend(q, k, v, dropout_rate=0.3, dropout_rng=jax.random.key(5),
                                       implementation="pallas"))
    plain = f(q, k, v)
    with jax.set_mesh(mesh):  # one device here; tests/sharded_worker.py trains on 8 and compares with 1
        np.testing.assert_allclose(f(q, k, v), plain, atol=2e-6)


def test_dropout_mask_statistics():
    rate, b, h, t = 0.1, 4, 8, 258
    keep = np.asarray(dropout_keep_mask(SEED, b, h, t, t, rate))
    n = keep.size
    assert abs(keep.mean() - (1 - rate)) < 4 * np.sqrt(rate * (1 - rate) / n)
    dropped = ~keep
    # neighbours (next key, next query, next head, next batch row) and another seed are independent:
    # both dropped about rate**2 of the time
    pairs = [(dropped[..., 1:], dropped[..., :-1]), (dropped[:, :, 1:], dropped[:, :, :-1]),
             (dropped[:, 1:], dropped[:, :-1]), (dropped[1:], dropped[:-1]),
             (dropped, ~np.asarray(dropout_keep_mask(SEED + 1, b, h, t, t, rate)))]
    for x, y in pairs:
        both = np.mean(x & y)
        assert abs(both - rate ** 2) < 6 * np.sqrt(rate ** 2 / x.size), both
    # rows keep their own counts: the per-row keep fraction spreads as a binomial's would
    row_sd = keep.mean(-1).std()
    assert 0.8 < row_sd / np.sqrt(rate * (1 - rate) / t) < 1.2


def test_dropout_is_unbiased_over_seeds():
    q, k, v = qkv(b=1, t_q=8, t_k=8, h=2, d=4)
    outs = [kernel(0.5, seed=jnp.array([s], jnp.uint32))(q, k, v) for s in range(300)]
    mean = jnp.mean(jnp.stack(outs), 0)
    plain = kernel(0.0)(q, k, v)
    spread = jnp.std(jnp.stack(outs), 0) / np.sqrt(len(outs))
    assert float(jnp.max(jnp.abs(mean - plain) / (spread + 1e-6))) < 5.0


def test_bfloat16_within_rounding_and_keeps_dtype():
    q, k, v = qkv(dtype=jnp.bfloat16)
    out = kernel(0.1)(q, k, v)
    assert out.dtype == jnp.bfloat16
    ref = reference(q.astype(jnp.float32), k.astype(jnp.float32), v.astype(jnp.float32), SEED, 0.1)
    np.testing.assert_allclose(np.asarray(out, np.float32), ref, atol=3e-2)
    loss = lambda f: lambda q: jnp.sum(jnp.sin(f(q, k, v).astype(jnp.float32)))  # noqa: E731
    g = jax.grad(loss(kernel(0.1)))(q)
    f32 = lambda x: x.astype(jnp.float32)  # noqa: E731
    want = jax.grad(lambda q: jnp.sum(jnp.sin(reference(q, f32(k), f32(v), SEED, 0.1))))(f32(q))
    assert g.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(g, np.float32), want, atol=5e-2)


def test_vmap_and_jit_equal_a_loop():
    q, k, v = qkv()
    seeds = jnp.array([[1], [2]], jnp.uint32)
    f = lambda q, s: flash_attention(q, k, v, dropout_rate=0.2, seed=s, block_q=16, block_k=16, interpret=True)  # noqa
    batched = jax.jit(jax.vmap(f))(jnp.stack([q, -q]), seeds)
    np.testing.assert_allclose(batched[0], f(q, seeds[0]), atol=2e-6)
    np.testing.assert_allclose(batched[1], f(-q, seeds[1]), atol=2e-6)


def test_bad_inputs_are_named():
    q, k, v = qkv()
    with pytest.raises(ValueError, match="needs a seed"):
        flash_attention(q, k, v, dropout_rate=0.1, interpret=True)
    with pytest.raises(ValueError, match=r"dropout_rate must be in \[0, 1\)"):
        flash_attention(q, k, v, dropout_rate=1.0, seed=SEED, interpret=True)
    with pytest.raises(ValueError, match="block_q must be a power of two >= 16"):
        flash_attention(q, k, v, block_q=24, interpret=True)
    with pytest.raises(ValueError, match="block_k must be a power of two >= 16"):
        flash_attention(q, k, v, block_k=8, interpret=True)
    with pytest.raises(ValueError, match="q must be"):
        flash_attention(q, k[:, :, :2], v, interpret=True)
    with pytest.raises(ValueError, match="attention must be one of"):
        attend(q, k, v, implementation="flash")


def test_attend_pallas_draws_a_new_mask_per_rng_and_matches_xla_without_dropout():
    q, k, v = qkv()
    np.testing.assert_allclose(attend(q, k, v, implementation="pallas"), attend(q, k, v), atol=2e-6)
    a = attend(q, k, v, dropout_rate=0.1, dropout_rng=jax.random.key(0), implementation="pallas")
    b = attend(q, k, v, dropout_rate=0.1, dropout_rng=jax.random.key(1), implementation="pallas")
    seed = jax.random.bits(jax.random.key(0), (1,), jnp.uint32)
    np.testing.assert_allclose(a, reference(q, k, v, seed, 0.1), atol=2e-6)
    assert float(jnp.max(jnp.abs(a - b))) > 0.1


SMALL = DynamicsConfig.preset("small")


def model_batch(b=3):
    ks = jax.random.split(jax.random.key(1), 4)
    return {"patches": jax.random.normal(ks[0], (b, 16, 64)), "proprio": jax.random.normal(ks[1], (b, 15)),
            "actions": jax.random.normal(ks[2], (b, 16, 7)), "future_patches": jax.random.normal(ks[3], (b, 16, 64))}


def test_dynamics_model_with_pallas_attention_matches_xla():
    params = init_dynamics(SMALL, jax.random.key(0))
    batch = model_batch()
    f = lambda cfg: lambda a: predict_future_patches(cfg, params, batch["patches"], batch["proprio"], a)  # noqa
    pallas = SMALL.replace(attention="pallas")
    np.testing.assert_allclose(f(pallas)(batch["actions"]), f(SMALL)(batch["actions"]), atol=1e-5)
    g = lambda cfg: jax.grad(lambda a: jnp.sum(jnp.sin(f(cfg)(a))))(batch["actions"])  # noqa: E731
    np.testing.assert_allclose(g(pallas), g(SMALL), atol=1e-5)
    # training: the layers' dropout draws the same masks either way when the attention dropout is 0
    cfg = SMALL.replace(dropout=0.1, attention_dropout=0.0)
    loss = lambda c: jax.value_and_grad(lambda p: dynamics_loss(c, p, batch, jax.random.key(3)))(params)  # noqa
    (lx, gx), (lp, gp) = loss(cfg), loss(cfg.replace(attention="pallas"))
    np.testing.assert_allclose(lp, lx, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(gp), jax.tree.leaves(gx)):
        np.testing.assert_allclose(a, b, atol=1e-5)
    # with the attention dropout on, each key draws its own mask, and the loss's gradient is finite
    cfg = SMALL.replace(dropout=0.1, attention="pallas")
    l1, g1 = jax.value_and_grad(lambda p: dynamics_loss(cfg, p, batch, jax.random.key(3)))(params)
    l2 = dynamics_loss(cfg, params, batch, jax.random.key(4))
    assert float(l1) != float(l2)
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(g1))


def test_encoder_and_guided_sample_with_pallas_attention_match_xla():
    from dynaguide_jax.diffusion import DDIMSchedule, guided_sample
    from dynaguide_jax.encoders import DinoV2, DinoV2Config, init_dinov2
    from dynaguide_jax.guidance import DynaGuide, GoalSet
    from dynaguide_jax.policy import line_prototypes, mixture_eps, mixture_params

    enc = DinoV2Config(hidden_size=32, num_layers=1, num_heads=2, pos_grid=2)
    enc_params = init_dinov2(enc, jax.random.key(0), 28)
    images = jax.random.normal(jax.random.key(1), (2, 28, 28, 3))
    feats = lambda c: DinoV2(c).apply({"params": enc_params}, images)["patches"]  # noqa: E731
    np.testing.assert_allclose(feats(enc.replace(attention="pallas")), feats(enc), atol=1e-5)

    dyn = SMALL.replace(num_layers=1)
    params = init_dynamics(dyn, jax.random.key(0))
    batch = model_batch(2)
    goals = GoalSet.create(jax.random.normal(jax.random.key(7), (3, 16 * 64)))
    schedule = DDIMSchedule(num_inference_steps=2)
    pol = mixture_params(line_prototypes(4, 16, 7), schedule, std=0.3)

    def run(cfg):
        return guided_sample(mixture_eps, pol, jnp.zeros((2, 1)), DynaGuide(dynamics=cfg),
                             {"dynamics": params, "goals": goals, "sigma": 1.0},
                             {"patches": batch["patches"], "proprio": batch["proprio"]}, key=jax.random.key(0),
                             scale=20.0, schedule=schedule, repeats=2).actions

    np.testing.assert_allclose(run(dyn.replace(attention="pallas")), run(dyn), atol=1e-5)


@pytest.mark.skipif(jax.default_backend() != "gpu", reason="compiles the kernel for an NVIDIA GPU (Triton); run "
                    "`JAX_PLATFORMS=cuda python -m pytest tests/test_flash_attention.py -k compiled` on one")
def test_compiled_kernel_on_gpu_matches_reference():
    # the paper model's attention (258 tokens, 8 heads of 48), padded blocks and head dims, a high rate
    for (b, t, h, d), rate in (((4, 258, 8, 48), 0.1), ((2, 37, 3, 12), 0.0), ((2, 21, 2, 16), 0.5)):
        q, k, v = qkv(b=b, t_q=t, t_k=t, h=h, d=d)
        compiled = lambda q, k, v: flash_attention(q, k, v, dropout_rate=rate, seed=SEED)  # noqa: E731
        ref = lambda q, k, v: reference(q, k, v, SEED, rate)  # noqa: E731
        with jax.default_matmul_precision("highest"):
            np.testing.assert_allclose(jax.jit(compiled)(q, k, v), ref(q, k, v), atol=1e-4)
            got = jax.jit(jax.grad(loss_of(compiled), argnums=(0, 1, 2)))(q, k, v)
            want = jax.grad(loss_of(ref), argnums=(0, 1, 2))(q, k, v)
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, atol=1e-3, rtol=1e-3)
        bf = [x.astype(jnp.bfloat16) for x in (q, k, v)]
        np.testing.assert_allclose(np.asarray(jax.jit(compiled)(*bf), np.float32), ref(q, k, v), atol=5e-2)
