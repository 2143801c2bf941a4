"""CALVIN raw layout -> RLDS: values round-trip, episode boundaries, segmentation labels (== the
original's script, across play ranges), language, goal-set export, and clear errors (naming the
file) for corrupt, missing, mis-shaped, overlapping or empty data."""
import json
import os
import shutil

import numpy as np
import pytest

tfds = pytest.importorskip("tensorflow_datasets")
pytest.importorskip("tensorflow")

from data_pipelines.calvin.builder import build_calvin  # noqa: E402
from data_pipelines.calvin.raw import CalvinFormatError  # noqa: E402
from data_pipelines.calvin.segmentation import BEHAVIOURS, segment_play  # noqa: E402
from dynaguide_jax.data.goal_sets import select_goal_segments  # noqa: E402
from dynaguide_jax.data.rlds import export_guidance_conditions  # noqa: E402
from tests.fixtures.calvin_raw import scripted_boundary, scripted_play, scripted_push, write_calvin, write_split  # noqa: E402,E501
from tests.oracles import calvin_goal_sets, calvin_segmentation  # noqa: E402


def episodes(path, split):
    ds = tfds.builder_from_directory(path).as_dataset(split=split)
    out = []
    for ep in ds:
        steps = list(ep["steps"].as_numpy_iterator())
        out.append((ep["episode_metadata"]["first_frame"].numpy(), steps))
    return out


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("calvin")
    ranges = write_calvin(str(root / "raw"))
    return root, ranges, build_calvin(str(root / "raw"), str(root / "rlds"))


def oracle_demos(eps):
    """The original script's demos ``[(first, last, behaviour or "")]`` over the concatenated ranges."""
    scene, robot = np.concatenate([e[0] for e in eps]), np.concatenate([e[1] for e in eps])
    frames = [{"scene_obs": scene[i], "robot_obs": robot[i], "rel_actions": np.zeros(7)} for i in range(len(scene))]
    return [(f[0], f[-1], b or "") for f, b in calvin_segmentation.segment(frames) if f]


def test_segmentation_follows_the_original_rules():
    assert segment_play(*scripted_play()) == [(0, 41, "drawer_open"), (42, 61, "button_on"), (62, 89, "")]
    # first contact with a block next to the gripper ends a segment at once ("lift"), the push after it
    # is a displacement; the still frames after the last cut are an unlabelled segment
    assert [b for _, _, b in segment_play(*scripted_push())] == ["red_lift", "red_displace", ""]


def test_segmentation_matches_the_original_across_play_ranges():
    """One machine over all frames of the split: a drawer opening spans the first range boundary, the
    unlabelled rest the second; short motions are stitched, the green light cuts a short segment."""
    eps = scripted_boundary()
    scene, robot = np.concatenate([e[0] for e in eps]), np.concatenate([e[1] for e in eps])
    expected = [(0, 21, "red_lift"), (22, 46, "red_displace"), (47, 53, "button_on"), (54, 76, "drawer_open"),
                (77, 159, "")]
    assert oracle_demos(eps) == expected
    assert segment_play(scene, robot) == expected
    eps = [scripted_play(), scripted_push()]  # the light turned on in range 1 is off again in range 2
    assert segment_play(*map(np.concatenate, zip(*eps))) == oracle_demos(eps)


