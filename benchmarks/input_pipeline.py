"""Dynamics-training input pipeline: host feed rate vs. what an H100 needs (JSON lines). --help for options."""
import sys

from dynaguide_jax.cli.bench import run_input_pipeline

if __name__ == "__main__":
    sys.exit(run_input_pipeline())
