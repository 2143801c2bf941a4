"""Guided-inference benchmark (JSON lines). Usage: python benchmarks/guided_inference.py --help"""
import sys

from dynaguide_jax.benchmark import main

if __name__ == "__main__":
    sys.exit(main())
