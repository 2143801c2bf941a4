"""The dynamics model split at the action: observation work once, the action-dependent rest per call.

Guidance evaluates ``LatentDynamics`` (and its gradient) dozens of times per chunk with the same
observation and different actions. The model is post-norm, so layer 1's input rows for the 257
image/proprio tokens (embeddings + positions) and their query/key/value projections do not depend
on the action (``mode="projections"``); nor do the attention logits among them (``mode="attention"``).
Only the action token's key and value reach those queries, so each observation query's softmax over
the observation keys is kept as flash-attention partial sums (row max ``m``, ``l = Σ exp(s - m)``,
``o = Σ exp(s - m) v``) and every call merges in the one action key:

    out_i = (o_i e^(m_i - m'_i) + v_a e^(s_ia - m'_i)) / (l_i e^(m_i - m'_i) + e^(s_ia - m'_i)),
    m'_i = max(m_i, s_ia).

The action token and its own q/k/v are affine in the flat actions: one folded matmul per call.
Everything after layer 1's attention depends on the action and runs per call with the module's own
layers (same parameters; same numerics up to rounding order). "attention" saves more FLOPs,
"projections" leaves fewer kernels (the merge costs a few small ones); the GPU decides.
"""
from __future__ import annotations

from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from dynaguide_jax.dynamics.config import DynamicsConfig
from dynaguide_jax.dynamics.model import PostNormEncoderLayer
from dynaguide_jax.kernels.dense_layernorm import dense_residual_layernorm
from dynaguide_jax.layers import attend, compute_dtype


class ObservationContext(NamedTuple):
    """Action-independent part of one forward pass (leaves lead with the batch ``B``, but the
    folded action map)."""

    x_obs: jax.Array  # [B, N, D] layer-1 input rows of the N observation tokens (compute dtype)
    q: jax.Array  # [B, N, H, d] their layer-1 queries, keys and values (compute dtype)
    k: jax.Array
    v: jax.Array
    w_act: jax.Array  # [T*A, 4D] float32: flat actions -> [action token, its layer-1 q, k, v] (linear)
    b_act: jax.Array  # [4D] float32: its offset (embedder and projection biases, position)
    # mode "attention" only (None otherwise):
    row_max: jax.Array | None = None  # [B, H, N] float32: max of each observation query's logits
    row_sum: jax.Array | None = None  # [B, H, N] float32: Σ exp(logit - row_max)
    row_acc: jax.Array | None = None  # [B, N, H, d] float32: Σ exp(logit - row_max) v


def _dense(params, x, dtype, features: int | None = None):
    return nn.Dense(features or params["kernel"].shape[-1], dtype=dtype).apply({"params": params}, x)


def _heads(x, num_heads: int):
    return x.reshape(*x.shape[:-1], num_heads, x.shape[-1] // num_heads)


MODES = ("projections", "attention")


def observation_context(config: DynamicsConfig, params, patches, proprio,
                        mode: str = "projections") -> ObservationContext:
    """The action-independent work of ``LatentDynamics`` (see the module doc): once per observation."""
    if mode not in MODES:
        raise ValueError(f"precompute mode must be one of {MODES}, got {mode!r}")
    c, dt = config, compute_dtype(config.dtype)
    patches = jnp.asarray(patches)
    n_img = c.num_cameras * c.patches_per_camera
    if patches.ndim != 3 or patches.shape[1:] != (n_img, c.feature_dim):
        raise ValueError(f"patches must be [B, {n_img}, {c.feature_dim}], got {patches.shape}")
    b = patches.shape[0]
    tokens = [patches.astype(dt)]
    if c.proprio_dim is not None:
        if proprio is None or jnp.shape(proprio) != (b, c.proprio_dim):
            got = None if proprio is None else jnp.shape(proprio)
            raise ValueError(f"proprio must be [B={b}, {c.proprio_dim}] (B from the patches), got {got}")
        tokens.append(_dense(params["proprio_embedder"], jnp.asarray(proprio), dt)[:, None])
    x = jnp.concatenate(tokens, axis=1)
    n = x.shape[1]
    x = x + params["pos_embedding"][:, :n].astype(x.dtype)
    attn = params["layers_0"]["self_attn"]
    q, k, v = (_heads(_dense(attn[name], x, dt), c.num_heads) for name in ("query", "key", "value"))
    ctx = ObservationContext(x, q, k, v, *_action_map(c, params))
    if mode == "projections":
        return ctx
    s = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32) * (q.shape[-1] ** -0.5)
    m = jnp.max(s, axis=-1)
    p = jnp.exp(s - m[..., None])
    o = jnp.einsum("bhqk,bkhd->bqhd", p, v.astype(jnp.float32))
    return ctx._replace(row_max=m, row_sum=jnp.sum(p, axis=-1), row_acc=o)


