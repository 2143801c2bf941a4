"""The compared methods as closed-loop policy functions for one target (``eval.methods``), built from
an experiment's models, the target's goal arrays (``experiments.goals``) and its traced settings."""
from __future__ import annotations

import dataclasses
from typing import NamedTuple

import numpy as np

import jax

from dynaguide_jax.demo.evaluate import DemoModels
from dynaguide_jax.eval import methods as M
from dynaguide_jax.guidance import DynaGuide, GoalSet, paper_scaled_sigma


class Settings(NamedTuple):
    """A target's traced settings."""
    scale: jax.Array
    sigma: jax.Array
    itps_scale: jax.Array


def method_policy_fn(method: str, models: DemoModels, params, goals: dict, s: Settings, repeats: int,
                     gpc_samples: int, encoder_size: int):
    """``policy_fn(obs_stack, key) -> [N, 16, 7]`` of ``method``; ``params``: the (base or GC) policy's."""
    m, shape = models, (16, 7)
    guide = DynaGuide(dynamics=m.dynamics, encoder=m.encoder, image_size=encoder_size)
    goal_set = GoalSet(positive=goals.get("pos_dyn"), positive_mask=goals.get("pos_mask"),
                       negative=goals.get("neg_dyn"), negative_mask=goals.get("neg_mask"))
    # the temperature only DynaGuide uses, on the original's scale (base / GC / ITPS runs may carry no model)
    sigma = paper_scaled_sigma(s.sigma, m.dynamics) if method == "dynaguide" else s.sigma
    gparams = {"dynamics": m.dynamics_params, "encoder": m.encoder_params, "sigma": sigma, "goals": goal_set}
    if method == "base":
        return M.base_fn(m.policy, params, m.schedule, shape)
    if method == "dynaguide":
        return M.guided_fn(m.policy, params, m.schedule, guide, gparams, scale=s.scale, repeats=repeats,
                           action_shape=shape)
    if method == "gc":
        return M.gc_fn(m.gc_policy, params, m.schedule, goals["gc_images"], action_shape=shape,
                       goal_mask=goals["pos_mask"])
    if method == "gpc":  # the original's planner ranks by the positives only
        return M.gpc_fn(m.policy, params, m.schedule, guide, gparams, goals["pos_features"], num_samples=gpc_samples,
                        action_shape=shape, goal_mask=goals["pos_mask"])
    if method == "itps":
        return M.itps_fn(m.policy, params, m.schedule, goals["xyz"], scale=s.itps_scale, repeats=repeats,
                         action_shape=shape)
    raise ValueError(f"unknown method {method!r}; choose from {M.METHODS}")


def target_key(method: str, target, goals: dict, index: int) -> dict:
    """A cell key's entries for what of ``target`` (row ``index`` of the stacked ``goals``) a non-base method
    reads: its settings without ``loc_target``, and for ITPS the point it steers toward as applied
    (``goals["xyz"]``: the built-in world's part location or CALVIN's ``loc_target``), so that only ITPS
    cells follow that point."""
    out = {"target": {k: v for k, v in dataclasses.asdict(target).items() if k != "loc_target"}}
    if method == "itps":
        out["itps_target"] = np.asarray(goals["xyz"][index], np.float64).round(6).tolist()
    return out


def sigma_key(method: str, target, dynamics) -> dict:
    """A cell key's entry for the temperature DynaGuide applies (``paper_scaled_sigma`` of the target's
    sigma for this dynamics model), so cells run before the scaling are rerun; empty for other methods and
    where the scaling leaves sigma as it is (the paper's 256 x 384 model: those cells stay valid)."""
    if method != "dynaguide":
        return {}
    applied = float(paper_scaled_sigma(target.sigma, dynamics))
    return {} if applied == target.sigma else {"sigma_applied": applied}
