"""UnderrepresentedBehaviors: base policies trained with switch_on cut to p % of its demonstrations.

paper_experiments/calvin_underrepresented_behaviors.sh trains one base policy per split (1, 3, 5, 10,
20, 40, 60, 80 %) and evaluates each on switch_on (calvin_exp_configs_examples/switch_on.json) with
DynaGuide 1.5/4/30, its own control (scale 0) and the planner. The script's run names and its
commented-out data cut say door_left, its evaluation and plot (experiment_5_deprivation_graphs.py)
switch_on; the behaviour cut here is the one evaluated, switch_on.
"""
from experiments.spec import Experiment, Target

FRACTIONS = (0.01, 0.03, 0.05, 0.10, 0.20, 0.40, 0.60, 0.80)

EXPERIMENT = Experiment(
    name="underrepresented_behaviors", title="UnderrepresentedBehaviors",
    targets=tuple(Target(name=f"switch_on_{p * 100:g}pct", success=("switch_on",), positives=("switch_on",),
                         env_setup=(("switch", 0.0),), scale=1.5, repeats=4, sigma=30.0, policy_fraction=p,
                         reduced="switch_on") for p in FRACTIONS),
    methods=("base", "dynaguide", "gpc"), control_base=False, figure="fraction",
    source="paper_experiments/calvin_underrepresented_behaviors.sh, experiment_5_deprivation_graphs.py")
