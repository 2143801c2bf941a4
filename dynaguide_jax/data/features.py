"""A frozen-encoder feature cache: encode every frame once, store the patches beside the dataset.

Layout of a cache directory: ``features.npy`` (``[N, P, D]``, float16 by default, memory-mapped),
``progress.json`` while encoding, ``meta.json`` once complete. Encoding runs in jitted batches with
a progress bar and resumes where an interrupted run stopped; readers refuse a cache without
``meta.json`` (or one built with another encoder), so a partial cache never reads as complete.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from dynaguide_jax._checks import check_int
from dynaguide_jax.encoders.dinov2 import DinoV2, num_patches
from dynaguide_jax.encoders.dinov2_config import DinoV2Config
from dynaguide_jax.encoders.preprocess import preprocess


def encoder_fingerprint(config: DinoV2Config, params, image_size: int) -> str:
    # the attention kernel does not change the features, so it is not part of the fingerprint
    arch = {k: v for k, v in dataclasses.asdict(config).items() if k != "attention"}
    h = hashlib.sha256(json.dumps(arch, indent=2, sort_keys=True).encode() + str(image_size).encode())
    for leaf in jax.tree.leaves(params)[:4]:
        h.update(np.asarray(leaf).tobytes()[:4096])
    return h.hexdigest()[:16]


def build_feature_cache(directory: str | os.PathLike, images: np.ndarray, config: DinoV2Config, params,
                        image_size: int = 224, batch_size: int = 64, dtype: str = "float16",
                        progress: bool = True) -> np.ndarray:
    """Encode ``images [N, H, W, 3]`` (uint8) into ``directory``; returns the memory-mapped array."""
    directory = os.fspath(directory)
    if len(images) == 0:
        raise ValueError("images is empty: nothing to encode")
    if hasattr(images, "shape") and (len(images.shape) != 4 or images.shape[-1] != 3):  # streams: per chunk below
        raise ValueError(f"images must be [N, H, W, 3], got shape {tuple(images.shape)}")
    check_int("batch_size", batch_size)
    if dtype not in ("float16", "float32"):
        raise ValueError(f"dtype must be 'float16' or 'float32', got {dtype!r}")
    os.makedirs(directory, exist_ok=True)
    fp = encoder_fingerprint(config, params, image_size)
    meta_path, prog_path = os.path.join(directory, "meta.json"), os.path.join(directory, "progress.json")
    arr_path = os.path.join(directory, "features.npy")
    n = len(images)
    shape = (n, num_patches(config, image_size), config.hidden_size)
    if os.path.exists(meta_path):
        arr = load_feature_cache(directory, config, params, image_size)
        if tuple(arr.shape) != shape:
            raise ValueError(f"feature cache {directory} holds features {tuple(arr.shape)}, but {n} images encode to "
                             f"{shape}: it was built from other images (use another directory)")
        return arr
    done = 0
    if os.path.exists(prog_path) and os.path.exists(arr_path):
        with open(prog_path) as f:
            prog = json.load(f)
        if prog.get("fingerprint") == fp and tuple(prog.get("shape", ())) == shape:
            done = int(prog["done"])
    if done == 0:
        out = np.lib.format.open_memmap(arr_path, mode="w+", dtype=dtype, shape=shape)
    else:
        out = np.load(arr_path, mmap_mode="r+")

    @jax.jit
    def encode(batch):
        return DinoV2(config).apply({"params": params}, preprocess(batch, image_size))["patches"]

    bar = tqdm(total=n, initial=done, desc="encode frames", unit="frame", disable=None if progress else True)
    for start in range(done, n, batch_size):
        chunk = np.asarray(images[start:start + batch_size])
        if chunk.ndim != 4 or chunk.shape[-1] != 3:
            raise ValueError(f"images must be [N, H, W, 3], got frames of shape {chunk.shape[1:]}")
        pad = batch_size - len(chunk)  # keep one compiled shape for the last batch
        feats = encode(jnp.asarray(np.concatenate([chunk, np.repeat(chunk[-1:], pad, 0)]) if pad else chunk))
        feats = np.asarray(feats[: len(chunk)], dtype)
        if not np.isfinite(feats).all():  # nothing written: the cache stays resumable, never reads as complete
            raise FloatingPointError(f"feature cache {directory}: the encoder gave NaN/inf for frames "
                                     f"{start}..{start + len(chunk) - 1} (check the encoder weights and images)")
        out[start:start + len(chunk)] = feats
        out.flush()
        with open(prog_path, "w") as f:
            json.dump({"done": start + len(chunk), "fingerprint": fp, "shape": shape}, f)
        bar.update(len(chunk))
    bar.close()
    with open(meta_path + ".tmp", "w") as f:
        json.dump({"fingerprint": fp, "shape": shape, "dtype": dtype, "image_size": image_size,
                   "encoder": json.loads(config.to_json())}, f, indent=2)
    os.replace(meta_path + ".tmp", meta_path)
    os.remove(prog_path)
    return np.load(arr_path, mmap_mode="r")


def load_feature_cache(directory: str | os.PathLike, config: DinoV2Config | None = None, params=None,
                       image_size: int | None = None) -> np.ndarray:
    """Open a complete cache (memory-mapped). With an encoder given, check it built the cache."""
    directory = os.fspath(directory)
    meta_path = os.path.join(directory, "meta.json")
    if not os.path.exists(meta_path):
        state = "partially built" if os.path.exists(os.path.join(directory, "progress.json")) else "missing"
        raise FileNotFoundError(f"feature cache {directory} is {state}: rebuild it (encoding resumes)")
    try:
        with open(meta_path) as f:
            meta = json.load(f)
    except (OSError, ValueError) as e:  # JSONDecodeError, a directory named meta.json, bad bytes
        raise ValueError(f"{meta_path}: not a feature cache meta file ({e}); rebuild the cache") from None
    missing = [k for k in ("fingerprint", "shape", "image_size") if k not in meta] if isinstance(meta, dict) else ["*"]
    if missing:
        raise ValueError(f"{meta_path}: lacks {missing}; rebuild the cache")
    if config is not None and params is not None:
        fp = encoder_fingerprint(config, params, image_size or meta["image_size"])
        if fp != meta["fingerprint"]:
            raise ValueError(f"feature cache {directory} was built with a different encoder or image size")
    arr_path = os.path.join(directory, "features.npy")
    if not os.path.isfile(arr_path):
        raise FileNotFoundError(f"{arr_path} is missing (meta.json is there): rebuild the cache")
    try:
        arr = np.load(arr_path, mmap_mode="r")
    except (OSError, ValueError) as e:  # truncated file, bad header, pickled data
        raise ValueError(f"{arr_path}: not a readable .npy array ({e}); rebuild the cache") from None
    if not isinstance(arr, np.ndarray) or tuple(arr.shape) != tuple(meta["shape"]):
        raise ValueError(f"{arr_path}: features.npy has shape {getattr(arr, 'shape', None)}, "
                         f"meta says {meta['shape']}")
    if arr.dtype.kind != "f":
        raise ValueError(f"{arr_path}: features must be float16/float32, got {arr.dtype}")
    return arr
