"""Training windows and the feature cache."""
import json
import os

import jax
import numpy as np
import pytest

from dynaguide_jax.data import (DynamicsWindows, EpisodeData, action_normalization, build_feature_cache,
                                load_feature_cache)
from dynaguide_jax.encoders import DinoV2, DinoV2Config, init_dinov2, preprocess


def episodes(lengths=(10, 30, 20)):
    n = sum(lengths)
    frames = np.arange(n, dtype=np.float32)
    return EpisodeData(obs={"proprio": np.repeat(frames[:, None], 3, 1)}, actions=np.repeat(frames[:, None], 7, 1),
                       episode_ends=np.cumsum(lengths))


def test_dynamics_windows_stay_inside_episodes_and_split_by_rows():
    data = episodes()
    feats = np.repeat(np.arange(data.num_frames, dtype=np.float32)[:, None, None], 4, 1).repeat(2, 2)
    w = DynamicsWindows(data, feats, horizon=16)
    assert w.valid.min() >= 10 and not np.isin(np.arange(0, 10), w.valid).any()  # episode 0 is too short
    for step in range(10):
        b = w.batch(step, 8, seed=3)
        t = b["proprio"][:, 0]
        np.testing.assert_array_equal(b["future_patches"][:, 0, 0], t + 16)
        np.testing.assert_array_equal(b["actions"][:, :, 0], t[:, None] + np.arange(16))
        end = data.frame_end[t.astype(int)]
        assert (t + 16 < end).all()
    full = w.batch(5, 8, seed=3)
    halves = [w.batch(5, 8, seed=3, rows=slice(i * 4, (i + 1) * 4)) for i in range(2)]
    np.testing.assert_array_equal(np.concatenate([h["patches"] for h in halves]), full["patches"])
    with pytest.raises(ValueError, match="longer than the horizon"):
        DynamicsWindows(episodes((5, 6)), np.zeros((11, 1, 1)), horizon=16)
    with pytest.raises(ValueError, match="features have"):
        DynamicsWindows(data, feats[:5], horizon=16)


def test_action_normalization_maps_to_unit_range():
    a = np.random.default_rng(0).uniform([-2, 0, 5], [4, 1, 5], size=(100, 3)).astype(np.float32)
    s = action_normalization(a)
    n = (a - s["offset"]) / s["scale"]
    assert n.min() >= -1 - 1e-6 and n.max() <= 1 + 1e-6 and np.all(s["scale"] > 0)


def test_feature_cache_matches_direct_encoding_and_resumes(tmp_path):
    cfg = DinoV2Config(hidden_size=32, num_layers=1, num_heads=2, pos_grid=2)
    params = init_dinov2(cfg, jax.random.key(0), 28)
    images = np.random.default_rng(0).integers(0, 256, (10, 40, 40, 3), dtype=np.uint8)
    direct = np.asarray(DinoV2(cfg).apply({"params": params}, preprocess(images, 28))["patches"])

    class Interrupt(Exception):
        pass

    class Flaky(np.ndarray):  # raises when the encoder reaches frame 6: a crash mid-build
        def __getitem__(self, idx):
            if isinstance(idx, slice) and (idx.start or 0) >= 6:
                raise Interrupt
            return np.asarray(self).__getitem__(idx)

    with pytest.raises(Interrupt):
        build_feature_cache(tmp_path / "c", images.view(Flaky), cfg, params, 28, batch_size=3, dtype="float32",
                            progress=False)
    with pytest.raises(FileNotFoundError, match="partially built"):
        load_feature_cache(tmp_path / "c")
    assert json.load(open(tmp_path / "c" / "progress.json"))["done"] == 6
    feats = build_feature_cache(tmp_path / "c", images, cfg, params, 28, batch_size=3, dtype="float32", progress=False)
    np.testing.assert_allclose(np.asarray(feats), direct, atol=1e-5)
    assert not os.path.exists(tmp_path / "c" / "progress.json")
    other = init_dinov2(cfg, jax.random.key(1), 28)
    with pytest.raises(ValueError, match="different encoder"):
        load_feature_cache(tmp_path / "c", cfg, other, 28)
    load_feature_cache(tmp_path / "c", cfg.replace(attention="cudnn"), params, 28)  # same features, same cache
    with pytest.raises(ValueError, match="different encoder"):
        load_feature_cache(tmp_path / "c", cfg.replace(dtype="bfloat16"), params, 28)
    half = build_feature_cache(tmp_path / "h", images, cfg, params, 28, batch_size=4, progress=False)
    assert half.dtype == np.float16 and np.abs(np.asarray(half, np.float32) - direct).max() < 1e-2
