"""Dynamics checkpoints of the original PyTorch code (``FinalStatePredictionDino``) -> Flax.

The original saves ``torch.save(model.state_dict())``: ``pos_embedding``,
``action_embedder.patch_embed`` (kernel-1 Conv1d), ``proprio_embedder`` (optional),
``state_decoder_transformer.layers.{i}`` (torch ``TransformerEncoderLayer``), the frozen encoder
under ``state_encoder.`` (torch-hub DinoV2 names) and a visualisation-only ``reconstruction_model``.
``action_embedder.out_project`` exists in the file but is unused by the original forward pass.
"""
from __future__ import annotations

import re
from typing import Mapping

import jax
import numpy as np

from dynaguide_jax._checks import check_finite

from dynaguide_jax.dynamics.config import DynamicsConfig
from dynaguide_jax.encoders.convert import config_from_hub_state, hub_state_to_params
from dynaguide_jax.torch_io import (
    as_float32, check_keys, check_shape, layer_norm, linear, load_state_dict, split_qkv,
)

PREFIX = "state_decoder_transformer.layers."
IGNORED = ("reconstruction_model.", "action_embedder.out_project.", "state_encoder.")


def config_from_state(state, num_heads: int = 8, patches_per_camera: int = 256) -> DynamicsConfig:
    """Infer sizes from weight shapes (heads are not recoverable from shapes: default 8)."""
    for k in ("pos_embedding", "action_embedder.patch_embed.weight"):
        if k not in state:
            raise KeyError(f"not a FinalStatePredictionDino state dict: missing {k!r}")
    for k, layout in (("pos_embedding", "[1, tokens, D]"), ("action_embedder.patch_embed.weight", "[C, A, 1]")):
        if np.ndim(state[k]) != 3:
            raise ValueError(f"{k} must be {layout}, got shape {tuple(np.shape(state[k]))}")
    _, tokens, d = state["pos_embedding"].shape
    channels, action_dim, kernel = state["action_embedder.patch_embed.weight"].shape
    if kernel != 1:
        raise ValueError(f"action_embedder.patch_embed must have kernel size 1, got {kernel}")
    indices = [int(m.group(1)) for k in state if (m := re.match(re.escape(PREFIX) + r"(\d+)\.", k))]
    if not indices or PREFIX + "0.linear1.weight" not in state:
        raise KeyError(f"not a FinalStatePredictionDino state dict: missing {PREFIX + '0.linear1.weight'!r}")
    layers = 1 + max(indices)
    proprio = state.get("proprio_embedder.weight")
    image_tokens = tokens - 1 - (proprio is not None)
    if image_tokens % patches_per_camera:
        raise ValueError(f"{image_tokens} image tokens is not a multiple of {patches_per_camera} patches")
    return DynamicsConfig(
        feature_dim=d, patches_per_camera=patches_per_camera,
        num_cameras=image_tokens // patches_per_camera, action_dim=action_dim,
        horizon=d // channels, proprio_dim=None if proprio is None else proprio.shape[1],
        num_layers=layers, num_heads=num_heads,
        ffn_dim=state[PREFIX + "0.linear1.weight"].shape[0],
    )


def expected_keys(cfg: DynamicsConfig) -> set[str]:
    keys = {"pos_embedding", "action_embedder.patch_embed.weight", "action_embedder.patch_embed.bias"}
    if cfg.proprio_dim is not None:
        keys |= {"proprio_embedder.weight", "proprio_embedder.bias"}
    for i in range(cfg.num_layers):
        p = f"{PREFIX}{i}."
        keys |= {p + "self_attn.in_proj_weight", p + "self_attn.in_proj_bias"}
        for m in ("self_attn.out_proj", "linear1", "linear2", "norm1", "norm2"):
            keys |= {f"{p}{m}.weight", f"{p}{m}.bias"}
    return keys


