"""The guided DDIM sampler: the whole chunk (steps, repeats, guidance gradients) in one XLA program.

At each DDIM timestep ``k`` the step is taken ``repeats`` (M) times:

    ε̂ = ε(x, k, obs) - scale · sqrt(1 - ᾱ_k) · direction(x)
    x ← DDIM(ε̂, k, x)

``mode="repeat"`` re-applies the step at the same ``k`` to the already-stepped sample (exactly the
original code); ``mode="renoise"`` forward-diffuses back to ``k`` between repeats (time travel /
MCMC, as in universal guidance). Guidance observations are prepared (encoded) once per call.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from dynaguide_jax._checks import check_finite, check_int, is_concrete
from dynaguide_jax.diffusion.schedule import DDIMSchedule, ddim_update, renoise
from dynaguide_jax.guidance.base import Guidance

EpsFn = Callable[[Any, jax.Array, jax.Array, Any], jax.Array]
MODES = ("repeat", "renoise")


class SampleOutput(NamedTuple):
    actions: jax.Array  # [B, T, A] the denoised chunk ([B, N, T, A] with N particles)
    metric: jax.Array  # [B] guidance metric of the final chunk (zeros without guidance); [B, N]


def batch_size_of(obs_cond) -> int:
    leaves = jax.tree.leaves(obs_cond)
    if not leaves:
        raise ValueError("obs_cond is empty: cannot infer the batch size")
    sizes = {jnp.shape(x)[0] if jnp.ndim(x) else None for x in leaves}
    if len(sizes) != 1 or None in sizes:
        raise ValueError(f"obs_cond leaves disagree on the batch size: {sorted(map(str, sizes))}")
    return sizes.pop()


def sample_chunk(eps_fn: EpsFn, policy_params, obs_cond, guidance: Guidance | None, guidance_params,
                 guidance_obs, key, scale, *, schedule: DDIMSchedule, action_shape: tuple[int, int],
                 repeats: int = 4, mode: str = "repeat", initial_noise=None, unroll: int | bool = 1):
    """Un-jitted core of ``guided_sample`` (vmap/jit it freely)."""
    b = batch_size_of(obs_cond)
    k_init, k_loop = jax.random.split(key)
    x = (jax.random.normal(k_init, (b, *action_shape), jnp.float32)
         if initial_noise is None else jnp.asarray(initial_noise, jnp.float32))
    feats = None if guidance is None else guidance.prepare(guidance_params, guidance_obs)
    a_t, a_prev = (jnp.asarray(a) for a in schedule.alpha_pairs)
    ts = jnp.asarray(schedule.timesteps)
    clip = schedule.clip_sample_range if schedule.clip_sample else None
    step_keys = jax.random.split(k_loop, ts.shape[0])

    def one_repeat(x, alpha_t, alpha_prev, t):
        eps = eps_fn(policy_params, x, t, obs_cond)
        if jnp.shape(eps) != x.shape:
            raise ValueError(f"eps_fn must return the noise [B, T, A] = {x.shape} of the noisy actions it is given, "
                             f"got {jnp.shape(eps)} (check action_shape against the policy)")
        if guidance is not None:
            g = guidance.direction(guidance_params, feats, x)
            eps = eps - scale * jnp.sqrt(1.0 - alpha_t) * g
        return ddim_update(x, eps.astype(x.dtype), alpha_t, alpha_prev, clip)

    def one_step(x, inputs):
        t, alpha_t, alpha_prev, k_step = inputs

        def body(r, x):
            x = one_repeat(x, alpha_t, alpha_prev, t)
            if mode == "renoise":
                back = renoise(x, alpha_t, alpha_prev, jax.random.fold_in(k_step, r))
                x = jnp.where(r < repeats - 1, back, x)
            return x

        return jax.lax.fori_loop(0, repeats, body, x, unroll=unroll), None

    x, _ = jax.lax.scan(one_step, x, (ts, a_t, a_prev, step_keys), unroll=unroll)
    metric = (jnp.zeros(b, jnp.float32) if guidance is None
              else guidance.metric(guidance_params, feats, x))
    return SampleOutput(x, metric)


_STATIC = ("eps_fn", "guidance", "schedule", "action_shape", "repeats", "mode", "unroll", "particles")


@functools.partial(jax.jit, static_argnames=_STATIC)
def _guided_sample_jit(eps_fn, policy_params, obs_cond, guidance, guidance_params, guidance_obs,
                       key, scale, initial_noise, *, schedule, action_shape, repeats, mode, unroll, particles=0):
    run = functools.partial(sample_chunk, eps_fn, policy_params, obs_cond, guidance, guidance_params,
                            guidance_obs, schedule=schedule, action_shape=action_shape, repeats=repeats,
                            mode=mode, initial_noise=initial_noise, unroll=unroll)
    if not particles:
        return run(key, scale)
    # N samples per observation: vmap over keys; the observation work is shared, not repeated
    out = jax.vmap(run, in_axes=(0, None))(jax.random.split(key, particles), scale)
    return SampleOutput(jnp.moveaxis(out.actions, 0, 1), jnp.moveaxis(out.metric, 0, 1))


def validate_sampler_args(schedule, action_shape, repeats, mode, key, guidance=None, guidance_obs=None):
    if not isinstance(schedule, DDIMSchedule):
        raise TypeError(f"schedule must be a DDIMSchedule, got {type(schedule).__name__}")
    if (not isinstance(action_shape, (tuple, list)) or len(action_shape) != 2
            or not all(isinstance(d, (int, np.integer)) and d >= 1 for d in action_shape)):
        raise ValueError(f"action_shape must be (horizon, action_dim) with positive integers, got {action_shape!r}")
    check_int("repeats (M)", repeats)
    if guidance is not None and not isinstance(guidance, Guidance):
        raise TypeError(f"guidance must be a Guidance (e.g. DynaGuide, PositionGuidance) or None, "
                        f"got {type(guidance).__name__}")
    if guidance is not None and guidance_obs is None:
        raise ValueError("guidance given without guidance_obs")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if not (hasattr(key, "dtype") and (jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
                                       or key.shape == (2,))):
        raise TypeError("key must be a jax PRNG key (jax.random.key(seed) or PRNGKey(seed))")


def validate_scale(scale, name: str = "scale") -> None:
    """A concrete guidance scale must be finite and >= 0 (0 = unguided); traced scales are skipped."""
    if not is_concrete(scale):
        return
    arr = np.asarray(scale, np.float64)
    if not np.isfinite(arr).all():
        raise ValueError(f"guidance {name} must be finite, got {scale}")
    if (arr < 0).any():
        raise ValueError(
            f"guidance {name} must be >= 0, got {arr.min():g}: scale > 0 steers toward the goal set and 0 "
            "disables guidance; to steer away from behaviours, put them in the negative goals "
            "(GoalSet.create(positive, negative)) instead of flipping the sign of the scale"
        )


def guided_sample(eps_fn: EpsFn, policy_params, obs_cond, guidance: Guidance | None = None,
                  guidance_params=None, guidance_obs=None, *, key, scale=1.5,
                  schedule: DDIMSchedule = DDIMSchedule(), action_shape=(16, 7), repeats: int = 4,
                  mode: str = "repeat", initial_noise=None, unroll: int | bool = 1,
                  particles: int | None = None) -> SampleOutput:
    """Sample one action chunk per observation, steered by ``guidance`` (one compiled call).

    Args:
      eps_fn: ``eps_fn(policy_params, noisy_actions[B, T, A], k, obs_cond) -> eps[B, T, A]``,
        any DDIM epsilon model (``k`` is a scalar int32 timestep).
      obs_cond: the policy's condition, a pytree whose leaves lead with the batch ``B``.
      guidance / guidance_params / guidance_obs: a ``Guidance`` and its params and observation
        (``None`` samples the unguided base policy).
      key: explicit PRNG key; scale: guidance strength ``s >= 0`` (negative values are rejected:
        repel with negative goals instead); repeats: ``M``; mode: see module doc.
      initial_noise: optional ``[B, T, A]`` starting noise (for parity tests / replays).
      unroll: loop unrolling for the step and repeat loops (compile time vs. speed).
      particles: draw N chunks per observation (outputs ``[B, N, ...]``) in the same call.
    """
    validate_sampler_args(schedule, action_shape, repeats, mode, key, guidance, guidance_obs)
    validate_scale(scale)
    if np.ndim(scale) != 0:
        raise ValueError(f"guidance scale must be a scalar, got shape {np.shape(scale)} (sweep() runs several scales)")
    b = batch_size_of(obs_cond)
    for path, leaf in jax.tree_util.tree_leaves_with_path(obs_cond):
        check_finite(f"obs_cond{jax.tree_util.keystr(path)}", leaf)
    if initial_noise is not None and tuple(jnp.shape(initial_noise)) != (b, *action_shape):
        raise ValueError(f"initial_noise must be {(b, *action_shape)}, got {jnp.shape(initial_noise)}")
    check_finite("initial_noise", initial_noise)
    if particles is not None and (int(particles) < 1 or initial_noise is not None):
        raise ValueError("particles must be >= 1 and cannot be combined with initial_noise")
    out = _guided_sample_jit(eps_fn, policy_params, obs_cond, guidance, guidance_params, guidance_obs,
                             key, jnp.asarray(scale, jnp.float32), initial_noise, schedule=schedule,
                             action_shape=tuple(action_shape), repeats=int(repeats), mode=mode,
                             unroll=unroll, particles=int(particles or 0))
    if is_concrete(out.actions):
        check_finite("sampled actions (check the guidance scale and goal features)", out.actions)
    return out
