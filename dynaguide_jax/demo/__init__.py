"""``dynaguide demo``: the paper's ArticulatedParts experiment on the built-in world (``pipeline``),
its settings and presets (``config``), stage caching (``stages``), training (``train``) and the
closed-loop evaluation of every method (``evaluate``)."""
from dynaguide_jax.demo.config import PRESETS, TARGET_SETUPS, DemoConfig  # noqa: F401
from dynaguide_jax.demo.pipeline import run_demo, verdict  # noqa: F401
