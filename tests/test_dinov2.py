"""DinoV2 port: parity with HF transformers and with the torch-hub architecture (random weights).

Tolerance: max abs error <= 1e-4 in float32 on cls and patch tokens (observed ~1e-5 and below).
"""
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from transformers import Dinov2Config as HFConfig
from transformers import Dinov2Model, Dinov2WithRegistersConfig, Dinov2WithRegistersModel

from dynaguide_jax.encoders import (
    DinoV2, DinoV2Config, encode_images, init_dinov2, load_dinov2, preprocess, save_dinov2,
)
from dynaguide_jax.torch_io import UnsafeCheckpointError
from tests.oracles.dinov2_hub import HubDinoV2, randomize_

TOL = 1e-4


def run_ours(cfg, params, images_nchw):
    x = jnp.asarray(images_nchw.permute(0, 2, 3, 1).numpy())
    return jax.tree.map(np.asarray, DinoV2(cfg).apply({"params": params}, x))


def hf_model(tmp_path, registers=False, **kw):
    torch.manual_seed(0)
    if registers:
        model = Dinov2WithRegistersModel(Dinov2WithRegistersConfig(**kw))
    else:
        model = Dinov2Model(HFConfig(**kw))
    randomize_(model.eval())
    model.save_pretrained(tmp_path)
    return model


def assert_hf_parity(model, cfg, params, size, registers=0):
    torch.manual_seed(1)
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        ref = model(pixel_values=x).last_hidden_state.numpy()
    ours = run_ours(cfg, params, x)
    np.testing.assert_allclose(ours["cls"], ref[:, 0], atol=TOL)
    np.testing.assert_allclose(ours["registers"], ref[:, 1:1 + registers], atol=TOL)
    np.testing.assert_allclose(ours["patches"], ref[:, 1 + registers:], atol=TOL)


SMALL = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=98, patch_size=14)


@pytest.mark.parametrize("swiglu", [False, True])
@pytest.mark.parametrize("size", [(98, 98), (70, 112)])
def test_hf_small_parity(tmp_path, swiglu, size):
    model = hf_model(tmp_path, use_swiglu_ffn=swiglu, **SMALL)
    cfg, params = load_dinov2(tmp_path)
    assert cfg.use_swiglu == swiglu and cfg.pos_grid == 7
    assert_hf_parity(model, cfg, params, size)


@pytest.mark.parametrize("size", [(98, 98), (56, 84)])
def test_hf_register_model_parity(tmp_path, size):
    model = hf_model(tmp_path, registers=True, num_register_tokens=4, **SMALL)
    cfg, params = load_dinov2(tmp_path)
    assert cfg.num_registers == 4 and cfg.interpolate_antialias
    assert_hf_parity(model, cfg, params, size, registers=4)


@pytest.mark.slow
def test_hf_true_vits14_at_224(tmp_path):
    """ViT-S/14 with the released 518 px grid, run at 224 px (position-embedding interpolation)."""
    model = hf_model(tmp_path, hidden_size=384, num_hidden_layers=12, num_attention_heads=6,
                     image_size=518, patch_size=14)
    cfg, params = load_dinov2(tmp_path)
    assert cfg == DinoV2Config.preset("vits14").replace(interpolate_offset=0.0)
    assert_hf_parity(model, cfg, params, (224, 224))


def hub_oracle(**kw):
    torch.manual_seed(0)
    return randomize_(HubDinoV2(**kw).eval(), seed=3)


def assert_hub_parity(oracle, cfg, params, size):
    torch.manual_seed(2)
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        ref = {k: v.numpy() for k, v in oracle.forward_features(x).items()}
    ours = run_ours(cfg, params, x)
    np.testing.assert_allclose(ours["cls"], ref["x_norm_clstoken"], atol=TOL)
    np.testing.assert_allclose(ours["registers"], ref["x_norm_regtokens"], atol=TOL)
    np.testing.assert_allclose(ours["patches"], ref["x_norm_patchtokens"], atol=TOL)


