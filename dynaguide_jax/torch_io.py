"""Reading PyTorch weight files safely (no arbitrary unpickling) into numpy state dicts."""
from __future__ import annotations

import os
from typing import Mapping

import numpy as np


class UnsafeCheckpointError(ValueError):
    """A checkpoint that cannot be read without executing arbitrary pickled code."""


def load_state_dict(path: str | os.PathLike, *, key: str | None = None) -> dict[str, np.ndarray]:
    """Read ``.safetensors`` (no torch needed) or a torch file with ``weights_only=True``.

    ``key`` selects a nested dict (e.g. ``"model"``) when the file wraps the state dict.
    Returns float32/int numpy arrays keyed by the original parameter names.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no weight file at {path}")
    if path.endswith(".safetensors"):
        from safetensors.numpy import load_file

        try:
            return dict(load_file(path))
        except Exception as e:  # bf16 tensors need the torch reader
            if "bfloat16" not in str(e).lower():
                raise ValueError(f"{path}: not a readable safetensors file ({e})") from e
    obj = load_torch_file(path)
    if key is not None:
        if not isinstance(obj, Mapping) or key not in obj:
            raise KeyError(f"{path}: expected a dict with key {key!r}")
        obj = obj[key]
    return tensors_to_numpy(obj, path)


def load_torch_file(path: str):
    try:
        import torch
    except ImportError as e:  # torch is only needed for torch-format files
        raise ImportError(
            f"reading {path} needs PyTorch (pip install torch); .safetensors files do not"
        ) from e
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path)
    try:
        with torch.serialization.safe_globals(_numpy_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        if "weights_only" in str(e) or "Unsupported global" in str(e):
            raise UnsafeCheckpointError(
                f"{path} holds pickled Python objects beyond tensors, so it cannot be loaded "
                "safely. Re-save it as a plain state dict in a trusted environment, e.g. "
                "torch.save(model.state_dict(), 'weights.pth') or safetensors.torch.save_file."
            ) from e
        raise ValueError(f"{path}: not a readable PyTorch file ({e})") from e


def _numpy_globals() -> list:
    """Plain numpy arrays (e.g. robomimic's normalisation stats) are data, not code: allow exactly
    the reconstructors and dtypes they need in ``weights_only`` loading."""
    allowed = [np.ndarray, np.dtype]
    for mod in ("numpy._core.multiarray", "numpy.core.multiarray"):
        try:
            allowed.append(__import__(mod, fromlist=["_reconstruct"])._reconstruct)
        except (ImportError, AttributeError):
            pass
    for name in ("Float16DType", "Float32DType", "Float64DType", "Int8DType", "Int16DType", "Int32DType",
                 "Int64DType", "UInt8DType", "BoolDType"):
        if hasattr(np, "dtypes") and hasattr(np.dtypes, name):
            allowed.append(getattr(np.dtypes, name))
    return allowed


def tensors_to_numpy(state: Mapping, source: str = "state dict") -> dict[str, np.ndarray]:
    """Flatten a (possibly nested) mapping of tensors to ``{dotted.name: np.ndarray}``."""
    out: dict[str, np.ndarray] = {}

    def visit(prefix: str, value):
        if isinstance(value, Mapping):
            for k, v in value.items():
                visit(f"{prefix}{k}.", v)
        elif hasattr(value, "detach"):
            t = value.detach().cpu()
            if str(t.dtype) in ("torch.bfloat16", "torch.float16"):
                t = t.float()
            out[prefix[:-1]] = t.numpy()
        elif isinstance(value, np.ndarray):
            out[prefix[:-1]] = value

    if not isinstance(state, Mapping):
        raise ValueError(f"{source}: expected a state dict (mapping of names to tensors)")
    visit("", state)
    return out


def linear(state: Mapping[str, np.ndarray], name: str) -> dict[str, np.ndarray]:
    """torch ``Linear`` ``name.weight [out, in]`` / ``name.bias`` -> Flax Dense params."""
    p = {"kernel": np.ascontiguousarray(state[f"{name}.weight"].T)}
    if f"{name}.bias" in state:
        p["bias"] = state[f"{name}.bias"]
    return p


def layer_norm(state: Mapping[str, np.ndarray], name: str) -> dict[str, np.ndarray]:
    return {"scale": state[f"{name}.weight"], "bias": state[f"{name}.bias"]}


def check_keys(expected: set[str], state: Mapping[str, np.ndarray], source: str, ignored=()) -> None:
    """``state`` must hold exactly the ``expected`` keys (plus any under ``ignored`` prefixes);
    otherwise raise ``KeyError`` listing every missing and unexpected key."""
    extra = sorted(k for k in state if k not in expected and not k.startswith(tuple(ignored)))
    missing = sorted(k for k in expected if k not in state)
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing keys: {missing[:20]}{' ...' if len(missing) > 20 else ''}")
        if extra:
            parts.append(f"unexpected keys: {extra[:20]}{' ...' if len(extra) > 20 else ''}")
        raise KeyError(f"{source}: " + "; ".join(parts))


def check_shape(name: str, arr: np.ndarray, shape: tuple) -> None:
    if tuple(arr.shape) != tuple(shape):
        raise ValueError(f"{name}: expected shape {tuple(shape)}, got {tuple(arr.shape)}")


def split_qkv(weight: np.ndarray, bias: np.ndarray) -> dict[str, dict[str, np.ndarray]]:
    """A fused ``[3D, D]`` q/k/v projection (torch MultiheadAttention ``in_proj``, DinoV2 ``qkv``)
    -> Flax ``query`` / ``key`` / ``value`` Dense params."""
    return {n: {"kernel": np.ascontiguousarray(w.T), "bias": b}
            for n, w, b in zip(("query", "key", "value"), np.split(weight, 3), np.split(bias, 3))}


def as_float32(tree):
    """Nested dict of arrays -> the same tree of float32 numpy arrays."""
    if isinstance(tree, dict):
        return {k: as_float32(v) for k, v in tree.items()}
    return np.asarray(tree, np.float32)
