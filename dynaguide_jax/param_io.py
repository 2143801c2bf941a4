"""Save / restore converted or trained params with orbax, with a JSON config beside them."""
from __future__ import annotations

import json
import os

import jax
import numpy as np

META_FILE = "dynaguide.json"


def save_params(directory: str | os.PathLike, params, meta: dict) -> str:
    """Write ``params`` (orbax, under ``directory/params``) and ``meta`` (JSON) atomically enough
    that a reader never sees a half-written checkpoint: the JSON is written last."""
    import orbax.checkpoint as ocp

    directory = os.path.abspath(os.fspath(directory))
    os.makedirs(directory, exist_ok=True)
    target = os.path.join(directory, "params")
    ckpt = ocp.StandardCheckpointer()
    ckpt.save(target, jax.tree.map(np.asarray, params), force=True)
    ckpt.wait_until_finished()
    tmp = os.path.join(directory, META_FILE + ".tmp")
    with open(tmp, "w") as f:
        json.dump(meta, f, indent=2, sort_keys=True)
    os.replace(tmp, os.path.join(directory, META_FILE))
    return directory


def is_saved_params(path: str | os.PathLike) -> bool:
    return os.path.isfile(os.path.join(os.fspath(path), META_FILE))


def load_params(directory: str | os.PathLike) -> tuple[dict, dict]:
    """Inverse of ``save_params``: ``(meta, params)`` with numpy leaves."""
    import orbax.checkpoint as ocp

    directory = os.path.abspath(os.fspath(directory))
    if not is_saved_params(directory):
        raise FileNotFoundError(f"{directory} has no {META_FILE}: not a saved dynaguide checkpoint")
    with open(os.path.join(directory, META_FILE)) as f:
        meta = json.load(f)
    params = ocp.StandardCheckpointer().restore(os.path.join(directory, "params"))
    return meta, jax.tree.map(np.asarray, params)
