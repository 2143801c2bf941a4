"""Which behaviour a rollout performed, by the rules of the original's CALVIN analysis
(MaxDu17/DynaGuide ``analyze_calvin_touch.py``, ``generate_detailed_behavior_distribtuion``).

Every step ``t`` of a rollout is compared with its FIRST state (row 0); the first step at which
anything happened decides the label:

1. Blocks, all three tested on the same step: a block is displaced when the end effector (tcp
   xyz, ``robot_obs[:3]``) is closer than 0.1 m to it and its xyz moved more than 1 mm.
2. Otherwise the first of, in this order (``elif``: one per step): sliding door moved > 0.05
   (``door_left`` when it increased, else ``door_right``); drawer moved > 0.05 (``drawer_close``
   when it decreased, else ``drawer_open``); switch moved > 0.02 (``switch_off`` when it
   decreased, else ``switch_on``); green light changed > 0.01 (``button_off`` when it decreased,
   else ``button_on``).
3. ``no_behavior`` when no step qualifies; the step is then the last one.

Quirks of the original, and what is done with them:

- Several blocks displaced on the same step are ALL counted (the original's "allows for
  multiple-counting"), so a distribution sums over more counts than trajectories. Kept:
  ``Detection.counted`` marks every behaviour the original counts, and
  ``behaviour_distribution(index, counted)`` normalises by the total count as the original does.
  The single label (``Detection.index``) is the one the original's ``demo_labels`` keeps, the last
  one written: blue over pink over red.
- Bug: a ``button_on`` trajectory is COUNTED as ``button_on`` but LABELLED ``"button_off"`` in
  the original's ``demo_labels`` (and the ``traj_labels_*.json`` written from it). Fixed here: the
  index is ``button_on``; distributions are unaffected either way.
- The thresholds are hard-coded; the ``adjustable_limits``/``half_thresholds`` the function
  computes (switch range 0.08) are never used, so "half the range" plays no part in detection.
- Block rotations do not count, and the lightbulb and button joints are not read (the switch and
  the green light stand for them).

The caller reduces frame-stacked observations to the latest frame first, as the original does
(``states[:, -1]``). Rollouts that ended early pass ``valid`` (a length, or a mask over steps).
Episode termination (``check_state_difference``) lives with the reset rules it depends on:
``dynaguide_jax.envs.reset_states.episode_done``.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

import jax
import jax.numpy as jnp

from dynaguide_jax._checks import check_finite
from dynaguide_jax.envs.reset_states import BLOCK_XYZ

BEHAVIOURS = ("button_on", "button_off", "switch_on", "switch_off", "drawer_open", "drawer_close", "door_left",
              "door_right", "red_displace", "blue_displace", "pink_displace", "no_behavior")
ARTICULATED_BEHAVIOURS = BEHAVIOURS[:8]
NO_BEHAVIOUR = BEHAVIOURS.index("no_behavior")
_B = {name: i for i, name in enumerate(BEHAVIOURS)}

BLOCK_REACH = 0.1  # m, end effector to block centre
BLOCK_MOVE = 0.001  # m, block xyz displacement from the first state
# (scene_obs index, change threshold, behaviour when the value decreased, when it did not), in test order
ARTICULATED_RULES = ((0, 0.05, "door_right", "door_left"), (1, 0.05, "drawer_close", "drawer_open"),
                     (3, 0.02, "switch_off", "switch_on"), (5, 0.01, "button_off", "button_on"))


class Detection(NamedTuple):
    """Per trajectory (leading batch axes as the inputs'): ``index`` int32 into ``BEHAVIOURS``;
    ``step`` int32, the step it happened at (the last valid step for ``no_behavior``, -1 when
    there is none); ``counted`` bool ``[..., len(BEHAVIOURS)]``, what the original adds to its
    counts (more than one entry only for blocks displaced on the same step)."""
    index: jax.Array
    step: jax.Array
    counted: jax.Array


def step_events(scene_obs: jax.Array, robot_obs: jax.Array) -> jax.Array:
    """``[T, len(BEHAVIOURS)]`` bool: what the original counts at each step if it got there
    (``no_behavior`` column False). ``scene_obs`` ``[T, 24]``, ``robot_obs`` ``[T, >=3]``."""
    scene_obs, robot_obs = jnp.asarray(scene_obs), jnp.asarray(robot_obs)
    if scene_obs.ndim != 2 or scene_obs.shape[1] < 24 or scene_obs.shape[0] == 0:
        raise ValueError(f"scene_obs must be [T >= 1, 24], got shape {scene_obs.shape}")
    if robot_obs.ndim != 2 or robot_obs.shape[1] < 3 or robot_obs.shape[0] != scene_obs.shape[0]:
        raise ValueError(f"robot_obs must be [T={scene_obs.shape[0]}, >=3] (T from scene_obs), got shape "
                         f"{robot_obs.shape}")
    check_finite("scene_obs", scene_obs)
    check_finite("robot_obs", robot_obs)
    first, tcp = scene_obs[0], robot_obs[:, :3]
    cols = {}
    for colour, p in BLOCK_XYZ.items():
        xyz = scene_obs[:, p:p + 3]
        near = jnp.linalg.norm(tcp - xyz, axis=-1) < BLOCK_REACH
        moved = jnp.linalg.norm(xyz - first[p:p + 3], axis=-1) > BLOCK_MOVE
        cols[f"{colour}_displace"] = near & moved
    earlier = cols["red_displace"] | cols["blue_displace"] | cols["pink_displace"]  # blocks end the step first
    for idx, threshold, decreased, otherwise in ARTICULATED_RULES:
        value = scene_obs[:, idx]
        fires = ~earlier & (jnp.abs(value - first[idx]) > threshold)
        down = value < first[idx]  # never equal once the change passed the threshold
        cols[decreased] = fires & down
        cols[otherwise] = fires & ~down
        earlier = earlier | fires
    cols["no_behavior"] = jnp.zeros_like(earlier)
    return jnp.stack([cols[name] for name in BEHAVIOURS], axis=-1)


def _valid_mask(valid, steps: int) -> jax.Array:
    if valid is None:
        return jnp.ones((steps,), bool)
    valid = jnp.asarray(valid)
    if valid.ndim == 0:
        return jnp.arange(steps) < valid
    if valid.shape != (steps,):
        raise ValueError(f"valid: expected a length or a [{steps}] mask, got shape {valid.shape}")
    return valid.astype(bool)


def detect_behaviour(scene_obs: jax.Array, robot_obs: jax.Array, valid: jax.Array | int | None = None) -> Detection:
    """The first behaviour of one rollout (``jax.vmap`` it over a batch; jit-able).

    ``scene_obs`` ``[T, 24]`` and ``robot_obs`` ``[T, >=3]`` are the observations the policy acted
    on, row 0 the reset state. ``valid``: number of recorded steps (an int), or a bool mask ``[T]``;
    steps outside it are ignored (row 0 stays the reference). None: all ``T`` steps.
    """
    events = step_events(scene_obs, robot_obs)
    steps = events.shape[0]
    mask = _valid_mask(valid, steps)
    happened = events.any(-1) & mask
    any_step = happened.any()
    first = jnp.argmax(happened)
    counted_then = events[first]
    # the label the original's demo_labels keeps: the last block written (blue, pink, red) or the one part
    label = jnp.argmax(counted_then[:NO_BEHAVIOUR]).astype(jnp.int32)
    for name in ("red_displace", "pink_displace", "blue_displace"):
        label = jnp.where(counted_then[_B[name]], _B[name], label)
    last_valid = jnp.max(jnp.where(mask, jnp.arange(steps), -1))
    none = jax.nn.one_hot(NO_BEHAVIOUR, len(BEHAVIOURS), dtype=bool)
    return Detection(index=jnp.where(any_step, label, NO_BEHAVIOUR).astype(jnp.int32),
                     step=jnp.where(any_step, first, last_valid).astype(jnp.int32),
                     counted=jnp.where(any_step, counted_then, none))


detect_behaviours = jax.jit(jax.vmap(detect_behaviour))
detect_behaviours.__doc__ = """``detect_behaviour`` over a batch, jitted: ``scene_obs`` ``[B, T, 24]``,
``robot_obs`` ``[B, T, >=3]``, ``valid`` ``[B]`` lengths, ``[B, T]`` masks or None (all steps)."""


def behaviour_labels(index) -> list[str]:
    """Behaviour names of detection indices ``[N]``."""
    index = np.asarray(index).reshape(-1)
    if index.size and (index.dtype.kind not in "iu" or index.min() < 0 or index.max() >= len(BEHAVIOURS)):
        raise ValueError(f"index: behaviour indices must be integers in [0, {len(BEHAVIOURS)}), "
                         f"got {index[:5].tolist()}")
    return [BEHAVIOURS[i] for i in np.asarray(index).reshape(-1).tolist()]


def behaviour_distribution(index, counted=None) -> dict[str, float]:
    """``{behaviour: fraction}`` over ``BEHAVIOURS`` (all keys, zeros included).

    With ``counted`` ``[N, len(BEHAVIOURS)]`` (``Detection.counted``), the original's "Full
    distribution": every counted event over the total count, so simultaneous block displacements
    each count. Without it, one count per trajectory (``index`` ``[N]``).
    """
    if counted is not None:
        counted = np.asarray(counted)
        if counted.ndim < 1 or counted.shape[-1] != len(BEHAVIOURS):
            raise ValueError(f"counted must be [N, {len(BEHAVIOURS)}] (Detection.counted), got shape {counted.shape}")
        counts = counted.reshape(-1, len(BEHAVIOURS)).sum(0)
    else:
        index = np.asarray(index, dtype=np.int64).reshape(-1)
        if index.size and (index.min() < 0 or index.max() >= len(BEHAVIOURS)):
            raise ValueError(f"index: behaviour indices must lie in [0, {len(BEHAVIOURS)}), "
                             f"got {index.min()}..{index.max()}")
        counts = np.bincount(index, minlength=len(BEHAVIOURS))
    total = counts.sum()
    if total == 0:
        raise ValueError("behaviour_distribution: no trajectories")
    return {name: float(c) / float(total) for name, c in zip(BEHAVIOURS, counts)}
