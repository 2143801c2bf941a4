"""ArticulatedParts (paper Table/Fig. 3): steer toward each of the 8 articulated behaviours.

Settings from paper_experiments/calvin_articulated_object.sh (DynaGuide ``--scale/--ss/--alpha``,
PosGuide ``--scale``, planner ``--num_samples 5``) and calvin_exp_configs_examples/<target>.json
(env_setup, reset poses); base = the ``Control_N`` runs (all parts random), scored for every target.
"""
from experiments.spec import Experiment, Target

_SETUP = {"button_on": {"green_light": 0.0}, "button_off": {"green_light": 1.0}, "switch_on": {"switch": 0.0},
          "switch_off": {"switch": 0.085}, "drawer_open": {"drawer": 0.0}, "drawer_close": {"drawer": 0.16},
          "door_left": {"sliding_door": 0.0}, "door_right": {"sliding_door": 0.28}}
# (scale, ss, alpha, position-guidance scale, reset poses)
_RUNS = {"button_on": (1.0, 4, 30.0, 3.0, "midpoint"), "button_off": (1.0, 4, 30.0, 3.0, "midpoint"),
         "switch_on": (1.5, 4, 30.0, 2.0, "right_side_midpoint"),
         "switch_off": (1.5, 4, 30.0, 2.0, "right_side_midpoint"),
         "drawer_open": (1.0, 4, 40.0, 3.0, "right_side_midpoint"),
         "drawer_close": (1.0, 4, 40.0, 3.0, "right_side_midpoint"),
         "door_left": (1.5, 4, 30.0, 3.0, "right_side_midpoint"), "door_right": (2.0, 4, 15.0, 3.0, "midpoint")}


def articulated_target(name: str, **overrides) -> Target:
    scale, ss, alpha, itps, poses = _RUNS[name]
    values = dict(name=name, success=(name,), positives=(name,), env_setup=tuple(_SETUP[name].items()), scale=scale,
                  repeats=ss, sigma=alpha, itps_scale=itps, reset_poses=poses)
    return Target(**{**values, **overrides})


EXPERIMENT = Experiment(
    name="articulated_parts", title="ArticulatedParts", targets=tuple(articulated_target(n) for n in _RUNS),
    methods=("base", "dynaguide", "gc", "gpc", "itps"),
    source="paper_experiments/calvin_articulated_object.sh, experiment_1_graphs.py")
