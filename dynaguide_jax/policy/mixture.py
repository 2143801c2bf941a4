"""A stand-in base policy with an exact epsilon: a Gaussian mixture over action-chunk prototypes.

If clean chunks are drawn from ``Σ_i π_i N(μ_i, s² I)``, the noisy chunk at level ᾱ is distributed
as ``Σ_i π_i N(sqrt(ᾱ) μ_i, (ᾱ s² + 1 - ᾱ) I)``, so the ideal noise prediction
``ε = -sqrt(1 - ᾱ) ∇ log p(x)`` has a closed form. Each prototype is one "behaviour", which makes
the effect of steering directly measurable (which prototype did a sample come from?). Used by the
CPU demo, tests and benchmarks in place of a trained network; not a trained policy.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from dynaguide_jax.diffusion.schedule import DDIMSchedule


def mixture_params(means, schedule: DDIMSchedule, std: float = 0.05, weights=None) -> dict:
    """``means [K, T, A]`` prototypes (normalized action space), optional mixture ``weights [K]``."""
    means = np.asarray(means, np.float32)
    if means.ndim != 3:
        raise ValueError(f"means must be [K, T, A], got shape {means.shape}")
    k = means.shape[0]
    w = np.full(k, 1.0 / k) if weights is None else np.asarray(weights, np.float64)
    if w.shape != (k,) or (w <= 0).any():
        raise ValueError(f"weights must be {k} positive numbers, got {w}")
    return {"means": means, "log_weights": np.log(w / w.sum()).astype(np.float32),
            "std": np.float32(std), "alphas_cumprod": schedule.alphas_cumprod}


def responsibilities(params, x, alpha):
    """Posterior over prototypes ``[B, K]`` for noisy chunks ``x [B, T, A]`` at level ``alpha``."""
    var = alpha * params["std"] ** 2 + 1.0 - alpha
    centers = jnp.sqrt(alpha) * params["means"]  # [K, T, A]
    sq = jnp.sum((x[:, None] - centers[None]) ** 2, axis=(2, 3))  # [B, K]
    return jax.nn.softmax(params["log_weights"] - sq / (2.0 * var), axis=-1), centers, var


def mixture_eps(params, noisy_actions, k, obs_cond):
    """``eps_fn`` interface: exact epsilon of the mixture at timestep ``k`` (``obs_cond`` unused)."""
    alpha = jnp.asarray(params["alphas_cumprod"])[k]
    w, centers, var = responsibilities(params, noisy_actions, alpha)
    mean = jnp.einsum("bk,kta->bta", w, centers)
    return jnp.sqrt(1.0 - alpha) * (noisy_actions - mean) / var


def nearest_prototype(params, actions):
    """Index of the prototype each clean chunk ``[B, T, A]`` is closest to."""
    d = jnp.sum((actions[:, None] - params["means"][None]) ** 2, axis=(2, 3))
    return jnp.argmin(d, axis=-1)


def line_prototypes(num: int, horizon: int, action_dim: int, speed: float = 0.6) -> np.ndarray:
    """``num`` behaviours: constant end-effector velocities in evenly spaced xy directions, the
    z and rotation dims at rest, the gripper open (+1) or closed (-1) alternately."""
    if action_dim < 3:
        raise ValueError("line prototypes need at least 3 action dims (x, y, z)")
    means = np.zeros((num, horizon, action_dim), np.float32)
    for i in range(num):
        angle = 2 * np.pi * i / num
        means[i, :, 0] = speed * np.cos(angle)
        means[i, :, 1] = speed * np.sin(angle)
        if action_dim > 3:
            means[i, :, -1] = 1.0 if i % 2 == 0 else -1.0
    return means
