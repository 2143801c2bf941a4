"""Exponential moving average of parameters with diffusers' ``EMAModel`` decay schedule.

``decay(n)`` for the n-th optimisation step: with ``s = max(0, n - update_after_step - 1)``,
0 if ``s == 0``; otherwise ``1 - (1 + s / inv_gamma) ** -power`` with warm-up, else
``(1 + s) / (10 + s)``; clipped to ``[min_decay, decay]``. robomimic constructs
``EMAModel(parameters, power=0.75)`` and leaves ``use_ema_warmup`` at diffusers' default (False),
so its policies effectively use ``(1 + s) / (10 + s)``; ``warmup=True`` gives the power schedule.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from dynaguide_jax._checks import check_int, check_positive


@dataclasses.dataclass(frozen=True)
class EMAConfig:
    decay: float = 0.9999
    min_decay: float = 0.0
    update_after_step: int = 0
    warmup: bool = False
    inv_gamma: float = 1.0
    power: float = 0.75

    def __post_init__(self):  # values are stored as checked floats / ints
        for name in ("decay", "min_decay"):
            v = check_positive(f"EMAConfig.{name}", getattr(self, name), allow_zero=True)
            if v > 1:
                raise ValueError(f"EMAConfig.{name} must be in [0, 1], got {v}")
            object.__setattr__(self, name, v)
        if self.min_decay > self.decay:
            raise ValueError(f"EMAConfig.min_decay must be <= decay, got min_decay={self.min_decay}, "
                             f"decay={self.decay}")
        object.__setattr__(self, "update_after_step",
                           check_int("EMAConfig.update_after_step", self.update_after_step, minimum=0))
        for name in ("inv_gamma", "power"):
            object.__setattr__(self, name, check_positive(f"EMAConfig.{name}", getattr(self, name)))

def ema_decay(cfg: EMAConfig, optimization_step):
    """Decay used at optimisation step ``optimization_step`` (1-based, as diffusers counts)."""
    s = jnp.maximum(0, jnp.asarray(optimization_step, jnp.float32) - cfg.update_after_step - 1)
    if cfg.warmup:
        value = 1.0 - (1.0 + s / cfg.inv_gamma) ** -cfg.power
    else:
        value = (1.0 + s) / (10.0 + s)
    value = jnp.clip(value, cfg.min_decay, cfg.decay)
    return jnp.where(s <= 0, 0.0, value)


def ema_update(cfg: EMAConfig, ema_params, params, optimization_step):
    """``ema <- ema - (1 - decay) (ema - params)`` for every leaf."""
    one_minus = 1.0 - ema_decay(cfg, optimization_step)
    return jax.tree.map(lambda e, p: e - one_minus * (e - p), ema_params, params)
