"""Input validation shared by the public entry points: errors name the input and what was expected."""
from __future__ import annotations

from typing import Sequence

import jax
import numpy as np


def check_rank(name: str, x, rank: int, layout: str) -> None:
    """Raise ``ValueError`` unless ``x`` has ``rank`` dimensions (``layout`` describes them)."""
    if np.ndim(x) != rank:
        raise ValueError(f"{name} must be {layout} (rank {rank}), got shape {np.shape(x)}")


def check_dim(name: str, x, axis: int, size: int, what: str) -> None:
    if np.shape(x)[axis] != size:
        raise ValueError(
            f"{name} axis {axis} ({what}) must have size {size}, got shape {np.shape(x)}"
        )


def check_same_leading(names: Sequence[str], arrays: Sequence, axes: int = 1) -> None:
    """All arrays agree on their first ``axes`` dimensions (e.g. the batch)."""
    shapes = [tuple(np.shape(a)[:axes]) for a in arrays]
    if len(set(shapes)) > 1:
        desc = ", ".join(f"{n}{s}" for n, s in zip(names, shapes))
        raise ValueError(f"leading dimensions disagree: {desc}")


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
