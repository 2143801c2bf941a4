"""Guidance functions: the DynaGuide metric, position guidance (ITPS) and no guidance."""
from dynaguide_jax.guidance.base import Guidance, NoGuidance
from dynaguide_jax.guidance.dynaguide import DynaGuide, encode_cameras, paper_scaled_sigma
from dynaguide_jax.guidance.goals import goals_from_images, goals_from_trajectory_ends
from dynaguide_jax.guidance.metric import GoalSet, guidance_metric, min_goal_distance, pairwise_distance
from dynaguide_jax.guidance.position import PositionGuidance

__all__ = ["DynaGuide", "GoalSet", "Guidance", "NoGuidance", "PositionGuidance", "encode_cameras",
           "goals_from_images", "goals_from_trajectory_ends", "guidance_metric",
           "min_goal_distance", "pairwise_distance", "paper_scaled_sigma"]
