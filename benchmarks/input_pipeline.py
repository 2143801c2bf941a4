"""Dynamics-training input pipeline: host feed rate vs. what an H100 needs (JSON lines). --help for options."""
import sys

from dynaguide_jax.input_benchmark import main

if __name__ == "__main__":
    sys.exit(main())
