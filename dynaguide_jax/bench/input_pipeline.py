"""Input-pipeline benchmark for dynamics training: can the host feed the accelerator?

Builds a float16 feature cache of the paper's size (256 patches x 384 per frame, memory-mapped,
as ``dynaguide data cache`` writes it) in a temporary directory, then times what the trainer does
per step outside the jitted step: draw a global batch of windows (current + future frame
features, proprio, actions), gather them from the cache and place them on the devices. Variants:
features kept float16 (the default) or converted to float32 on the host, and 0 (in the loop) or
more batches prefetched on background threads. Each JSON line carries the feed rate the dynamics
step needs at 40% MFU on an H100, so the figures say whether training there would be input-bound.
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import os
import tempfile
import time

import jax
import numpy as np

from dynaguide_jax.bench.dynamics_training import PEAK_BF16_TFLOPS
from dynaguide_jax.bench.timing import environment
from dynaguide_jax.data.episodes import EpisodeData
from dynaguide_jax.data.windows import DynamicsWindows
from dynaguide_jax.dynamics import DynamicsConfig
from dynaguide_jax.dynamics.model import flops_per_sample
from dynaguide_jax.training.mesh import global_batch, make_mesh, process_rows
from dynaguide_jax.training.prefetch import Prefetcher


@dataclasses.dataclass(frozen=True)
class InputBenchConfig:
    frames: int = 8192  # 1.6 GB of float16 features at the paper's size
    episode_length: int = 64
    global_batch: int = 256
    batches: int = 30
    feature_dtypes: tuple[str, ...] = ("float16", "float32")  # float32: converted on the host
    prefetch: tuple[int, ...] = (0, 2, 4)
    directory: str = dataclasses.field(default="", metadata={
        "help": "where to write the cache ('': a temporary directory, removed after)"})


def synthetic_cache(path: str, frames: int, tokens: int, dim: int) -> np.ndarray:
    """A float16 ``[frames, tokens, dim]`` memory-mapped cache filled with random values."""
    arr = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=(frames, tokens, dim))
    rng = np.random.default_rng(0)
    for s in range(0, frames, 256):
        arr[s:s + 256] = rng.standard_normal((min(256, frames - s), tokens, dim), np.float32)
    arr.flush()
    return np.load(path, mmap_mode="r")


def needed_rate(config: DynamicsConfig, mfu: float = 0.4, peak_tflops: float = PEAK_BF16_TFLOPS["H100"]) -> float:
    """Samples/s one device trains at ``mfu`` of ``peak_tflops`` (training = 3x forward FLOPs)."""
    return mfu * peak_tflops * 1e12 / (3 * flops_per_sample(config))


def run(cfg: InputBenchConfig, emit=print) -> list[dict]:
    model = DynamicsConfig()
    if cfg.frames < 2 * cfg.episode_length or cfg.episode_length <= model.horizon:
        raise ValueError(f"need >= 2 episodes longer than the horizon {model.horizon}: "
                         f"frames={cfg.frames}, episode_length={cfg.episode_length}")
    env, mesh, rows = environment(), make_mesh(), process_rows(cfg.global_batch)
    need = needed_rate(model)
    results = []
    with tempfile.TemporaryDirectory(dir=cfg.directory or None) as tmp:
        feats = synthetic_cache(os.path.join(tmp, "features.npy"), cfg.frames, model.predicted_tokens,
                                model.feature_dim)
        rng = np.random.default_rng(1)
        n = cfg.frames - cfg.frames % cfg.episode_length
        data = EpisodeData(obs={"proprio": rng.standard_normal((cfg.frames, model.proprio_dim), np.float32)},
                           actions=rng.standard_normal((cfg.frames, model.action_dim), np.float32),
                           episode_ends=np.arange(cfg.episode_length, n + 1, cfg.episode_length))
        windows = DynamicsWindows(data, feats[:n], model.horizon)
        for dtype, depth in itertools.product(cfg.feature_dtypes, cfg.prefetch):
            keep = None if dtype == str(feats.dtype) else np.dtype(dtype)

            def produce(i, keep=keep):
                return global_batch(mesh, windows.batch(i, cfg.global_batch, 0, rows, keep))

            jax.block_until_ready(produce(0))  # page the cache in once, outside the timing
            with Prefetcher(produce, range(1, cfg.batches + 1), depth) as loader:
                t0 = time.perf_counter()
                for batch in loader:
                    jax.block_until_ready(batch)
                sec = (time.perf_counter() - t0) / cfg.batches
            per_sample = sum(x.nbytes for x in jax.tree.leaves(batch)) / cfg.global_batch
            rate = cfg.global_batch / sec
            row = {"bench": "dynamics_input", "feature_dtype": dtype, "prefetch": depth,
                   "global_batch": cfg.global_batch, "ms_per_batch": round(sec * 1e3, 2),
                   "samples_per_s": round(rate, 1), "gb_per_s_to_devices": round(rate * per_sample / 1e9, 2),
                   "needed_samples_per_s_h100_40pct_mfu": round(need, 1),
                   "feeds_h100_at_40pct_mfu": bool(rate >= need), "cache_frames": cfg.frames,
                   "host_cores": os.cpu_count(), **env}
            results.append(row)
            emit(json.dumps(row))
    return results

