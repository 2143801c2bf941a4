"""ArticulatedParts (paper Table/Fig. 3): steer toward each of the 8 articulated behaviours.

Settings from paper_experiments/calvin_articulated_object.sh (DynaGuide ``--scale/--ss/--alpha``,
PosGuide ``--scale``, planner ``--num_samples 5``) and calvin_exp_configs_examples/<target>.json
(env_setup, reset poses, loc_target); base = the ``Control_N`` runs (all parts random), scored for every target.
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

# position guidance's target, CALVIN world frame (calvin_exp_configs_examples/<target>.json "loc_target")
_LOC_TARGET = {
    "button_on": (-0.1183045814461375, -0.1144538267241942, 0.4960556833337702),
    "button_off": (-0.11221751715334842, -0.11465078614523619, 0.4966200809334477),
    "switch_on": (0.27980308053048975, 0.023739273400879772, 0.5706737502343485),
    "switch_off": (0.28656671011999846, 0.033852440810362, 0.5942648442738185),
    "drawer_open": (0.1466070830462435, -0.21110382831263355, 0.4031764058751014),
    "drawer_close": (0.17575515911256404, -0.403465742582764, 0.4150294248365599),
    "door_left": (0.023575963314403398, -0.015964984296046963, 0.5407074009828797),
    "door_right": (-0.22173902228443118, -0.024977345601772248, 0.5462262406195053),
}


def articulated_target(name: str, **overrides) -> Target:
    scale, ss, alpha, itps, poses = _RUNS[name]
    values = dict(name=name, success=(name,), positives=(name,), env_setup=tuple(_SETUP[name].items()), scale=scale,
                  repeats=ss, sigma=alpha, itps_scale=itps, loc_target=_LOC_TARGET[name], reset_poses=poses)
    return Target(**{**values, **overrides})


EXPERIMENT = Experiment(
    name="articulated_parts", title="ArticulatedParts", targets=tuple(articulated_target(n) for n in _RUNS),
    methods=("base", "dynaguide", "gc", "gpc", "itps"),
    source="paper_experiments/calvin_articulated_object.sh, experiment_1_graphs.py")