def _action_map(config: DynamicsConfig, params):
    """The action token and its layer-1 q/k/v are affine in the flat actions: fold the embedder
    (per-step Dense, flattened channel-major), the position and the three projections into one map."""
    c, hi = config, jax.lax.Precision.HIGHEST
    emb = params["action_embedder"]
    # a_tok[d*T + t] = Σ_j actions[t, j] W[j, d] + b[d]  ->  [T*A, D] with rows t*A + j
    w_tok = jnp.einsum("jd,tu->tjdu", emb["kernel"], jnp.eye(c.horizon, dtype=emb["kernel"].dtype))
    w_tok = w_tok.reshape(c.horizon * c.action_dim, c.feature_dim)
    b_tok = jnp.repeat(emb["bias"], c.horizon) + params["pos_embedding"][0, -1]
    attn = params["layers_0"]["self_attn"]
    w_qkv = jnp.concatenate([attn[n]["kernel"] for n in ("query", "key", "value")], axis=1)
    b_qkv = jnp.concatenate([attn[n]["bias"] for n in ("query", "key", "value")])
    w = jnp.concatenate([w_tok, jnp.matmul(w_tok, w_qkv, precision=hi)], axis=1)
    b = jnp.concatenate([b_tok, jnp.matmul(b_tok, w_qkv, precision=hi) + b_qkv])
    return w.astype(jnp.float32), b.astype(jnp.float32)


def _merged_attention(ctx: ObservationContext, qa, ka, va):
    """Layer-1 attention of all rows from the cached observation softmax sums and the action's q/k/v."""
    scale = ctx.q.shape[-1] ** -0.5
    s_a = jnp.einsum("bqhd,bhd->bhq", ctx.q, ka[:, 0], preferred_element_type=jnp.float32) * scale
    m_new = jnp.maximum(ctx.row_max, s_a)
    keep, new = jnp.exp(ctx.row_max - m_new), jnp.exp(s_a - m_new)  # [B, H, N]
    to_rows = lambda t: jnp.swapaxes(t, 1, 2)[..., None]  # noqa: E731  [B, H, N] -> [B, N, H, 1]
    num = ctx.row_acc * to_rows(keep) + to_rows(new) * va.astype(jnp.float32)
    out_obs = num / to_rows(ctx.row_sum * keep + new)
    cat = lambda c0, c1: jnp.concatenate([c0, c1], axis=1)  # noqa: E731
    out_act = attend(qa, cat(ctx.k, ka), cat(ctx.v, va))
    return cat(out_obs, out_act.astype(jnp.float32))


def _first_layer(config: DynamicsConfig, params, ctx: ObservationContext, actions):
    """Layer 1 (``layers_0``) on ``[observation rows; action row]`` with the observation part cached."""
    c, dt = config, compute_dtype(config.dtype)
    attn = params["self_attn"]
    b = actions.shape[0]
    flat = actions.reshape(b, 1, -1).astype(dt)
    tok_qkv = jnp.matmul(flat, ctx.w_act.astype(dt)) + ctx.b_act.astype(dt)
    a_tok, qa, ka, va = jnp.split(tok_qkv, 4, axis=-1)
    qa, ka, va = (_heads(t, c.num_heads) for t in (qa, ka, va))
    if ctx.row_max is None:
        cat = lambda c0, c1: jnp.concatenate([c0, c1], axis=1)  # noqa: E731
        out = attend(cat(ctx.q, qa), cat(ctx.k, ka), cat(ctx.v, va), implementation=c.attention)
    else:
        out = _merged_attention(ctx, qa, ka, va).astype(dt)
    out = out.reshape(b, out.shape[1], c.feature_dim)
    x = jnp.concatenate([ctx.x_obs, a_tok], axis=1)
    if c.pallas != "off":  # the layer's fused epilogues, as PostNormEncoderLayer
        def epilogue(h, dense, norm, r):
            return dense_residual_layernorm(h, dense["kernel"], dense["bias"], r, norm["scale"], norm["bias"],
                                            c.layer_norm_eps, 128, c.pallas == "interpret")

        x = epilogue(out.astype(dt), attn["out"], params["norm1"], x)
        return epilogue(nn.relu(_dense(params["linear1"], x, dt)), params["linear2"], params["norm2"], x)
    h = _dense(attn["out"], out, dt)
    ln = lambda name, y: nn.LayerNorm(epsilon=c.layer_norm_eps, dtype=dt).apply(  # noqa: E731
        {"params": params[name]}, y)
    x = ln("norm1", x + h)
    h = _dense(params["linear2"], nn.relu(_dense(params["linear1"], x, dt)), dt)
    return ln("norm2", x + h)


def predict_with_context(config: DynamicsConfig, params, ctx: ObservationContext, actions):
    """``LatentDynamics`` in eval mode for ``actions [B, H, A]`` given ``observation_context``'s output:
    predicted patches ``[B, predicted_tokens, D]`` (float32)."""
    c = config
    actions = jnp.asarray(actions)
    b = ctx.x_obs.shape[0]
    if actions.shape != (b, c.horizon, c.action_dim):
        raise ValueError(f"actions must be [B={b}, {c.horizon}, {c.action_dim}] (B from the observation "
                         f"context), got {actions.shape}")
    x = _first_layer(c, params["layers_0"], ctx, actions)
    for i in range(1, c.num_layers):
        x = PostNormEncoderLayer(c).apply({"params": params[f"layers_{i}"]}, x)
    return x[:, : c.predicted_tokens].astype(jnp.float32)
