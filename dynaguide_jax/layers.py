"""Small building blocks shared by the ViT encoder and the dynamics transformer."""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp


def attend(q, k, v, *, dropout_rate: float = 0.0, dropout_rng=None) -> jax.Array:
    """Softmax attention over ``[B, T, heads, head_dim]`` q/k/v with scale ``1/sqrt(head_dim)``.

    Without dropout this is ``jax.nn.dot_product_attention``, which XLA (and cuDNN where present)
    lower to a fused kernel; attention-probability dropout (torch's MultiheadAttention in training)
    needs the explicit form.
    """
    if dropout_rng is None or dropout_rate == 0.0:
        return jax.nn.dot_product_attention(q, k, v)
    scale = q.shape[-1] ** -0.5
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k).astype(jnp.float32) * scale
    probs = jax.nn.softmax(logits, axis=-1)
    keep = jax.random.bernoulli(dropout_rng, 1.0 - dropout_rate, probs.shape)
    probs = jnp.where(keep, probs / (1.0 - dropout_rate), 0.0).astype(v.dtype)
    return jnp.einsum("bhqk,bkhd->bqhd", probs, v)


class SelfAttention(nn.Module):
    """Multi-head self-attention with separate q/k/v/out projections (torch layout friendly)."""

    num_heads: int
    dtype: jnp.dtype = jnp.float32
    dropout_rate: float = 0.0

    @nn.compact
    def __call__(self, x, deterministic: bool = True):
        d = x.shape[-1]
        if d % self.num_heads:
            raise ValueError(f"width {d} is not divisible by num_heads={self.num_heads}")
        hd = d // self.num_heads
        dense = lambda name: nn.Dense(d, dtype=self.dtype, name=name)  # noqa: E731
        split = lambda t: t.reshape(*t.shape[:-1], self.num_heads, hd)  # noqa: E731
        q, k, v = (split(dense(n)(x)) for n in ("query", "key", "value"))
        rng = None
        if not deterministic and self.dropout_rate > 0.0:
            rng = self.make_rng("dropout")
        out = attend(q, k, v, dropout_rate=self.dropout_rate, dropout_rng=rng)
        return dense("out")(out.reshape(*x.shape[:-1], d))


def compute_dtype(name: str) -> jnp.dtype:
    """Map a config string ('float32', 'bfloat16', 'float16') to a dtype, with a clear error."""
    try:
        return {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}[name]
    except KeyError:
        raise ValueError(f"dtype must be float32, bfloat16 or float16, got {name!r}") from None
