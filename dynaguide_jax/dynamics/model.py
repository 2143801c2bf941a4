"""The DynaGuide latent dynamics model: (DinoV2 patches, proprio, action chunk) -> future patches."""
from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from dynaguide_jax._checks import check_finite
from dynaguide_jax.dynamics.config import DynamicsConfig
from dynaguide_jax.kernels.dense_layernorm import dense_residual_layernorm
from dynaguide_jax.layers import DenseParams, LayerNormParams, SelfAttention, compute_dtype


class PostNormEncoderLayer(nn.Module):
    """torch ``TransformerEncoderLayer`` (batch_first, post-norm, ReLU FFN, dropout everywhere).

    With ``cfg.pallas`` on, each block's epilogue (output projection + residual + LayerNorm) is one
    Pallas kernel (``kernels.dense_layernorm``); same parameters, eval mode only (no dropout there).
    """

    cfg: DynamicsConfig

    @nn.compact
    def __call__(self, x, deterministic: bool = True):
        c, dt = self.cfg, compute_dtype(self.cfg.dtype)
        drop = lambda h: nn.Dropout(c.dropout)(h, deterministic=deterministic)  # noqa: E731
        ln = lambda name: nn.LayerNorm(epsilon=c.layer_norm_eps, dtype=dt, name=name)  # noqa: E731
        fused = c.pallas != "off"
        if fused and not deterministic and c.dropout > 0.0:
            raise ValueError("DynamicsConfig.pallas fuses the eval-mode layer (no dropout): train with pallas='off'")
        attn = SelfAttention(c.num_heads, dt, c.attention_dropout_rate, c.attention, project=not fused,
                             name="self_attn")
        if fused:
            epilogue = functools.partial(dense_residual_layernorm, eps=c.layer_norm_eps,
                                         interpret=c.pallas == "interpret")
            h, w, b = attn(x, deterministic)
            x = epilogue(h.astype(dt), w, b, x, *LayerNormParams(name="norm1")(c.feature_dim))
            h = nn.relu(nn.Dense(c.ffn_dim, dtype=dt, name="linear1")(x))
            w, b = DenseParams(c.feature_dim, name="linear2")(c.ffn_dim)
            return epilogue(h, w, b, x, *LayerNormParams(name="norm2")(c.feature_dim))
        h = attn(x, deterministic)
        x = ln("norm1")(x + drop(h))
        h = drop(nn.relu(nn.Dense(c.ffn_dim, dtype=dt, name="linear1")(x)))
        h = nn.Dense(c.feature_dim, dtype=dt, name="linear2")(h)
        return ln("norm2")(x + drop(h))


class LatentDynamics(nn.Module):
    """Predicts the DinoV2 patch tokens ``horizon`` steps ahead.

    ``apply(params, patches[B, C*P, D], proprio[B, p] | None, actions[B, H, A])``
    -> predicted patches ``[B, predicted_tokens, D]`` (float32).
    """

    config: DynamicsConfig

    @nn.compact
    def __call__(self, patches, proprio, actions, deterministic: bool = True):
        c, dt = self.config, compute_dtype(self.config.dtype)
        patches, actions = jnp.asarray(patches), jnp.asarray(actions)
        proprio = None if proprio is None else jnp.asarray(proprio)
        n_img = c.num_cameras * c.patches_per_camera
        if actions.ndim != 3 or actions.shape[1:] != (c.horizon, c.action_dim):
            raise ValueError(f"actions must be [B, {c.horizon}, {c.action_dim}], got {actions.shape}")
        b = actions.shape[0]
        if patches.shape != (b, n_img, c.feature_dim):
            raise ValueError(f"patches must be [B={b}, {n_img}, {c.feature_dim}] (B from the actions), "
                             f"got {patches.shape}")
        tokens = [patches.astype(dt)]
        if c.proprio_dim is not None:
            if proprio is None or proprio.shape != (b, c.proprio_dim):
                got = None if proprio is None else proprio.shape
                raise ValueError(f"proprio must be [B={b}, {c.proprio_dim}] (B from the actions), got {got}")
            tokens.append(nn.Dense(c.feature_dim, dtype=dt, name="proprio_embedder")(proprio)[:, None])
        # kernel-1 Conv1d == per-step Dense; flatten channel-major ("b d t -> b 1 (d t)")
        a = nn.Dense(c.action_channels, dtype=dt, name="action_embedder")(actions)
        tokens.append(jnp.swapaxes(a, 1, 2).reshape(b, 1, c.feature_dim))
        x = jnp.concatenate(tokens, axis=1)
        pos = self.param("pos_embedding", nn.initializers.normal(1.0), (1, c.num_tokens, c.feature_dim))
        x = x + pos.astype(x.dtype)
        layer = nn.remat(PostNormEncoderLayer, static_argnums=(2,)) if c.remat else PostNormEncoderLayer
        for i in range(c.num_layers):
            x = layer(c, name=f"layers_{i}")(x, deterministic)
        return x[:, : c.predicted_tokens].astype(jnp.float32)


@functools.partial(jax.jit, static_argnums=0)
def init_dynamics(config: DynamicsConfig, key: jax.Array):
    """Random params for ``LatentDynamics(config)`` (jitted: no eager forward pass; one compile per config)."""
    c = config
    patches = jnp.zeros((1, c.num_cameras * c.patches_per_camera, c.feature_dim))
    proprio = None if c.proprio_dim is None else jnp.zeros((1, c.proprio_dim))
    actions = jnp.zeros((1, c.horizon, c.action_dim))
    return LatentDynamics(c).init(key, patches, proprio, actions)["params"]


def predict_future_patches(config: DynamicsConfig, params, patches, proprio, actions):
    """Deterministic (eval-mode) prediction; the function guidance differentiates through."""
    for name, x in (("patches", patches), ("proprio", proprio), ("actions", actions)):
        check_finite(f"dynamics model input {name}", x)
    return LatentDynamics(config).apply({"params": params}, patches, proprio, actions)


def flops_per_sample(config: DynamicsConfig) -> float:
    """Approximate forward FLOPs for one sample (benchmarks report utilisation with it)."""
    t, d, f = config.num_tokens, config.feature_dim, config.ffn_dim
    return float(config.num_layers * (2 * t * (4 * d * d + 2 * d * f) + 4 * t * t * d))
