"""A tiny point-reaching world rendered to images, for the CPU demo and tests.

The state is an end-effector position ``xy`` in ``[-1, 1]²``; an action chunk ``[T, A]`` moves it
by ``sum_t a[t, :2] / T`` (so a constant velocity ``v`` travels ``v``). Observations are RGB images
of a soft dot on a fixed textured background. It is just rich enough that "which behaviour did the
policy pick" is visible in pixels, so an encoder + dynamics model + guidance can be exercised end
to end without a simulator. It is not the paper's CALVIN environment.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def background(size: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(40, 90, (4, 4, 3))
    return np.kron(coarse, np.ones((size // 4 + 1, size // 4 + 1, 1)))[:size, :size].astype(np.float32)


def render(xy, size: int = 56, radius: float = 4.0, bg: np.ndarray | None = None):
    """Positions ``[B, 2]`` -> uint8 images ``[B, size, size, 3]``."""
    xy = jnp.asarray(xy, jnp.float32)
    bg = jnp.asarray(background(size) if bg is None else bg)
    pix = (jnp.clip(xy, -1, 1) + 1.0) * 0.5 * (size - 1)  # [B, 2] in pixels (x -> column)
    ys, xs = jnp.meshgrid(jnp.arange(size), jnp.arange(size), indexing="ij")
    d2 = (xs[None] - pix[:, 0, None, None]) ** 2 + (ys[None] - pix[:, 1, None, None]) ** 2
    blob = jnp.exp(-d2 / (2 * radius**2))[..., None]
    color = jnp.array([250.0, 210.0, 40.0])
    img = bg[None] * (1 - blob) + color * blob
    return jnp.clip(jnp.round(img), 0, 255).astype(jnp.uint8)


def step(xy, actions):
    """End position after executing chunks ``[B, T, A]`` (``A >= 2``) from ``xy [B, 2]``.

    Shapes are checked always; NaN / inf actions are rejected when the values are concrete (eager
    calls; under ``jit`` they cannot be inspected)."""
    if jnp.ndim(xy) != 2 or jnp.shape(xy)[-1] != 2:
        raise ValueError(f"toyworld.step: xy must be positions [B, 2], got shape {jnp.shape(xy)}")
    if jnp.ndim(actions) != 3 or jnp.shape(actions)[-1] < 2 or jnp.shape(actions)[0] != jnp.shape(xy)[0]:
        raise ValueError(f"toyworld.step: actions must be chunks [B={jnp.shape(xy)[0]}, T, A>=2] matching xy "
                         f"{tuple(jnp.shape(xy))}, got shape {tuple(jnp.shape(actions))}")
    if not isinstance(actions, jax.core.Tracer) and not np.isfinite(np.asarray(actions, np.float32)).all():
        bad = np.argwhere(~np.isfinite(np.asarray(actions, np.float32)))
        raise FloatingPointError(f"toyworld.step: actions contain {len(bad)} non-finite value(s), first at index "
                         f"{tuple(int(i) for i in bad[0])} (chunk, step, dim)")
    return jnp.clip(xy + jnp.mean(actions[..., :2], axis=1), -1.0, 1.0)


def random_chunks(key, batch: int, horizon: int, action_dim: int, prototypes=None, noise: float = 0.15):
    """Training chunks: half perturbed prototypes (if given), half random constant velocities."""
    k1, k2, k3, k4 = jax.random.split(key, 4)
    vel = jax.random.uniform(k1, (batch, 1, action_dim), minval=-0.8, maxval=0.8)
    chunks = jnp.broadcast_to(vel, (batch, horizon, action_dim))
    if prototypes is not None:
        idx = jax.random.randint(k2, (batch,), 0, prototypes.shape[0])
        use = jax.random.bernoulli(k3, 0.5, (batch,))
        chunks = jnp.where(use[:, None, None], jnp.asarray(prototypes)[idx], chunks)
    return chunks + noise * jax.random.normal(k4, chunks.shape)


def demonstrations(key, num_episodes: int, length: int, prototypes, image_size: int = 56,
                   radius: float = 12.0, proprio_dim: int = 4, noise: float = 0.05):
    """Expert episodes for policy training: each episode follows one prototype behaviour
    (per-step action = that behaviour's chunk row + noise) from a random start.

    Returns ``(obs {"proprio": [N, proprio_dim], "camera": [N, H, W, 3] uint8}, actions [N, A],
    episode_ends [E], behaviour [E])`` as numpy arrays; the position moves by ``a[:2] / horizon``
    per step, consistent with ``step`` on a whole chunk.
    """
    prototypes = np.asarray(prototypes, np.float32)
    k, horizon, adim = prototypes.shape
    rng = np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel().tolist())
    bg = background(image_size)
    behaviour = rng.integers(0, k, num_episodes)
    xy = rng.uniform(-0.4, 0.4, (num_episodes, 2)).astype(np.float32)
    positions, actions = [], []
    for _ in range(length):
        a = prototypes[behaviour, 0] + noise * rng.normal(size=(num_episodes, adim)).astype(np.float32)
        positions.append(xy.copy())
        actions.append(a)
        xy = np.clip(xy + a[:, :2] / horizon, -1.0, 1.0)
    pos = np.stack(positions, 1).reshape(-1, 2)  # episode-major
    act = np.stack(actions, 1).reshape(-1, adim)
    proprio = np.zeros((len(pos), proprio_dim), np.float32)
    proprio[:, :2] = pos
    images = np.asarray(render(pos, image_size, radius, bg))
    ends = np.arange(1, num_episodes + 1) * length
    return {"proprio": proprio, "camera": images}, act, ends, behaviour
