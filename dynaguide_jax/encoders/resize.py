"""Image resampling that reproduces ``torch.nn.functional.interpolate`` exactly.

Resampling is separable and linear, so each axis is a fixed ``[out, in]`` weight matrix computed
in numpy from static shapes (at trace time) and applied with two matmuls. The weights follow
PyTorch's CPU kernels (``UpSampleKernel.cpp``), ``align_corners=False``:

- plain bilinear / bicubic: source index ``scale * (i + 0.5) - 0.5``, edge indices clamped,
  cubic coefficient ``A = -0.75``;
- ``antialias=True`` (what torchvision's ``Resize`` uses on tensors): a filter of support
  ``interp_size / 2 * max(scale, 1)`` centred at ``scale * (i + 0.5)``, truncated at the edges and
  renormalised; cubic coefficient ``a = -0.5``.

``scale`` is ``in / out`` unless a ``scale_factor`` is given, in which case torch uses
``1 / scale_factor`` (the DinoV2 hub models rely on this for their position embeddings).
"""
from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

METHODS = ("bilinear", "bicubic")


_f32 = np.float32


def _cubic(x: np.ndarray, a: float) -> np.ndarray:
    x = np.abs(x).astype(_f32)
    a = _f32(a)
    near = ((a + _f32(2)) * x - (a + _f32(3))) * x * x + _f32(1)
    far = ((a * x - _f32(5) * a) * x + _f32(8) * a) * x - _f32(4) * a
    return np.where(x <= 1.0, near, np.where(x < 2.0, far, _f32(0))).astype(_f32)


def _plain_weights(in_size: int, out_size: int, scale: np.float32, method: str) -> np.ndarray:
    w = np.zeros((out_size, in_size), np.float32)
    rows = np.arange(out_size)
    src = scale * (rows.astype(_f32) + _f32(0.5)) - _f32(0.5)
    if method == "bilinear":
        src = np.maximum(src, _f32(0))
        i0 = np.minimum(src.astype(np.int64), in_size - 1)
        i1 = np.minimum(i0 + 1, in_size - 1)
        lam = np.clip(src - i0.astype(_f32), _f32(0), _f32(1))
        np.add.at(w, (rows, i0), _f32(1) - lam)
        np.add.at(w, (rows, i1), lam)
        return w
    base = np.floor(src).astype(np.int64)
    t = src - base.astype(_f32)
    one = _f32(1)
    for k, offset in enumerate((t + one, t, one - t, _f32(2) - t)):
        idx = np.clip(base - 1 + k, 0, in_size - 1)
        np.add.at(w, (rows, idx), _cubic(offset, -0.75))
    return w


def _antialias_weights(in_size: int, out_size: int, scale: np.float32, method: str) -> np.ndarray:
    interp_size = 2 if method == "bilinear" else 4
    support = _f32(interp_size * 0.5 * scale) if scale >= 1.0 else _f32(interp_size * 0.5)
    invscale = _f32(1.0 / scale) if scale >= 1.0 else _f32(1)
    w = np.zeros((out_size, in_size), np.float32)
    for i in range(out_size):
        center = _f32(scale * (i + 0.5))
        lo = max(int(center - support + 0.5), 0)
        hi = min(int(center + support + 0.5), in_size)
        x = ((np.arange(lo, hi) - center + 0.5) * invscale).astype(_f32)
        if method == "bilinear":
            f = np.maximum(_f32(0), _f32(1) - np.abs(x)).astype(_f32)
        else:
            f = _cubic(x, -0.5)
        total = _f32(f.sum(dtype=_f32))
        w[i, lo:hi] = f / total if total != 0.0 else f
    return w


@functools.lru_cache(maxsize=256)
def resize_weights(
    in_size: int,
    out_size: int,
    method: str = "bilinear",
    antialias: bool = False,
    scale_factor: float | None = None,
) -> np.ndarray:
    """``[out_size, in_size]`` float32 matrix of torch's 1-D resampling along one axis.

    Computed with torch's float32 arithmetic step by step, so the weights agree bit for bit in most
    entries (the remaining difference is summation order).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if in_size < 1 or out_size < 1:
        raise ValueError(f"sizes must be positive, got in_size={in_size}, out_size={out_size}")
    scale = _f32(1.0 / scale_factor) if scale_factor else _f32(in_size) / _f32(out_size)
    build = _antialias_weights if antialias else _plain_weights
    w = build(in_size, out_size, scale, method)
    w.setflags(write=False)
    return w


def output_size_for_scale(in_size: int, scale_factor: float) -> int:
    """Output length torch picks for ``interpolate(scale_factor=...)``."""
    return int(math.floor(float(in_size) * scale_factor))


def resize_hw(
    x: jax.Array,
    size: tuple[int, int],
    method: str = "bilinear",
    antialias: bool = False,
    scale_factor: tuple[float, float] | None = None,
) -> jax.Array:
    """Resize the two spatial axes of ``x`` ``[..., H, W, C]`` to ``size`` = (H', W').

    Computed in float32 (or the input's float type if wider) with ``HIGHEST`` matmul precision so
    TPU/GPU do not silently drop to bf16/TF32 passes.
    """
    if x.ndim < 3:
        raise ValueError(f"expected [..., H, W, C], got shape {x.shape}")
    h, w = x.shape[-3], x.shape[-2]
    sh, sw = scale_factor if scale_factor is not None else (None, None)
    wh = resize_weights(h, size[0], method, antialias, sh)
    ww = resize_weights(w, size[1], method, antialias, sw)
    dtype = jnp.promote_types(x.dtype, jnp.float32)
    x = x.astype(dtype)
    hi = jax.lax.Precision.HIGHEST
    x = jnp.einsum("ih,...hwc->...iwc", jnp.asarray(wh, dtype), x, precision=hi)
    return jnp.einsum("jw,...iwc->...ijc", jnp.asarray(ww, dtype), x, precision=hi)
