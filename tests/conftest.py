import atexit
import os
import shutil
import tempfile

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# The tests are compile-bound on CPU (small arrays, many programs): XLA's backend optimisation level 0
# about halves compile times, and the classic elemental emitters instead of the new fusion emitters
# cut them by another ~30 % (measured on tests/test_closed_loop.py: 110 s -> 77 s); results agree
# with the defaults far inside the tests' tolerances. Exported, so the `dynaguide` subprocesses of
# the CLI tests compile the same way.
os.environ.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false")
# One compilation cache per test session, new and empty each time (nothing carries over between
# sessions), shared with the `dynaguide` subprocesses the CLI tests start: runs that compile the
# same program (a killed run and its resumption, repeated in-process trainings) compile it once.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _cache = tempfile.mkdtemp(prefix="dynaguide-test-jax-cache-")
    atexit.register(shutil.rmtree, _cache, ignore_errors=True)
    os.environ.update(JAX_COMPILATION_CACHE_DIR=_cache, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                      JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

torch = pytest.importorskip("torch")
# two cores: one thread per pytest-xdist worker (`-n 2`), both for a serial run
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else 2)


@pytest.fixture
def rng():
    return np.random.default_rng(0)