def test_round_trip_boundaries_labels_and_language(built):
    root, ranges, path = built
    train = sorted(episodes(path, "train"), key=lambda e: e[0])
    assert [len(steps) for _, steps in train] == [b - a + 1 for a, b in ranges["training"]]
    first, steps = train[0]
    assert steps[0]["is_first"] and steps[-1]["is_last"] and not any(s["is_terminal"] for s in steps)
    assert sum(s["is_first"] for s in steps) == 1
    raw = np.load(os.path.join(root, "raw", "training", f"episode_{first + 7:07d}.npz"))
    s = steps[7]
    np.testing.assert_array_equal(s["observation"]["rgb_static"], raw["rgb_static"])
    np.testing.assert_array_equal(s["observation"]["rgb_gripper"], raw["rgb_gripper"])
    np.testing.assert_allclose(s["observation"]["scene_obs"], raw["scene_obs"].astype(np.float32))
    np.testing.assert_allclose(s["rel_action"], raw["rel_actions"].astype(np.float32))
    np.testing.assert_allclose(s["action"], raw["actions"].astype(np.float32))
    labels = [st["behaviour"].decode() for st in steps]
    assert labels[0] == labels[41] == "drawer_open" and labels[42] == labels[61] == "button_on"
    assert labels[62] == labels[89] == "button_off"  # continues into the next range (see the oracle test)
    assert [st["segment"] for st in steps][40:43] == [0, 0, 1]
    lang = [st["language_instruction"].decode() for st in steps]
    assert lang[8] == lang[40] == "open the drawer" and lang[7] == "" and lang[41] == ""
    push = [st["behaviour"].decode() for st in train[1][1]]
    assert "red_displace" in push
    val = episodes(path, "validation")
    assert len(val) == 1 and len(val[0][1]) == 40


@pytest.fixture(scope="module")
def built_boundary(tmp_path_factory):
    root = tmp_path_factory.mktemp("calvin_boundary")
    ranges = write_split(str(root / "raw"), "training", scripted_boundary(), action_scale=1.5)
    return root, ranges, build_calvin(str(root / "raw"), str(root / "rlds"))


def test_built_segments_match_the_original_across_play_ranges(built_boundary):
    root, ranges, path = built_boundary
    eps = sorted(episodes(path, "train"), key=lambda e: e[0])
    assert [int(f) for f, _ in eps] == [a for a, _ in ranges]  # still one RLDS episode per play range
    assert [len(st) for _, st in eps] == [b - a + 1 for a, b in ranges]
    steps = [st for _, ep in eps for st in ep]
    want_seg, want_labels = np.full(len(steps), -1), [None] * len(steps)
    for k, (a, b, name) in enumerate(oracle_demos(scripted_boundary())):
        want_seg[a:b + 1], want_labels[a:b + 1] = k, [name] * (b + 1 - a)
    np.testing.assert_array_equal([st["segment"] for st in steps], want_seg)
    assert [st["behaviour"].decode() for st in steps] == want_labels
    assert eps[0][1][-1]["segment"] == eps[1][1][0]["segment"] == 3  # drawer_open spans ranges 1 and 2
    assert eps[1][1][-1]["segment"] == eps[2][1][-1]["segment"] == 4  # the unlabelled rest spans 2 and 3


def test_dynamics_windows_predict_segment_ends_across_ranges(built_boundary):
    """The default target on a built split: episodes are read in chronological order, windows are cut
    at the segmentation's segments (not at play ranges), and every window predicts its segment's
    last frame with the clipped actions zero-filled past it (tests/oracles/embedder_dataset.py)."""
    from dynaguide_jax.data.rlds import dynamics_windows
    from tests.oracles.embedder_dataset import MultiviewDataset

    root, ranges, path = built_boundary
    assert tfds.builder_from_directory(path).info.disable_shuffling  # episodes stay in the written order
    demos = oracle_demos(scripted_boundary())
    n = demos[-1][1] + 1
    feats = np.repeat(np.arange(n, dtype=np.float32)[:, None, None], 2, 1)
    w = dynamics_windows(path, "train", feats, 16, action_transform="clip")
    assert w.target == "segment_end"
    np.testing.assert_array_equal(w.data.episode_ends, [b + 1 for _, b, _ in demos])
    raw = np.stack([np.load(root / "raw" / "training" / f"episode_{i:07d}.npz")["rel_actions"]
                    for a, b in ranges for i in range(a, b + 1)])
    np.testing.assert_allclose(w.data.actions, raw.astype(np.float32))  # chronological: no reordering needed
    oracle = MultiviewDataset([{"actions": np.clip(raw[a:b + 1], -1, 1),
                                "obs": {"cam": np.arange(a, b + 1)[:, None, None, None] * np.ones((1, 1, 1, 3))}}
                               for a, b, _ in demos], 16, ["cam"], padding=True, pad_mode="zeros")
    got = w.at(w.valid)
    for i in range(len(oracle)):
        state, actions, target = oracle[i]
        assert got["patches"][i, 0, 0] == state["cam"][0, 0, 0]
        assert got["future_patches"][i, 0, 0] == target["cam"][0, 0, 0]
        np.testing.assert_allclose(got["actions"][i], actions, atol=1e-7)
    horizon = dynamics_windows(path, "train", feats, 16, action_transform="clip", target="horizon")
    assert len(horizon.data.episode_ends) == len(ranges)  # the optional t+H target keeps play ranges


