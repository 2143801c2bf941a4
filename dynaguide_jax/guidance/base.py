"""The guidance interface the sampler steers with.

A guidance object is a frozen (hashable) dataclass holding static settings; everything that
varies (weights, goals, σ, targets) travels in a ``params`` pytree, so a jitted sampler can be
swept with ``vmap`` over it. Three methods:

- ``prepare(params, obs) -> features``: run once per sampling call (e.g. encode images);
- ``metric(params, features, actions[B, T, A]) -> [B]``: higher is better (ranking, reports);
- ``direction(params, features, actions) -> [B, T, A]``: the ascent direction the sampler
  subtracts (scaled) from the predicted noise. By default the gradient of ``metric``.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class Guidance:
    def prepare(self, params, obs):
        return obs

    def metric(self, params, features, actions):
        raise NotImplementedError(f"{type(self).__name__} defines no metric")

    def direction(self, params, features, actions):
        # samples are independent, so the gradient of the sum is each sample's own gradient
        return jax.grad(lambda a: jnp.sum(self.metric(params, features, a)))(actions)


@dataclasses.dataclass(frozen=True)
class NoGuidance(Guidance):
    """The unguided base policy expressed as a guidance (zero direction, zero metric)."""

    def metric(self, params, features, actions):
        return jnp.zeros(actions.shape[0], jnp.float32)

    def direction(self, params, features, actions):
        return jnp.zeros_like(actions)
