"""robomimic diffusion policy: converted checkpoints reproduce the torch networks (<= 1e-4)."""
from collections import OrderedDict

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from dynaguide_jax.diffusion import guided_sample
from dynaguide_jax.policy import DiffusionPolicy, PolicyConfig, load_robomimic_policy
from dynaguide_jax.torch_io import UnsafeCheckpointError
from tests.oracles import robomimic_policy as rp
from tests.oracles.guided_ddim import guided_loop, original_scheduler

TOL = 1e-4
SHAPES = OrderedDict([("proprio", [15]), ("eye_in_hand", [3, 64, 64]), ("third_person", [3, 96, 96])])
RGB = ("eye_in_hand", "third_person")


def make_checkpoint(tmp_path, goal_keys=(), **kw):
    nets = rp.build(SHAPES, RGB, goal_keys, **kw)
    cfg = rp.robomimic_config(["proprio"], RGB, goal_keys)
    shadow = rp.save_checkpoint(tmp_path / "policy.pth", nets, SHAPES, cfg)
    return rp.copy_ema_(nets, shadow), tmp_path / "policy.pth"


def make_obs(b=2, seed=0, goal_keys=()):
    rng = np.random.default_rng(seed)
    obs = {"proprio": rng.normal(size=(b, 2, 15)).astype(np.float32)}
    for k in RGB:
        obs[k] = rng.integers(0, 256, (b, 2, *SHAPES[k][1:], 3), dtype=np.uint8)
    goal = {k: rng.integers(0, 256, (b, *SHAPES[k][1:], 3), dtype=np.uint8) for k in goal_keys} or None
    return obs, goal


def torch_obs(obs):
    out = {}
    for k, v in obs.items():
        t = torch.tensor(v)
        out[k] = t.permute(0, 1, 4, 2, 3).float() / 255.0 if v.dtype == np.uint8 else t
    return out


def torch_goal(goal):
    return None if goal is None else {k: torch.tensor(v).permute(0, 3, 1, 2).float() / 255.0 for k, v in goal.items()}


@pytest.mark.parametrize("goal_keys", [(), ("third_person",)])
def test_encoding_and_noise_prediction_match(tmp_path, goal_keys):
    nets, path = make_checkpoint(tmp_path, goal_keys)
    loaded = load_robomimic_policy(path)
    assert loaded.used_ema and loaded.config.down_dims == (32, 64, 128)
    assert loaded.config.obs_keys == ("proprio", "eye_in_hand", "third_person")
    policy = DiffusionPolicy(loaded.config)
    obs, goal = make_obs(goal_keys=goal_keys)
    with torch.no_grad():
        ref_cond = rp.encode(nets, torch_obs(obs), torch_goal(goal))
    cond = policy.encode_obs(loaded.params, obs, goal)
    np.testing.assert_allclose(np.asarray(cond), ref_cond.numpy(), atol=TOL)
    x = np.random.default_rng(1).normal(size=(2, 16, 7)).astype(np.float32)
    for k in (0, 50, 90):
        with torch.no_grad():
            ref = nets["policy"]["noise_pred_net"](torch.tensor(x), torch.tensor(k), ref_cond).numpy()
        ours = policy.eps_fn(loaded.params, jnp.asarray(x), jnp.int32(k), cond)
        np.testing.assert_allclose(np.asarray(ours), ref, atol=TOL)


