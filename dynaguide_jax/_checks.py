"""Input validation shared by the public entry points: errors name the input and what was expected."""
from __future__ import annotations

import jax
import numpy as np


def check_rank(name: str, x, rank: int, layout: str) -> None:
    """Raise ``ValueError`` unless ``x`` has ``rank`` dimensions (``layout`` describes them)."""
    if np.ndim(x) != rank:
        raise ValueError(f"{name} must be {layout} (rank {rank}), got shape {np.shape(x)}")


def is_concrete(x) -> bool:
    """True when ``x`` holds values (not a tracer inside jit/vmap/grad)."""
    return not isinstance(x, jax.core.Tracer)


def check_finite(name: str, x) -> None:
    """Raise ``FloatingPointError`` if a concrete array holds NaN or inf (tracers are skipped)."""
    if x is None or not is_concrete(x):
        return
    dtype = getattr(x, "dtype", None)
    if dtype is not None and not jax.numpy.issubdtype(dtype, jax.numpy.floating):
        return  # integer / bool / uint8 images: nothing to check, and no device-to-host copy
    arr = np.asarray(x)
    if jax.numpy.issubdtype(arr.dtype, jax.numpy.floating) and not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr)).sum())
        raise FloatingPointError(f"{name} contains {bad} non-finite value(s) (shape {arr.shape})")


def check_int(name: str, value, minimum: int | None = 1) -> int:
    """Return ``value`` as an int; raise ``ValueError`` unless it is a whole number >= ``minimum``
    (``TypeError`` for non-numbers: a float such as 2.5 would be truncated silently otherwise)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        if isinstance(value, (float, np.floating)) and float(value).is_integer():
            value = int(value)
        else:
            raise TypeError(f"{name} must be an integer, got {value!r} ({type(value).__name__})")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def check_positive(name: str, value, allow_zero: bool = False) -> float:
    """Return ``value`` as a float; raise ``ValueError`` unless it is finite and > 0 (>= 0 with ``allow_zero``)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number, got {value!r} ({type(value).__name__})") from None
    if not np.isfinite(v) or (v < 0 if allow_zero else v <= 0):
        raise ValueError(f"{name} must be finite and {'>= 0' if allow_zero else '> 0'}, got {value}")
    return v


DTYPE_NAMES = ("float32", "bfloat16", "float16")


def check_dtype_name(name: str, value, allowed=DTYPE_NAMES) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
