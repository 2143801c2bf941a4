"""Typed settings of the paper's experiments: one ``Experiment`` of ``Target`` rows each.

A target is one run of the original's scripts (paper_experiments/calvin_*.sh): the part setup its
experiment JSON fixes, the goal sets guidance is given (positive, negative; built from the
per-behaviour goal files, ``goals_<behaviour>.npz``), DynaGuide's ``--scale``/``--ss``/``--alpha``,
the position-guidance scale, GPC's sample count, and which detected behaviours count as success
(the analysis scripts': the first event is the target; for multi-objective runs any behaviour of
the named objects, or of every other object for "don't" runs). Everything is checked when the
experiment is built, so a bad config fails before any work starts.
"""
from __future__ import annotations

import dataclasses
import math

from dynaguide_jax.envs.reset_states import check_env_setup
from dynaguide_jax.eval.behaviours import BEHAVIOURS
from dynaguide_jax.eval.methods import METHODS

GOAL_BEHAVIOURS = BEHAVIOURS[:8] + ("red_lift", "blue_lift", "pink_lift")  # the goal files the segmentation gives
OBJECTS = {"button": ("button_on", "button_off"), "switch": ("switch_on", "switch_off"),
           "drawer": ("drawer_open", "drawer_close"), "door": ("door_left", "door_right"),
           "blocks": ("red_displace", "blue_displace", "pink_displace")}  # experiment_4_multiobjective.py's categories
GOAL_QUALITIES = ("full", "underspecified")
RESET_POSES = ("right_side_midpoint", "midpoint", None)  # calvin_exp_configs_examples/reset_poses/*.json


def object_behaviours(*objects: str) -> tuple[str, ...]:
    """Every detected behaviour of the named objects (either direction), in ``BEHAVIOURS`` order."""
    unknown = [o for o in objects if o not in OBJECTS]
    if unknown:
        raise ValueError(f"unknown objects {unknown}; choose from {list(OBJECTS)}")
    chosen = {b for o in objects for b in OBJECTS[o]}
    return tuple(b for b in BEHAVIOURS if b in chosen)


def goal_behaviours_without(*objects: str) -> tuple[str, ...]:
    """The goal behaviours touching none of ``objects`` (the original's ``neg_examples_<objects>`` files)."""
    avoid = set(object_behaviours(*objects)) | {f"{c}_lift" for c in ("red", "blue", "pink") if "blocks" in objects}
    return tuple(b for b in GOAL_BEHAVIOURS if b not in avoid)


@dataclasses.dataclass(frozen=True)
class Target:
    """One run of an experiment (settings as the original's script line for it)."""

    name: str
    success: tuple[str, ...]  # detected behaviours that count as success
    positives: tuple[str, ...]  # goal behaviours whose goal files form the positive set
    negatives: tuple[str, ...] = ()
    env_setup: tuple[tuple[str, float], ...] = ()  # parts the reset fixes, and cubes_table_only (the JSON's env_setup)
    scale: float = 1.5  # DynaGuide --scale
    repeats: int = 4  # --ss
    sigma: float = 30.0  # --alpha
    goals_per_behaviour: int = 20  # the goal files' size (the original's *_20.hdf5; *_lift_80 for blocks)
    max_examples: int | None = None  # --max_examples: the first N positive goals only
    itps_scale: float | None = None  # position guidance --scale (None: no ITPS run for this target)
    # position guidance's target on CALVIN (the JSON's loc_target, world frame); the built-in world uses its
    # part's location (envs.expert.loc_target)
    loc_target: tuple[float, float, float] | None = None
    gpc_samples: int = 5  # --num_samples
    policy_fraction: float | None = None  # base policy trained with ``reduced`` cut to this fraction
    reduced: str | None = None
    reset_poses: str | None = "right_side_midpoint"  # the robot reset-pose list (CALVIN: the original's file)

    def __post_init__(self):
        if not self.name or not isinstance(self.name, str):
            raise ValueError(f"target name must be a non-empty string, got {self.name!r}")
        where = f"target {self.name!r}"
        if isinstance(self.env_setup, dict):  # as the experiment JSONs write it
            object.__setattr__(self, "env_setup", tuple(self.env_setup.items()))
        for field, names, allowed in (("success", self.success, BEHAVIOURS), ("positives", self.positives,
                                      GOAL_BEHAVIOURS), ("negatives", self.negatives, GOAL_BEHAVIOURS)):
            if isinstance(names, str) or not isinstance(names, tuple):
                raise TypeError(f"{where}: {field} must be a tuple of behaviour names, got {names!r}")
            unknown = [n for n in names if n not in allowed]
            if unknown:
                raise ValueError(f"{where}: unknown {field} behaviour(s) {unknown}; choose from {list(allowed)}")
        if not self.success:
            raise ValueError(f"{where}: success names no behaviour")
        if not self.positives and not self.negatives:
            raise ValueError(f"{where}: no goal sets (positives and negatives are both empty)")
        check_env_setup(dict(self.env_setup), f"{where}: env_setup")
        if self.scale < 0 or self.sigma <= 0 or self.repeats < 1 or self.gpc_samples < 1:
            raise ValueError(f"{where}: need scale >= 0, sigma > 0, repeats >= 1, gpc_samples >= 1")
        if self.goals_per_behaviour < 1 or (self.max_examples is not None and self.max_examples < 1):
            raise ValueError(f"{where}: goals_per_behaviour and max_examples must be >= 1")
        if self.itps_scale is not None and self.itps_scale < 0:
            raise ValueError(f"{where}: itps_scale must be >= 0")
        if isinstance(self.loc_target, list):  # as the experiment JSONs write it
            object.__setattr__(self, "loc_target", tuple(self.loc_target))
        loc = self.loc_target
        if loc is not None and (not isinstance(loc, tuple) or len(loc) != 3 or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in loc)):
            raise ValueError(f"{where}: loc_target must be 3 finite numbers (x, y, z), got {self.loc_target!r}")
        if (self.policy_fraction is None) != (self.reduced is None):
            raise ValueError(f"{where}: policy_fraction and reduced go together")
        if self.policy_fraction is not None:
            if not 0 < self.policy_fraction <= 1:
                raise ValueError(f"{where}: policy_fraction must be in (0, 1], got {self.policy_fraction}")
            if self.reduced not in GOAL_BEHAVIOURS:
                raise ValueError(f"{where}: reduced must be a goal behaviour, got {self.reduced!r}")
        if self.reset_poses not in RESET_POSES:
            raise ValueError(f"{where}: reset_poses must be one of {RESET_POSES}, got {self.reset_poses!r}")

    @property
    def policy_variant(self) -> str:
        """Which base policy the target uses: ``"full"`` or ``"<behaviour>_<percent>pct"``."""
        if self.policy_fraction is None:
            return "full"
        return f"{self.reduced}_{self.policy_fraction * 100:g}pct"