def test_goal_export_uses_segment_ends_across_ranges(built_boundary, tmp_path):
    root, ranges, path = built_boundary
    counts = export_guidance_conditions(path, str(tmp_path / "all"), "train", ("observation/rgb_static",
                                        "observation/rgb_gripper"), keep_fraction=1.0)
    assert counts["behaviours"] == {n: {"available": 1, "kept": 1, "capped": 0, "written": 1}
                                    for n in ("button_on", "drawer_open", "red_lift")}
    assert counts["dropped"] == {"red_displace": 1} and counts["unlabelled_segments"] == 1
    assert json.loads((tmp_path / "all" / "counts.json").read_text()) == counts
    assert sorted(p.name for p in (tmp_path / "all").glob("goals_*")) == [
        "goals_button_on.npz", "goals_drawer_open.npz", "goals_red_lift.npz"]
    g = np.load(tmp_path / "all" / "goals_drawer_open.npz")
    raw = np.load(root / "raw" / "training" / f"episode_{ranges[1][0] + 16:07d}.npz")  # t = 76, in range 2
    np.testing.assert_array_equal(g["images"][0], raw["rgb_static"])
    np.testing.assert_array_equal(g["images_rgb_gripper"][0], raw["rgb_gripper"])
    np.testing.assert_allclose(g["proprio"][0], raw["robot_obs"].astype(np.float32))
    np.testing.assert_allclose(g["last_action"][0], raw["rel_actions"].astype(np.float32))
    assert np.abs(raw["rel_actions"]).max() > 1  # clipping matters
    want = np.tile(np.clip(raw["rel_actions"], -1, 1).astype(np.float32), (16, 1))
    np.testing.assert_array_equal(g["actions"][0], want)
    assert g["segment"].tolist() == [3]
    seeded = export_guidance_conditions(path, str(tmp_path / "seeded"), "train", seed=3)
    labels = {0: "red_lift", 1: "red_displace", 2: "button_on", 3: "drawer_open", 4: ""}
    assert seeded == {"split": "train", **select_goal_segments(labels, seed=3)[1]}
    with pytest.raises(ValueError, match="keep_fraction must be in"):
        export_guidance_conditions(path, str(tmp_path / "bad"), "train", keep_fraction=1.5)