def test_full_unguided_ddim_chunk_matches(tmp_path):
    nets, path = make_checkpoint(tmp_path)
    loaded = load_robomimic_policy(path)
    policy = DiffusionPolicy(loaded.config)
    obs, _ = make_obs()
    noise = torch.randn(2, 16, 7, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        cond_t = rp.encode(nets, torch_obs(obs))
    unet = nets["policy"]["noise_pred_net"]
    ref = guided_loop(lambda x, k, c: unet(x, k, c), cond_t, None, original_scheduler(), noise, 1)
    cond = policy.encode_obs(loaded.params, obs)
    out = guided_sample(policy.eps_fn, loaded.params, cond, key=jax.random.key(0), repeats=1,
                        schedule=loaded.schedule, initial_noise=jnp.asarray(noise.numpy()))
    np.testing.assert_allclose(np.asarray(out.actions), ref.numpy(), atol=TOL)


def test_numpy_normalisation_stats_load_safely(tmp_path):
    """robomimic stores action_normalization_stats as numpy arrays; they load under weights_only."""
    _, path = make_checkpoint(tmp_path)
    ckpt = torch.load(path, weights_only=True)
    ckpt["action_normalization_stats"] = {"actions": {"scale": np.full((1, 7), 2.0, np.float32),
                                                      "offset": np.arange(7, dtype=np.float32)[None]}}
    torch.save(ckpt, tmp_path / "stats.pth")
    loaded = load_robomimic_policy(tmp_path / "stats.pth")
    from dynaguide_jax.policy import normalize_actions, unnormalize_actions
    a = jnp.ones((1, 16, 7))
    np.testing.assert_allclose(np.asarray(unnormalize_actions(loaded.action_stats, a))[0, 0], 2.0 + np.arange(7))
    np.testing.assert_allclose(np.asarray(normalize_actions(loaded.action_stats,
                                                            unnormalize_actions(loaded.action_stats, a))), 1.0)


def test_raw_weights_when_ema_is_off(tmp_path):
    nets, path = make_checkpoint(tmp_path)
    raw = load_robomimic_policy(path, use_ema=False)
    ema = load_robomimic_policy(path)
    assert not raw.used_ema
    a = raw.params["noise_pred_net"]["step_fc1"]["kernel"]
    b = ema.params["noise_pred_net"]["step_fc1"]["kernel"]
    assert np.abs(a - b).max() > 1e-3
    np.testing.assert_allclose(b, nets["policy"]["noise_pred_net"].diffusion_step_encoder[1].weight.detach().numpy().T)


@pytest.mark.slow
def test_paper_size_unet_matches(tmp_path):
    """ConditionalUnet1D's defaults (256/512/1024, kernel 5, step embedding 256) as robomimic builds it."""
    nets, path = make_checkpoint(tmp_path, down_dims=(256, 512, 1024), dsed=256)
    loaded = load_robomimic_policy(path)
    assert loaded.config.down_dims == (256, 512, 1024) and loaded.config.step_embed_dim == 256
    policy = DiffusionPolicy(loaded.config)
    obs, _ = make_obs()
    with torch.no_grad():
        cond_t = rp.encode(nets, torch_obs(obs))
        x = torch.randn(2, 16, 7, generator=torch.Generator().manual_seed(2))
        ref = nets["policy"]["noise_pred_net"](x, torch.tensor(30), cond_t).numpy()
    ours = policy.eps_fn(loaded.params, jnp.asarray(x.numpy()), jnp.int32(30),
                         policy.encode_obs(loaded.params, obs))
    np.testing.assert_allclose(np.asarray(ours), ref, atol=TOL)


def test_bad_checkpoints(tmp_path):
    nets, path = make_checkpoint(tmp_path)
    ckpt = torch.load(path, weights_only=True)
    sd = ckpt["model"]["nets"]
    del sd["policy.noise_pred_net.mid_modules.1.cond_encoder.1.bias"]
    sd["policy.noise_pred_net.extra.weight"] = torch.zeros(2)
    ckpt["model"]["ema"] = None
    torch.save(ckpt, tmp_path / "bad.pth")
    with pytest.raises(KeyError, match=r"mid_modules.1.cond_encoder.1.bias.*unexpected keys: .*extra.weight"):
        load_robomimic_policy(tmp_path / "bad.pth")

    ckpt = torch.load(path, weights_only=True)
    ckpt["model"]["ema"] = None
    w = ckpt["model"]["nets"]["policy.noise_pred_net.final_conv.1.weight"]
    ckpt["model"]["nets"]["policy.noise_pred_net.final_conv.1.weight"] = torch.zeros(w.shape[0], w.shape[1] + 1, 1)
    torch.save(ckpt, tmp_path / "shape.pth")
    with pytest.raises(ValueError, match="final_conv/kernel: expected"):
        load_robomimic_policy(tmp_path / "shape.pth")

    ckpt = torch.load(path, weights_only=True)
    ckpt["model"]["ema"]["shadow_params"] = ckpt["model"]["ema"]["shadow_params"][:-1]
    torch.save(ckpt, tmp_path / "ema.pth")
    with pytest.raises(ValueError, match="EMA holds"):
        load_robomimic_policy(tmp_path / "ema.pth")

    torch.save({"model": nets, "config": "{}"}, tmp_path / "pickled.pth")  # a whole nn.Module
    with pytest.raises(UnsafeCheckpointError, match="state_dict"):
        load_robomimic_policy(tmp_path / "pickled.pth")
    torch.save({"weights": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="not a robomimic checkpoint"):
        load_robomimic_policy(tmp_path / "other.pth")


def test_policy_config_and_obs_validation():
    with pytest.raises(ValueError, match="neither an rgb shape"):
        PolicyConfig(obs_keys=("depth",))
    with pytest.raises(ValueError, match="divisible"):
        PolicyConfig(prediction_horizon=10)
    policy = DiffusionPolicy(PolicyConfig.preset("small"))
    params = policy.init(jax.random.key(0))
    obs, _, _ = policy.dummy_inputs(2)
    assert policy.encode_obs(params, obs).shape == (2, policy.config.cond_dim)
    with pytest.raises(KeyError, match="missing keys"):
        policy.encode_obs(params, {"proprio": obs["proprio"]})
    bad = dict(obs, camera=jnp.zeros((2, 2, 16, 16, 3), jnp.uint8))
    with pytest.raises(ValueError, match=r"obs\['camera'\] must be"):
        policy.encode_obs(params, bad)


def test_crop_randomizer_checkpoint_center_crops_at_eval(tmp_path):
    """With robomimic's CropRandomizer the networks see crops: the converted policy center-crops."""
    crop = 56
    cropped = OrderedDict((k, [3, crop, crop] if k in RGB else v) for k, v in SHAPES.items())
    nets = rp.build(cropped, RGB)
    cfg = rp.robomimic_config(["proprio"], RGB)
    cfg["observation"]["encoder"]["rgb"]["obs_randomizer_class"] = "CropRandomizer"
    cfg["observation"]["encoder"]["rgb"]["obs_randomizer_kwargs"] = {"crop_height": crop, "crop_width": crop,
                                                                     "num_crops": 1, "pos_enc": False}
    shadow = rp.save_checkpoint(tmp_path / "p.pth", nets, SHAPES, cfg)
    rp.copy_ema_(nets, shadow)
    loaded = load_robomimic_policy(tmp_path / "p.pth")
    assert loaded.config.crop == (crop, crop)
    obs, _ = make_obs()
    t_obs = torch_obs(obs)
    for k in RGB:  # robomimic's eval-time center crop
        h, w = t_obs[k].shape[-2:]
        top, left = (h - crop) // 2, (w - crop) // 2
        t_obs[k] = t_obs[k][..., top:top + crop, left:left + crop]
    with torch.no_grad():
        ref = rp.encode(nets, t_obs)
    ours = DiffusionPolicy(loaded.config).encode_obs(loaded.params, obs)
    np.testing.assert_allclose(np.asarray(ours), ref.numpy(), atol=TOL)
