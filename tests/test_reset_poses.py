"""Robot reset poses picked from play segments as the original picks them (tests/oracles/calvin_reset_poses.py,
from retrieve_initial_robot_states.py), their JSON files, and the demo's start states drawn from them."""
import json

import numpy as np
import pytest

import jax

from dynaguide_jax.data.reset_poses import POSE_SETS, reset_pose_file, select_reset_poses, write_reset_poses
from dynaguide_jax.demo.evaluate import load_demo_reset_poses, setup_start_states
from dynaguide_jax.envs import tabletop
from dynaguide_jax.envs.reset_states import load_reset_poses
from tests.oracles.calvin_reset_poses import reset_poses as oracle_reset_poses


def random_segments(seed, n=300):
    """Segments of 3..20 frames (never 8: the original indexes frame 8 of an 8-frame demo and fails) whose
    frame-8 states straddle every threshold, labelled with behaviours, "other" and "" (unlabelled)."""
    rng = np.random.default_rng(seed)
    segments = []
    for _ in range(n):
        length = int(rng.choice([k for k in range(3, 21) if k != 8]))
        proprio = rng.normal(size=(length, 15))
        proprio[:, 0] = rng.uniform(-0.1, 0.45, length)
        proprio[:, 2] = rng.uniform(0.45, 0.65, length)
        proprio[:, 6] = rng.uniform(0.07, 0.08, length)
        segments.append((str(rng.choice(["drawer_open", "button_on", "red_lift", "other", ""])), proprio))
    return segments


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("name,right_side", [("right_side_midpoint", True), ("midpoint", False)])
def test_selection_follows_the_original(seed, name, right_side):
    segments = random_segments(seed)
    demos = [({"behavior": b} if b else {}, p) for b, p in segments]
    want = np.asarray(oracle_reset_poses(demos, right_side), np.float64).reshape(-1, 15)
    long = [(b, p) for b, p in segments if len(p) > 8]
    got = select_reset_poses(np.stack([p[8] for _, p in long]), [b for b, _ in long], name)
    assert 10 < len(got) < len(long) // 2  # the thresholds matter
    np.testing.assert_array_equal(got, want)


def test_selection_rejects_bad_input():
    with pytest.raises(ValueError, match=r"robot_obs must be \[N, 15\]"):
        select_reset_poses(np.zeros((3, 14)), ["a"] * 3, "midpoint")
    with pytest.raises(ValueError, match="2 behaviours for 3 robot states"):
        select_reset_poses(np.zeros((3, 15)), ["a"] * 2, "midpoint")
    with pytest.raises(ValueError, match="unknown reset-pose list 'left'"):
        select_reset_poses(np.zeros((3, 15)), ["a"] * 3, "left")
    with pytest.raises(ValueError, match="unknown reset-pose list"):
        reset_pose_file("/tmp", "constrained")


def test_files_are_the_originals_layout(tmp_path):
    poses = np.random.default_rng(0).normal(size=(5, 15))
    for name in POSE_SETS:
        write_reset_poses(reset_pose_file(str(tmp_path), name), poses)
    path = tmp_path / "initial_calvin_robot_states_right_side_midpoint.json"
    assert list(json.loads(path.read_text())) == ["robot_states"]
    np.testing.assert_array_equal(load_reset_poses(str(path)), poses)  # the CALVIN runner's reader
    got = load_demo_reset_poses(str(tmp_path))
    assert sorted(got) == sorted(POSE_SETS)
    (tmp_path / "initial_calvin_robot_states_midpoint.json").unlink()
    assert list(load_demo_reset_poses(str(tmp_path))) == ["right_side_midpoint"]


def test_start_states_put_the_robot_at_a_listed_pose():
    env = tabletop.TabletopConfig()
    poses = np.zeros((3, 15))
    poses[:, :3] = [[0.05, -0.10, 0.56], [0.20, -0.20, 0.60], [0.10, -0.05, 0.55]]
    poses[:, 3:6] = [[np.pi, 0.0, 1.2], [np.pi, 0.1, 1.6], [-np.pi + 0.02, -0.1, 2.0]]
    poses[:, 6], poses[:, 14] = 0.08, 1.0
    keys = jax.random.split(jax.random.key(0), 32)
    states = setup_start_states(keys, {"drawer": 0.0}, env, poses)
    robot = np.asarray(jax.vmap(tabletop.robot_obs)(states))
    hit = np.abs(robot[:, None, :3] - poses[None, :, :3]).max(-1) < 1e-6
    assert hit.sum(1).tolist() == [1] * 32 and hit.any(0).all()  # every start at a pose, every pose used
    np.testing.assert_allclose(np.asarray(states.drawer), 0.0)  # the setup still fixes its part
    free = np.asarray(jax.vmap(tabletop.robot_obs)(setup_start_states(keys, {"drawer": 0.0}, env)))
    assert not np.abs(free[:, None, :3] - poses[None, :, :3]).max(-1).min() < 1e-3  # None: the random robot
    same = setup_start_states(keys, {"drawer": 0.0}, env, poses)
    np.testing.assert_array_equal(np.asarray(same.tcp_pos), np.asarray(states.tcp_pos))
