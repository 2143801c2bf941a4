"""Optimizers used by the trainers."""
from __future__ import annotations

import optax


def warmup_cosine_adamw(learning_rate: float, total_steps: int, warmup_steps: int = 500,
                        weight_decay: float = 1e-6, end_fraction: float = 0.0):
    """AdamW with linear warm-up then cosine decay (diffusion-policy training recipe)."""
    warmup = max(0, min(warmup_steps, total_steps - 1))
    schedule = optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=learning_rate, warmup_steps=warmup,
        decay_steps=max(total_steps, warmup + 1), end_value=learning_rate * end_fraction)
    return optax.adamw(schedule, weight_decay=weight_decay), schedule
