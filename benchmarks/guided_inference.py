"""Guided-inference benchmark (JSON lines). Usage: python benchmarks/guided_inference.py --help"""
import sys

from dynaguide_jax.cli.bench import run_guided_inference

if __name__ == "__main__":
    sys.exit(run_guided_inference())