@pytest.mark.slow
def test_hub_vits14_pth_at_224(tmp_path):
    """The encoder DynaGuide uses: hub dinov2_vits14 layout, 37x37 grid resampled to 16x16 with
    the hub's scale_factor=(16 + 0.1) / 37 bicubic interpolation."""
    oracle = hub_oracle()
    path = tmp_path / "dinov2_vits14_pretrain.pth"
    torch.save(oracle.state_dict(), path)
    cfg, params = load_dinov2(path)
    assert cfg == DinoV2Config.preset("vits14")
    assert_hub_parity(oracle, cfg, params, (224, 224))


@pytest.mark.parametrize("registers,swiglu,size", [(0, True, (70, 84)), (4, False, (98, 98)),
                                                   (4, True, (56, 70))])
def test_hub_small_variants(tmp_path, registers, swiglu, size):
    kw = dict(img_size=98, dim=64, depth=2, heads=4, swiglu=swiglu, registers=registers)
    if registers:  # the hub builds its _reg models with these interpolation settings
        kw.update(interpolate_offset=0.0, interpolate_antialias=True)
    oracle = hub_oracle(**kw)
    path = tmp_path / "hub.pth"
    torch.save(oracle.state_dict(), path)
    cfg, params = load_dinov2(path, num_heads=4)
    assert (cfg.num_registers, cfg.use_swiglu) == (registers, swiglu)
    assert_hub_parity(oracle, cfg, params, size)


def test_hub_chunked_training_layout(tmp_path):
    oracle = hub_oracle(img_size=42, dim=32, depth=2, heads=2)
    state = {}
    for k, v in oracle.state_dict().items():
        state[k.replace("blocks.", "blocks.0.", 1) if k.startswith("blocks.") else k] = v
    torch.save({"model": state}, tmp_path / "ckpt.pth")
    cfg, params = load_dinov2(tmp_path / "ckpt.pth", num_heads=2)
    assert_hub_parity(oracle, cfg, params, (42, 42))


def test_orbax_round_trip(tmp_path):
    cfg = DinoV2Config(hidden_size=32, num_layers=1, num_heads=2, pos_grid=3)
    params = init_dinov2(cfg, jax.random.key(0), 42)
    save_dinov2(tmp_path / "conv", cfg, params)
    cfg2, params2 = load_dinov2(tmp_path / "conv")
    assert cfg2 == cfg
    imgs = np.random.default_rng(0).integers(0, 256, (2, 50, 60, 3), dtype=np.uint8)
    direct = DinoV2(cfg).apply({"params": params}, preprocess(imgs, 42))
    via = encode_images(cfg2, params2, imgs, 42)
    np.testing.assert_allclose(np.asarray(via["patches"]), np.asarray(direct["patches"]), atol=1e-6)
    jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, params), params2)


def test_bf16_compute_stays_close(tmp_path):
    """bf16 compute with fp32 params: patch tokens drift by a bounded amount (stated in README)."""
    oracle = hub_oracle(img_size=98, dim=64, depth=4, heads=4)
    torch.save(oracle.state_dict(), tmp_path / "hub.pth")
    cfg, params = load_dinov2(tmp_path / "hub.pth", num_heads=4)
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 98, 98, 3)).astype(np.float32))
    f32 = DinoV2(cfg).apply({"params": params}, x)["patches"]
    b16 = DinoV2(cfg.replace(dtype="bfloat16")).apply({"params": params}, x)["patches"]
    assert b16.dtype == jnp.float32
    rel = float(jnp.linalg.norm(b16 - f32) / jnp.linalg.norm(f32))
    assert rel < 0.03, rel


