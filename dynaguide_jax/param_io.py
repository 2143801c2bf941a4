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
    """Inverse of ``save_params``: ``(meta, params)`` with numpy leaves.

    A missing directory, a directory that is not a saved checkpoint, an unreadable ``dynaguide.json``
    or a missing / corrupt orbax ``params`` folder each raise one error that names the path.
    """
    import orbax.checkpoint as ocp

    directory = os.path.abspath(os.fspath(directory))
    if not os.path.isdir(directory):
        what = "is a file, not a checkpoint directory" if os.path.exists(directory) else "does not exist"
        raise FileNotFoundError(f"{directory}: {what} (expected a directory written by save_params)")
    if not is_saved_params(directory):
        raise FileNotFoundError(f"{directory} has no {META_FILE}: not a saved dynaguide checkpoint")
    meta_path = os.path.join(directory, META_FILE)
    try:
        with open(meta_path) as f:
            meta = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{meta_path}: not a readable JSON checkpoint description ({e})") from e
    if not isinstance(meta, dict):
        raise ValueError(f"{meta_path}: expected a JSON object, got {type(meta).__name__}")
    target = os.path.join(directory, "params")
    if not os.path.isdir(target):
        raise FileNotFoundError(f"{target}: missing; {directory} has {META_FILE} but no orbax params folder")
    try:
        params = ocp.StandardCheckpointer().restore(target)
    except Exception as e:  # orbax / tensorstore raise many types for truncated or foreign files
        raise ValueError(f"{target}: not a readable orbax checkpoint ({type(e).__name__}: {e})") from e
    return meta, jax.tree.map(np.asarray, params)
