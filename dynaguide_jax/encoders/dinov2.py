"""DinoV2 vision transformer in Flax, numerically equal to the PyTorch originals.

Input: normalized float images ``[B, H, W, 3]`` (see ``preprocess``) whose sides are multiples of the
patch size; integer images and other sizes are rejected. Output, like the original
``forward_features``: the final-LayerNorm-ed ``cls`` ``[B, D]``, ``registers`` ``[B, R, D]`` and
``patches`` ``[B, (H//14)*(W//14), D]``.
"""
from __future__ import annotations


import flax.linen as nn
import jax
import jax.numpy as jnp

from dynaguide_jax.encoders.dinov2_config import DinoV2Config
from dynaguide_jax.encoders.resize import output_size_for_scale, resize_hw
from dynaguide_jax.layers import SelfAttention, compute_dtype


def interpolate_position_embeddings(pos: jax.Array, grid_h: int, grid_w: int, cfg: DinoV2Config):
    """Resample ``pos`` ``[1, 1 + G*G, D]`` to a ``grid_h x grid_w`` patch grid (cls kept as is)."""
    g = cfg.pos_grid
    if grid_h == g and grid_w == g:
        return pos
    cls_pos, patch_pos = pos[:, :1], pos[:, 1:].reshape(1, g, g, -1).astype(jnp.float32)
    if cfg.interpolate_offset:
        scale = ((grid_h + cfg.interpolate_offset) / g, (grid_w + cfg.interpolate_offset) / g)
        size = (output_size_for_scale(g, scale[0]), output_size_for_scale(g, scale[1]))
    else:
        scale, size = None, (grid_h, grid_w)
    if size != (grid_h, grid_w):  # torch asserts the same
        raise ValueError(f"position-embedding interpolation gave {size}, expected {(grid_h, grid_w)}")
    patch_pos = resize_hw(patch_pos, size, "bicubic", cfg.interpolate_antialias, scale)
    patch_pos = patch_pos.reshape(1, grid_h * grid_w, -1).astype(pos.dtype)
    return jnp.concatenate([cls_pos, patch_pos], axis=1)


class LayerScale(nn.Module):
    @nn.compact
    def __call__(self, x):
        gamma = self.param("gamma", nn.initializers.constant(1e-5), (x.shape[-1],))
        return x * gamma.astype(x.dtype)


class Mlp(nn.Module):
    hidden: int
    swiglu: bool
    dtype: jnp.dtype

    @nn.compact
    def __call__(self, x):
        d = x.shape[-1]
        if self.swiglu:  # w12 holds [gate; up] like the hub's SwiGLUFFNFused
            gate, up = jnp.split(nn.Dense(2 * self.hidden, dtype=self.dtype, name="w12")(x), 2, -1)
            return nn.Dense(d, dtype=self.dtype, name="w3")(nn.silu(gate) * up)
        h = nn.gelu(nn.Dense(self.hidden, dtype=self.dtype, name="fc1")(x), approximate=False)
        return nn.Dense(d, dtype=self.dtype, name="fc2")(h)


class Block(nn.Module):
    cfg: DinoV2Config

    @nn.compact
    def __call__(self, x):
        c, dt = self.cfg, compute_dtype(self.cfg.dtype)
        ln = lambda name: nn.LayerNorm(epsilon=c.layer_norm_eps, dtype=dt, name=name)  # noqa: E731
        attn = SelfAttention(c.num_heads, dt, implementation=c.attention, name="attn")
        x = x + LayerScale(name="ls1")(attn(ln("norm1")(x)))
        mlp = Mlp(c.mlp_hidden, c.use_swiglu, dt, name="mlp")
        return x + LayerScale(name="ls2")(mlp(ln("norm2")(x)))


