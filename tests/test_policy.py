"""robomimic diffusion policy: converted checkpoints reproduce the torch networks (<= 1e-4).

The test checkpoints' EMA weights differ from the trained ones in every tensor, so a loader that
took the wrong set for the encoders or the noise net fails."""
import json
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
    """-> (the oracle's robomimic algo deserialized from the checkpoint, the checkpoint's path)."""
    nets = rp.build(SHAPES, RGB, goal_keys, **kw)
    cfg = rp.robomimic_config(["proprio"], RGB, goal_keys)
    path = tmp_path / "policy.pth"
    rp.save_checkpoint(path, nets, SHAPES, cfg)
    return rp.load_algo(path, nets, cfg, SHAPES), path


def ema_nets(algo):
    """robomimic's 'select network' step: the EMA weights copied into ``_shadow_nets``."""
    algo.ema.copy_to(parameters=algo._shadow_nets.parameters())
    return algo._shadow_nets


def sample_chunk(loaded, obs, noise):
    """encode_obs + unguided DDIM, cut to robomimic's [To - 1, To - 1 + Ta) window."""
    policy = DiffusionPolicy(loaded.config)
    out = guided_sample(policy.eps_fn, loaded.params, policy.encode_obs(loaded.params, obs), key=jax.random.key(0),
                        repeats=1, schedule=loaded.schedule, initial_noise=jnp.asarray(noise.numpy()))
    start = loaded.config.obs_horizon - 1
    return np.asarray(out.actions)[:, start:start + loaded.config.action_horizon]


def make_noise(seed=4):
    return torch.randn(2, 16, 7, generator=torch.Generator().manual_seed(seed))


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
    """Default weights: trained observation and goal encoders, EMA noise net (robomimic's inference)."""
    algo, path = make_checkpoint(tmp_path, goal_keys)
    loaded = load_robomimic_policy(path)
    assert loaded.weights == "robomimic" and loaded.config.down_dims == (32, 64, 128)
    assert loaded.config.obs_keys == ("proprio", "eye_in_hand", "third_person")
    policy = DiffusionPolicy(loaded.config)
    obs, goal = make_obs(goal_keys=goal_keys)
    shadow = ema_nets(algo)
    with torch.no_grad():
        ref_cond = rp.encode(algo.nets, torch_obs(obs), torch_goal(goal)).numpy()
        ema_cond = rp.encode(shadow, torch_obs(obs), torch_goal(goal)).numpy()
    assert np.abs(ema_cond - ref_cond).max() > 100 * TOL  # EMA encoders would fail below
    if goal_keys:
        assert np.abs(ema_cond[:, -16:] - ref_cond[:, -16:]).max() > 100 * TOL  # the goal encoder's part
    cond = policy.encode_obs(loaded.params, obs, goal)
    np.testing.assert_allclose(np.asarray(cond), ref_cond, atol=TOL)
    x = np.random.default_rng(1).normal(size=(2, 16, 7)).astype(np.float32)
    for k in (0, 50, 90):
        with torch.no_grad():
            args = (torch.tensor(x), torch.tensor(k), torch.tensor(ref_cond))
            ref = shadow["policy"]["noise_pred_net"](*args).numpy()
            trained = algo.nets["policy"]["noise_pred_net"](*args).numpy()
        assert np.abs(trained - ref).max() > 100 * TOL
        ours = policy.eps_fn(loaded.params, jnp.asarray(x), jnp.int32(k), cond)
        np.testing.assert_allclose(np.asarray(ours), ref, atol=TOL)


def test_full_unguided_ddim_chunk_matches(tmp_path):
    """robomimic's ``_get_action_trajectory`` vs encode_obs + guided_sample with the default weights."""
    algo, path = make_checkpoint(tmp_path)
    obs, _ = make_obs()
    noise = make_noise()
    ref = algo._get_action_trajectory(torch_obs(obs), noise.clone())
    np.testing.assert_allclose(sample_chunk(load_robomimic_policy(path), obs, noise), ref.numpy(), atol=TOL)


def test_ema_weights_option_matches_all_ema_variant(tmp_path):
    """Extension (not robomimic): weights="ema" also encodes with the EMA copy; it differs from the default."""
    algo, path = make_checkpoint(tmp_path)
    obs, _ = make_obs()
    noise = make_noise()
    ema = load_robomimic_policy(path, weights="ema")
    assert ema.weights == "ema"
    ref = algo._get_action_trajectory(torch_obs(obs), noise.clone(), all_ema=True)
    ours = sample_chunk(ema, obs, noise)
    np.testing.assert_allclose(ours, ref.numpy(), atol=TOL)
    assert np.abs(sample_chunk(load_robomimic_policy(path), obs, noise) - ours).max() > 1e-3


