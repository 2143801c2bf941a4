"""The GPU benchmark list in one bounded run. Usage: python benchmarks/gpu_suite.py --help"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a checkout runs it without an install

from dynaguide_jax.cli.gpu_suite import run_gpu_suite  # noqa: E402

if __name__ == "__main__":
    sys.exit(run_gpu_suite())
