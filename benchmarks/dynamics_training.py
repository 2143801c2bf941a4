"""Dynamics-training throughput, cached features vs pixels (JSON lines). --help for options."""
import sys

from dynaguide_jax.cli.bench import run_dynamics_training

if __name__ == "__main__":
    sys.exit(run_dynamics_training())
