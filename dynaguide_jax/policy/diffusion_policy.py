"""The image diffusion policy: observation encoder + ConditionalUnet1D, with the two functions the
guided sampler needs (``encode_obs`` once per chunk, ``eps_fn`` at every denoising step)."""
from __future__ import annotations

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from dynaguide_jax._checks import check_finite, is_concrete
from dynaguide_jax.policy.config import PolicyConfig
from dynaguide_jax.policy.obs_encoder import ObservationEncoder
from dynaguide_jax.policy.unet1d import ConditionalUnet1D


class PolicyNets(nn.Module):
    config: PolicyConfig

    def setup(self):
        c = self.config
        self.obs_encoder = ObservationEncoder(c, c.obs_keys)
        if c.goal_rgb_keys:
            self.goal_encoder = ObservationEncoder(c, c.goal_rgb_keys)
        self.noise_pred_net = ConditionalUnet1D(c.action_dim, c.down_dims, c.kernel_size, c.n_groups,
                                                c.step_embed_dim, c.dtype)

    def encode(self, obs, goal=None, crop_key=None):
        c = self.config
        first = obs[c.obs_keys[0]]
        b, t = first.shape[:2]
        flat = {k: obs[k].reshape(b * t, *obs[k].shape[2:]) for k in c.obs_keys}
        feats = self.obs_encoder(flat, crop_key).reshape(b, t * c.obs_feature_dim)
        if c.goal_rgb_keys:
            gkey = None if crop_key is None else jax.random.fold_in(crop_key, 7)
            feats = jnp.concatenate([feats, self.goal_encoder(goal, gkey)], axis=-1)
        return feats

    def __call__(self, noisy_actions, timestep, cond):
        return self.noise_pred_net(noisy_actions, timestep, cond)

    def init_all(self, obs, goal, noisy_actions):
        return self(noisy_actions, jnp.zeros((), jnp.int32), self.encode(obs, goal))


@dataclasses.dataclass(frozen=True)
class DiffusionPolicy:
    """Functional wrapper; hashable, so ``policy.eps_fn`` can be a static argument of jitted code.

    obs: ``{key: [B, To, H, W, 3] uint8 or 0..1 float | [B, To, d]}``; goal (GC only):
    ``{camera: [B, H, W, 3]}``.
    """

    config: PolicyConfig

    @property
    def nets(self) -> PolicyNets:
        return PolicyNets(self.config)

    def dummy_inputs(self, batch: int = 1):
        c, rgb, low = self.config, dict(self.config.rgb_shapes), dict(self.config.low_dim)
        obs = {k: (jnp.zeros((batch, c.obs_horizon, *rgb[k], 3), jnp.uint8) if k in rgb
                   else jnp.zeros((batch, c.obs_horizon, low[k]))) for k in c.obs_keys}
        goal = {k: jnp.zeros((batch, *rgb[k], 3), jnp.uint8) for k in c.goal_rgb_keys} or None
        return obs, goal, jnp.zeros((batch, c.prediction_horizon, c.action_dim))

    def init(self, key):
        """Random params. Jitted: one compile instead of an eager forward pass (the same values, bit for bit)."""
        return _init_params(self, key)

    def check_obs(self, obs, goal=None):
        c, rgb, low = self.config, dict(self.config.rgb_shapes), dict(self.config.low_dim)
        if not isinstance(obs, dict):
            raise TypeError(f"obs must be a dict {{key: array}} with keys {list(c.obs_keys)}, got {type(obs).__name__}")
        missing = [k for k in c.obs_keys if k not in obs]
        if missing:
            raise KeyError(f"observation is missing keys {missing} (policy expects {list(c.obs_keys)})")
        batch = None
        for k in c.obs_keys:
            want = (c.obs_horizon, *rgb[k], 3) if k in rgb else (c.obs_horizon, low[k])
            shape = tuple(jnp.shape(obs[k]))
            if shape[1:] != want:
                raise ValueError(f"obs[{k!r}] must be [B, {', '.join(map(str, want))}], got {shape}")
            if batch is not None and shape[0] != batch:
                raise ValueError(f"obs[{k!r}] has batch {shape[0]}, obs[{c.obs_keys[0]!r}] has {batch}")
            batch = shape[0]
            check_finite(f"obs[{k!r}]", obs[k])
        if c.goal_rgb_keys:
            if goal is None or any(k not in goal for k in c.goal_rgb_keys):
                raise KeyError(f"goal-conditioned policy needs goal images for {list(c.goal_rgb_keys)}")
            for k in c.goal_rgb_keys:
                want = (batch, *rgb[k], 3)
                if tuple(jnp.shape(goal[k])) != want:
                    raise ValueError(f"goal[{k!r}] must be [B, {', '.join(map(str, want[1:]))}] with B={batch}, "
                                     f"got {tuple(jnp.shape(goal[k]))}")

    def encode_obs(self, params, obs, goal=None, crop_key=None):
        """Observation (and goal) -> global condition ``[B, cond_dim]`` (run once per chunk)."""
        self.check_obs(obs, goal)
        obs = {k: jnp.asarray(v) for k, v in obs.items()}
        goal = None if goal is None else {k: jnp.asarray(v) for k, v in goal.items()}
        return self.nets.apply({"params": params}, obs, goal, crop_key, method=PolicyNets.encode)

    def eps_fn(self, params, noisy_actions, k, obs_cond):
        """The sampler's noise model: ``[B, T, A]``, timestep ``k``, condition -> predicted noise."""
        return self.nets.apply({"params": params}, noisy_actions, k, obs_cond)


def _action_stats(stats, actions):
    """``(scale, offset)`` checked against ``actions [..., A]``: one entry or A each (robomimic stores
    ``[1, A]``), scale non-zero."""
    a = jnp.shape(actions)[-1] if jnp.ndim(actions) else 1
    out = []
    for name in ("scale", "offset"):
        v = jnp.asarray(stats[name])
        if v.size not in (1, a):
            raise ValueError(f"action stats {name} must hold 1 or {a} entries for actions {jnp.shape(actions)}, "
                             f"got shape {v.shape}")
        out.append(v.reshape(-1) if v.size == a else v.reshape(()))
    if is_concrete(out[0]) and bool(jnp.any(out[0] == 0)):
        raise ValueError(f"action stats scale has zero entries ({np.asarray(out[0]).tolist()}): a constant action "
                         "dimension cannot be normalised (robomimic's stats give it scale 1)")
    return tuple(out)


def unnormalize_actions(stats, actions):
    """robomimic's action normalisation inverse: ``a * scale + offset`` (stats may be ``None``)."""
    if stats is None:
        return actions
    scale, offset = _action_stats(stats, actions)
    return actions * scale + offset


def normalize_actions(stats, actions):
    if stats is None:
        return actions
    scale, offset = _action_stats(stats, actions)
    return (actions - offset) / scale


@functools.partial(jax.jit, static_argnums=0)
def _init_params(policy: DiffusionPolicy, key):
    """One compiled init per policy config in a process (``DiffusionPolicy`` is hashable)."""
    obs, goal, actions = policy.dummy_inputs()
    return policy.nets.init(key, obs, goal, actions, method=PolicyNets.init_all)["params"]
