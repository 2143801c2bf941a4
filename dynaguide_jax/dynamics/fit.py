"""A compact single-device training loop for the dynamics model (demos, small data).

The sharded, resumable trainer for large datasets lives in ``dynaguide_jax.training``; this one
is a jitted Adam step over in-memory batches with the original's noise augmentation.
"""
from __future__ import annotations

import functools
import math
from typing import Callable, Iterator

import jax
import jax.numpy as jnp
import optax
from tqdm.auto import tqdm

from dynaguide_jax._checks import check_int, check_positive
from dynaguide_jax.diffusion.schedule import DDIMSchedule
from dynaguide_jax.dynamics.config import DynamicsConfig
from dynaguide_jax.dynamics.loss import dynamics_loss, noise_actions


def dynamics_update(config: DynamicsConfig, optimizer: optax.GradientTransformation,
                    schedule: DDIMSchedule | None, params, opt_state, batch, key, progress):
    """One optimisation step -> ``(params, opt_state, loss)`` (pure; callers jit and shard it).

    With a ``schedule``, actions are noised as the original's ``--noised`` training does.
    """
    k_noise, k_drop = jax.random.split(key)
    if schedule is not None:
        batch = dict(batch, actions=noise_actions(k_noise, batch["actions"], schedule, progress))
    loss, grads = jax.value_and_grad(lambda p: dynamics_loss(config, p, batch, k_drop))(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss


def make_train_step(config: DynamicsConfig, optimizer: optax.GradientTransformation,
                    schedule: DDIMSchedule | None = None):
    """``step(params, opt_state, batch, key, progress) -> (params, opt_state, loss)``, jitted."""
    return jax.jit(functools.partial(dynamics_update, config, optimizer, schedule))


def fit_dynamics(config: DynamicsConfig, params, batches: Iterator[dict] | Callable[[int], dict],
                 *, steps: int, key, learning_rate: float = 1e-4,
                 schedule: DDIMSchedule | None = None, progress: bool = True):
    """Train for ``steps`` Adam steps (the original's optimizer); returns ``(params, losses)``.

    ``batches`` is an iterator of batches or a function ``step -> batch``. A non-finite loss stops
    training with ``FloatingPointError`` naming the step; an iterator that runs out early raises
    ``ValueError``.
    """
    if not isinstance(config, DynamicsConfig):
        raise TypeError(f"config must be a DynamicsConfig, got {type(config).__name__}")
    steps = check_int("steps", steps, minimum=0)
    learning_rate = check_positive("learning_rate", learning_rate)
    if not callable(batches) and not isinstance(batches, Iterator):
        raise TypeError(f"batches must be an iterator of batch dicts or a function step -> batch, got "
                        f"{type(batches).__name__} (wrap a list with iter(...))")
    opt = optax.adam(learning_rate)
    opt_state = opt.init(params)
    step_fn = make_train_step(config, opt, schedule)

    def get(i):
        if callable(batches):
            return batches(i)
        try:
            return next(batches)
        except StopIteration:
            raise ValueError(f"batches ran out after {i} of steps={steps} batches") from None

    losses = []
    # disable=None: a live bar on terminals, silent in logs and CI
    bar = tqdm(range(steps), desc="train dynamics", disable=None if progress else True, leave=False)
    for i in bar:
        key, sub = jax.random.split(key)
        params, opt_state, loss = step_fn(params, opt_state, get(i), sub, jnp.float32(i / steps))
        losses.append(float(loss))
        if not math.isfinite(losses[-1]):
            raise FloatingPointError(f"dynamics training loss is {losses[-1]} at step {i} of {steps} "
                                     f"(learning_rate={learning_rate}; check the batch for NaN / inf)")
        if i % 10 == 0:
            bar.set_postfix(loss=f"{losses[-1]:.4f}")
    return params, losses
