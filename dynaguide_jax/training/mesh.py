"""Device meshes and shardings: data parallel by default, FSDP-style parameter sharding optional.

The mesh has two axes, ``("data", "fsdp")``. Batches are split over both (every device sees a
different slice); parameters are replicated, or, with ``fsdp > 1``, each large parameter is split
along its largest axis divisible by the ``fsdp`` size. XLA inserts the all-gathers and
reduce-scatters. Multi-host: every process feeds its own rows of the global batch.
"""
from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

BATCH_AXES = ("data", "fsdp")


def make_mesh(fsdp: int = 1, devices=None) -> Mesh:
    devices = list(jax.devices() if devices is None else devices)
    if fsdp < 1 or len(devices) % fsdp:
        raise ValueError(f"fsdp={fsdp} must divide the number of devices ({len(devices)})")
    return Mesh(np.asarray(devices).reshape(len(devices) // fsdp, fsdp), BATCH_AXES)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def param_sharding(mesh: Mesh, params, min_size: int = 2**12):
    """Per-leaf shardings: replicated, or split over ``fsdp`` along the largest divisible axis."""
    n = mesh.shape["fsdp"]

    def one(x):
        if n == 1 or x.size < min_size:
            return replicated(mesh)
        axes = sorted(range(x.ndim), key=lambda a: -x.shape[a])
        for a in axes:
            if x.shape[a] % n == 0:
                spec = [None] * x.ndim
                spec[a] = "fsdp"
                return NamedSharding(mesh, P(*spec))
        return replicated(mesh)

    return jax.tree.map(one, params)


def global_batch(mesh: Mesh, local_batch: dict) -> dict:
    """Assemble this process's rows into globally sharded arrays (works on one or many hosts)."""
    sharding = batch_sharding(mesh)
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), local_batch)


def process_rows(global_size: int) -> slice:
    """The rows of a global batch that belong to this process."""
    n, i = jax.process_count(), jax.process_index()
    if global_size % n:
        raise ValueError(f"global batch {global_size} is not divisible by {n} processes")
    per = global_size // n
    return slice(i * per, (i + 1) * per)
