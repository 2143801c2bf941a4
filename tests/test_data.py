"""Training windows and the feature cache."""
import json
import os

import jax
import numpy as np
import pytest

from dynaguide_jax.data import (ActionTransform, DynamicsWindows, EpisodeData, action_normalization,
                                build_feature_cache, load_feature_cache)
from dynaguide_jax.data.episodes import split_at_segments
from dynaguide_jax.encoders import DinoV2, DinoV2Config, init_dinov2, preprocess


def episodes(lengths=(10, 30, 20)):
    n = sum(lengths)
    frames = np.arange(n, dtype=np.float32)
    return EpisodeData(obs={"proprio": np.repeat(frames[:, None], 3, 1)}, actions=np.repeat(frames[:, None], 7, 1),
                       episode_ends=np.cumsum(lengths))


def frame_coded_features(n):
    """``[n, 4, 2]`` patches whose every value is the frame index."""
    return np.repeat(np.arange(n, dtype=np.float32)[:, None, None], 4, 1).repeat(2, 2)


def test_segment_end_windows_match_the_original_training_dataset():
    """Every window of the default target equals the original's ``MultiviewDataset(padding=True,
    pad_mode="zeros")`` sample at the same index (tests/oracles/embedder_dataset.py): the state at t,
    the demo's final frame as target, the clipped actions from t zero-filled past the demo's end."""
    from tests.oracles.embedder_dataset import MultiviewDataset

    rng = np.random.default_rng(0)
    lengths = (10, 30, 3, 20, 16)
    n = sum(lengths)
    raw = rng.uniform(-2, 2, (n, 7)).astype(np.float32)
    proprio = rng.normal(size=(n, 15)).astype(np.float32)
    data = EpisodeData(obs={"proprio": proprio}, actions=raw, episode_ends=np.cumsum(lengths))
    w = DynamicsWindows(data, frame_coded_features(n), horizon=16, action_transform=ActionTransform("clip"))
    assert w.target == "segment_end"
    ends = np.cumsum(lengths)
    demos = [{"actions": np.clip(raw[a:b], -1, 1),  # the original's hdf5 stores clipped rel_actions
              "obs": {"third_person": np.broadcast_to(np.arange(a, b)[:, None, None, None], (b - a, 2, 2, 3)),
                      "proprio": proprio[a:b]}} for a, b in zip(np.r_[0, ends[:-1]], ends)]
    oracle = MultiviewDataset(demos, 16, ["third_person"], padding=True, pad_mode="zeros", proprio="proprio")
    assert len(oracle) == len(w.valid) == n
    got = w.at(w.valid)
    for i in range(len(oracle)):
        state, actions, target = oracle[i]
        assert got["patches"][i, 0, 0] == state["third_person"][0, 0, 0]
        assert got["future_patches"][i, 0, 0] == target["third_person"][0, 0, 0]
        np.testing.assert_array_equal(got["proprio"][i], state["proprio"])
        np.testing.assert_allclose(got["actions"][i], actions, rtol=0, atol=0)
    # batches draw from the same windows, and split by rows exactly
    full = w.batch(5, 8, seed=3)
    halves = [w.batch(5, 8, seed=3, rows=slice(i * 4, (i + 1) * 4)) for i in range(2)]
    np.testing.assert_array_equal(np.concatenate([h["actions"] for h in halves]), full["actions"])


def test_horizon_windows_stay_inside_episodes_and_split_by_rows():
    data = episodes()
    w = DynamicsWindows(data, frame_coded_features(data.num_frames), horizon=16, target="horizon")
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
        DynamicsWindows(episodes((5, 6)), np.zeros((11, 1, 1)), horizon=16, target="horizon")
    with pytest.raises(ValueError, match="features have"):
        DynamicsWindows(data, frame_coded_features(5), horizon=16)
    with pytest.raises(ValueError, match="target must be one of"):
        DynamicsWindows(data, frame_coded_features(data.num_frames), horizon=16, target="t+16")


