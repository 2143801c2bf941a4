"""dynaguide-jax: DynaGuide (steering diffusion policies with latent-dynamics guidance) in JAX."""
__version__ = "0.1.0"
