"""UnderspecifiedObjectives: the 8 articulated targets steered with low-quality goal sets.

paper_experiments/calvin_underspecified_objectives.sh gives the settings (below) and ``ood_<t>.json``
configs whose ``OOD_Goal_*`` goal files are not in the original repository. Here the low-quality
goals are made from the same goal frames with everything but the target's part re-drawn at random
(the other parts' joints, the lights and the blocks): the goals show the target's outcome but say
nothing consistent about the rest of the scene (``goal_quality="underspecified"``). Base = the
articulated ``Control_N`` runs, as experiment_3_partialgoals_graphs.py reads them.
"""
import dataclasses

from experiments.articulated_parts import articulated_target
from experiments.spec import Experiment

# (scale, ss, alpha, planner samples)
_RUNS = {"button_on": (1.6, 4, 20.0, 5), "button_off": (1.6, 4, 20.0, 5), "switch_on": (1.5, 4, 30.0, 5),
         "switch_off": (1.5, 4, 30.0, 5), "drawer_open": (1.5, 4, 40.0, 5), "drawer_close": (1.5, 4, 40.0, 5),
         "door_left": (1.2, 4, 40.0, 4), "door_right": (1.2, 4, 15.0, 4)}

EXPERIMENT = Experiment(
    name="underspecified_objectives", title="UnderspecifiedObjectives",
    targets=tuple(dataclasses.replace(articulated_target(n), scale=s, repeats=ss, sigma=a, gpc_samples=k,
                                      itps_scale=None, loc_target=None) for n, (s, ss, a, k) in _RUNS.items()),
    methods=("base", "dynaguide", "gc", "gpc"), goal_quality="underspecified",
    source="paper_experiments/calvin_underspecified_objectives.sh, experiment_3_partialgoals_graphs.py")