def test_reset_pose_export_reads_frame_8_of_each_segment_across_ranges(built_boundary, tmp_path, monkeypatch):
    """The original's reset poses (tests/oracles/calvin_reset_poses.py) from the built split: frame 8 of each
    segment counted across play ranges (drawer_open starts in range 1, its frame 8 lies in range 2)."""
    from dynaguide_jax.data import reset_poses, rlds
    from dynaguide_jax.envs.reset_states import load_reset_poses
    from tests.oracles.calvin_reset_poses import reset_poses as oracle

    root, ranges, path = built_boundary
    raw = np.stack([np.load(root / "raw" / "training" / f"episode_{i:07d}.npz")["robot_obs"]
                    for a, b in ranges for i in range(a, b + 1)]).astype(np.float32)
    demos = oracle_demos(scripted_boundary())
    frames = rlds._segment_frames(path, "train", ("observation/robot_obs", "segment"), 8)
    want = {k: raw[a + 8] for k, (a, b, _) in enumerate(demos) if b - a + 1 > 8}
    assert sorted(frames) == sorted(want) and demos[3][0] + 8 > ranges[0][1] - ranges[0][0]  # across a boundary
    for k, row in want.items():
        np.testing.assert_array_equal(frames[k]["observation/robot_obs"], row)
    # the fixture's robot stays low with the gripper shut (z 0.48, width 0): no pose passes the original's bars
    assert rlds.export_reset_poses(path, str(tmp_path / "none"), "train") == {n: 0 for n in reset_poses.POSE_SETS}
    assert not list((tmp_path / "none").glob("*.json"))
    # with the bars at 0 the oracle sees the same frames lifted above its bars (z 0.6, width 0.08)
    monkeypatch.setattr(reset_poses, "MIN_TCP_Z", 0.0)
    monkeypatch.setattr(reset_poses, "MIN_GRIPPER_WIDTH", 0.0)
    counts = rlds.export_reset_poses(path, str(tmp_path), "train")
    lifted = raw.astype(np.float64).copy()
    lifted[:, 2], lifted[:, 6] = 0.6, 0.08
    labelled = [({"behavior": n} if n else {}, lifted[a:b + 1]) for a, b, n in demos]
    for name, side in (("midpoint", False), ("right_side_midpoint", True)):
        expected = np.asarray(oracle(labelled, side)).reshape(-1, 15)
        assert counts[name] == len(expected) == 3  # red_lift, red_displace, drawer_open (button_on: 7 frames)
        got = load_reset_poses(reset_poses.reset_pose_file(str(tmp_path), name))
        cols = [c for c in range(15) if c not in (2, 6)]
        np.testing.assert_allclose(got[:, cols], expected[:, cols], atol=1e-6)


@pytest.mark.parametrize("seed,cap", [(0, 20), (1, 20), (2, None), (3, 5)])
def test_goal_selection_follows_the_original(seed, cap):
    rng = np.random.default_rng(seed)
    names = [*BEHAVIOURS, ""]
    labels = {i: names[j] for i, j in enumerate(rng.integers(0, len(names), 600))}
    chosen, counts = select_goal_segments(labels, seed=seed, max_per_behaviour=cap)
    demos = [(i, {"behavior": b} if b else {}) for i, b in labels.items()]
    want, kept = calvin_goal_sets.goal_sets(demos, seed, accept_cap=cap)
    assert chosen == {k: v for k, v in want.items() if k in chosen} and not any(
        v for k, v in want.items() if k not in chosen)
    assert {k: c["kept"] for k, c in counts["behaviours"].items()} == {k: kept[k] for k in counts["behaviours"]}
    assert not any(k.endswith("_displace") for k in chosen)
    assert sum(counts["dropped"].values()) == sum(b.endswith("_displace") for b in labels.values())
    if cap is not None:
        assert all(len(v) <= cap for v in chosen.values())
        assert any(c["capped"] for c in counts["behaviours"].values())


def build_broken(tmp_path, mutate):
    raw = tmp_path / "raw"
    write_calvin(str(raw))
    mutate(raw)
    return raw


