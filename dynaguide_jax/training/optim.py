"""Optimizers used by the trainers."""
from __future__ import annotations

import optax

from dynaguide_jax._checks import check_int, check_positive

OPTIMIZERS = ("adam", "adamw")
LR_SCHEDULES = ("constant", "warmup_cosine")


def warmup_cosine_adamw(learning_rate: float, total_steps: int, warmup_steps: int = 500,
                        weight_decay: float = 1e-6, end_fraction: float = 0.0):
    """AdamW with linear warm-up then cosine decay (diffusion-policy training recipe)."""
    return make_optimizer("adamw", "warmup_cosine", learning_rate, total_steps, warmup_steps, weight_decay,
                          end_fraction)


def make_optimizer(name: str, lr_schedule: str, learning_rate: float, total_steps: int, warmup_steps: int = 0,
                   weight_decay: float = 0.0, end_fraction: float = 0.0):
    """``(optimizer, schedule)``. ``adam`` with a ``constant`` rate and no weight decay is what robomimic
    trains the original's policies with (``optim.Adam(lr=1e-4, weight_decay=L2=0)``, no epoch schedule);
    ``adamw`` + ``warmup_cosine`` is the diffusion-policy recipe. ``adam`` adds ``weight_decay`` to the
    gradient (L2, as ``torch.optim.Adam`` does); ``adamw`` decays the weights directly."""
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {name!r}")
    if lr_schedule not in LR_SCHEDULES:
        raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {lr_schedule!r}")
    learning_rate = check_positive("learning_rate", learning_rate)
    weight_decay = check_positive("weight_decay", weight_decay, allow_zero=True)
    total_steps = check_int("total_steps", total_steps)
    warmup_steps = check_int("warmup_steps", warmup_steps, minimum=0)
    end_fraction = check_positive("end_fraction", end_fraction, allow_zero=True)
    if end_fraction > 1:
        raise ValueError(f"end_fraction must be in [0, 1] (final rate / peak rate), got {end_fraction}")
    if lr_schedule == "constant":
        schedule = optax.constant_schedule(learning_rate)
    else:
        warmup = max(0, min(warmup_steps, total_steps - 1))
        schedule = optax.warmup_cosine_decay_schedule(
            init_value=0.0, peak_value=learning_rate, warmup_steps=warmup,
            decay_steps=max(total_steps, warmup + 1), end_value=learning_rate * end_fraction)
    if name == "adamw":
        return optax.adamw(schedule, weight_decay=weight_decay), schedule
    opt = optax.adam(schedule)
    if weight_decay:
        opt = optax.chain(optax.add_decayed_weights(weight_decay), opt)
    return opt, schedule