def test_guided_loop_oracle_agrees_with_robomimic_trajectory(tmp_path):
    """The guided_ddim oracle without guidance (used by other parity tests) is robomimic's loop."""
    algo, _ = make_checkpoint(tmp_path)
    obs, _ = make_obs()
    noise = make_noise()
    shadow = ema_nets(algo)
    with torch.no_grad():
        cond = rp.encode(algo.nets, torch_obs(obs))
    unet = shadow["policy"]["noise_pred_net"]
    loop = guided_loop(lambda x, k, c: unet(x, k, c), cond, None, original_scheduler(), noise, 1)
    ref = algo._get_action_trajectory(torch_obs(obs), noise.clone())
    np.testing.assert_allclose(loop[:, 1:9].numpy(), ref.numpy(), atol=1e-6)


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
    with pytest.raises(ValueError, match=r"scale has zero entries"):
        normalize_actions({"scale": np.zeros(7), "offset": np.zeros(7)}, a)
    with pytest.raises(ValueError, match=r"offset must hold 1 or 7 entries for actions \(1, 16, 7\), got shape \(6,\)"):
        unnormalize_actions({"scale": np.ones(7), "offset": np.zeros(6)}, a)


def test_trained_weights_and_checkpoints_without_ema(tmp_path):
    """weights="train", and robomimic's inference when the config disables EMA: ``self.nets`` throughout."""
    algo, path = make_checkpoint(tmp_path)
    obs, _ = make_obs()
    noise = make_noise()
    ckpt = torch.load(path, weights_only=True)
    cfg = json.loads(ckpt["config"])
    cfg["algo"]["ema"]["enabled"] = False
    ckpt["config"], ckpt["model"]["ema"] = json.dumps(cfg), None
    torch.save(ckpt, tmp_path / "no_ema.pth")
    ref = rp.load_algo(tmp_path / "no_ema.pth", rp.build(SHAPES, RGB), cfg, SHAPES)
    ref = ref._get_action_trajectory(torch_obs(obs), noise.clone()).numpy()
    for loaded in (load_robomimic_policy(path, weights="train"), load_robomimic_policy(tmp_path / "no_ema.pth")):
        assert loaded.weights == "train"
        np.testing.assert_allclose(sample_chunk(loaded, obs, noise), ref, atol=TOL)

    cfg["algo"]["ema"]["enabled"] = True  # robomimic would sample with the EMA model's initial weights
    ckpt["config"] = json.dumps(cfg)
    torch.save(ckpt, tmp_path / "lost_ema.pth")
    with pytest.raises(ValueError, match=r"lost_ema.pth: weights='robomimic' needs EMA weights.*algo.ema.enabled"):
        load_robomimic_policy(tmp_path / "lost_ema.pth")
    with pytest.raises(ValueError, match="weights='ema' needs EMA weights"):
        load_robomimic_policy(tmp_path / "no_ema.pth", weights="ema")
    assert load_robomimic_policy(tmp_path / "lost_ema.pth", weights="train").weights == "train"
    with pytest.raises(ValueError, match=r"weights must be one of \('robomimic', 'ema', 'train'\), got 'EMA'"):
        load_robomimic_policy(path, weights="EMA")


@pytest.mark.slow
def test_paper_size_unet_matches(tmp_path):
    """ConditionalUnet1D's defaults (256/512/1024, kernel 5, step embedding 256) as robomimic builds it."""
    algo, path = make_checkpoint(tmp_path, down_dims=(256, 512, 1024), dsed=256)
    loaded = load_robomimic_policy(path)
    assert loaded.config.down_dims == (256, 512, 1024) and loaded.config.step_embed_dim == 256
    policy = DiffusionPolicy(loaded.config)
    obs, _ = make_obs()
    with torch.no_grad():
        cond_t = rp.encode(algo.nets, torch_obs(obs))
        x = torch.randn(2, 16, 7, generator=torch.Generator().manual_seed(2))
        ref = ema_nets(algo)["policy"]["noise_pred_net"](x, torch.tensor(30), cond_t).numpy()
    # compiled as one program each, as the sampler runs them (op-by-op dispatch of the paper-size
    # UNet compiles every op separately, which dominated this test's time)
    cond = jax.jit(policy.encode_obs)(loaded.params, obs)
    ours = jax.jit(policy.eps_fn)(loaded.params, jnp.asarray(x.numpy()), jnp.int32(30), cond)
    np.testing.assert_allclose(np.asarray(ours), ref, atol=TOL)


