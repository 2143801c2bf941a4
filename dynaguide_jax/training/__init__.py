"""Training utilities shared by the policy and dynamics trainers: EMA, optimizers, checkpoints."""
from dynaguide_jax.training.checkpoints import CheckpointManager
from dynaguide_jax.training.ema import EMAConfig, ema_decay, ema_update
from dynaguide_jax.training.optim import make_optimizer, warmup_cosine_adamw

__all__ = ["CheckpointManager", "EMAConfig", "ema_decay", "ema_update", "make_optimizer", "warmup_cosine_adamw"]
from dynaguide_jax.training.loop import (  # noqa: E402
    DynamicsTrainConfig, init_distributed, load_trained_dynamics, train_dynamics,
)
from dynaguide_jax.training.mesh import make_mesh  # noqa: E402

__all__ += ["DynamicsTrainConfig", "init_distributed", "load_trained_dynamics", "make_mesh", "train_dynamics"]
