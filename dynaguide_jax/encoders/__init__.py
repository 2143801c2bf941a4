"""Frozen image encoders (DinoV2) and their preprocessing."""
from dynaguide_jax.encoders.convert import load_dinov2, save_dinov2
from dynaguide_jax.encoders.dinov2 import DinoV2, encode_images, init_dinov2, num_patches
from dynaguide_jax.encoders.dinov2_config import DinoV2Config
from dynaguide_jax.encoders.preprocess import preprocess

__all__ = ["DinoV2", "DinoV2Config", "encode_images", "init_dinov2", "load_dinov2",
           "num_patches", "preprocess", "save_dinov2"]
