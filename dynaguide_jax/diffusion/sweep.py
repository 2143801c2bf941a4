"""Grid sweeps of guidance scale x σ x seed in one compiled, vmapped call."""
from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from dynaguide_jax._checks import check_finite
from dynaguide_jax.diffusion.sampler import sample_chunk, validate_sampler_args, validate_scale
from dynaguide_jax.diffusion.schedule import DDIMSchedule


class SweepOutput(NamedTuple):
    actions: jax.Array  # [S, Σ, N, B, T, A]  (scale, sigma, seed, batch)
    metric: jax.Array  # [S, Σ, N, B]
    scales: np.ndarray  # [S]
    sigmas: np.ndarray | None  # [Σ] or None when σ was not swept (Σ = 1)
    seeds: np.ndarray  # [N]


_STATIC = ("eps_fn", "guidance", "schedule", "action_shape", "repeats", "mode", "sweep_sigma")


@functools.partial(jax.jit, static_argnames=_STATIC)
def _sweep_jit(eps_fn, policy_params, obs_cond, guidance, guidance_params, guidance_obs, keys,
               scales, sigmas, *, schedule, action_shape, repeats, mode, sweep_sigma):
    def one(key, scale, sigma):
        params = guidance_params
        if sweep_sigma:
            params = dict(guidance_params, sigma=sigma)
        return sample_chunk(eps_fn, policy_params, obs_cond, guidance, params, guidance_obs, key,
                            scale, schedule=schedule, action_shape=action_shape, repeats=repeats,
                            mode=mode)

    over_seeds = jax.vmap(one, in_axes=(0, None, None))
    over_sigmas = jax.vmap(over_seeds, in_axes=(None, None, 0))
    over_scales = jax.vmap(over_sigmas, in_axes=(None, 0, None))
    return over_scales(keys, scales, sigmas)


def sweep(eps_fn, policy_params, obs_cond, guidance, guidance_params, guidance_obs, *, scales,
          seeds, sigmas=None, schedule: DDIMSchedule = DDIMSchedule(), action_shape=(16, 7),
          repeats: int = 4, mode: str = "repeat") -> SweepOutput:
    """Run ``guided_sample`` for every (scale, σ, seed) in one jitted call.

    ``seeds`` are integers (each becomes ``jax.random.key(seed)``); ``sigmas`` replaces
    ``guidance_params["sigma"]`` (metric guidances only). Unbatched work such as encoding the
    observation is not repeated across the grid: ``vmap`` only batches what depends on the grid.
    """
    validate_sampler_args(schedule, action_shape, repeats, mode, jax.random.key(0), guidance, guidance_obs)
    scales_np = np.atleast_1d(np.asarray(scales, np.float32))
    validate_scale(scales_np, "scales")
    seeds_raw = np.atleast_1d(np.asarray(seeds))
    if seeds_raw.size and (seeds_raw.dtype.kind not in "iu" and not (
            seeds_raw.dtype.kind == "f" and np.isfinite(seeds_raw).all() and (seeds_raw == np.round(seeds_raw)).all())):
        raise TypeError(f"seeds must be integers, got {seeds_raw.tolist()}")
    seeds_np = seeds_raw.astype(np.int64)
    if scales_np.ndim != 1 or seeds_np.ndim != 1 or scales_np.size == 0 or seeds_np.size == 0:
        raise ValueError(f"scales and seeds must be non-empty 1-D sequences, got shapes {scales_np.shape} "
                         f"and {seeds_np.shape}")
    sweep_sigma = sigmas is not None
    if sweep_sigma:
        sigmas_np = np.atleast_1d(np.asarray(sigmas, np.float32))
        if not isinstance(guidance_params, dict) or "sigma" not in guidance_params:
            raise ValueError("sweeping sigmas needs a guidance whose params hold 'sigma'")
        if sigmas_np.ndim != 1 or sigmas_np.size == 0:
            raise ValueError(f"sigmas must be a non-empty 1-D sequence, got shape {sigmas_np.shape}")
        if not (np.isfinite(sigmas_np) & (sigmas_np > 0)).all():
            raise ValueError(f"sigmas must be positive and finite, got {sigmas_np.tolist()}")
    else:
        sigmas_np = np.zeros(1, np.float32)
    keys = jax.vmap(jax.random.key)(jnp.asarray(seeds_np))
    actions, metric = _sweep_jit(eps_fn, policy_params, obs_cond, guidance, guidance_params,
                                 guidance_obs, keys, jnp.asarray(scales_np), jnp.asarray(sigmas_np),
                                 schedule=schedule, action_shape=tuple(action_shape),
                                 repeats=int(repeats), mode=mode, sweep_sigma=sweep_sigma)
    check_finite("swept actions (check the guidance scales and goal features)", actions)
    return SweepOutput(actions, metric, scales_np, sigmas_np if sweep_sigma else None, seeds_np)
