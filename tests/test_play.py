"""Play data from the built-in world in the raw CALVIN layout: the whole data path on it.

The generator is deterministic per seed (and independent of the chunk size), every behaviour
appears in a long play, the written raw CALVIN files read back with the same values, the CALVIN
builder builds them, its segmentation finds the intended articulated interactions with the right
labels, and the goal-set exporter makes goal sets from them. Two compiled play programs in all
(play, rendering): the written play (with images) is the first 500 steps of the long play (without).
"""
import collections
import json
import os

import numpy as np
import pytest

from dynaguide_jax.envs import calvin_writer as cw
from dynaguide_jax.envs import play as pl

tfds = pytest.importorskip("tensorflow_datasets")
pytest.importorskip("tensorflow")

from data_pipelines.calvin.builder import build_calvin  # noqa: E402
from data_pipelines.calvin.raw import CalvinFormatError, episode_ranges, language_by_frame, read_frame  # noqa: E402
from data_pipelines.calvin.segmentation import segment_play  # noqa: E402
from dynaguide_jax.data.rlds import export_goal_sets_with_fallback, export_guidance_conditions  # noqa: E402

SEED, STREAMS = 3, 4
LONG = pl.PlayConfig.small(num_streams=STREAMS, steps=2400, chunk_steps=300, images=False)
WRITTEN = pl.PlayConfig.small(num_streams=STREAMS, steps=500, chunk_steps=300)  # the last chunk cut short
AGREEMENT_BAR = 0.9


@pytest.fixture(scope="module")
def long_play():
    return pl.collect_play(SEED, LONG)


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    root = tmp_path_factory.mktemp("play")
    summary = cw.write_play_calvin(str(root / "raw"), SEED, WRITTEN, validation_streams=1, range_steps=150)
    return root, summary


