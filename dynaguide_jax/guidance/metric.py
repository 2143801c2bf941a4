"""The DynaGuide guidance metric over positive (attracting) and negative (repelling) goal sets.

``d(z) = LSE_i(-dist(g+_i, z) / σ) - LSE_j(-dist(g-_j, z) / σ)``, with ``dist`` the plain L2
distance (the original code, ``torch.cdist``) or the squared L2 distance (the paper's formula).
Computed in float32 whatever the model's compute dtype.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from dynaguide_jax._checks import check_finite, is_concrete

DISTANCES = ("l2", "squared_l2")


@struct.dataclass
class GoalSet:
    """Goal embeddings ``[K, F]`` (flattened features); either side may be ``None``.

    ``positive_mask`` / ``negative_mask`` ``[K]`` bool (optional) mark the real goals of a padded
    set: padded rows are left out of the log-sum-exp exactly, so goal sets of different sizes can
    share one compiled program (stacked and ``vmap``-ed over targets).
    """

    positive: jax.Array | None = None
    negative: jax.Array | None = None
    positive_mask: jax.Array | None = None
    negative_mask: jax.Array | None = None

    @classmethod
    def create(cls, positive=None, negative=None, positive_mask=None, negative_mask=None) -> "GoalSet":
        """Build and validate a goal set from arrays ``[K, ...features]`` (and optional masks ``[K]``)."""
        as_mask = lambda m: None if m is None else jnp.asarray(m, bool)  # noqa: E731
        goals = cls(
            positive=None if positive is None else jnp.asarray(positive, jnp.float32),
            negative=None if negative is None else jnp.asarray(negative, jnp.float32),
            positive_mask=as_mask(positive_mask), negative_mask=as_mask(negative_mask),
        )
        goals.validate()
        return goals

    def validate(self) -> None:
        """Raise on empty sets, mismatched feature shapes or non-finite goals."""
        for name in ("positive", "negative"):
            g = getattr(self, name)
            if isinstance(g, (list, tuple)):
                raise TypeError(f"{name} goals are a {type(g).__name__}: build goal sets with GoalSet.create(...), "
                                "which converts and checks them")
            if g is None or not hasattr(g, "shape"):
                continue  # None, or a placeholder object used by jax transformations
            if g.ndim < 2:
                raise ValueError(f"{name} goals must be [K, ...features], got shape {g.shape}")
            if g.shape[0] == 0:
                raise ValueError(f"{name} goal set is empty; pass None to drop that side instead")
        if self.positive is None and self.negative is None:
            raise ValueError("a GoalSet needs positive goals, negative goals, or both")
        p, n = self.positive, self.negative
        if p is not None and n is not None and hasattr(p, "shape") and hasattr(n, "shape"):
            if p.shape[1:] != n.shape[1:]:
                raise ValueError(f"positive goals {p.shape} and negative goals {n.shape} differ in feature shape")
        check_finite("positive goals", p)
        check_finite("negative goals", n)
        for name in ("positive", "negative"):
            g, m = getattr(self, name), getattr(self, name + "_mask")
            if m is None or not hasattr(m, "shape") or not hasattr(g, "shape"):
                continue
            if g is None or m.shape != g.shape[:1]:
                raise ValueError(f"{name}_mask must be [K] for {name} goals of shape "
                                 f"{None if g is None else g.shape}, got {m.shape}")
            if is_concrete(m) and not bool(jnp.any(m)):
                raise ValueError(f"{name}_mask marks no goal; pass None to drop that side instead")

    @property
    def feature_size(self) -> int:
        g = self.positive if self.positive is not None else self.negative
        size = 1
        for s in g.shape[1:]:
            size *= s
        return size


def pairwise_distance(z, goals, distance: str = "l2"):
    """``[B, F] x [K, F] -> [B, K]`` distances via ``|z|² - 2 z·g + |g|²`` at full precision.

    The expanded form keeps memory at ``B x K`` (the difference tensor would be ``B x K x F``); the
    clamp and the ``sqrt`` guard keep gradients finite when a sample sits on a goal.
    """
    if distance not in DISTANCES:
        raise ValueError(f"distance must be one of {DISTANCES}, got {distance!r}")
    z, goals = jnp.asarray(z), jnp.asarray(goals)
    if z.ndim != 2 or goals.ndim != 2 or z.shape[1] != goals.shape[1]:
        raise ValueError(f"pairwise_distance needs z [B, F] and goals [K, F] with the same F, got z {z.shape} "
                         f"and goals {goals.shape}")
    hi = jax.lax.Precision.HIGHEST
    z = z.astype(jnp.float32)
    goals = goals.astype(jnp.float32)
    sq = (jnp.sum(z * z, -1, keepdims=True) - 2.0 * jnp.matmul(z, goals.T, precision=hi)
          + jnp.sum(goals * goals, -1)[None])
    sq = jnp.maximum(sq, 0.0)
    if distance == "squared_l2":
        return sq
    safe = jnp.where(sq > 1e-12, sq, 1.0)
    return jnp.where(sq > 1e-12, jnp.sqrt(safe), 0.0)


def guidance_metric(predicted, goals: GoalSet, sigma, distance: str = "l2"):
    """Score predicted features ``[B, ...]`` against ``goals``: higher is closer to the positives
    and farther from the negatives. Returns ``[B]`` float32."""
    if not isinstance(goals, GoalSet):
        raise TypeError(f"goals must be a GoalSet (GoalSet.create(positive, negative)), got {type(goals).__name__}")
    z = jnp.asarray(predicted)
    if z.ndim < 2 or z.shape[0] == 0:
        raise ValueError(f"predicted features must be [B, ...features] with B >= 1, got shape {z.shape}")
    z = z.reshape(z.shape[0], -1)
    goals.validate()
    if z.shape[1] != goals.feature_size:
        raise ValueError(
            f"predicted features flatten to {z.shape[1]} values but goals have {goals.feature_size}"
        )
    if sigma is None or np.ndim(sigma) != 0:
        raise ValueError(f"sigma must be positive (a scalar), got {sigma if sigma is None else np.shape(sigma)}")
    if is_concrete(sigma):
        s = float(np.asarray(sigma))
        if not (np.isfinite(s) and s > 0.0):
            raise ValueError(f"sigma must be positive and finite, got {sigma}")
    check_finite("predicted features", z)
    def lse(g, mask):
        logits = -pairwise_distance(z, g.reshape(g.shape[0], -1), distance) / sigma
        if mask is not None:  # padded rows contribute exp(-inf) = 0
            logits = jnp.where(mask[None], logits, -jnp.inf)
        return jax.nn.logsumexp(logits, axis=-1)

    d = jnp.zeros(z.shape[0], jnp.float32)
    if goals.positive is not None:
        d = d + lse(goals.positive, goals.positive_mask)
    if goals.negative is not None:
        d = d - lse(goals.negative, goals.negative_mask)
    check_finite(f"guidance metric (predicted features far from every goal for sigma={sigma}?)", d)
    return d


def min_goal_distance(predicted, goals, distance: str = "l2"):
    """Distance from each prediction ``[B, ...]`` to its nearest goal in ``goals`` ``[K, ...]``."""
    z, g = jnp.asarray(predicted), jnp.asarray(goals)
    if z.ndim < 2 or z.shape[0] == 0:
        raise ValueError(f"predicted features must be [B, ...features] with B >= 1, got shape {z.shape}")
    if g.ndim < 2 or g.shape[0] == 0:
        raise ValueError(f"goals must be a non-empty [K, ...features] array, got shape {g.shape}")
    z, g = z.reshape(z.shape[0], -1), g.reshape(g.shape[0], -1)
    if z.shape[1] != g.shape[1]:
        raise ValueError(f"predicted features flatten to {z.shape[1]} values but goals to {g.shape[1]}")
    check_finite("predicted features", z)
    check_finite("goals", g)
    return jnp.min(pairwise_distance(z, g, distance), axis=-1)