def test_bad_checkpoints(tmp_path):
    algo, path = make_checkpoint(tmp_path)
    nets = algo.nets
    ckpt = torch.load(path, weights_only=True)
    sd = ckpt["model"]["nets"]
    del sd["policy.noise_pred_net.mid_modules.1.cond_encoder.1.bias"]
    sd["policy.noise_pred_net.extra.weight"] = torch.zeros(2)
    ckpt["model"]["ema"] = None
    torch.save(ckpt, tmp_path / "bad.pth")
    with pytest.raises(KeyError, match=r"mid_modules.1.cond_encoder.1.bias.*unexpected keys: .*extra.weight"):
        load_robomimic_policy(tmp_path / "bad.pth", weights="train")

    ckpt = torch.load(path, weights_only=True)
    ckpt["model"]["ema"] = None
    w = ckpt["model"]["nets"]["policy.noise_pred_net.final_conv.1.weight"]
    ckpt["model"]["nets"]["policy.noise_pred_net.final_conv.1.weight"] = torch.zeros(w.shape[0], w.shape[1] + 1, 1)
    torch.save(ckpt, tmp_path / "shape.pth")
    with pytest.raises(ValueError, match=r"shape.pth: model\['nets'\]: 1 tensor\(s\) do not fit the architecture: "
                       r"policy.noise_pred_net.final_conv.1.weight: expected \(7, 32, 1\), found \(7, 33, 1\)"):
        load_robomimic_policy(tmp_path / "shape.pth", weights="train")

    torch.save({"model": nets, "config": "{}"}, tmp_path / "pickled.pth")  # a whole nn.Module
    with pytest.raises(UnsafeCheckpointError, match="state_dict"):
        load_robomimic_policy(tmp_path / "pickled.pth")
    torch.save({"weights": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="not a robomimic checkpoint"):
        load_robomimic_policy(tmp_path / "other.pth")


def test_bad_checkpoints_on_the_ema_path_name_file_and_key(tmp_path):
    """The default weights read the EMA list: a missing / extra / mis-shaped tensor in either set, a
    robomimic checkpoint of another algorithm or bad normalisation stats fail naming file and key."""
    _, path = make_checkpoint(tmp_path)
    last = "policy.noise_pred_net.final_conv.1.bias"

    def broken(name, change):
        ckpt = torch.load(path, weights_only=True)
        change(ckpt)
        torch.save(ckpt, tmp_path / name)
        return tmp_path / name

    def drop(c):  # a key missing from the trained weights (their EMA copy is still complete)
        del c["model"]["nets"]["policy.noise_pred_net.mid_modules.1.cond_encoder.1.bias"]
    with pytest.raises(KeyError, match=r"missing.pth: model\['nets'\]: missing keys: "
                                       r"\['policy.noise_pred_net.mid_modules.1.cond_encoder.1.bias'\]"):
        load_robomimic_policy(broken("missing.pth", drop))
    with pytest.raises(KeyError, match=r"extra.pth: model\['nets'\]: unexpected keys: \['policy.extra.weight'\]"):
        load_robomimic_policy(broken("extra.pth", lambda c: c["model"]["nets"].update(
            {"policy.extra.weight": torch.zeros(3)})))
    w = "policy.obs_encoder.nets.obs.obs_nets.eye_in_hand.nets.3.weight"
    with pytest.raises(ValueError, match=rf"wide.pth: model\['nets'\]: 1 tensor\(s\) do not fit the architecture: "
                                         rf"{w}: expected \(16, 16\), found \(16, 17\)"):
        load_robomimic_policy(broken("wide.pth", lambda c: c["model"]["nets"].update({w: torch.zeros(16, 17)})))

    def shadow(c):
        return c["model"]["ema"]["shadow_params"]
    with pytest.raises(ValueError, match=r"short.pth: model\['ema'\]\['shadow_params'\] holds \d+ tensors but "
                                         rf"model\['nets'\] has \d+ parameters \(1 missing\).*ends at #\d+; parameters "
                                         rf"without a tensor: {last} \(7,\)"):
        load_robomimic_policy(broken("short.pth", lambda c: shadow(c).pop()))
    with pytest.raises(ValueError, match=r"long.pth: .*\(1 unexpected\); matched by order, shapes first disagree at "
                                         r"#5, where policy.obs_encoder.* is expected and the tensor has shape "
                                         r"\(3, 3, 3\)"):
        load_robomimic_policy(broken("long.pth", lambda c: shadow(c).insert(5, torch.zeros(3, 3, 3))))
    with pytest.raises(ValueError, match=rf"ema_shape.pth: model\['ema'\]\['shadow_params'\]: 1 mis-shaped "
                                         rf"tensor\(s\): #\d+ \({last}\): expected \(7,\), found \(8,\)"):
        load_robomimic_policy(broken("ema_shape.pth", lambda c: shadow(c).__setitem__(-1, torch.zeros(8))))

    def bc(c):  # robomimic's BC: Algo.serialize() is the bare state dict of its nets
        c["model"] = {"policy.nets.0.weight": torch.zeros(4, 4)}
        c["algo_name"] = "bc"
    with pytest.raises(ValueError, match=r"bc.pth: algo 'bc' is not a diffusion policy checkpoint \(expected "
                                         r"algo_name 'diffusion_policy' with model\['nets'\]"):
        load_robomimic_policy(broken("bc.pth", bc))
    with pytest.raises(ValueError, match=r"stats.pth: action_normalization_stats lacks actions.offset"):
        load_robomimic_policy(broken("stats.pth", lambda c: c.update(
            action_normalization_stats={"actions": {"scale": torch.ones(1, 7)}})))


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


def test_keypoint_map_size_and_blind_cameras():
    """``feature_map_side`` is the ResNet's real output size; at 32 px the 1 x 1 map makes every image alike."""
    from dynaguide_jax.policy.config import feature_map_side
    from dynaguide_jax.policy.obs_encoder import ResNet18Conv, VisualCore

    for widths in ((16, 16, 32, 32), (16, 16)):
        for side in (20, 32, 33, 64, 84, 200):
            x = jax.ShapeDtypeStruct((1, side, side + 8, 3), jnp.float32)
            out = jax.eval_shape(lambda x: ResNet18Conv(widths).init_with_output(jax.random.key(0), x)[0], x)
            assert out.shape[1:3] == (feature_map_side(side, len(widths)), feature_map_side(side + 8, len(widths)))
    small = PolicyConfig.preset("small")  # one 32 px camera
    assert small.keypoint_map("camera") == (1, 1) and small.blind_cameras() == ("camera",)
    core = VisualCore(small)
    params = core.init(jax.random.key(0), jnp.zeros((2, 32, 32, 3)))
    images = jax.random.uniform(jax.random.key(1), (2, 32, 32, 3))
    feats = core.apply(params, images)
    np.testing.assert_array_equal(feats[0], feats[1])  # what "blind" means
    seen = small.replace(rgb_shapes=(("camera", (64, 64)),))
    assert seen.keypoint_map("camera") == (2, 2) and seen.blind_cameras() == ()
    feats = VisualCore(seen).apply(params, jax.random.uniform(jax.random.key(1), (2, 64, 64, 3)))
    assert np.abs(np.asarray(feats[0] - feats[1])).max() > 1e-4
    assert small.replace(rgb_shapes=(("camera", (64, 64)),), crop=(32, 32)).blind_cameras() == ("camera",)


def test_crop_randomizer_checkpoint_center_crops_at_eval(tmp_path):
    """With robomimic's CropRandomizer the networks see crops: the converted policy center-crops."""
    crop = 56
    cropped = OrderedDict((k, [3, crop, crop] if k in RGB else v) for k, v in SHAPES.items())
    nets = rp.build(cropped, RGB)
    cfg = rp.robomimic_config(["proprio"], RGB)
    cfg["observation"]["encoder"]["rgb"]["obs_randomizer_class"] = "CropRandomizer"
    cfg["observation"]["encoder"]["rgb"]["obs_randomizer_kwargs"] = {"crop_height": crop, "crop_width": crop,
                                                                     "num_crops": 1, "pos_enc": False}
    rp.save_checkpoint(tmp_path / "p.pth", nets, SHAPES, cfg)
    loaded = load_robomimic_policy(tmp_path / "p.pth")
    assert loaded.config.crop == (crop, crop)
    obs, _ = make_obs()
    t_obs = torch_obs(obs)
    for k in RGB:  # robomimic's eval-time center crop
        h, w = t_obs[k].shape[-2:]
        top, left = (h - crop) // 2, (w - crop) // 2
        t_obs[k] = t_obs[k][..., top:top + crop, left:left + crop]
    with torch.no_grad():
        ref = rp.encode(nets, t_obs)  # the trained encoder, as robomimic's inference
    ours = DiffusionPolicy(loaded.config).encode_obs(loaded.params, obs)
    np.testing.assert_allclose(np.asarray(ours), ref.numpy(), atol=TOL)
