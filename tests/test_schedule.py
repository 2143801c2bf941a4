"""DDIM schedule and step equal diffusers' DDIMScheduler."""
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler

from dynaguide_jax.diffusion import DDIMSchedule, add_noise, ddim_step
from tests.oracles.noise_net import TorchNoiseNet, jax_eps_fn, jax_params

CONFIGS = [
    dict(beta_schedule="squaredcos_cap_v2"),
    dict(beta_schedule="linear", clip_sample=False),
    dict(beta_schedule="scaled_linear", set_alpha_to_one=False, steps_offset=1),
    dict(beta_schedule="squaredcos_cap_v2", timestep_spacing="trailing"),
    dict(beta_schedule="linear", timestep_spacing="linspace", num_train_timesteps=1000),
]


def pair(cfg, steps=10):
    ref = DDIMScheduler(num_train_timesteps=cfg.get("num_train_timesteps", 100), prediction_type="epsilon",
                        **{k: v for k, v in cfg.items() if k != "num_train_timesteps"})
    ref.set_timesteps(steps)
    ours = DDIMSchedule(num_inference_steps=steps, **cfg)
    return ref, ours


@pytest.mark.parametrize("cfg", CONFIGS)
def test_tables_match(cfg):
    ref, ours = pair(cfg)
    np.testing.assert_array_equal(ours.timesteps, ref.timesteps.numpy())
    np.testing.assert_allclose(ours.alphas_cumprod, ref.alphas_cumprod.numpy(), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("cfg", CONFIGS)
def test_full_unguided_run_matches(cfg):
    """Same noise, same noise function, all 10 steps: <= 1e-5."""
    ref, ours = pair(cfg)
    net = TorchNoiseNet(16, 7, 5)
    params = jax_params(net)
    g = torch.Generator().manual_seed(0)
    x_t, cond = torch.randn(3, 16, 7, generator=g), torch.randn(3, 5, generator=g)
    x_j, cond_j = jnp.asarray(x_t.numpy()), jnp.asarray(cond.numpy())
    with torch.no_grad():
        for i, k in enumerate(ref.timesteps):
            x_t = ref.step(net(x_t, k, cond), k, x_t).prev_sample
            x_j = ddim_step(ours, jax_eps_fn(params, x_j, jnp.int32(int(k)), cond_j), i, x_j)
            np.testing.assert_allclose(np.asarray(x_j), x_t.numpy(), atol=1e-5)


def test_add_noise_matches(rng):
    ref, ours = pair(CONFIGS[0])
    x0 = rng.normal(size=(4, 16, 7)).astype(np.float32)
    eps = rng.normal(size=(4, 16, 7)).astype(np.float32)
    t = np.array([0, 10, 50, 99])
    want = ref.add_noise(torch.tensor(x0), torch.tensor(eps), torch.tensor(t)).numpy()
    np.testing.assert_allclose(np.asarray(add_noise(ours, x0, eps, jnp.asarray(t))), want, atol=1e-6)


def test_bad_configs():
    with pytest.raises(ValueError, match="beta_schedule"):
        DDIMSchedule(beta_schedule="sigmoid")
    with pytest.raises(ValueError, match="num_inference_steps"):
        DDIMSchedule(num_inference_steps=0)
    with pytest.raises(ValueError, match="epsilon"):
        DDIMSchedule(prediction_type="v_prediction")
    with pytest.raises(ValueError, match="timestep_spacing"):
        DDIMSchedule(timestep_spacing="odd")


def test_bad_settings_and_indices_raise():
    for kw, msg in ((dict(num_train_timesteps=0), "num_train_timesteps must be >= 1"),
                    (dict(num_inference_steps=2.5), "num_inference_steps must be an integer"),
                    (dict(beta_schedule="linear", beta_end=2.0), "0 < beta_start <= beta_end < 1"),
                    (dict(beta_schedule="linear", beta_start=0.5, beta_end=0.1), "beta_start <= beta_end"),
                    (dict(clip_sample_range=0.0), "clip_sample_range"),
                    (dict(steps_offset=-1), "steps_offset must be >= 0"),
                    (dict(steps_offset=50), "past num_train_timesteps")):
        with pytest.raises((ValueError, TypeError), match=msg):
            DDIMSchedule(**kw)
    s, x = DDIMSchedule(), jnp.zeros((2, 4, 2))
    with pytest.raises(ValueError, match=r"timesteps must lie in \[0, 100\)"):
        add_noise(s, x, x, jnp.array([0, 100]))
    with pytest.raises(ValueError, match=r"step_index must lie in \[0, 10\)"):
        ddim_step(s, x, 10, x)
