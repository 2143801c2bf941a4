"""The latent dynamics model, its loss and its converter."""
from dynaguide_jax.dynamics.config import DynamicsConfig
from dynaguide_jax.dynamics.convert import load_dynamics, load_original_dynamics, save_dynamics
from dynaguide_jax.dynamics.loss import dynamics_loss, noise_actions, sample_noise_levels
from dynaguide_jax.dynamics.model import LatentDynamics, init_dynamics, predict_future_patches

__all__ = ["DynamicsConfig", "LatentDynamics", "dynamics_loss", "init_dynamics", "load_dynamics",
           "load_original_dynamics", "save_dynamics", "noise_actions", "predict_future_patches",
           "sample_noise_levels"]