def test_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_dinov2(tmp_path / "nothing.pth")
    oracle = hub_oracle(img_size=42, dim=32, depth=1, heads=2)
    state = oracle.state_dict()
    state["blocks.0.extra.weight"] = torch.zeros(3)
    del state["blocks.0.ls2.gamma"]
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(KeyError, match=r"missing keys: \['blocks.0.ls2.gamma'\].*unexpected keys: "
                                       r"\['blocks.0.extra.weight'\]"):
        load_dinov2(tmp_path / "bad.pth")
    torch.save({"state": oracle.state_dict(), "fn": torch.nn.Linear(2, 2)}, tmp_path / "pickled.pth")
    with pytest.raises(UnsafeCheckpointError, match="state_dict"):
        load_dinov2(tmp_path / "pickled.pth")
    with pytest.raises(ValueError, match="B, H, W, 3"):
        DinoV2(DinoV2Config(hidden_size=32, num_layers=1, num_heads=2)).init(
            jax.random.key(0), jnp.zeros((1, 3, 28, 28)))
    with pytest.raises(ValueError, match="preset"):
        DinoV2Config.preset("vitx14")


@pytest.mark.parametrize("name", ["vits14", "vitb14", "vitl14", "vitg14", "vitg14_reg"])
def test_presets_match_the_hub_architecture(name):
    """Every released size: the hub model's weight shapes imply our preset, and the parameter
    counts agree (shapes only: the torch model is built on the meta device)."""
    cfg = DinoV2Config.preset(name)
    kw = dict(dim=cfg.hidden_size, depth=cfg.num_layers, heads=cfg.num_heads, swiglu=cfg.use_swiglu,
              registers=cfg.num_registers, interpolate_offset=cfg.interpolate_offset,
              interpolate_antialias=cfg.interpolate_antialias)
    with torch.device("meta"):
        hub = HubDinoV2(**kw)
    shapes = {k: np.empty(tuple(v.shape), np.float32) if v.numel() < 10**6 else _Shape(tuple(v.shape))
              for k, v in hub.state_dict().items()}
    from dynaguide_jax.encoders.convert import config_from_hub_state
    assert config_from_hub_state(shapes) == cfg
    ours = jax.eval_shape(lambda: init_dinov2(cfg, jax.random.key(0)))
    n_ours = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(ours))
    n_hub = sum(v.numel() for k, v in hub.state_dict().items() if k != "mask_token")
    assert n_ours == n_hub


class _Shape:
    """Stands in for a large array where only ``.shape`` is read."""

    def __init__(self, shape):
        self.shape = shape


def _small_hub_state(swiglu=False, depth=2):
    oracle = hub_oracle(img_size=42, dim=32, depth=depth, heads=2, swiglu=swiglu)
    return {k: v.clone() for k, v in oracle.state_dict().items()}


@pytest.mark.parametrize("key,shape", [("blocks.1.attn.proj.weight", (32, 16)), ("blocks.0.norm2.bias", (31,)),
                                       ("blocks.1.ls1.gamma", (1, 32)), ("patch_embed.proj.bias", (16,))])
def test_hub_wrong_tensor_shape_names_file_and_key(tmp_path, capsys, key, shape):
    """One damaged tensor fails at load (naming file, key, expected and found shapes), not at apply;
    `dynaguide convert dinov2` goes through the same loader, so it writes nothing."""
    state = _small_hub_state()
    torch.save(state, tmp_path / "good.pth")
    load_dinov2(tmp_path / "good.pth", num_heads=2)  # happy path
    state[key] = torch.zeros(shape)
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match=rf"bad\.pth.*{re.escape(key)}: expected .*got {re.escape(str(tuple(shape)))}"):
        load_dinov2(tmp_path / "bad.pth", num_heads=2)
    from dynaguide_jax.cli import main
    assert main(["convert", "dinov2", str(tmp_path / "bad.pth"), str(tmp_path / "conv"), "--num-heads", "2"]) == 2
    err = capsys.readouterr().err
    assert "bad.pth: 1 tensor(s) do not fit" in err and key in err
    assert not (tmp_path / "conv").exists()