@pytest.mark.parametrize("case,match", [
    ("corrupt", r"episode_0000050\.npz: unreadable or corrupt"),
    ("missing", r"episode_0000050\.npz: frame 50 is missing"),
    ("shape", r"episode_0000050\.npz: scene_obs has shape \(23,\), expected \(24,\)"),
    ("empty", r"ep_start_end_ids\.npy: episode 1 is empty"),
    ("overlap", r"ep_start_end_ids\.npy: frame ranges \[0, 89\] and \[89, 154\] overlap"),
    ("no_ranges", r"ep_start_end_ids\.npy is missing"),
    # one frame unlike the others: caught before anything is written, naming file, key, expected and found
    ("image_size", r"training/episode_0000050\.npz: rgb_static has shape \(20, 24, 3\) uint8, expected "
                   r"\(24, 24, 3\) uint8 as in .*training/episode_0000000\.npz"),
    ("dtype", r"episode_0000050\.npz: robot_obs has shape \(15,\) float32, expected \(15,\) float64"),
    ("other_split", r"validation/episode_0001010\.npz: rgb_gripper has shape \(16, 16, 3\) uint8, expected "
                    r"\(12, 12, 3\) uint8 as in .*training/episode_0000000\.npz"),
])
def test_bad_raw_data_fails_clearly_and_leaves_no_dataset(tmp_path, case, match):
    def mutate(raw):
        f = raw / "training" / "episode_0000050.npz"
        if case == "corrupt":
            f.write_bytes(b"PK\x03\x04 not really a zip")
        elif case == "missing":
            f.unlink()
        elif case == "shape":
            d = dict(np.load(f))
            d["scene_obs"] = d["scene_obs"][:23]
            np.savez(f, **d)
        elif case in ("image_size", "dtype", "other_split"):
            if case == "other_split":
                f = raw / "validation" / "episode_0001010.npz"
            d = dict(np.load(f))
            if case == "image_size":
                d["rgb_static"] = d["rgb_static"][:20]
            elif case == "dtype":
                d["robot_obs"] = d["robot_obs"].astype(np.float32)
            else:
                d["rgb_gripper"] = np.zeros((16, 16, 3), np.uint8)
            np.savez_compressed(f, **d)
        elif case == "empty":
            np.save(raw / "training" / "ep_start_end_ids.npy", np.array([[0, 89], [95, 94]]))
        elif case == "overlap":
            np.save(raw / "training" / "ep_start_end_ids.npy", np.array([[0, 89], [89, 154]]))
        else:
            (raw / "training" / "ep_start_end_ids.npy").unlink()

    raw = build_broken(tmp_path, mutate)
    with pytest.raises(CalvinFormatError, match=match):
        build_calvin(str(raw), str(tmp_path / "rlds"))
    version_dir = tmp_path / "rlds" / "calvin_rlds" / "1.1.0"
    assert not version_dir.exists()  # only an incomplete.* directory may remain
    with pytest.raises(Exception):
        tfds.builder_from_directory(str(version_dir))
    shutil.rmtree(tmp_path / "rlds", ignore_errors=True)


