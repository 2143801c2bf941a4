"""GPC-style sample-and-rank (orig: run_sampling_baseline.py): draw N unguided chunks from the base
policy, score each through the same dynamics model, execute the best (the paper's CALVIN runs use
N = 5, replanning every 14 steps; the replanning loop belongs to the caller). One compiled call:
the policy condition and the guidance observation are prepared once and shared by all N samples.

Scores (``score=``):

- ``"mean_l2"`` (default, the original's ``run_rejection_sampling``): the predicted end features,
  flattened per sample, against ``goals`` = encoder features of the goal trajectories' final frames
  (the original's ``state_embedding``, e.g. ``goals_from_images``); the score is the mean over goals
  of the L2 distance (``torch.cdist``), lowest wins. Negative goals are not used (the original
  computes them but never scores with them).
- ``"metric"``: ``guidance.metric`` (DynaGuide's log-sum-exp metric over positive and negative
  goals in ``guidance_params``), highest wins.
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from dynaguide_jax._checks import check_finite, check_int, is_concrete
from dynaguide_jax.diffusion.sampler import EpsFn, batch_size_of, sample_chunk, validate_sampler_args
from dynaguide_jax.diffusion.schedule import DDIMSchedule
from dynaguide_jax.guidance.base import Guidance
from dynaguide_jax.guidance.metric import pairwise_distance

SCORES = ("mean_l2", "metric")


class RankedSamples(NamedTuple):
    actions: jax.Array  # [B, T, A] the chosen chunk per observation
    score: jax.Array  # [B] its score (mean L2 distance: lower is better; metric: higher is better)
    candidates: jax.Array  # [B, N, T, A] all samples
    scores: jax.Array  # [B, N] their scores
    best: jax.Array  # [B] index of the chosen sample


def mean_goal_distance(predicted, goals, mask=None):
    """Predicted features ``[B, ...]`` -> ``[B]`` mean L2 distance to the goals ``[K, ...]``.

    Each side is flattened per sample (the original's ``flatten(start_dim=1)``); float32, memory
    ``B x K`` (``pairwise_distance``'s expanded form). ``mask [K]`` (optional) marks the real goals
    of a padded set: the mean runs over those only.
    """
    if jnp.ndim(predicted) < 2:
        raise ValueError(f"predicted features must be [B, ...features], got shape {jnp.shape(predicted)}")
    if jnp.ndim(goals) < 2 or jnp.shape(goals)[0] == 0:
        raise ValueError(f"goals must be a non-empty [K, ...features] array, got shape {jnp.shape(goals)}")
    z = jnp.reshape(predicted, (predicted.shape[0], -1))
    g = jnp.reshape(goals, (goals.shape[0], -1))
    if z.shape[1] != g.shape[1]:
        raise ValueError(f"predicted features flatten to {z.shape[1]} values but goals to {g.shape[1]} "
                         "(goals must be encoder features of the predicted tokens, e.g. "
                         "goals_from_images(..., num_tokens=predicted tokens))")
    # distances are translation invariant; centring on the goals' mean keeps the expanded form's
    # cancellation small (features of 10^5 values with a large common offset)
    w = jnp.ones(g.shape[0], jnp.float32) if mask is None else jnp.asarray(mask, jnp.float32)
    centre = jnp.sum(g.astype(jnp.float32) * w[:, None], axis=0) / jnp.sum(w)
    dist = pairwise_distance(z.astype(jnp.float32) - centre, g.astype(jnp.float32) - centre, "l2")
    return jnp.sum(dist * w[None], axis=-1) / jnp.sum(w)


@functools.partial(jax.jit, static_argnames=("eps_fn", "guidance", "schedule", "action_shape", "num_samples",
                                             "score"))
def _sample_and_rank_jit(eps_fn, policy_params, obs_cond, guidance, guidance_params, guidance_obs, goals, goal_mask,
                         key, *, schedule, action_shape, num_samples, score):
    def draw(k):
        return sample_chunk(eps_fn, policy_params, obs_cond, None, None, None, k, 0.0, schedule=schedule,
                            action_shape=action_shape, repeats=1).actions

    # the same keys as guided_sample(..., particles=N): candidates are exactly the base policy's samples
    chunks = jax.vmap(draw)(jax.random.split(key, num_samples))  # [N, B, T, A]
    feats = guidance.prepare(guidance_params, guidance_obs)
    if score == "mean_l2":
        scores = jax.vmap(lambda a: mean_goal_distance(guidance.predict(guidance_params, feats, a), goals,
                                                                 goal_mask))(chunks)
        best = jnp.argmin(scores, axis=0)
    else:
        scores = jax.vmap(lambda a: guidance.metric(guidance_params, feats, a))(chunks)  # [N, B]
        best = jnp.argmax(scores, axis=0)
    pick = jnp.take_along_axis(chunks, best[None, :, None, None], axis=0)[0]
    chosen = jnp.take_along_axis(scores, best[None], axis=0)[0]
    return RankedSamples(pick, chosen, jnp.moveaxis(chunks, 0, 1), scores.T, best)


def sample_and_rank(eps_fn: EpsFn, policy_params, obs_cond, guidance: Guidance, guidance_params, guidance_obs, *,
                    key, goals=None, goal_mask=None, score: str = "mean_l2", num_samples: int = 5,
                    schedule: DDIMSchedule = DDIMSchedule(), action_shape=(16, 7)) -> RankedSamples:
    """Best of ``num_samples`` base-policy chunks per observation (see the module docstring).

    Arguments as for ``guided_sample`` (``eps_fn(policy_params, x[B, T, A], k, obs_cond)``); the
    guidance is only evaluated, never differentiated. ``score="mean_l2"`` needs ``goals``
    ``[K, ...features]`` and a guidance with ``predict(params, features, actions) -> [B, ...]``
    (``DynaGuide``); ``score="metric"`` needs ``guidance.metric`` and ignores ``goals``.
    ``goal_mask [K]`` bool (optional): the real rows of a padded ``goals``.
    """
    if score not in SCORES:
        raise ValueError(f"score must be one of {SCORES}, got {score!r}")
    if guidance is None or guidance_obs is None:
        raise ValueError("sample_and_rank needs a guidance (its dynamics model scores the samples) and guidance_obs")
    if score == "mean_l2":
        if goals is None:
            raise ValueError("score='mean_l2' needs goals: encoder features [K, ...] of the goal trajectories' "
                             "final frames (e.g. goals_from_images)")
        if not callable(getattr(guidance, "predict", None)):
            raise TypeError(f"score='mean_l2' needs a guidance with predict(params, features, actions); "
                            f"{type(guidance).__name__} has none (use score='metric')")
        goals = jnp.asarray(goals, jnp.float32)
        if goals.ndim < 2 or goals.shape[0] == 0:
            raise ValueError(f"goals must be a non-empty [K, ...features] array, got shape {goals.shape}")
        check_finite("GPC goals", goals)
    else:
        goals = None
    num_samples = check_int("num_samples", num_samples)
    validate_sampler_args(schedule, tuple(action_shape), 1, "repeat", key)
    batch_size_of(obs_cond)
    if goal_mask is not None:
        goal_mask = jnp.asarray(goal_mask, bool)
        if goals is None or goal_mask.shape != goals.shape[:1]:
            raise ValueError(f"goal_mask must be [K] for goals of shape {None if goals is None else goals.shape}, "
                             f"got {goal_mask.shape}")
        if is_concrete(goal_mask) and not bool(goal_mask.any()):
            raise ValueError("goal_mask marks no real goal (all False): the mean distance would be 0 / 0")
    out = _sample_and_rank_jit(eps_fn, policy_params, obs_cond, guidance, guidance_params, guidance_obs, goals,
                               goal_mask, key,
                               schedule=schedule, action_shape=tuple(action_shape), num_samples=int(num_samples),
                               score=score)
    if is_concrete(out.scores):
        check_finite(f"sample-and-rank scores ({score}; check the goals and sigma)", out.scores)
    return out
