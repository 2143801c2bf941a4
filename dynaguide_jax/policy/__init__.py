"""Base policies that the sampler steers (epsilon models with ``eps_fn(params, x, k, obs_cond)``):
the robomimic image diffusion policy (converted or trained here) and an exact-epsilon stand-in."""
from dynaguide_jax.policy.config import PolicyConfig
from dynaguide_jax.policy.convert import RobomimicPolicy, load_robomimic_policy
from dynaguide_jax.policy.diffusion_policy import DiffusionPolicy, normalize_actions, unnormalize_actions
from dynaguide_jax.policy.mixture import (
    line_prototypes, mixture_eps, mixture_params, nearest_prototype, responsibilities,
)

__all__ = ["DiffusionPolicy", "PolicyConfig", "RobomimicPolicy", "line_prototypes", "load_robomimic_policy",
           "mixture_eps", "mixture_params", "nearest_prototype", "normalize_actions", "responsibilities",
           "unnormalize_actions"]
