"""MovableObjects: steer toward moving each block (the ``*_lift`` goal sets, 80 goals each).

paper_experiments/calvin_movable_object.sh: DynaGuide 2/4/30, planner 5 samples, GC; configs
calvin_exp_configs_examples/{red,blue,pink}_lift.json (door closed, blocks on the table only, ``*_lift_80``
goals; the built-in world's blocks always start on the table). Success is
what experiment_2_blocks.py counts, "Block Move": the first event is the end effector within 0.1 m
of that block while it moved > 1 mm (``<colour>_displace``). Base = the articulated ``Control_N`` runs.
"""
from experiments.spec import Experiment, Target

EXPERIMENT = Experiment(
    name="movable_objects", title="MovableObjects",
    targets=tuple(Target(name=f"{c}_lift", success=(f"{c}_displace",), positives=(f"{c}_lift",),
                         env_setup=(("cubes_table_only", True), ("sliding_door", 0.0)), scale=2.0, repeats=4,
                         sigma=30.0, goals_per_behaviour=80)
                  for c in ("red", "blue", "pink")),
    methods=("base", "dynaguide", "gc", "gpc"),
    source="paper_experiments/calvin_movable_object.sh, experiment_2_blocks.py")
