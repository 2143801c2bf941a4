"""MultiObjectives: several positive goal sets at once ("do X or Y") and negative ones ("don't do X").

paper_experiments/calvin_multiple_behaviors.sh with the configs of
calvin_exp_configs_examples/multiple_and_negative_objectives/ (``*_negs.json`` / ``*_positives.json``):
positives are the named behaviours' goals (20 each), negatives of "do" runs the goals of every
behaviour touching none of the named objects (``neg_examples_<objects>``); "don't" runs repel the
avoided behaviour's goals and attract every other object's. Success as experiment_4_multiobjective.py
counts it, by object and in either direction: "do" runs, the first event touches a named object;
"don't" runs, it touches another object (blocks included; doing nothing is a failure). The original
runs DynaGuide and the planner (GPC ranks by the positives only) and no base or GC.
"""
from experiments.spec import Experiment, Target, goal_behaviours_without, object_behaviours

_ALL = ("button", "switch", "drawer", "door", "blocks")


def _do(name, behaviours, objects, setup, scale, alpha):
    return Target(name=name, success=object_behaviours(*objects), positives=behaviours,
                  negatives=goal_behaviours_without(*objects), env_setup=setup, scale=scale, repeats=4, sigma=alpha)


def _dont(name, avoided, objects, setup, scale, alpha, poses="right_side_midpoint"):
    others = tuple(o for o in _ALL if o not in objects)
    return Target(name=name, success=object_behaviours(*others), positives=goal_behaviours_without(*objects),
                  negatives=avoided, env_setup=setup, scale=scale, repeats=4, sigma=alpha, reset_poses=poses)


EXPERIMENT = Experiment(
    name="multi_objectives", title="MultiObjectives",
    targets=(
        _do("button_on_switch_on", ("button_on", "switch_on"), ("button", "switch"),
            (("switch", 0.0), ("green_light", 0.0)), 1.0, 30.0),
        _do("door_left_button_on", ("button_on", "door_left"), ("door", "button"),
            (("sliding_door", 0.0), ("green_light", 0.0)), 1.0, 40.0),
        _do("switch_on_door_left_button_on", ("switch_on", "button_on", "door_left"), ("switch", "door", "button"),
            (("sliding_door", 0.0), ("switch", 0.0), ("green_light", 0.0)), 1.0, 30.0),
        _dont("drawer_dont_open", ("drawer_open",), ("drawer",), (("drawer", 0.0),), 1.5, 30.0),
        _dont("door_dont_right", ("door_right",), ("door",), (("sliding_door", 0.28),), 1.5, 30.0, "midpoint"),
        _dont("drawer_dont_open_door_dont_right", ("door_right", "drawer_open"), ("door", "drawer"),
              (("sliding_door", 0.28), ("drawer", 0.0)), 1.0, 40.0),
    ),
    methods=("dynaguide", "gpc"), control_base=False, figure="objects",
    source="paper_experiments/calvin_multiple_behaviors.sh, experiment_4_multiobjective.py")