def test_split_at_segments_recuts_play_ranges_into_segments():
    data = episodes((6, 8))  # two play ranges; segment 1 spans their boundary
    seg = np.r_[[0] * 4, [1] * 5, [2] * 5]
    out = split_at_segments(data, seg)
    np.testing.assert_array_equal(out.episode_ends, [4, 9, 14])
    w = DynamicsWindows(out, frame_coded_features(14), horizon=16)
    np.testing.assert_array_equal(w.at(np.array([4, 5, 8]))["future_patches"][:, 0, 0], [8, 8, 8])
    with pytest.raises(ValueError, match="segment 0 is split into several runs"):
        split_at_segments(data, np.r_[[0] * 4, [1] * 5, [0] * 5])
    with pytest.raises(ValueError, match="cover 3 frames"):
        split_at_segments(data, np.zeros(3))


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


def test_bad_episodes_windows_and_transforms_name_the_input():
    n, obs, acts = 10, {"proprio": np.zeros((10, 4), np.float32)}, np.zeros((10, 2), np.float32)
    with pytest.raises(TypeError, match="episode_ends must be integers"):
        EpisodeData(obs, acts, [4.5, 10])
    with pytest.raises(ValueError, match=r"actions must be \[N, A\]"):
        EpisodeData(obs, np.zeros(n), [n])
    with pytest.raises(FloatingPointError, match="actions"):
        EpisodeData(obs, np.full((n, 2), np.nan), [n])
    with pytest.raises(FloatingPointError, match=r"obs\['p'\]"):
        EpisodeData({"p": np.full((n, 3), np.inf)}, acts, [n])
    data, feats = EpisodeData(obs, acts, [4, n]), np.zeros((n, 3, 8), np.float16)
    with pytest.raises(ValueError, match=r"features must be \[N, C\*P, D\]"):
        DynamicsWindows(data, np.zeros((n, 8)), 3)
    with pytest.raises(TypeError, match="horizon must be an integer"):
        DynamicsWindows(data, feats, 2.5)
    with pytest.raises(TypeError, match="action_transform must be an ActionTransform"):
        DynamicsWindows(data, feats, 3, action_transform="clip")
    w = DynamicsWindows(data, feats, 3, target="horizon")
    with pytest.raises(ValueError, match="global_batch must be >= 1"):
        w.batch(0, 0)
    with pytest.raises(ValueError, match=r"t: frames \[9\] start no window"):
        w.at(np.array([0, 9]))
    bad = feats.copy()
    bad[5] = np.nan
    with pytest.raises(FloatingPointError, match=r"frame\(s\) \[5\]"):
        DynamicsWindows(data, bad, 3).at(np.array([5]))
    with pytest.raises(ValueError, match="minmax scale must be finite and > 0"):
        ActionTransform("minmax", (0.0, 1.0), (0.0, 0.0))
    with pytest.raises(ValueError, match="actions have"):
        ActionTransform("minmax", (1.0, 1.0, 1.0), (0.0, 0.0, 0.0))(np.ones((3, 2)))
    with pytest.raises(FloatingPointError, match="actions"):
        action_normalization(np.array([[np.nan, 1.0], [1.0, 2.0]]))
    with pytest.raises(ValueError, match="non-empty"):
        ActionTransform.fit("minmax", np.zeros((0, 2)))


def test_corrupt_feature_cache_names_the_file(tmp_path):
    d = tmp_path / "cache"
    d.mkdir()
    (d / "meta.json").write_text("{not json")
    with pytest.raises(ValueError, match="meta.json: not a feature cache meta file"):
        load_feature_cache(d)
    (d / "meta.json").write_text(json.dumps({"fingerprint": "x"}))
    with pytest.raises(ValueError, match=r"meta.json: lacks \['shape', 'image_size'\]"):
        load_feature_cache(d)
    (d / "meta.json").write_text(json.dumps({"fingerprint": "x", "shape": [2, 3, 4], "image_size": 224}))
    with pytest.raises(FileNotFoundError, match="features.npy is missing"):
        load_feature_cache(d)
    np.save(d / "features.npy", np.zeros((2, 3, 4), np.float16))
    with open(d / "features.npy", "r+b") as f:
        f.truncate(100)
    with pytest.raises(ValueError, match="features.npy: not a readable .npy array"):
        load_feature_cache(d)
    np.save(d / "features.npy", np.zeros((2, 3, 5), np.float16))
    with pytest.raises(ValueError, match="meta says"):
        load_feature_cache(d)