@pytest.mark.parametrize("swiglu", [False, True])
def test_hub_mlp_width_must_agree_across_blocks(tmp_path, swiglu):
    state = _small_hub_state(swiglu=swiglu, depth=3)
    fc = "w12" if swiglu else "fc1"
    w = state[f"blocks.0.mlp.{fc}.weight"]
    state[f"blocks.0.mlp.{fc}.weight"] = torch.zeros(w.shape[0] + 16, w.shape[1])  # read as another ratio before
    torch.save(state, tmp_path / "odd.pth")
    odd = re.escape(f"{{'blocks.0.mlp.{fc}.weight': {w.shape[0] + 16}}} (expected {w.shape[0]}")
    with pytest.raises(ValueError, match=rf"odd\.pth: MLP widths differ across blocks: {odd}"):
        load_dinov2(tmp_path / "odd.pth", num_heads=2)


def test_hub_mlp_width_consistent_but_inconsistent_with_fc2(tmp_path):
    """fc1 rows changed in every block (a different ratio) while fc1.bias / fc2 keep the real width."""
    state = _small_hub_state()
    for i in range(2):
        state[f"blocks.{i}.mlp.fc1.weight"] = torch.zeros(96, 32)
    torch.save(state, tmp_path / "ratio.pth")
    with pytest.raises(ValueError, match=r"ratio\.pth: .*blocks.0.mlp.fc1.bias: expected \(96,\), got \(128,\)"):
        load_dinov2(tmp_path / "ratio.pth", num_heads=2)


def test_swiglu_width_off_rule(tmp_path):
    state = _small_hub_state(swiglu=True, depth=1)
    state["blocks.0.mlp.w12.weight"] = torch.zeros(2 * 40, 32)
    torch.save(state, tmp_path / "sw.pth")
    with pytest.raises(ValueError, match=r"sw\.pth: blocks.0.mlp.w12.weight: MLP width 40 .*SwiGLU"):
        load_dinov2(tmp_path / "sw.pth", num_heads=2)


def test_hf_safetensors_wrong_tensor_shape(tmp_path):
    from safetensors.torch import load_file, save_file

    hf_model(tmp_path, **SMALL)
    load_dinov2(tmp_path)  # happy path
    path = tmp_path / "model.safetensors"
    state = load_file(path)
    key = "encoder.layer.1.mlp.fc1.weight"
    state[key] = torch.zeros(128 + 14, 64)
    save_file(state, path)
    with pytest.raises(ValueError, match=r"model\.safetensors.*blocks.1.mlp.fc1.weight: expected \(256, 64\), "
                                         r"got \(142, 64\)"):
        load_dinov2(tmp_path)


def test_saved_checkpoint_shapes_checked(tmp_path):
    cfg = DinoV2Config(hidden_size=32, num_layers=1, num_heads=2, pos_grid=3)
    params = init_dinov2(cfg, jax.random.key(0), 42)
    save_dinov2(tmp_path / "conv", cfg.replace(hidden_size=64, num_heads=4), params)
    with pytest.raises(ValueError, match=r"conv: saved DinoV2 params do not fit the stored config: .*cls_token"):
        load_dinov2(tmp_path / "conv")


def test_apply_rejects_integer_images_and_off_patch_sizes():
    cfg = DinoV2Config(hidden_size=32, num_layers=1, num_heads=2, pos_grid=3)
    params = init_dinov2(cfg, jax.random.key(0), 42)
    model = DinoV2(cfg)
    imgs = np.random.default_rng(0).integers(0, 256, (1, 42, 42, 3), dtype=np.uint8)
    assert model.apply({"params": params}, preprocess(imgs, 42))["patches"].shape == (1, 9, 32)  # happy path
    with pytest.raises(TypeError, match=r"uint8.*dynaguide_jax\.encoders\.preprocess"):
        model.apply({"params": params}, jnp.asarray(imgs))
    with pytest.raises(ValueError, match=r"50x50 pixels, not a multiple of the patch size 14.*size=56"):
        model.apply({"params": params}, jnp.zeros((1, 50, 50, 3)))
    with pytest.raises(ValueError, match=r"42x43 pixels"):
        model.apply({"params": params}, jnp.zeros((1, 42, 43, 3)))