class DinoV2(nn.Module):
    """DinoV2 backbone; ``apply(params, images[B, H, W, 3])`` -> dict(cls, registers, patches)."""

    config: DinoV2Config

    @nn.compact
    def __call__(self, images: jax.Array) -> dict[str, jax.Array]:
        c, dt = self.config, compute_dtype(self.config.dtype)
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"images must be [B, H, W, 3] normalized floats, got {images.shape}")
        if not jnp.issubdtype(images.dtype, jnp.floating):
            raise TypeError(
                f"DinoV2 images must be normalized floats, got dtype {images.dtype}; raw uint8 / integer "
                "images go through dynaguide_jax.encoders.preprocess(images, size) first (or use encode_images)"
            )
        p = c.patch_size
        h, w = images.shape[1:3]
        if h % p or w % p or min(h, w) < p:
            near = max(p, round(max(h, w) / p) * p)
            raise ValueError(
                f"DinoV2 images are {h}x{w} pixels, not a multiple of the patch size {p} (edge pixels would be "
                f"silently dropped); resize with dynaguide_jax.encoders.preprocess(images, size) using a "
                f"multiple of {p}, e.g. size={near}"
            )
        x = nn.Conv(c.hidden_size, (p, p), strides=(p, p), padding="VALID", dtype=dt,
                    name="patch_embed")(images.astype(dt))
        b, gh, gw, d = x.shape
        x = x.reshape(b, gh * gw, d)
        init = nn.initializers.normal(0.02)
        cls = self.param("cls_token", init, (1, 1, d))
        pos = self.param("pos_embed", init, (1, 1 + c.pos_grid**2, d))
        x = jnp.concatenate([jnp.broadcast_to(cls, (b, 1, d)).astype(x.dtype), x], axis=1)
        x = x + interpolate_position_embeddings(pos, gh, gw, c).astype(x.dtype)
        if c.num_registers:
            reg = self.param("register_tokens", init, (1, c.num_registers, d))
            reg = jnp.broadcast_to(reg, (b, c.num_registers, d)).astype(x.dtype)
            x = jnp.concatenate([x[:, :1], reg, x[:, 1:]], axis=1)
        for i in range(c.num_layers):
            x = Block(c, name=f"blocks_{i}")(x)
        x = nn.LayerNorm(epsilon=c.layer_norm_eps, dtype=dt, name="norm")(x).astype(jnp.float32)
        r = c.num_registers
        return {"cls": x[:, 0], "registers": x[:, 1 : 1 + r], "patches": x[:, 1 + r :]}


def init_dinov2(config: DinoV2Config, key: jax.Array, image_size: int = 224):
    """Random params for ``config`` (tests, demos); real weights come from ``load_dinov2``."""
    dummy = jnp.zeros((1, image_size, image_size, 3), jnp.float32)
    return DinoV2(config).init(key, dummy)["params"]


def num_patches(config: DinoV2Config, image_size: int | tuple[int, int]) -> int:
    h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
    return (h // config.patch_size) * (w // config.patch_size)


def encode_images(config: DinoV2Config, params, images, size: int = 224) -> dict[str, jax.Array]:
    """Preprocess raw images (uint8 / 0..255, ``[B, H, W, 3]``) and run DinoV2 once."""
    from dynaguide_jax.encoders.preprocess import preprocess

    return DinoV2(config).apply({"params": params}, preprocess(images, size))


def flops_per_image(config: DinoV2Config, image_size: int = 224) -> float:
    """Approximate forward FLOPs (2 x multiply-adds) for one image; used by benchmarks."""
    t = 1 + config.num_registers + num_patches(config, image_size)
    d, h = config.hidden_size, config.mlp_hidden
    per_layer = 2 * t * (4 * d * d + (3 if config.use_swiglu else 2) * d * h) + 4 * t * t * d
    return float(config.num_layers * per_layer + 2 * t * 3 * config.patch_size**2 * d)


__all__ = ["DinoV2", "DinoV2Config", "init_dinov2", "encode_images", "num_patches"]
