"""Datasets for training: in-memory episodes, training windows and the frozen-encoder feature cache."""
from dynaguide_jax.data.episodes import EpisodeData
from dynaguide_jax.data.features import build_feature_cache, load_feature_cache
from dynaguide_jax.data.windows import ActionTransform, DynamicsWindows, action_normalization

__all__ = ["ActionTransform", "DynamicsWindows", "EpisodeData", "action_normalization", "build_feature_cache",
           "load_feature_cache"]