def agreement(its, segments, steps):
    """Recall: of the intended articulated interactions that happened, the fraction with a segment of
    the same label ending between the interaction's start and the next one's start. Precision: of the
    segments labelled articulated that lie within one stream, the fraction that end in such a window
    of their label. ``segments``: ``[(first, last, label)]`` in frame ids (``stream * steps + t``).
    Segments across two streams compare two independent worlds (the states jump at the junction) and
    are counted apart: ``across``."""
    cut = {last: label for _, last, label in segments}
    by_stream = collections.defaultdict(list)
    for it in its:
        by_stream[it.stream].append(it)
    windows, found, total = collections.defaultdict(list), collections.Counter(), collections.Counter()
    for stream, runs in by_stream.items():
        for k, it in enumerate(runs):
            end = runs[k + 1].first if k + 1 < len(runs) else steps
            frames = range(stream * steps + it.first, stream * steps + end)
            windows[it.behaviour].append(frames)
            if it.behaviour in pl.ARTICULATED and it.happened:
                total[it.behaviour] += 1
                found[it.behaviour] += any(cut.get(f) == it.behaviour for f in frames)
    labelled = [(a, b, name) for a, b, name in segments if name in pl.ARTICULATED]
    within = [(b, name) for a, b, name in labelled if a // steps == b // steps]
    precise = sum(any(b in w for w in windows[name]) for b, name in within)
    return {"recall": sum(found.values()) / sum(total.values()), "precision": precise / len(within),
            "interactions": sum(total.values()), "across": len(labelled) - len(within)}


def test_play_is_deterministic_per_seed_and_chunk_size(long_play, written):
    again = pl.collect_play(SEED, LONG)
    for name in ("robot_obs", "scene_obs", "rel_actions", "actions", "label"):
        np.testing.assert_array_equal(getattr(long_play, name), getattr(again, name))
    other = pl.collect_play(SEED + 1, LONG)
    assert not np.array_equal(other.scene_obs, long_play.scene_obs)
    # the written play (images on, its second chunk cut short) is the first 500 steps of the long one
    root, _ = written
    n = WRITTEN.steps
    for frame_id, (s, t) in ((0, (0, 0)), (n * 2 + 377, (2, 377)), (n * 4 - 1, (3, n - 1))):
        split = "validation" if s == STREAMS - 1 else "training"
        fr = read_frame(str(root / "raw" / split), frame_id)
        np.testing.assert_allclose(fr["scene_obs"], long_play.scene_obs[s, t], atol=1e-6)
        np.testing.assert_allclose(fr["robot_obs"], long_play.robot_obs[s, t], atol=1e-6)
        np.testing.assert_allclose(fr["rel_actions"], long_play.rel_actions[s, t], atol=1e-6)


def test_every_behaviour_appears_and_actions_are_calvins(long_play):
    its = pl.interactions(long_play.label, long_play.scene_obs)
    done = collections.Counter(it.behaviour for it in its if it.happened)
    print("\ninteractions that happened per behaviour:", dict(done))
    assert set(done) == set(pl.BEHAVIOURS)
    rate = sum(it.happened for it in its) / len(its)
    assert rate > 0.9, rate  # the rest: cut off at the end of a stream
    rel, ab, robot = long_play.rel_actions, long_play.actions, long_play.robot_obs
    assert np.abs(rel).max() <= 1.0 and set(np.unique(rel[..., 6])) <= {-1.0, 1.0}
    # CALVIN's to_relative_action: the absolute action is the commanded target
    np.testing.assert_allclose((ab[..., :3] - robot[..., :3]) / 0.02, rel[..., :3], atol=2e-4)
    np.testing.assert_array_equal(ab[..., 6], rel[..., 6])
    assert 0.05 < np.mean(long_play.label == pl.IDLE) < 0.4
    # the weights: a behaviour with weight 0 never starts
    rare = LONG.with_weights(door_left=0.0)
    assert rare.weight_array[pl.BEHAVIOURS.index("door_left")] == 0 and rare.weight_array.sum() == 13
    with pytest.raises(ValueError, match="unknown behaviour"):
        LONG.with_weights(door_up=1.0)
    with pytest.raises(ValueError, match="weights must be 14"):
        pl.PlayConfig(weights=(1.0,) * 3)


def test_segmentation_finds_the_intended_interactions(long_play):
    s, t = long_play.label.shape
    segs = segment_play(long_play.scene_obs.reshape(s * t, 24), long_play.robot_obs.reshape(s * t, 15))
    rates = agreement(pl.interactions(long_play.label, long_play.scene_obs), segs, t)
    lengths = [b - a + 1 for a, b, _ in segs]
    print(f"\nlong play: {rates}; {len(segs)} segments, length median {np.median(lengths):.0f}, "
          f"labels {dict(collections.Counter(n for *_, n in segs))}")
    assert rates["interactions"] >= 50
    assert rates["recall"] >= AGREEMENT_BAR and rates["precision"] >= AGREEMENT_BAR


def test_written_raw_data_reads_back(written):
    root, summary = written
    raw = root / "raw"
    assert sorted(os.listdir(root)) == ["raw"]  # no temporary folder left beside it
    assert sorted(os.listdir(raw)) == ["play_config.json", "training", "validation"]
    n = WRITTEN.steps
    tr, va = str(raw / "training"), str(raw / "validation")
    for split_dir, streams in ((tr, range(3)), (va, [3])):
        ranges = episode_ranges(split_dir)
        assert len(ranges) >= 2 * len(streams)  # several play ranges per stream
        assert ranges[0, 0] == streams[0] * n and ranges[-1, 1] == (streams[-1] + 1) * n - 1
        assert np.all(ranges[1:, 0] == ranges[:-1, 1] + 1)  # contiguous
        files = [f for f in os.listdir(split_dir) if f.startswith("episode_")]
        assert len(files) == n * len(streams)
    with np.load(os.path.join(tr, "episode_0000010.npz")) as z:
        dtypes = {k: (z[k].dtype, z[k].shape) for k in z.files}
    assert dtypes == {"actions": (np.float64, (7,)), "rel_actions": (np.float64, (7,)),
                      "robot_obs": (np.float64, (15,)), "scene_obs": (np.float64, (24,)),
                      "rgb_static": (np.uint8, (64, 64, 3)), "rgb_gripper": (np.uint8, (32, 32, 3))}
    fr = read_frame(tr, 10)
    assert fr["rgb_static"].std() > 10  # a rendered scene, not a blank
    ann = np.load(os.path.join(tr, "lang_annotations", "auto_lang_ann.npy"), allow_pickle=True).item()
    assert len(ann["language"]["ann"]) == len(ann["language"]["task"]) == len(ann["info"]["indx"]) > 5
    assert ann["language"]["emb"].shape == (len(ann["info"]["indx"]), 1, 384)
    assert set(ann["language"]["task"]) <= {t for t, _ in cw.CALVIN_TASKS.values()} | {
        f"push_{c}_block_{w}" for c in ("red", "blue", "pink") for w in cw.PUSH_DIRECTIONS}
    lang = language_by_frame(tr)
    (a, b), text = ann["info"]["indx"][0], ann["language"]["ann"][0]
    assert lang[a] == lang[b] == text and a - 1 not in lang  # idle frames precede a behaviour
    info = json.loads((raw / "play_config.json").read_text())
    assert info["seed"] == SEED and info["splits"]["training"]["frames"] == 3 * n
    scene_info = np.load(os.path.join(va, "scene_info.npy"), allow_pickle=True).item()
    assert scene_info == {"calvin_scene_D": [3 * n, 4 * n - 1]}
    assert (raw / "training" / "statistics.yaml").read_text().startswith("robot_obs:")
    print("\nwritten:", {k: {kk: v[kk] for kk in ("frames", "ranges", "annotations")} for k, v in
                         summary["splits"].items()}, f"write {summary['write_seconds']:.1f} s, generate "
          f"{summary['generate_seconds']:.1f} s")


def test_builder_segmentation_and_goal_sets_on_the_play(written, long_play, tmp_path):
    root, _ = written
    n = WRITTEN.steps
    path = build_calvin(str(root / "raw"), str(root / "rlds"))
    segments, count = [], 0
    for split in ("train", "validation"):
        frames = collections.defaultdict(list)  # split-wide segment id -> [(frame id, label)]
        for ep in tfds.builder_from_directory(path).as_dataset(split=split):
            steps = list(ep["steps"].as_numpy_iterator())
            first = int(ep["episode_metadata"]["first_frame"])
            count += len(steps)
            for j, s in enumerate(steps):
                frames[int(s["segment"])].append((first + j, s["behaviour"].decode()))
            if first == 0:
                raw = read_frame(str(root / "raw" / "training"), 5)
                np.testing.assert_array_equal(steps[5]["observation"]["rgb_static"], raw["rgb_static"])
                np.testing.assert_allclose(steps[5]["action"], raw["actions"].astype(np.float32))
        segments += [(min(f)[0], max(f)[0], f[0][1]) for f in frames.values()]
    assert count == STREAMS * n
    its = pl.interactions(long_play.label[:, :n], long_play.scene_obs[:, :n])  # the written play's labels
    rates = agreement(its, segments, n)
    print(f"\nbuilt dataset: {rates}")
    assert rates["interactions"] >= 15 and rates["recall"] >= AGREEMENT_BAR and rates["precision"] >= AGREEMENT_BAR

    counts = export_guidance_conditions(path, str(tmp_path / "goals"), "train", keep_fraction=1.0)
    written_goals = {k for k, c in counts["behaviours"].items() if c["written"]}
    assert len(written_goals & set(pl.ARTICULATED)) >= 6, counts
    g = np.load(tmp_path / "goals" / f"goals_{sorted(written_goals & set(pl.ARTICULATED))[0]}.npz")
    assert g["images"].shape[1:] == (64, 64, 3) and g["actions"].shape[1:] == (16, 7)
    # the one-stream validation play lacks behaviours: those come from the training split, the rest stay
    wanted = sorted(set(pl.ARTICULATED) | {"no_such_behaviour"})
    written, source = export_goal_sets_with_fallback(path, str(tmp_path / "val"), wanted, keep_fraction=1.0)
    val = export_guidance_conditions(path, str(tmp_path / "val_only"), "validation", keep_fraction=1.0)["behaviours"]
    for b in wanted:
        in_val = val.get(b, {}).get("written", 0)
        expected = ("validation", in_val) if in_val else ("train", counts["behaviours"].get(b, {}).get("written", 0))
        assert (source.get(b, "train"), written[b]) == expected, b
        if written[b]:
            with np.load(tmp_path / "val" / f"goals_{b}.npz") as z, \
                    np.load(tmp_path / ("val_only" if in_val else "goals") / f"goals_{b}.npz") as ref:
                np.testing.assert_array_equal(z["images"], ref["images"])
    assert "train" in source.values() and "validation" in source.values() and written["no_such_behaviour"] == 0


def test_writer_is_atomic_and_errors_are_clear(tmp_path, written):
    root, _ = written
    with pytest.raises(FileExistsError, match="overwrite=True"):
        cw.CalvinPlayWriter(str(root / "raw"), SEED, WRITTEN)
    with pytest.raises(ValueError, match="images is False"):
        cw.CalvinPlayWriter(str(tmp_path / "x"), SEED, LONG)
    with pytest.raises(ValueError, match="validation_streams"):
        cw.CalvinPlayWriter(str(tmp_path / "x"), SEED, WRITTEN, validation_streams=4)
    # an interrupted write leaves nothing that looks finished, and no temporary folder
    n = WRITTEN.chunk_steps
    zeros = lambda *shape, dtype=np.float32: np.zeros((STREAMS, n, *shape), dtype)  # noqa: E731
    chunk = pl.PlayChunk(robot_obs=zeros(15), scene_obs=zeros(24), rel_actions=zeros(7), actions=zeros(7),
                         label=zeros(dtype=np.int32) + pl.IDLE, rgb_static=zeros(64, 64, 3, dtype=np.uint8),
                         rgb_gripper=zeros(32, 32, 3, dtype=np.uint8), start=0)
    with pytest.raises(KeyboardInterrupt):
        with cw.CalvinPlayWriter(str(tmp_path / "cut"), SEED, WRITTEN) as w:
            w.write(chunk)
            raise KeyboardInterrupt
    assert os.listdir(tmp_path) == []
    with pytest.raises(RuntimeError, match="never written"):
        with cw.CalvinPlayWriter(str(tmp_path / "cut"), SEED, WRITTEN) as w:
            w.write(chunk)
            w.finish()
    assert os.listdir(tmp_path) == []
    with pytest.raises(ValueError, match="does not fit"):
        with cw.CalvinPlayWriter(str(tmp_path / "cut"), SEED, WRITTEN) as w:
            w.write(chunk._replace(start=300))
    with pytest.raises(CalvinFormatError, match="is missing"):
        episode_ranges(str(tmp_path / "cut" / "training"))


def test_extra_keys_and_play_ranges(tmp_path):
    config = pl.PlayConfig.small(num_streams=2, steps=6, chunk_steps=6)
    zeros = lambda *shape, dtype=np.float32: np.zeros((2, 6, *shape), dtype)  # noqa: E731
    label = np.asarray([[-1, 0, 0, -1, -1, 2], [-1, -1, 5, 5, 5, -1]], np.int32)
    chunk = pl.PlayChunk(robot_obs=zeros(15), scene_obs=zeros(24), rel_actions=zeros(7), actions=zeros(7), label=label,
                         rgb_static=zeros(64, 64, 3, dtype=np.uint8), rgb_gripper=zeros(32, 32, 3, dtype=np.uint8),
                         start=0)
    with cw.CalvinPlayWriter(str(tmp_path / "raw"), 0, config, validation_streams=1, range_steps=2,
                             extra_keys=True) as w:
        w.write(chunk)
        summary = w.finish()
    with np.load(tmp_path / "raw" / "validation" / "episode_0000007.npz") as z:
        shapes = {k: (z[k].dtype, z[k].shape) for k in z.files if k not in cw.SPLITS}
    assert shapes["depth_static"] == (np.float32, (64, 64)) and shapes["depth_gripper"] == (np.float32, (32, 32))
    assert shapes["rgb_tactile"] == (np.uint8, (160, 120, 6)) and shapes["depth_tactile"] == (np.float32, (160, 120, 2))
    # ranges start at idle frames only (never inside a behaviour), about every range_steps frames
    assert episode_ranges(str(tmp_path / "raw" / "training")).tolist() == [[0, 2], [3, 5]]
    assert cw.play_ranges(label[1], 2) == [(0, 4), (5, 5)]
    assert summary["splits"]["validation"]["interactions"] == {"drawer_close": 1}
    assert summary["splits"]["training"]["annotations"] == 0  # nothing happened in an all-zero scene
