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
    os.makedirs(directory, exist_ok=True)
    fp = encoder_fingerprint(config, params, image_size)
    meta_path, prog_path = os.path.join(directory, "meta.json"), os.path.join(directory, "progress.json")
    arr_path = os.path.join(directory, "features.npy")
    n = len(images)
    shape = (n, num_patches(config, image_size), config.hidden_size)
    if os.path.exists(meta_path):
        return load_feature_cache(directory, config, params, image_size)
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
        pad = batch_size - len(chunk)  # keep one compiled shape for the last batch
        feats = encode(jnp.asarray(np.concatenate([chunk, np.repeat(chunk[-1:], pad, 0)]) if pad else chunk))
        out[start:start + len(chunk)] = np.asarray(feats[: len(chunk)], dtype)
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
    with open(meta_path) as f:
        meta = json.load(f)
    if config is not None and params is not None:
        fp = encoder_fingerprint(config, params, image_size or meta["image_size"])
        if fp != meta["fingerprint"]:
            raise ValueError(f"feature cache {directory} was built with a different encoder or image size")
    arr = np.load(os.path.join(directory, "features.npy"), mmap_mode="r")
    if tuple(arr.shape) != tuple(meta["shape"]):
        raise ValueError(f"feature cache {directory}: features.npy has shape {arr.shape}, meta says {meta['shape']}")
    return arr
