"""Training utilities shared by the policy and dynamics trainers: EMA, optimizers, checkpoints."""
from dynaguide_jax.training.checkpoints import CheckpointManager
from dynaguide_jax.training.ema import EMAConfig, ema_decay, ema_update
from dynaguide_jax.training.optim import warmup_cosine_adamw

__all__ = ["CheckpointManager", "EMAConfig", "ema_decay", "ema_update", "warmup_cosine_adamw"]
from dynaguide_jax.training.loop import DynamicsTrainConfig, init_distributed, train_dynamics  # noqa: E402
from dynaguide_jax.training.mesh import make_mesh  # noqa: E402

__all__ += ["DynamicsTrainConfig", "init_distributed", "make_mesh", "train_dynamics"]
