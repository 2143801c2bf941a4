"""DDIM noise schedule and update, equal to diffusers' ``DDIMScheduler`` (eta = 0).

Supported: beta schedules ``squaredcos_cap_v2`` / ``linear`` / ``scaled_linear``, timestep spacing
``leading`` / ``trailing`` / ``linspace``, ``clip_sample``, ``set_alpha_to_one``, ``steps_offset``,
epsilon prediction. The schedule is a frozen (hashable) dataclass so jitted samplers can take it as
a static argument; its per-step tables are numpy constants folded into the compiled program.
"""
from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from dynaguide_jax._checks import check_int, is_concrete

BETA_SCHEDULES = ("squaredcos_cap_v2", "linear", "scaled_linear")
SPACINGS = ("leading", "trailing", "linspace")


@dataclasses.dataclass(frozen=True)
class DDIMSchedule:
    """DDIM sampling schedule; defaults are the original's (100 train steps, 10 inference steps)."""

    num_train_timesteps: int = 100
    num_inference_steps: int = 10
    beta_schedule: str = "squaredcos_cap_v2"
    beta_start: float = 0.0001
    beta_end: float = 0.02
    clip_sample: bool = True
    clip_sample_range: float = 1.0
    set_alpha_to_one: bool = True
    steps_offset: int = 0
    timestep_spacing: str = "leading"
    prediction_type: str = "epsilon"

    def __post_init__(self):
        check_int("num_train_timesteps", self.num_train_timesteps)
        check_int("num_inference_steps", self.num_inference_steps)
        check_int("steps_offset", self.steps_offset, minimum=0)
        if self.beta_schedule not in BETA_SCHEDULES:
            raise ValueError(f"beta_schedule must be one of {BETA_SCHEDULES}, got {self.beta_schedule!r}")
        if self.timestep_spacing not in SPACINGS:
            raise ValueError(f"timestep_spacing must be one of {SPACINGS}, got {self.timestep_spacing!r}")
        if self.prediction_type != "epsilon":
            raise ValueError("only epsilon prediction is supported (guidance edits the predicted noise)")
        if not 0 < self.num_inference_steps <= self.num_train_timesteps:
            raise ValueError(
                f"num_inference_steps must be in [1, {self.num_train_timesteps}], "
                f"got {self.num_inference_steps}"
            )
        if self.beta_schedule != "squaredcos_cap_v2" and not 0.0 < self.beta_start <= self.beta_end < 1.0:
            raise ValueError(f"{self.beta_schedule} betas need 0 < beta_start <= beta_end < 1, got beta_start="
                             f"{self.beta_start}, beta_end={self.beta_end}")
        if self.clip_sample and not (math.isfinite(self.clip_sample_range) and self.clip_sample_range > 0):
            raise ValueError(f"clip_sample_range must be finite and > 0, got {self.clip_sample_range}")
        if int(self.timesteps.max()) >= self.num_train_timesteps:
            raise ValueError(f"steps_offset={self.steps_offset} puts timestep {int(self.timesteps.max())} past "
                             f"num_train_timesteps={self.num_train_timesteps}")

    def replace(self, **changes) -> "DDIMSchedule":
        return dataclasses.replace(self, **changes)

    @functools.cached_property
    def betas(self) -> np.ndarray:
        n = self.num_train_timesteps
        if self.beta_schedule == "linear":
            return np.linspace(self.beta_start, self.beta_end, n, dtype=np.float64).astype(np.float32)
        if self.beta_schedule == "scaled_linear":
            lin = np.linspace(self.beta_start**0.5, self.beta_end**0.5, n, dtype=np.float64)
            return (lin.astype(np.float32) ** 2).astype(np.float32)
        bar = lambda t: math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
        return np.array([min(1 - bar((i + 1) / n) / bar(i / n), 0.999) for i in range(n)], np.float32)

    @functools.cached_property
    def alphas_cumprod(self) -> np.ndarray:
        """``[num_train_timesteps]`` float32, a sequential float32 product as torch computes it."""
        return np.cumprod(np.float32(1.0) - self.betas, dtype=np.float32)

    @functools.cached_property
    def timesteps(self) -> np.ndarray:
        """Inference timesteps, descending (``[90, 80, ..., 0]`` for the defaults)."""
        n, s = self.num_train_timesteps, self.num_inference_steps
        if self.timestep_spacing == "leading":
            t = (np.arange(0, s) * (n // s)).round()[::-1].astype(np.int64) + self.steps_offset
        elif self.timestep_spacing == "trailing":
            t = np.round(np.arange(n, 0, -n / s)).astype(np.int64) - 1
        else:
            t = np.linspace(0, n - 1, s).round()[::-1].astype(np.int64)
        return t.astype(np.int32)

    @functools.cached_property
    def alpha_pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """``(ᾱ_t, ᾱ_prev)`` per inference step; ``prev = t - n // s`` as diffusers steps."""
        acp = self.alphas_cumprod
        final = np.float32(1.0) if self.set_alpha_to_one else acp[0]
        prev = self.timesteps - self.num_train_timesteps // self.num_inference_steps
        a_prev = np.where(prev >= 0, acp[np.maximum(prev, 0)], final).astype(np.float32)
        return acp[self.timesteps], a_prev


def ddim_update(x, eps, alpha_t, alpha_prev, clip_range: float | None):
    """One deterministic DDIM step from ``x`` at ᾱ_t to ᾱ_prev given the predicted noise."""
    x0 = (x - jnp.sqrt(1.0 - alpha_t) * eps) / jnp.sqrt(alpha_t)
    if clip_range is not None:
        x0 = jnp.clip(x0, -clip_range, clip_range)
    return jnp.sqrt(alpha_prev) * x0 + jnp.sqrt(1.0 - alpha_prev) * eps


def ddim_step(schedule: DDIMSchedule, eps, step_index, x):
    """``DDIMScheduler.step(eps, timesteps[step_index], x).prev_sample`` (eta = 0)."""
    if is_concrete(step_index) and not 0 <= int(step_index) < schedule.num_inference_steps:
        raise ValueError(f"step_index must lie in [0, {schedule.num_inference_steps}), got {step_index}")
    a_t, a_prev = (jnp.asarray(a)[step_index] for a in schedule.alpha_pairs)
    clip = schedule.clip_sample_range if schedule.clip_sample else None
    return ddim_update(x, eps, a_t, a_prev, clip)


def renoise(x_prev, alpha_t, alpha_prev, key):
    """Forward-diffuse a sample at ᾱ_prev back to ᾱ_t (time travel / MCMC repeat)."""
    ratio = alpha_t / alpha_prev
    noise = jax.random.normal(key, x_prev.shape, x_prev.dtype)
    return jnp.sqrt(ratio) * x_prev + jnp.sqrt(1.0 - ratio) * noise


def add_noise(schedule: DDIMSchedule, x0, eps, timesteps):
    """``DDIMScheduler.add_noise``: ``sqrt(ᾱ_k) x0 + sqrt(1 - ᾱ_k) eps`` per batch element."""
    if is_concrete(timesteps):
        t = np.asarray(timesteps)
        if t.size and (t.min() < 0 or t.max() >= schedule.num_train_timesteps):
            raise ValueError(f"timesteps must lie in [0, {schedule.num_train_timesteps}), got {t.min()}..{t.max()}")
    acp = jnp.asarray(schedule.alphas_cumprod)[timesteps]
    shape = acp.shape + (1,) * (x0.ndim - acp.ndim)
    acp = acp.reshape(shape)
    return jnp.sqrt(acp) * x0 + jnp.sqrt(1.0 - acp) * eps
