"""The paper's five experiments (``dynaguide experiment NAME``): typed configs (``spec``, one module per
experiment), goal sets (``goals``), the resumable runner (``runner``) and tables/figures (``analysis``)."""
from experiments.articulated_parts import EXPERIMENT as ARTICULATED_PARTS
from experiments.movable_objects import EXPERIMENT as MOVABLE_OBJECTS
from experiments.multi_objectives import EXPERIMENT as MULTI_OBJECTIVES
from experiments.spec import Experiment, Target
from experiments.underrepresented_behaviors import EXPERIMENT as UNDERREPRESENTED_BEHAVIORS
from experiments.underspecified_objectives import EXPERIMENT as UNDERSPECIFIED_OBJECTIVES

EXPERIMENTS = {e.name: e for e in (ARTICULATED_PARTS, MOVABLE_OBJECTS, UNDERSPECIFIED_OBJECTIVES, MULTI_OBJECTIVES,
                                   UNDERREPRESENTED_BEHAVIORS)}


def get_experiment(name: str) -> Experiment:
    """The experiment called ``name`` (``EXPERIMENTS``' keys; the paper's CamelCase titles work too)."""
    for e in EXPERIMENTS.values():
        if name in (e.name, e.title, e.title.lower()):
            return e
    raise KeyError(f"unknown experiment {name!r}; choose from {sorted(EXPERIMENTS)}")


__all__ = ["EXPERIMENTS", "Experiment", "Target", "get_experiment"]
