"""Latent dynamics model: converted original checkpoints reproduce the torch oracle (<= 1e-4)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from dynaguide_jax.diffusion import DDIMSchedule
from dynaguide_jax.dynamics import (
    DynamicsConfig, LatentDynamics, dynamics_loss, init_dynamics, load_original_dynamics,
    noise_actions, predict_future_patches, sample_noise_levels,
)
from dynaguide_jax.guidance import encode_cameras
from tests.oracles.dinov2_hub import HubDinoV2, randomize_
from tests.oracles.dynamics import FinalStatePredictionDino

TOL = 1e-4


def small_oracle(proprio=True, cameras=("third_person",), seed=0):
    torch.manual_seed(seed)
    enc = randomize_(HubDinoV2(img_size=56, dim=32, depth=1, heads=2), seed=seed)
    model = FinalStatePredictionDino(
        enc, action_dim=7, action_horizon=16, cameras=cameras,
        proprio="proprio" if proprio else None, proprio_dim=15, dim=32, layers=2, heads=8,
        image_size=56, predicted_tokens=16, patches_per_camera=16)
    return model.eval()


@pytest.mark.parametrize("proprio", [True, False])
@pytest.mark.parametrize("cameras", [("third_person",), ("third_person", "eye_in_hand")])
def test_converted_checkpoint_matches_oracle(tmp_path, proprio, cameras):
    oracle = small_oracle(proprio, cameras)
    torch.save(oracle.state_dict(), tmp_path / "dyn.pth")
    cfg, params, encoder = load_original_dynamics(tmp_path / "dyn.pth", num_heads=8, patches_per_camera=16)
    assert (cfg.num_cameras, cfg.proprio_dim is None, cfg.horizon) == (len(cameras), not proprio, 16)
    torch.manual_seed(5)
    patches = torch.randn(3, 16 * len(cameras), 32)
    prop = torch.randn(3, 15)
    actions = torch.randn(3, 16, 7)
    with torch.no_grad():
        ref = oracle.predict_from_patches(patches, prop, actions).numpy()
    ours = predict_future_patches(cfg, params, jnp.asarray(patches.numpy()),
                                  jnp.asarray(prop.numpy()) if proprio else None,
                                  jnp.asarray(actions.numpy()))
    np.testing.assert_allclose(np.asarray(ours), ref, atol=TOL)


def test_images_to_prediction_chain_matches_original(tmp_path):
    """Raw 0..255 images -> transform -> encoder (from state_encoder.*) -> dynamics, end to end."""
    oracle = small_oracle()
    torch.save(oracle.state_dict(), tmp_path / "dyn.pth")
    cfg, params, (enc_cfg, enc_params) = load_original_dynamics(tmp_path / "dyn.pth", patches_per_camera=16,
                                                                encoder_num_heads=2)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (2, 64, 64, 3)).astype(np.float32)
    prop = rng.normal(size=(2, 15)).astype(np.float32)
    actions = rng.normal(size=(2, 16, 7)).astype(np.float32)
    state = {"third_person": torch.tensor(images).permute(0, 3, 1, 2), "proprio": torch.tensor(prop)}
    with torch.no_grad():
        ref = oracle.state_action_embedding(state, torch.tensor(actions)).numpy()
    patches = encode_cameras(enc_cfg, enc_params, jnp.asarray(images)[:, None], image_size=56)
    ours = predict_future_patches(cfg, params, patches, jnp.asarray(prop), jnp.asarray(actions))
    np.testing.assert_allclose(np.asarray(ours), ref, atol=TOL)


def test_bad_checkpoints(tmp_path):
    state = small_oracle().state_dict()
    del state["state_decoder_transformer.layers.1.norm2.bias"]
    state["state_decoder_transformer.layers.1.surprise"] = torch.zeros(1)
    with pytest.raises(KeyError, match=r"layers.1.norm2.bias.*unexpected keys: .*surprise"):
        load_original_dynamics(state, patches_per_camera=16)
    bad = small_oracle().state_dict()
    bad["pos_embedding"] = torch.zeros(1, 30, 32)
    with pytest.raises(ValueError, match="multiple of 16"):
        load_original_dynamics(bad, patches_per_camera=16)
    with pytest.raises(KeyError, match="not a FinalStatePredictionDino"):
        load_original_dynamics({"weight": torch.zeros(2)})


def test_config_validation_and_shape_errors():
    with pytest.raises(ValueError, match="divisible by horizon"):
        DynamicsConfig(feature_dim=100, horizon=16)
    cfg = DynamicsConfig.preset("small")
    params = init_dynamics(cfg, jax.random.key(0))
    p = jnp.zeros((2, 16, 64))
    with pytest.raises(ValueError, match="actions must be"):
        predict_future_patches(cfg, params, p, jnp.zeros((2, 15)), jnp.zeros((2, 8, 7)))
    with pytest.raises(ValueError, match="proprio must be"):
        predict_future_patches(cfg, params, p, None, jnp.zeros((2, 16, 7)))
    with pytest.raises(ValueError, match="patches must be"):
        predict_future_patches(cfg, params, jnp.zeros((2, 15, 64)), jnp.zeros((2, 15)), jnp.zeros((2, 16, 7)))


def test_noise_levels_follow_geometric():
    k = np.asarray(sample_noise_levels(jax.random.key(0), 200_000))
    assert k.min() == 0 and k.max() == 99
    # Geometric(0.05) failures, clipped at 99: mean = 19 * (1 - 0.95**99) - 0 ~= 18.88
    assert abs(k.mean() - 19 * (1 - 0.95**99)) < 0.2
    assert abs((k == 0).mean() - 0.05) < 0.005


def test_noise_actions_ramp():
    sched = DDIMSchedule()
    a = jnp.ones((4000, 16, 7)) * 0.5
    untouched = noise_actions(jax.random.key(1), a, sched, progress=0.0)
    np.testing.assert_array_equal(np.asarray(untouched), np.asarray(a))
    half = noise_actions(jax.random.key(1), a, sched, progress=0.9)
    changed = np.asarray(jnp.any(half != a, axis=(1, 2))).mean()
    assert abs(changed - 0.5) < 0.03  # probability capped at 0.5


def test_loss_trains_down_and_dropout_is_used():
    cfg = DynamicsConfig.preset("small").replace(dropout=0.1)
    params = init_dynamics(cfg, jax.random.key(0))
    rng = np.random.default_rng(0)
    batch = {"patches": jnp.asarray(rng.normal(size=(8, 16, 64)), jnp.float32),
             "proprio": jnp.asarray(rng.normal(size=(8, 15)), jnp.float32),
             "actions": jnp.asarray(rng.normal(size=(8, 16, 7)), jnp.float32),
             "future_patches": jnp.asarray(rng.normal(size=(8, 16, 64)), jnp.float32)}
    l1 = dynamics_loss(cfg, params, batch, jax.random.key(1))
    l2 = dynamics_loss(cfg, params, batch, jax.random.key(2))
    assert float(l1) != float(l2)  # dropout active in training mode
    import optax
    opt = optax.adam(1e-3)
    state = opt.init(params)

    @jax.jit
    def step(params, state, key):
        loss, g = jax.value_and_grad(lambda p: dynamics_loss(cfg, p, batch, key))(params)
        upd, state = opt.update(g, state)
        return optax.apply_updates(params, upd), state, loss

    first = None
    for i in range(30):
        params, state, loss = step(params, state, jax.random.key(i))
        first = first if first is not None else float(loss)
    assert float(loss) < 0.7 * first
    det = LatentDynamics(cfg).apply({"params": params}, batch["patches"], batch["proprio"], batch["actions"])
    assert det.shape == (8, 16, 64)


def test_attention_dropout_and_kernel_settings():
    """attention_dropout=None keeps torch's layer (dropout on attention probabilities too); 0 drops
    only that part; eval-mode outputs do not depend on it. 'cudnn' fails clearly where it cannot run."""
    cfg = DynamicsConfig.preset("small").replace(dropout=0.3)
    params = init_dynamics(cfg, jax.random.key(0))
    x = (jnp.ones((2, 16, 64)), jnp.ones((2, 15)), jnp.ones((2, 16, 7)))

    def train_mode(c):
        return LatentDynamics(c).apply({"params": params}, *x, deterministic=False, rngs={"dropout": jax.random.key(5)})

    same = train_mode(cfg.replace(attention_dropout=0.3))
    np.testing.assert_array_equal(train_mode(cfg), same)
    assert not np.allclose(train_mode(cfg.replace(attention_dropout=0.0)), same)
    np.testing.assert_allclose(predict_future_patches(cfg.replace(attention_dropout=0.0), params, *x),
                               predict_future_patches(cfg, params, *x), atol=1e-6)
    assert DynamicsConfig.from_dict(cfg.replace(attention_dropout=0.0).to_dict()).attention_dropout_rate == 0.0
    with pytest.raises(ValueError, match="attention must be one of"):
        cfg.replace(attention="flash")
    with pytest.raises(ValueError, match="needs bfloat16 or float16"):
        predict_future_patches(cfg.replace(attention="cudnn"), params, *x)
    if jax.default_backend() == "cpu":
        with pytest.raises(RuntimeError, match="needs an NVIDIA GPU with cuDNN"):
            predict_future_patches(cfg.replace(attention="cudnn", dtype="bfloat16"), params, *x)


def test_bad_config_and_inputs_name_the_input():
    from dynaguide_jax.dynamics import DynamicsConfig, init_dynamics, predict_future_patches
    from dynaguide_jax.guidance import goals_from_trajectory_ends
    for kw, msg in ((dict(horizon=0), "horizon must be >= 1"), (dict(num_heads=0), "num_heads must be >= 1"),
                    (dict(feature_dim=-16), "feature_dim must be >= 1"),
                    (dict(dropout=1.5), r"dropout must be in \[0, 1\)"),
                    (dict(dtype="fp8"), "dtype must be one of"), (dict(num_predicted_tokens=0), "num_predicted_tokens"),
                    (dict(horizon="16"), "horizon must be an integer")):
        with pytest.raises((ValueError, TypeError), match=msg):
            DynamicsConfig(**kw)
    cfg = DynamicsConfig.preset("small").replace(num_layers=1)
    params = init_dynamics(cfg, jax.random.key(0))
    pat, pro, act = jnp.zeros((2, 16, 64)), jnp.zeros((2, 15)), jnp.zeros((2, 16, 7))
    with pytest.raises(ValueError, match=r"patches must be \[B=2, 16, 64\]"):
        predict_future_patches(cfg, params, pat[:1], pro, act)
    with pytest.raises(ValueError, match=r"proprio must be \[B=2, 15\]"):
        predict_future_patches(cfg, params, pat, pro[:1], act)
    with pytest.raises(FloatingPointError, match="dynamics model input patches"):
        predict_future_patches(cfg, params, pat * jnp.nan, pro, act)
    with pytest.raises(FloatingPointError, match="goal actions"):
        goals_from_trajectory_ends(cfg, params, pat, pro, np.full((2, 7), np.nan))
    with pytest.raises(ValueError, match=r"goal patches must be \[K, C\*P, D\]"):
        goals_from_trajectory_ends(cfg, params, pat[0], pro, np.zeros((2, 7)))


def test_saved_dynamics_bad_directories_name_the_path(tmp_path):
    from dynaguide_jax import param_io
    from dynaguide_jax.dynamics import load_dynamics, save_dynamics
    cfg = DynamicsConfig.preset("small").replace(num_layers=1)
    params = init_dynamics(cfg, jax.random.key(0))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_dynamics(tmp_path / "nowhere")
    (tmp_path / "afile").write_text("x")
    with pytest.raises(FileNotFoundError, match="is a file"):
        load_dynamics(tmp_path / "afile")
    with pytest.raises(FileNotFoundError, match="not a saved dynaguide checkpoint"):
        load_dynamics(tmp_path)
    with pytest.raises(TypeError, match="config must be a DynamicsConfig"):
        save_dynamics(tmp_path / "x", cfg.to_dict(), params)
    bad = jax.tree.map(lambda a: a, params)
    bad["pos_embedding"] = bad["pos_embedding"].at[0, 0, 0].set(jnp.nan)
    with pytest.raises(FloatingPointError, match=r"dynamics params\['pos_embedding'\]"):
        save_dynamics(tmp_path / "x", cfg, bad)
    d = tmp_path / "dyn"
    save_dynamics(d, cfg, params)
    meta = d / param_io.META_FILE
    good = meta.read_text()
    meta.write_text(good.replace('"dynamics"', '"dinov2"'))
    with pytest.raises(ValueError, match="'dinov2' checkpoint, not a dynamics model"):
        load_dynamics(d)
    meta.write_text(good.replace('"horizon"', '"horizont"'))
    with pytest.raises(ValueError, match=r"dyn: invalid dynamics config .*horizont"):
        load_dynamics(d)
    meta.write_text("{not json")
    with pytest.raises(ValueError, match=r"dynaguide.json: not a readable JSON"):
        load_dynamics(d)
    meta.write_text(good)
    for f in (d / "params").rglob("*"):
        if f.is_file():
            f.write_bytes(b"garbage")
    with pytest.raises(ValueError, match=r"params: not a readable orbax checkpoint"):
        load_dynamics(d)
    import shutil
    shutil.rmtree(d / "params")
    with pytest.raises(FileNotFoundError, match=r"params: missing"):
        load_dynamics(d)


def test_original_state_dict_wrong_shapes_and_no_layers():
    state = {k: v.numpy() for k, v in small_oracle().state_dict().items()}
    bad = dict(state, pos_embedding=state["pos_embedding"][0])
    with pytest.raises(ValueError, match=r"pos_embedding must be \[1, tokens, D\], got shape \(\d+, 32\)"):
        load_original_dynamics(bad, patches_per_camera=16)
    bad = {k: v for k, v in state.items() if not k.startswith("state_decoder_transformer.")}
    with pytest.raises(KeyError, match="layers.0.linear1.weight"):
        load_original_dynamics(bad, patches_per_camera=16)


def test_fit_and_loss_bad_inputs_name_the_input():
    from dynaguide_jax.dynamics.fit import fit_dynamics
    cfg = DynamicsConfig.preset("small").replace(num_layers=1)
    params = init_dynamics(cfg, jax.random.key(0))
    batch = {"patches": jnp.zeros((2, 16, 64)), "proprio": jnp.zeros((2, 15)), "actions": jnp.zeros((2, 16, 7)),
             "future_patches": jnp.zeros((2, 16, 64))}
    key = jax.random.key(0)
    with pytest.raises(KeyError, match=r"missing \['future_patches'\]"):
        dynamics_loss(cfg, params, {k: v for k, v in batch.items() if k != "future_patches"}, key)
    with pytest.raises(KeyError, match=r"missing \['proprio'\]"):
        dynamics_loss(cfg, params, dict(batch, proprio=None), key)
    with pytest.raises(ValueError, match=r"future_patches must be \[B=2, >=16, 64\]"):
        dynamics_loss(cfg, params, dict(batch, future_patches=jnp.zeros((1, 16, 64))), key)
    for kw, err, msg in ((dict(steps=-1), ValueError, "steps must be >= 0"),
                         (dict(steps=2.5), TypeError, "steps must be an integer"),
                         (dict(steps=1, learning_rate=0.0), ValueError, "learning_rate must be finite and > 0"),
                         (dict(steps=1, learning_rate=float("nan")), ValueError, "learning_rate")):
        with pytest.raises(err, match=msg):
            fit_dynamics(cfg, params, lambda i: batch, key=key, progress=False, **kw)
    with pytest.raises(TypeError, match="wrap a list with iter"):
        fit_dynamics(cfg, params, [batch], steps=1, key=key, progress=False)
    with pytest.raises(ValueError, match="batches ran out after 1 of steps=2"):
        fit_dynamics(cfg, params, iter([batch]), steps=2, key=key, progress=False)
    with pytest.raises(FloatingPointError, match="loss is nan at step 0"):
        fit_dynamics(cfg, params, lambda i: dict(batch, future_patches=batch["future_patches"] * jnp.nan), steps=1,
                     key=key, progress=False)


def test_remat_changes_memory_not_results():
    from dynaguide_jax.dynamics.loss import dynamics_loss

    cfg = DynamicsConfig.preset("small").replace(dropout=0.1)
    params = init_dynamics(cfg, jax.random.key(0))
    remat_params = init_dynamics(cfg.replace(remat=True), jax.random.key(0))
    assert jax.tree.all(jax.tree.map(lambda a, b: bool(jnp.array_equal(a, b)), params, remat_params))
    ks = jax.random.split(jax.random.key(1), 4)
    batch = {"patches": jax.random.normal(ks[0], (3, 16, 64)), "proprio": jax.random.normal(ks[1], (3, 15)),
             "actions": jax.random.normal(ks[2], (3, 16, 7)), "future_patches": jax.random.normal(ks[3], (3, 16, 64))}
    grad = lambda c: jax.value_and_grad(lambda p: dynamics_loss(c, p, batch, jax.random.key(2)))(params)  # noqa
    (l0, g0), (l1, g1) = grad(cfg), grad(cfg.replace(remat=True))  # same dropout masks: same loss and gradients
    np.testing.assert_allclose(l1, l0, rtol=1e-6)
    for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g0)):
        np.testing.assert_allclose(a, b, atol=1e-6)
    with pytest.raises(ValueError, match="remat must be true or false"):
        cfg.replace(remat="yes")