@pytest.mark.slow
def test_cli_build_cache_goals_and_train_from_rlds(tmp_path, capsys, monkeypatch):
    """The user path: one command each to build the dataset, cache features, export goal sets and
    train the dynamics model and the policy from it (the build as a real ``dynaguide`` process, the
    later commands in-process through the same entry point: one jax start-up, compiled programs shared)."""
    import subprocess
    import sys

    from dynaguide_jax.cli import main
    from tests.test_cli import ENV

    def cli(*args):
        code = main(list(map(str, args)))
        out, err = capsys.readouterr()
        assert code == 0, err[-3000:]
        return out

    write_calvin(str(tmp_path / "raw"))
    p = subprocess.run([sys.executable, "-m", "dynaguide_jax.cli", "data", "build", "calvin", tmp_path / "raw",
                        tmp_path / "rlds"], capture_output=True, text=True, env=ENV, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "Generating splits" in p.stderr  # TFDS's progress bars (--quiet hides them: the UMI test)
    ds = p.stdout.strip().split()[-1]
    assert ds.endswith("calvin_rlds/1.1.0")
    assert "(150, 16, 64)" in cli("data", "cache", ds, tmp_path / "feats", "--quiet")
    cli("data", "goals", ds, tmp_path / "goals", "--split", "train", "--keep-fraction", "1")
    counts = json.loads((tmp_path / "goals" / "counts.json").read_text())
    written = {k: c["written"] for k, c in counts["behaviours"].items()}
    assert written == {"button_off": 1, "button_on": 1, "drawer_open": 1, "red_lift": 1}
    assert counts["dropped"] == {"red_displace": 1} and counts["keep_fraction"] == 1.0
    goals = np.load(tmp_path / "goals" / "goals_drawer_open.npz")
    assert goals["images"].shape == (1, 24, 24, 3) and goals["actions"].shape == (1, 16, 7)
    code = main(["data", "reset-poses", ds, str(tmp_path / "poses"), "--split", "train"])  # the gripper is shut
    assert code == 2 and "no segment of the train split gives a reset pose" in capsys.readouterr().err
    from dynaguide_jax.data import reset_poses

    monkeypatch.setattr(reset_poses, "MIN_GRIPPER_WIDTH", 0.0)  # the fixture's robot: z 0.6, x 0, width 0
    out = cli("data", "reset-poses", ds, tmp_path / "poses", "--split", "train")
    lines = out.splitlines()  # the play episode's 3 segments (z 0.6); the push episode's robot is at the blocks
    assert lines[0].startswith("midpoint: 3 poses") and lines[1].startswith("right_side_midpoint: 3 poses")
    poses = json.loads((tmp_path / "poses" / "initial_calvin_robot_states_midpoint.json").read_text())
    assert np.allclose(np.asarray(poses["robot_states"])[:, :3], (0.0, 0.3, 0.6))
    out = cli("train", "dynamics", "--data", "rlds", "--rlds", ds, "--features", tmp_path / "feats", "--model",
              "small", "--steps", "3", "--global-batch", "4", "--dropout", "0.2", "--attention-dropout", "0",
              "--attention", "pallas", "--out", tmp_path / "dyn", "--quiet")
    assert "runs interpreted on this CPU backend" in out
    assert (tmp_path / "dyn" / "checkpoints" / "3").exists()
    run_cfg = json.loads((tmp_path / "dyn" / "config.json").read_text())
    assert (run_cfg["dynamics"]["dropout"], run_cfg["dynamics"]["attention_dropout"]) == (0.2, 0.0)
    assert run_cfg["train"]["attention"] == "pallas" and run_cfg["dynamics"]["attention"] == "xla"
    info = run_cfg["data"]
    assert info["action_transform"]["mode"] == "clip" and info["action_field"] == "rel_action"
    assert info["target"] == "segment_end"
    out = cli("eval", "dynamics", "--run", tmp_path / "dyn", "--data", "rlds", "--rlds", ds, "--features",
              tmp_path / "feats", "--split", "train", "--quiet")
    assert "future-patch MSE" in out and "behaviour retrieval skipped" in out  # one segment per behaviour here
    rep = json.loads((tmp_path / "dyn" / "eval" / "eval_dynamics.json").read_text())
    assert rep["retrieval"]["segments"] == {**written, "red_displace": 1} and rep["windows"] == 150  # every frame
    assert rep["target"] == "segment_end"
    out = cli("train", "policy", "--data", "rlds", "--rlds", ds, "--model", "small", "--steps", "2",
              "--batch-size", "2", "--warmup-steps", "1", "--out", tmp_path / "pol", "--quiet")
    assert "rlds episodes" in out
    assert main(["train", "dynamics", "--data", "rlds", "--rlds", ds, "--out", str(tmp_path / "x")]) == 2
    assert "--features" in capsys.readouterr().err
    assert main(["train", "dynamics", "--attention-dropout", "1.5", "--out", str(tmp_path / "y")]) == 2
    assert "--attention-dropout must be in [0, 1), got 1.5" in capsys.readouterr().err
    assert not (tmp_path / "y").exists()


def test_readers_decode_only_the_requested_images(built):
    from dynaguide_jax.data.rlds import _skip_images, iterate_episodes

    root, ranges, path = built
    steps = tfds.builder_from_directory(path).info.features["steps"].feature
    skip = _skip_images(steps, {"observation/robot_obs", "observation/rgb_static"})
    assert set(skip) == {"observation"} and set(skip["observation"]) == {"rgb_gripper"}
    eps = list(iterate_episodes(path, "train", ("observation/rgb_static", "observation/robot_obs", "behaviour")))
    assert [len(e["behaviour"]) for e in eps] == [b - a + 1 for a, b in ranges["training"]]
    first = min(a for a, _ in ranges["training"])
    raw = np.load(os.path.join(root, "raw", "training", f"episode_{first + 3:07d}.npz"))
    ep = next(e for e in eps if len(e["behaviour"]) == ranges["training"][0][1] - ranges["training"][0][0] + 1)
    np.testing.assert_array_equal(ep["observation/rgb_static"][3], raw["rgb_static"])
    np.testing.assert_allclose(ep["observation/robot_obs"][3], raw["robot_obs"].astype(np.float32))