def state_to_params(state, cfg: DynamicsConfig, source: str = "state dict") -> dict:
    s = state
    check_keys(expected_keys(cfg), s, source, ignored=IGNORED)
    d = cfg.feature_dim
    check_shape("pos_embedding", s["pos_embedding"], (1, cfg.num_tokens, d))
    conv = s["action_embedder.patch_embed.weight"]
    check_shape("action_embedder.patch_embed.weight", conv, (cfg.action_channels, cfg.action_dim, 1))
    params = {
        "pos_embedding": s["pos_embedding"],
        "action_embedder": {"kernel": np.ascontiguousarray(conv[:, :, 0].T),
                            "bias": s["action_embedder.patch_embed.bias"]},
    }
    if cfg.proprio_dim is not None:
        params["proprio_embedder"] = linear(s, "proprio_embedder")
    for i in range(cfg.num_layers):
        p = f"{PREFIX}{i}."
        w, b = s[p + "self_attn.in_proj_weight"], s[p + "self_attn.in_proj_bias"]
        check_shape(p + "self_attn.in_proj_weight", w, (3 * d, d))
        attn = split_qkv(w, b)
        attn["out"] = linear(s, p + "self_attn.out_proj")
        params[f"layers_{i}"] = {
            "self_attn": attn, "linear1": linear(s, p + "linear1"), "linear2": linear(s, p + "linear2"),
            "norm1": layer_norm(s, p + "norm1"), "norm2": layer_norm(s, p + "norm2"),
        }
    return as_float32(params)


def load_original_dynamics(path_or_state, num_heads: int = 8, patches_per_camera: int = 256,
                           with_encoder: bool = True, encoder_num_heads: int | None = None):
    """Convert an original dynamics checkpoint.

    Returns ``(config, params, encoder)`` where ``encoder`` is ``(DinoV2Config, params)`` built
    from the ``state_encoder.`` weights stored in the same file, or ``None`` if absent/unwanted.
    ``encoder_num_heads`` defaults to width / 64, true of every released DinoV2.
    """
    if isinstance(path_or_state, dict):
        state, source = dict(path_or_state), "state dict"
    else:
        state, source = load_state_dict(path_or_state), str(path_or_state)
    cfg = config_from_state(state, num_heads, patches_per_camera)
    params = state_to_params(state, cfg, source)
    encoder = None
    enc_state = {k[len("state_encoder."):]: v for k, v in state.items() if k.startswith("state_encoder.")}
    if with_encoder and enc_state:
        enc_cfg = config_from_hub_state(enc_state, encoder_num_heads, source + " [state_encoder]")
        encoder = (enc_cfg, hub_state_to_params(enc_state, enc_cfg, source + " [state_encoder]"))
    return cfg, params, encoder


def save_dynamics(directory, config: DynamicsConfig, params) -> str:
    """Store converted or trained dynamics params with orbax (``load_dynamics`` reads them back).

    Refuses a non-``DynamicsConfig`` config and params holding NaN / inf (the leaf is named)."""
    from dynaguide_jax import param_io

    if not isinstance(config, DynamicsConfig):
        raise TypeError(f"config must be a DynamicsConfig, got {type(config).__name__}")
    if not isinstance(params, Mapping) or not params:
        raise TypeError(f"params must be a non-empty dict of arrays (init_dynamics / load_dynamics), "
                        f"got {type(params).__name__}")
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        check_finite(f"dynamics params{jax.tree_util.keystr(path)} (saving to {directory})", leaf)
    return param_io.save_params(directory, params, {"kind": "dynamics", "config": config.to_dict()})


def load_dynamics(directory) -> tuple[DynamicsConfig, dict]:
    """``(config, params)`` from a directory written by ``save_dynamics`` / ``dynaguide convert dynamics``."""
    from dynaguide_jax import param_io

    meta, params = param_io.load_params(directory)
    if meta.get("kind") != "dynamics":
        raise ValueError(f"{directory} holds a {meta.get('kind')!r} checkpoint, not a dynamics model")
    if not isinstance(meta.get("config"), dict):
        raise ValueError(f"{directory}: {param_io.META_FILE} has no 'config' object for the dynamics model")
    try:
        config = DynamicsConfig.from_dict(meta["config"])
    except (TypeError, ValueError, KeyError) as e:
        raise ValueError(f"{directory}: invalid dynamics config in {param_io.META_FILE} ({e})") from e
    return config, params