@dataclasses.dataclass(frozen=True)
class Experiment:
    """A paper experiment: its targets, methods and how its base runs and goals are made."""

    name: str
    title: str
    targets: tuple[Target, ...]
    methods: tuple[str, ...]
    goal_quality: str = "full"  # "underspecified": the goal frames' other parts and blocks re-drawn at random
    control_base: bool = True  # base rollouts from the control setup (all parts random), scored for every target
    gpc_horizon_fraction: float = 0.5  # the original's planner runs: horizon 200 of 400
    control_reset_poses: str = "right_side_midpoint"  # the control runs' poses (orig: control.json)
    figure: str = "bars"  # "bars" (success per target), "objects" (multi-objective stacks), "fraction" (line)
    source: str = ""  # the original's script and analysis file

    def __post_init__(self):
        if not self.targets:
            raise ValueError(f"{self.name}: no targets")
        names = [t.name for t in self.targets]
        if len(set(names)) != len(names):
            raise ValueError(f"{self.name}: duplicate target names {names}")
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown or not self.methods:
            raise ValueError(f"{self.name}: methods must be some of {METHODS}, got {self.methods}")
        for side in ("positives", "negatives"):  # padded goal sets share one program: a side is all or nothing
            has = [bool(getattr(t, side)) for t in self.targets]
            if any(has) and not all(has):
                raise ValueError(f"{self.name}: every target or none must have {side} (one compiled program "
                                 "serves them all)")
        if self.goal_quality not in GOAL_QUALITIES:
            raise ValueError(f"{self.name}: goal_quality must be one of {GOAL_QUALITIES}")
        if "itps" in self.methods and any(t.itps_scale is None for t in self.targets):
            raise ValueError(f"{self.name}: itps needs every target's itps_scale")
        if self.control_reset_poses not in RESET_POSES:
            raise ValueError(f"{self.name}: control_reset_poses must be one of {RESET_POSES}")
        if not 0 < self.gpc_horizon_fraction <= 1:
            raise ValueError(f"{self.name}: gpc_horizon_fraction must be in (0, 1]")
        if self.figure not in ("bars", "objects", "fraction"):
            raise ValueError(f"{self.name}: unknown figure kind {self.figure!r}")

    def target(self, name: str) -> Target:
        for t in self.targets:
            if t.name == name:
                return t
        raise KeyError(f"{self.name} has no target {name!r}; its targets: {[t.name for t in self.targets]}")

    def with_targets(self, names) -> Experiment:
        """The experiment restricted to the named targets (in the given order)."""
        return dataclasses.replace(self, targets=tuple(self.target(n) for n in names))

    def goal_files(self) -> tuple[str, ...]:
        """Every goal behaviour a target reads."""
        return tuple(sorted({b for t in self.targets for b in (*t.positives, *t.negatives)}))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
