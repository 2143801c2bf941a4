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
    arr = np.asarray(x)
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr)).sum())
        raise FloatingPointError(f"{name} contains {bad} non-finite value(s) (shape {arr.shape})")
