"""GPC-style sample-and-rank: draw N unguided chunks from the base policy, score each with the
guidance metric of the same dynamics model, execute the best (the paper's sampling baseline; its
CALVIN runs use N = 5). One compiled call: the policy condition and the guidance observation are
prepared once and shared by all N samples.
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from dynaguide_jax._checks import check_finite, is_concrete
from dynaguide_jax.diffusion.sampler import EpsFn, batch_size_of, sample_chunk, validate_sampler_args
from dynaguide_jax.diffusion.schedule import DDIMSchedule
from dynaguide_jax.guidance.base import Guidance


class RankedSamples(NamedTuple):
    actions: jax.Array  # [B, T, A] the best-ranked chunk per observation
    metric: jax.Array  # [B] its guidance metric
    candidates: jax.Array  # [B, N, T, A] all samples
    scores: jax.Array  # [B, N] their metrics
    best: jax.Array  # [B] index of the chosen sample


@functools.partial(jax.jit, static_argnames=("eps_fn", "guidance", "schedule", "action_shape", "num_samples"))
def _sample_and_rank_jit(eps_fn, policy_params, obs_cond, guidance, guidance_params, guidance_obs, key, *,
                         schedule, action_shape, num_samples):
    def draw(k):
        return sample_chunk(eps_fn, policy_params, obs_cond, None, None, None, k, 0.0, schedule=schedule,
                            action_shape=action_shape, repeats=1).actions

    # the same keys as guided_sample(..., particles=N): candidates are exactly the base policy's samples
    chunks = jax.vmap(draw)(jax.random.split(key, num_samples))  # [N, B, T, A]
    feats = guidance.prepare(guidance_params, guidance_obs)
    scores = jax.vmap(lambda a: guidance.metric(guidance_params, feats, a))(chunks)  # [N, B]
    best = jnp.argmax(scores, axis=0)
    pick = jnp.take_along_axis(chunks, best[None, :, None, None], axis=0)[0]
    return RankedSamples(pick, jnp.max(scores, axis=0), jnp.moveaxis(chunks, 0, 1), scores.T, best)


def sample_and_rank(eps_fn: EpsFn, policy_params, obs_cond, guidance: Guidance, guidance_params, guidance_obs, *,
                    key, num_samples: int = 5, schedule: DDIMSchedule = DDIMSchedule(),
                    action_shape=(16, 7)) -> RankedSamples:
    """Best of ``num_samples`` base-policy chunks per observation by ``guidance.metric``.

    Arguments as for ``guided_sample`` (``eps_fn(policy_params, x[B, T, A], k, obs_cond)``); the
    guidance is only evaluated, never differentiated, so any metric works, e.g. ``DynaGuide``.
    """
    if guidance is None or guidance_obs is None:
        raise ValueError("sample_and_rank needs a guidance (its metric ranks the samples) and guidance_obs")
    if int(num_samples) < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    validate_sampler_args(schedule, tuple(action_shape), 1, "repeat", key)
    batch_size_of(obs_cond)
    out = _sample_and_rank_jit(eps_fn, policy_params, obs_cond, guidance, guidance_params, guidance_obs, key,
                               schedule=schedule, action_shape=tuple(action_shape), num_samples=int(num_samples))
    if is_concrete(out.scores):
        check_finite("sample-and-rank scores (check the goals and sigma)", out.scores)
    return out
