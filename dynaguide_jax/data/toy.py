"""Dynamics-training data from the built-in toy world: demonstrations, a (small, random-weight or
user-supplied) DinoV2 feature cache, and the training windows over it."""
from __future__ import annotations

import os

import jax
import numpy as np

from dynaguide_jax import toyworld
from dynaguide_jax.data.episodes import EpisodeData
from dynaguide_jax.data.features import build_feature_cache, load_feature_cache
from dynaguide_jax.data.windows import DynamicsWindows
from dynaguide_jax.dynamics.config import DynamicsConfig
from dynaguide_jax.encoders import DinoV2Config, init_dinov2, load_dinov2
from dynaguide_jax.policy.mixture import line_prototypes

IMAGE_SIZE = 56


def toy_encoder(path: str | None = None, seed: int = 0):
    """``(config, params, image_size)``: converted DinoV2 weights from ``path`` (run at 224 px), or
    the small random-weight ViT the demo uses (56 px)."""
    if path:
        cfg, params = load_dinov2(path)
        return cfg, params, 224
    cfg = DinoV2Config(hidden_size=64, num_layers=2, num_heads=4, pos_grid=IMAGE_SIZE // 14)
    return cfg, init_dinov2(cfg, jax.random.key(seed), IMAGE_SIZE), IMAGE_SIZE


def toy_dynamics_data(cache_dir: str, episodes: int = 64, length: int = 40, horizon: int = 16, seed: int = 0,
                      encoder_path: str | None = None, progress: bool = True, encoder_seed: int | None = None,
                      target: str = "segment_end"):
    """Returns ``(DynamicsConfig, DynamicsWindows)`` over cached features of toy demonstrations.

    Every episode is one labelled segment (``obs["segment"]``) of its behaviour (``obs["behaviour"]``,
    ``"line_<i>"``). The random-weight encoder is seeded by ``encoder_seed`` (default ``seed``), so
    held-out data (another ``seed``) can be encoded with the encoder a model was trained with.
    ``target``: what the windows predict (``DynamicsWindows``), by default each episode's last frame.
    """
    obs, actions, ends, behaviour = toyworld.demonstrations(jax.random.key(seed), episodes, length,
                                                            line_prototypes(4, horizon, 7), IMAGE_SIZE)
    obs["behaviour"] = np.repeat(np.asarray([f"line_{b}" for b in behaviour]), length)
    obs["segment"] = np.repeat(np.arange(episodes), length)
    data = EpisodeData(obs=obs, actions=actions, episode_ends=ends)
    enc_cfg, enc_params, size = toy_encoder(encoder_path, seed if encoder_seed is None else encoder_seed)
    cache = os.path.join(cache_dir, "features")
    if jax.process_index() == 0:  # one writer; the other hosts wait, then read the finished cache
        build_feature_cache(cache, obs["camera"], enc_cfg, enc_params, size, batch_size=64, progress=progress)
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices("feature cache built")
    feats = load_feature_cache(cache, enc_cfg, enc_params, size)
    cfg = DynamicsConfig(feature_dim=enc_cfg.hidden_size, patches_per_camera=feats.shape[1], action_dim=7,
                         horizon=horizon, proprio_dim=obs["proprio"].shape[1], num_layers=2, num_heads=4,
                         ffn_dim=4 * enc_cfg.hidden_size, dropout=0.1)
    return cfg, DynamicsWindows(data, np.asarray(feats), horizon, target=target)
