"""Guided sampler vs. the original torch guided loop (same weights, same noise): <= 1e-4."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from dynaguide_jax.diffusion import DDIMSchedule, guided_sample, sweep
from dynaguide_jax.dynamics import load_original_dynamics
from dynaguide_jax.guidance import DynaGuide, GoalSet, NoGuidance, PositionGuidance
from tests.oracles import guided_ddim
from tests.oracles.noise_net import TorchNoiseNet, jax_eps_fn, jax_params
from tests.test_dynamics import small_oracle

TOL = 1e-4


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    oracle = small_oracle(seed=1)
    path = tmp_path_factory.mktemp("dyn") / "dyn.pth"
    torch.save(oracle.state_dict(), path)
    cfg, dyn_params, (enc_cfg, enc_params) = load_original_dynamics(path, patches_per_camera=16,
                                                                    encoder_num_heads=2)
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (2, 3, 64, 64), generator=g).float()
    proprio = torch.randn(2, 15, generator=g)
    # goal embeddings as the original builds them: predictions at the end of goal trajectories
    goal_imgs = torch.randint(0, 256, (6, 3, 64, 64), generator=g).float()
    with torch.no_grad():
        z = oracle.state_action_embedding({"third_person": goal_imgs, "proprio": torch.randn(6, 15, generator=g)},
                                          torch.randn(6, 16, 7, generator=g)).flatten(1)
    net = TorchNoiseNet(16, 7, 5, seed=3)
    return dict(oracle=oracle, cfg=cfg, dyn=dyn_params, enc_cfg=enc_cfg, enc=enc_params, images=images,
                proprio=proprio, good=z[:4], bad=z[4:], net=net, cond=torch.randn(2, 5, generator=g),
                noise=torch.randn(2, 16, 7, generator=g))


def run_both(s, batch, ss, scale=20.0, alpha=1.0, negatives=True):
    """Defaults give guidance a large effect (actions move by >0.5) so parity is a sharp test."""
    state = {"third_person": s["images"][:batch], "proprio": s["proprio"][:batch]}
    bad = s["bad"] if negatives else None
    guidance = guided_ddim.classifier_guidance(s["oracle"], s["good"], bad, scale, alpha, state)
    ref = guided_ddim.guided_loop(s["net"], s["cond"][:batch], guidance, guided_ddim.original_scheduler(),
                                  s["noise"][:batch], ss).numpy()
    guide = DynaGuide(dynamics=s["cfg"], encoder=s["enc_cfg"], image_size=56)
    params = {"dynamics": s["dyn"], "encoder": s["enc"], "sigma": alpha,
              "goals": GoalSet.create(s["good"].numpy(), None if bad is None else bad.numpy())}
    obs = {"images": jnp.asarray(s["images"][:batch].permute(0, 2, 3, 1).numpy())[:, None],
           "proprio": jnp.asarray(s["proprio"][:batch].numpy())}
    out = guided_sample(jax_eps_fn, jax_params(s["net"]), jnp.asarray(s["cond"][:batch].numpy()), guide,
                        params, obs, key=jax.random.key(0), scale=scale, repeats=ss,
                        initial_noise=jnp.asarray(s["noise"][:batch].numpy()))
    return np.asarray(out.actions), ref, out


@pytest.mark.parametrize("ss", [1, 4])
def test_matches_original_loop_batch1(setup, ss):
    ours, ref, _ = run_both(setup, 1, ss)
    np.testing.assert_allclose(ours, ref, atol=TOL)


def test_matches_original_loop_batch2_positive_only(setup):
    ours, ref, _ = run_both(setup, 2, 4, negatives=False)
    np.testing.assert_allclose(ours, ref, atol=TOL)


def test_matches_original_at_paper_settings(setup):
    ours, ref, _ = run_both(setup, 2, 4, scale=1.5, alpha=5.0)
    np.testing.assert_allclose(ours, ref, atol=TOL)


def test_guidance_changes_the_chunk_and_raises_the_metric(setup):
    ours, _, out = run_both(setup, 2, 4)
    base, _, base_out = run_both(setup, 2, 4, scale=0.0)
    assert np.abs(ours - base).max() > 0.5
    assert (np.asarray(out.metric) > np.asarray(base_out.metric)).all()


def test_position_guidance_matches_original(setup):
    s = setup
    target = torch.tensor([0.1, -0.2, 0.3])
    start = torch.tensor([[0.0, 0.1, 0.2], [0.3, 0.0, -0.1]])
    ref = guided_ddim.guided_loop(s["net"], s["cond"], guided_ddim.position_guidance(target, 2.0, start),
                                  guided_ddim.original_scheduler(), s["noise"], 4).numpy()
    out = guided_sample(jax_eps_fn, jax_params(s["net"]), jnp.asarray(s["cond"].numpy()), PositionGuidance(),
                        {"target": jnp.asarray(target.numpy())}, {"start_xyz": jnp.asarray(start.numpy())},
                        key=jax.random.key(0), scale=2.0, repeats=4,
                        initial_noise=jnp.asarray(s["noise"].numpy()))
    np.testing.assert_allclose(np.asarray(out.actions), ref, atol=TOL)


def test_unguided_equals_original_and_no_guidance(setup):
    s = setup
    ref = guided_ddim.guided_loop(s["net"], s["cond"], None, guided_ddim.original_scheduler(), s["noise"], 1)
    kw = dict(key=jax.random.key(0), repeats=1, initial_noise=jnp.asarray(s["noise"].numpy()))
    p, cond = jax_params(s["net"]), jnp.asarray(s["cond"].numpy())
    a = guided_sample(jax_eps_fn, p, cond, **kw).actions
    b = guided_sample(jax_eps_fn, p, cond, NoGuidance(), {}, {}, **kw).actions
    np.testing.assert_allclose(np.asarray(a), ref.numpy(), atol=1e-5)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_renoise_mode_is_stochastic_and_reduces_to_repeat_for_m1(setup):
    s = setup
    p, cond = jax_params(s["net"]), jnp.asarray(s["cond"].numpy())
    a = guided_sample(jax_eps_fn, p, cond, key=jax.random.key(0), repeats=3, mode="renoise").actions
    b = guided_sample(jax_eps_fn, p, cond, key=jax.random.key(1), repeats=3, mode="renoise").actions
    c = guided_sample(jax_eps_fn, p, cond, key=jax.random.key(0), repeats=3, mode="renoise").actions
    assert np.abs(np.asarray(a) - np.asarray(b)).max() > 1e-3
    np.testing.assert_array_equal(np.asarray(a), np.asarray(c))
    one = [guided_sample(jax_eps_fn, p, cond, key=jax.random.key(0), repeats=1, mode=m).actions
           for m in ("repeat", "renoise")]
    np.testing.assert_array_equal(np.asarray(one[0]), np.asarray(one[1]))


def test_sweep_equals_individual_calls(setup):
    s = setup
    guide = DynaGuide(dynamics=s["cfg"], encoder=s["enc_cfg"], image_size=56)
    params = {"dynamics": s["dyn"], "encoder": s["enc"], "sigma": 5.0,
              "goals": GoalSet.create(s["good"].numpy(), s["bad"].numpy())}
    obs = {"images": jnp.asarray(s["images"].permute(0, 2, 3, 1).numpy())[:, None],
           "proprio": jnp.asarray(s["proprio"].numpy())}
    p, cond = jax_params(s["net"]), jnp.asarray(s["cond"].numpy())
    res = sweep(jax_eps_fn, p, cond, guide, params, obs, scales=[0.0, 2.0], seeds=[3, 4],
                sigmas=[5.0, 10.0], repeats=2)
    assert res.actions.shape == (2, 2, 2, 2, 16, 7) and res.metric.shape == (2, 2, 2, 2)
    single = guided_sample(jax_eps_fn, p, cond, guide, dict(params, sigma=10.0), obs,
                           key=jax.random.key(4), scale=2.0, repeats=2)
    np.testing.assert_allclose(np.asarray(res.actions[1, 1, 1]), np.asarray(single.actions), atol=1e-5)
    np.testing.assert_allclose(np.asarray(res.metric[1, 1, 1]), np.asarray(single.metric), atol=1e-4)


def test_particles_share_the_observation_and_differ(setup):
    s = setup
    guide = DynaGuide(dynamics=s["cfg"], encoder=s["enc_cfg"], image_size=56)
    params = {"dynamics": s["dyn"], "encoder": s["enc"], "sigma": 5.0, "goals": GoalSet.create(s["good"].numpy())}
    obs = {"images": jnp.asarray(s["images"].permute(0, 2, 3, 1).numpy())[:, None],
           "proprio": jnp.asarray(s["proprio"].numpy())}
    p, cond = jax_params(s["net"]), jnp.asarray(s["cond"].numpy())
    out = guided_sample(jax_eps_fn, p, cond, guide, params, obs, key=jax.random.key(0), repeats=2, particles=3)
    assert out.actions.shape == (2, 3, 16, 7) and out.metric.shape == (2, 3)
    assert np.abs(np.asarray(out.actions[:, 0] - out.actions[:, 1])).max() > 1e-3
    # particle i is the single-chunk sample with the i-th split key
    k1 = jax.random.split(jax.random.key(0), 3)[1]
    one = guided_sample(jax_eps_fn, p, cond, guide, params, obs, key=k1, repeats=2)
    np.testing.assert_allclose(np.asarray(out.actions[:, 1]), np.asarray(one.actions), atol=1e-5)
    with pytest.raises(ValueError, match="particles"):
        guided_sample(jax_eps_fn, p, cond, key=jax.random.key(0), particles=0)


def test_whole_chunk_is_one_program(setup):
    """No Python loop per denoising step: the jaxpr holds one scan over the 10 steps."""
    s = setup
    from dynaguide_jax.diffusion.sampler import sample_chunk
    f = lambda key: sample_chunk(jax_eps_fn, jax_params(s["net"]), jnp.zeros((1, 5)), None, None, None,  # noqa
                                 key, 1.0, schedule=DDIMSchedule(), action_shape=(16, 7), repeats=4)
    text = str(jax.make_jaxpr(f)(jax.random.key(0)))
    assert text.count("scan[") >= 1 and "length=10" in text


def test_bad_inputs(setup):
    s = setup
    p, cond = jax_params(s["net"]), jnp.asarray(s["cond"].numpy())
    with pytest.raises(ValueError, match="repeats"):
        guided_sample(jax_eps_fn, p, cond, key=jax.random.key(0), repeats=0)
    with pytest.raises(ValueError, match="mode"):
        guided_sample(jax_eps_fn, p, cond, key=jax.random.key(0), mode="mcmc")
    with pytest.raises(TypeError, match="PRNG key"):
        guided_sample(jax_eps_fn, p, cond, key=0)
    with pytest.raises(ValueError, match="initial_noise"):
        guided_sample(jax_eps_fn, p, cond, key=jax.random.key(0), initial_noise=jnp.zeros((2, 8, 7)))
    with pytest.raises(ValueError, match="guidance_obs"):
        guided_sample(jax_eps_fn, p, cond, PositionGuidance(), {"target": jnp.zeros(3)},
                      key=jax.random.key(0))
    with pytest.raises(ValueError, match="sigmas must be positive"):
        sweep(jax_eps_fn, p, cond, NoGuidance(), {"sigma": 1.0}, {}, scales=[1.0], seeds=[0], sigmas=[0.0])
    with pytest.raises(ValueError, match="guidance scales must be >= 0, got -1"):
        sweep(jax_eps_fn, p, cond, NoGuidance(), {"sigma": 1.0}, {}, scales=[1.0, -1.0], seeds=[0])
    for bad in (-0.5, [1.0, -1.0], float("nan")):
        with pytest.raises(ValueError, match=r"guidance scale must be (>= 0|finite), got (-1|-0.5|nan)"):
            guided_sample(jax_eps_fn, p, cond, PositionGuidance(), {"target": jnp.zeros(3)},
                          {"start_xyz": jnp.zeros((2, 3))}, key=jax.random.key(0), scale=bad)
    with pytest.raises(ValueError, match="negative goals"):
        guided_sample(jax_eps_fn, p, cond, key=jax.random.key(0), scale=-1.0)
    zero = guided_sample(jax_eps_fn, p, cond, PositionGuidance(), {"target": jnp.zeros(3)},  # scale 0 stays valid
                         {"start_xyz": jnp.zeros((2, 3))}, key=jax.random.key(0), scale=0.0)
    base = guided_sample(jax_eps_fn, p, cond, key=jax.random.key(0))
    np.testing.assert_allclose(np.asarray(zero.actions), np.asarray(base.actions), atol=1e-6)
    with pytest.raises(FloatingPointError, match="sampled actions"):
        guided_sample(jax_eps_fn, p, cond, PositionGuidance(), {"target": jnp.full(3, jnp.nan)},
                      {"start_xyz": jnp.zeros((2, 3))}, key=jax.random.key(0))


def test_bad_sampler_inputs_name_the_input():
    eps = lambda p, x, k, c: 0.1 * x  # noqa: E731
    obs, key, kw = {"o": jnp.zeros((2, 3))}, jax.random.key(0), dict(action_shape=(4, 2),
                                                                    schedule=DDIMSchedule(num_inference_steps=2))
    with pytest.raises(ValueError, match="action_shape"):
        guided_sample(eps, None, obs, key=key, action_shape=4)
    with pytest.raises(ValueError, match="guidance scale must be a scalar"):
        guided_sample(eps, None, obs, key=key, scale=[1.0, 2.0], **kw)
    with pytest.raises(TypeError, match="guidance must be a Guidance"):
        guided_sample(eps, None, obs, "dynaguide", {}, {}, key=key, **kw)
    with pytest.raises(FloatingPointError, match=r"obs_cond\['o'\]"):
        guided_sample(eps, None, {"o": jnp.full((2, 3), jnp.nan)}, key=key, **kw)
    with pytest.raises(FloatingPointError, match="initial_noise"):
        guided_sample(eps, None, obs, key=key, initial_noise=jnp.full((2, 4, 2), jnp.nan), **kw)
    with pytest.raises(ValueError, match=r"eps_fn must return the noise \[B, T, A\] = \(2, 4, 2\)"):
        guided_sample(lambda p, x, k, c: x[..., 0], None, obs, key=key, **kw)
    with pytest.raises(TypeError, match="seeds must be integers"):
        sweep(eps, None, obs, None, None, None, scales=[1.0], seeds=[0.5], **kw)
    for bad in ([float("nan")], [float("inf")]):
        with pytest.raises(ValueError, match="sigmas must be positive and finite"):
            sweep(eps, None, obs, NoGuidance(), {"sigma": 1.0}, {}, scales=[1.0], seeds=[0], sigmas=bad, **kw)
    with pytest.raises(ValueError, match="sigmas must be a non-empty"):
        sweep(eps, None, obs, NoGuidance(), {"sigma": 1.0}, {}, scales=[1.0], seeds=[0], sigmas=[], **kw)
    with pytest.raises(ValueError, match="guidance_obs"):
        sweep(eps, None, obs, PositionGuidance(), {"target": jnp.zeros(3)}, None, scales=[1.0], seeds=[0], **kw)
