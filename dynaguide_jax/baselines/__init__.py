"""Baselines the paper compares DynaGuide with (the base policy and position guidance live in
``diffusion`` and ``guidance``; the goal-conditioned policy in ``policy``)."""
from dynaguide_jax.baselines.gpc import RankedSamples, sample_and_rank

__all__ = ["RankedSamples", "sample_and_rank"]
