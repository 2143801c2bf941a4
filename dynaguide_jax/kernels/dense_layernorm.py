"""Fused post-norm epilogue ``LayerNorm(residual + h @ W + b)`` as one Pallas kernel.

A post-norm transformer layer ends its attention and its feed-forward block this way; XLA runs the
matmul, the bias/residual add and the normalisation as separate kernels (more on CPUs). Here each
block of ``block_rows`` rows loads its rows of ``h`` and ``residual`` and the whole ``W``, and writes
the normalised rows: one kernel. Accumulation, statistics and the affine step are float32 whatever
the input dtype. The backward (``custom_vjp``) is the plain-JAX reference's, recomputed from the
inputs, so ``jax.grad`` works through it (the guidance differentiates w.r.t. the actions).

``interpret=True`` runs the kernel through Pallas's interpreter (CPUs, tests); ``False`` compiles it
for the GPU (Triton) or TPU (Mosaic).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl


def reference(h, w, b, residual, scale, bias, eps: float):
    """Plain-JAX ``LayerNorm(residual + h @ w + b) * scale + bias`` (float32 inside, ``residual``'s dtype out)."""
    f32 = jnp.float32
    y = jnp.matmul(h, w.astype(h.dtype), preferred_element_type=f32) + b.astype(f32) + residual.astype(f32)
    mean = jnp.mean(y, -1, keepdims=True)
    var = jnp.mean(jnp.square(y - mean), -1, keepdims=True)
    out = (y - mean) * jax.lax.rsqrt(var + eps) * scale.astype(f32) + bias.astype(f32)
    return out.astype(residual.dtype)


def _kernel(h_ref, w_ref, b_ref, r_ref, s_ref, beta_ref, o_ref, *, eps: float, block_k: int):
    f32 = jnp.float32
    k = h_ref.shape[-1]
    if block_k >= k or k % block_k:
        y = jnp.matmul(h_ref[...], w_ref[...].astype(h_ref.dtype), preferred_element_type=f32)
    else:  # the contraction in slices: W is never held whole (GPU shared memory)
        def step(i, acc):
            cols = pl.ds(pl.multiple_of(i * block_k, block_k), block_k)
            h = h_ref[:, cols]
            return acc + jnp.matmul(h, w_ref[cols, :].astype(h.dtype), preferred_element_type=f32)

        y = jax.lax.fori_loop(0, k // block_k, step, jnp.zeros(o_ref.shape, f32))
    y = y + b_ref[...].astype(f32) + r_ref[...].astype(f32)
    mean = jnp.mean(y, -1, keepdims=True)
    var = jnp.mean(jnp.square(y - mean), -1, keepdims=True)
    out = (y - mean) * jax.lax.rsqrt(var + eps) * s_ref[...].astype(f32) + beta_ref[...].astype(f32)
    o_ref[...] = out.astype(o_ref.dtype)


def _pallas(h, w, b, residual, scale, bias, eps: float, block_rows: int, block_k: int, interpret: bool):
    lead, k, d = residual.shape[:-1], h.shape[-1], residual.shape[-1]
    h2, r2 = h.reshape(-1, k), residual.reshape(-1, d)
    m = r2.shape[0]
    bm = min(block_rows, m)
    pad = -m % bm
    if pad:
        h2, r2 = jnp.pad(h2, ((0, pad), (0, 0))), jnp.pad(r2, ((0, pad), (0, 0)))
    rows = lambda cols: pl.BlockSpec((bm, cols), lambda i: (i, 0))  # noqa: E731
    whole = lambda shape: pl.BlockSpec(shape, lambda i: (0, 0))  # noqa: E731
    out = pl.pallas_call(
        functools.partial(_kernel, eps=eps, block_k=block_k),
        grid=((m + pad) // bm,),
        in_specs=[rows(k), whole((k, d)), whole((1, d)), rows(d), whole((1, d)), whole((1, d))],
        out_specs=rows(d),
        out_shape=jax.ShapeDtypeStruct(r2.shape, residual.dtype),
        interpret=interpret,
    )(h2, w, b.reshape(1, d), r2, scale.reshape(1, d), bias.reshape(1, d))
    return out[:m].reshape(*lead, d)


@functools.partial(jax.custom_vjp, nondiff_argnums=(6, 7, 8, 9))
def dense_residual_layernorm(h, w, b, residual, scale, bias, eps: float = 1e-5, block_rows: int = 128,
                             interpret: bool = False, block_k: int = 512):
    """``LayerNorm(residual + h @ w + b) * scale + bias`` over the last axis, one Pallas kernel.

    h ``[..., K]``, w ``[K, D]``, b / scale / bias ``[D]``, residual ``[..., D]`` -> ``[..., D]`` in
    ``residual``'s dtype (``h`` and ``w`` multiply in ``h``'s dtype, accumulating in float32). Each
    program handles ``block_rows`` rows and contracts in slices of ``block_k`` when that divides K.
    """
    return _pallas(h, w, b, residual, scale, bias, eps, block_rows, block_k, interpret)


def _fwd(h, w, b, residual, scale, bias, eps, block_rows, interpret, block_k):
    out = _pallas(h, w, b, residual, scale, bias, eps, block_rows, block_k, interpret)
    return out, (h, w, b, residual, scale, bias)


def _bwd(eps, block_rows, interpret, block_k, saved, g):
    _, vjp = jax.vjp(lambda *a: reference(*a, eps), *saved)
    return vjp(g)


dense_residual_layernorm.defvjp(_fwd, _bwd)
