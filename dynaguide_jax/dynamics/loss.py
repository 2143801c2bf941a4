"""Training objective of the dynamics model and the original's action-noise augmentation."""
from __future__ import annotations

from typing import Mapping

import jax
import jax.numpy as jnp

from dynaguide_jax.diffusion.schedule import DDIMSchedule, add_noise
from dynaguide_jax.dynamics.config import DynamicsConfig
from dynaguide_jax.dynamics.model import LatentDynamics


def sample_noise_levels(key, batch: int, p: float = 0.05, max_level: int = 99) -> jax.Array:
    """Timesteps ``k ~ Geometric(p)`` (failures before the first success, mean (1-p)/p),
    clipped to ``[0, max_level]``, as ``torch.distributions.Geometric`` draws them."""
    u = jax.random.uniform(key, (batch,), minval=jnp.finfo(jnp.float32).tiny, maxval=1.0)
    k = jnp.floor(jnp.log(u) / jnp.log1p(-p))
    return jnp.clip(k, 0, max_level).astype(jnp.int32)


def noise_actions(key, actions, schedule: DDIMSchedule, progress, p: float = 0.05):
    """Replace each chunk by ``add_noise(a, eps, k)`` with probability ``min(0.5, progress)``.

    ``progress`` = epoch / num_epochs in the original, so the augmentation ramps up during training
    and teaches the model the noisy actions guidance will feed it.
    """
    k_level, k_eps, k_mask = jax.random.split(key, 3)
    b = actions.shape[0]
    levels = sample_noise_levels(k_level, b, p, schedule.num_train_timesteps - 1)
    eps = jax.random.normal(k_eps, actions.shape, actions.dtype)
    noised = add_noise(schedule, actions, eps, levels)
    use = jax.random.uniform(k_mask, (b,)) < jnp.minimum(0.5, progress)
    return jnp.where(use[:, None, None], noised, actions)


def dynamics_loss(config: DynamicsConfig, params, batch, key, *, deterministic: bool = False):
    """MSE between predicted and encoded future patch tokens.

    ``batch``: ``patches [B, C*P, D]``, ``proprio [B, p]`` (or absent), ``actions [B, H, A]``,
    ``future_patches [B, >=P', D]`` (the first ``predicted_tokens`` are the target, as the
    original compares against the first camera's 256 tokens). A missing key raises ``KeyError``
    naming it; a wrong ``future_patches`` shape raises ``ValueError`` (shapes only: jit-safe).
    """
    if not isinstance(batch, Mapping):
        raise TypeError(f"dynamics batch must be a dict, got {type(batch).__name__}")
    needed = ["patches", "actions", "future_patches"] + (["proprio"] if config.proprio_dim is not None else [])
    missing = [k for k in needed if batch.get(k) is None]
    if missing:
        raise KeyError(f"dynamics batch is missing {missing} (has {sorted(batch)}; needs {needed})")
    fut, b = jnp.shape(batch["future_patches"]), jnp.shape(batch["actions"])[:1]
    if len(fut) != 3 or fut[:1] != b or fut[1] < config.predicted_tokens or fut[2] != config.feature_dim:
        raise ValueError(f"future_patches must be [B={b[0] if b else '?'}, >={config.predicted_tokens}, "
                         f"{config.feature_dim}] (B from the actions), got {fut}")
    pred = LatentDynamics(config).apply(
        {"params": params}, batch["patches"], batch.get("proprio"), batch["actions"],
        deterministic=deterministic, rngs=None if deterministic else {"dropout": key},
    )
    target = batch["future_patches"][:, : config.predicted_tokens].astype(jnp.float32)
    return jnp.mean((pred - target) ** 2)
