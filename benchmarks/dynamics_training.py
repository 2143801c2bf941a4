"""Dynamics-training throughput, cached features vs pixels (JSON lines). --help for options."""
import sys

from dynaguide_jax.training_benchmark import main

if __name__ == "__main__":
    sys.exit(main())
