"""Base policies that the sampler steers (epsilon models with ``eps_fn(params, x, k, obs_cond)``)."""
from dynaguide_jax.policy.mixture import (
    line_prototypes, mixture_eps, mixture_params, nearest_prototype, responsibilities,
)

__all__ = ["line_prototypes", "mixture_eps", "mixture_params", "nearest_prototype", "responsibilities"]
