"""Behaviour detection, episode termination and reset states against the original's rules
(tests/oracles/calvin_analysis.py), plus the experiment-setup JSON parser."""
import json
import random

import numpy as np
import pytest

import jax
import jax.numpy as jnp

from dynaguide_jax.envs.reset_states import (ADJUSTABLE_PARTS, ExperimentSetup, articulated_binaries,
                                             check_env_setup, episode_done, load_experiment_setup,
                                             load_reset_poses, parse_experiment_setup, recorded_length,
                                             sample_reset_pose, sample_scene_setup)
from dynaguide_jax.eval.behaviours import (BEHAVIOURS, NO_BEHAVIOUR, behaviour_distribution, behaviour_labels,
                                           detect_behaviour, detect_behaviours)
from tests.oracles import calvin_analysis as oracle

T = 12
BLOCKS = {"red": 6, "blue": 12, "pink": 18}
BLOCK_HOME = {"red": (0.10, -0.10, 0.46), "blue": (-0.20, -0.10, 0.46), "pink": (0.20, 0.05, 0.46)}
TCP_HOME = (0.0, 0.30, 0.60)


def make_traj(start=None, events=(), steps=T):
    """``(scene [steps, 24], robot [steps, 15])``: the reset scene (articulated values from ``start``,
    blocks at home, tcp far away), then each ``(step, change)`` applied from that step on; a change maps
    a part name or scene index to a value, ``"<colour>"`` to a block xyz offset, ``"tcp"`` to a tcp xyz."""
    scene = np.zeros((steps, 24))
    robot = np.zeros((steps, 15))
    robot[:, :3] = TCP_HOME
    for colour, p in BLOCKS.items():
        scene[:, p:p + 3] = BLOCK_HOME[colour]
    names = {"sliding_door": 0, "drawer": 1, "button": 2, "switch": 3, "lightbulb": 4, "green_light": 5}
    for name, value in (start or {}).items():
        scene[:, names[name]] = value
    for step, change in events:
        for name, value in change.items():
            if name == "tcp":
                robot[step:, :3] = value
            elif name in BLOCKS:
                p = BLOCKS[name]
                scene[step:, p:p + 3] = np.asarray(BLOCK_HOME[name]) + value
            else:
                scene[step:, names[name]] = value
    return scene, robot


def near(colour, dz=0.05):
    return tuple(np.asarray(BLOCK_HOME[colour]) + (0.0, 0.0, dz))


PUSH = (0.002, 0.0, 0.0)  # a 2 mm push
# name -> (start, events, valid, expected behaviour, expected step)
CASES = {
    "door_left": ({}, [(5, {"sliding_door": 0.06})], None, "door_left", 5),
    "door_right": ({"sliding_door": 0.27}, [(4, {"sliding_door": 0.2})], None, "door_right", 4),
    "drawer_open": ({}, [(3, {"drawer": 0.06})], None, "drawer_open", 3),
    "drawer_close": ({"drawer": 0.16}, [(7, {"drawer": 0.1})], None, "drawer_close", 7),
    "switch_on": ({}, [(2, {"switch": 0.03})], None, "switch_on", 2),
    "switch_off": ({"switch": 0.09}, [(6, {"switch": 0.06})], None, "switch_off", 6),
    "button_on": ({}, [(9, {"green_light": 1.0})], None, "button_on", 9),
    "button_off": ({"green_light": 1.0}, [(1, {"green_light": 0.0})], None, "button_off", 1),
    "red_displace": ({}, [(3, {"tcp": near("red")}), (5, {"red": PUSH})], None, "red_displace", 5),
    "blue_displace": ({}, [(2, {"tcp": near("blue")}), (4, {"blue": PUSH})], None, "blue_displace", 4),
    "pink_displace": ({}, [(6, {"tcp": near("pink")}), (8, {"pink": PUSH})], None, "pink_displace", 8),
    # a displaced block counts only once the tcp is near it
    "block_moved_then_reached": ({}, [(2, {"red": PUSH}), (7, {"tcp": near("red")})], None, "red_displace", 7),
    "block_reached_not_moved": ({}, [(2, {"tcp": near("red")}), (5, {"red": (0.0005, 0, 0)})], None,
                                "no_behavior", T - 1),
    "below_thresholds": ({}, [(2, {"sliding_door": 0.04, "drawer": 0.04, "switch": 0.015, "green_light": 0.005,
                                   "button": 0.5, "lightbulb": 1.0})], None, "no_behavior", T - 1),
    "nothing": ({}, [], None, "no_behavior", T - 1),
    "set_and_reset": ({}, [(3, {"drawer": 0.08}), (4, {"drawer": 0.0})], None, "drawer_open", 3),
    "earlier_wins": ({}, [(3, {"switch": 0.05}), (6, {"sliding_door": 0.2})], None, "switch_on", 3),
    # simultaneous events: blocks, then door, drawer, switch, green light
    "tie_door_drawer": ({}, [(4, {"sliding_door": 0.1, "drawer": 0.1})], None, "door_left", 4),
    "tie_drawer_switch": ({}, [(4, {"drawer": 0.1, "switch": 0.05})], None, "drawer_open", 4),
    "tie_switch_light": ({}, [(4, {"switch": 0.05, "green_light": 1.0})], None, "switch_on", 4),
    "tie_block_door": ({}, [(2, {"tcp": near("pink")}), (4, {"pink": PUSH, "sliding_door": 0.2})], None,
                       "pink_displace", 4),
    "tie_red_pink": ({}, [(2, {"tcp": (0.15, -0.025, 0.47)}), (5, {"red": PUSH, "pink": PUSH})], None,
                     "pink_displace", 5),
    "tie_all_blocks": ({}, [(1, {"tcp": (0.0, -0.05, 0.46)}),
                            (3, {"red": (-0.05, 0, 0), "blue": (0.15, 0, 0), "pink": (-0.2, -0.1, 0)})], None,
                       "blue_displace", 3),
    # early-ended episodes: the drawer opens at step 8, after the recorded part
    "ended_before_event": ({}, [(8, {"drawer": 0.1})], 6, "no_behavior", 5),
    "ended_after_event": ({}, [(8, {"drawer": 0.1})], 9, "drawer_open", 8),
    "ended_at_start": ({}, [(0, {"tcp": near("red")}), (1, {"red": PUSH})], 1, "no_behavior", 0),
}


def _oracle(scene, robot, valid):
    n = T if valid is None else valid
    return oracle.generate_detailed_behavior_distribtuion([(scene[:n], robot[:n])])


@pytest.fixture(scope="module")
def batch():
    scenes, robots, valids = zip(*[(*make_traj(s, e), T if v is None else v) for s, e, v, *_ in CASES.values()])
    out = detect_behaviours(jnp.asarray(np.stack(scenes)), jnp.asarray(np.stack(robots)), jnp.asarray(valids))
    return {name: jax.tree.map(lambda x, i=i: np.asarray(x)[i], out) for i, name in enumerate(CASES)}


@pytest.mark.parametrize("name", list(CASES))
def test_detection_matches_original(batch, name):
    start, events, valid, expected, step = CASES[name]
    scene, robot = make_traj(start, events)
    got = batch[name]
    assert (BEHAVIOURS[got.index], int(got.step)) == (expected, step)
    report = _oracle(scene, robot, valid)
    counts = {k: int(c) for k, c in zip(BEHAVIOURS, got.counted)}
    assert counts == report["counts"]
    label = report["demo_labels"]["demo_0"]
    if expected == "button_on":  # the original's mislabel, fixed in ours
        assert label == "button_off"
    else:
        assert label == expected
    assert report["steps"] == [step]


def test_simultaneous_blocks_are_all_counted(batch):
    counted = batch["tie_all_blocks"].counted
    assert [BEHAVIOURS[i] for i in np.flatnonzero(counted)] == ["red_displace", "blue_displace", "pink_displace"]
    dist = behaviour_distribution([batch["tie_all_blocks"].index, batch["nothing"].index],
                                  np.stack([counted, batch["nothing"].counted]))
    assert dist["red_displace"] == dist["blue_displace"] == dist["pink_displace"] == dist["no_behavior"] == 0.25


def test_single_trajectory_mask_and_jit():
    scene, robot = make_traj({}, [(3, {"drawer": 0.1}), (5, {"drawer": 0.0}), (6, {"sliding_door": 0.2})])
    eager = detect_behaviour(scene, robot)
    assert (BEHAVIOURS[int(eager.index)], int(eager.step)) == ("drawer_open", 3)
    mask = np.ones(T, bool)
    mask[2:5] = False  # a gap over the drawer's opening: the door is the first event seen
    masked = jax.jit(detect_behaviour)(scene, robot, jnp.asarray(mask))
    assert (BEHAVIOURS[int(masked.index)], int(masked.step)) == ("door_left", 6)
    none = detect_behaviour(scene, robot, jnp.zeros(T, bool))
    assert (int(none.index), int(none.step)) == (NO_BEHAVIOUR, -1)
    with pytest.raises(ValueError, match="valid"):
        detect_behaviour(scene, robot, jnp.ones(T + 1, bool))


def test_random_batch_matches_original():
    """Random event sequences with jumps well away from the thresholds, through vmap + jit."""
    rng = np.random.default_rng(0)
    parts = {"sliding_door": 0.05, "drawer": 0.05, "switch": 0.02, "green_light": 0.01}
    scenes, robots, valids = [], [], []
    for _ in range(96):
        start = {k: float(rng.choice([0.0, 4 * t])) for k, t in parts.items()}
        events = []
        for _ in range(rng.integers(0, 4)):
            step = int(rng.integers(0, T))
            if rng.random() < 0.6:
                k = list(parts)[rng.integers(0, 4)]
                events.append((step, {k: start[k] + float(rng.choice([-1, 1]) * rng.choice([0.5, 2.0])) * parts[k]}))
            else:  # reach a block (or pass high above it), push it (or barely) then or later
                colour = list(BLOCKS)[rng.integers(0, 3)]
                events.append((step, {"tcp": near(colour, float(rng.choice([0.05, 0.05, 0.2])))}))
                events.append((int(rng.integers(step, T)),
                               {colour: tuple(rng.choice([0.0005, 0.003, 0.003]) * rng.choice([-1, 1], 3))}))
        scene, robot = make_traj(start, sorted(events, key=lambda e: e[0]))
        scenes.append(scene)
        robots.append(robot)
        valids.append(int(rng.integers(1, T + 1)))
    out = detect_behaviours(jnp.asarray(np.stack(scenes)), jnp.asarray(np.stack(robots)), jnp.asarray(valids))
    report = oracle.generate_detailed_behavior_distribtuion([(s[:v], r[:v]) for s, r, v in zip(scenes, robots, valids)])
    labels = behaviour_labels(out.index)
    fixed = ["button_off" if lab == "button_on" else lab for lab in labels]
    assert fixed == [report["demo_labels"][f"demo_{i}"] for i in range(len(scenes))]
    assert np.asarray(out.step).tolist() == report["steps"]
    dist = behaviour_distribution(out.index, out.counted)
    assert dist == pytest.approx(report["Full distribution"])
    assert np.mean(np.asarray(out.step)) == pytest.approx(report["Average Length"])
    assert len(set(labels)) >= 10, set(labels)


def test_distribution_helper():
    dist = behaviour_distribution([0, 0, 11, 7])
    assert list(dist) == list(BEHAVIOURS)
    assert dist["button_on"] == 0.5 and dist["no_behavior"] == dist["door_right"] == 0.25
    assert sum(dist.values()) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="indices"):
        behaviour_distribution([12])
    with pytest.raises(ValueError, match="no trajectories"):
        behaviour_distribution([])
    assert behaviour_labels(np.array([[8], [11]])) == ["red_displace", "no_behavior"]


# ---------------------------------------------------------------- termination


def _random_states(rng, n):
    """Start/current scene and robot pairs scattered around every termination threshold's far side."""
    out = []
    for _ in range(n):
        start, _ = make_traj({k: float(rng.choice(lim)) for k, (_, lim) in ADJUSTABLE_PARTS.items()}, steps=1)
        start = start[0]
        state = start.copy()
        for idx, (lo, hi) in [(0, (0, .27)), (1, (0, .16)), (3, (0, .09)), (5, (0, 1))]:
            state[idx] = rng.choice([start[idx], 0.3 * hi, 0.7 * hi])
        for p in BLOCKS.values():
            state[p:p + 3] += rng.choice([0.0, 0.0005, 0.003]) * rng.choice([-1, 1], 3)
        colour = list(BLOCKS)[rng.integers(0, 3)]
        robot = np.zeros(15)
        robot[:3] = state[BLOCKS[colour]:BLOCKS[colour] + 3] + (0, 0, rng.choice([0.03, 0.09]))
        out.append((start, state, robot))
    return out


def test_episode_done_matches_original():
    rng = np.random.default_rng(1)
    cases = _random_states(rng, 200)
    start, state, robot = (np.stack(x) for x in zip(*cases))
    got = np.asarray(jax.jit(episode_done)(state, robot, start))
    want = [oracle.check_state_difference(s0, s, r[:3], oracle.articulated_binaries_from_start_state(s0))
            for s0, s, r in cases]
    assert got.tolist() == want
    assert 20 < sum(want) < 180
    # explicit binaries (the original passes generate_reset_state's) give the same answers
    binaries = np.asarray(articulated_binaries(start))
    assert np.asarray(episode_done(state, robot, start, binaries)).tolist() == want


def test_episode_done_in_scan_and_recorded_length():
    """A whole rollout's done flags from a lax.scan, and where the original's loop stops recording."""
    for start, events in [({"sliding_door": 0.27}, [(5, {"sliding_door": 0.1})]),  # door crosses its midpoint
                          ({}, [(3, {"tcp": near("blue", 0.03)}), (6, {"blue": (0.0, 0.002, 0.0)})]),
                          ({}, [(3, {"tcp": near("blue", 0.03)}), (6, {"blue": (0.0, 0.0, 0.01)})]),  # z only
                          ({}, [(4, {"switch": 0.03})])]:  # detected, but not past the switch midpoint
        scene, robot = make_traj(start, events)

        def step(carry, x):
            s, r = x
            return carry, episode_done(s, r, scene[0])

        _, done = jax.lax.scan(step, None, (jnp.asarray(scene), jnp.asarray(robot)))
        binaries = oracle.articulated_binaries_from_start_state(scene[0])
        assert int(recorded_length(done)) == oracle.rollout_recorded_steps(scene, robot, binaries, T)
    assert np.asarray(recorded_length(jnp.array([[0, 0, 1, 1], [0, 0, 0, 0]], bool))).tolist() == [3, 4]


# ---------------------------------------------------------------- reset states

SETUPS = [{}, {"green_light": 0}, {"green_light": 1}, {"sliding_door": 0}, {"sliding_door": 0.28},
          {"drawer": 0.16, "switch": 0, "sliding_door": 0}, {"switch": 0.085},
          {"cubes_table_only": True, "sliding_door": 0}]


@pytest.mark.parametrize("env_setup", SETUPS)
def test_reset_state_ranges_and_setup(env_setup):
    keys = jax.random.split(jax.random.key(0), 256)
    parts = np.asarray(jax.vmap(lambda k: sample_scene_setup(k, env_setup))(keys))
    assert parts.shape == (256, 6)
    assert (parts[:, [2, 4]] == 0).all()  # button, lightbulb written as 0, as the original does
    for name, (idx, (lo, hi)) in ADJUSTABLE_PARTS.items():
        if name in env_setup:
            np.testing.assert_allclose(parts[:, idx], env_setup[name], rtol=1e-6)
        else:
            np.testing.assert_allclose(np.unique(parts[:, idx]), [lo, hi], rtol=1e-6)  # both ends, nothing else
            assert 80 < (parts[:, idx] == np.float32(hi)).sum() < 176
    # the original: same fixed values, binaries equal to those derived from the state
    for seed in range(8):
        state, binary = oracle.generate_reset_state(env_setup, random.Random(seed))
        assert binary == oracle.articulated_binaries_from_start_state(state)
        assert np.asarray(articulated_binaries(jnp.asarray(state, jnp.float32))).tolist() == binary
        for name in set(env_setup) & set(ADJUSTABLE_PARTS):
            assert state[ADJUSTABLE_PARTS[name][0]] == pytest.approx(parts[0, ADJUSTABLE_PARTS[name][0]])


def test_reset_state_deterministic_per_key():
    f = jax.jit(lambda k: sample_scene_setup(k, {"green_light": 0}))
    a, b = f(jax.random.key(3)), f(jax.random.key(3))
    assert np.array_equal(a, b)
    draws = {tuple(p) for p in np.asarray(jax.vmap(f)(jax.random.split(jax.random.key(4), 100)))}
    assert len(draws) == 8  # door x drawer x switch, light fixed
    poses = jnp.arange(30.0).reshape(2, 15)
    p = sample_reset_pose(jax.random.key(5), poses)
    assert np.array_equal(p, sample_reset_pose(jax.random.key(5), poses)) and float(p[0]) in (0.0, 15.0)


@pytest.mark.parametrize("env_setup, error, match", [
    ({"door": 0}, ValueError, "unknown part 'door'"),
    ({"green_light": 0.5}, ValueError, "0 \\(off\\) or 1"),
    ({"drawer": "0.16"}, TypeError, "finite number"),
    ({"drawer": True}, TypeError, "finite number"),
    ({"switch": float("nan")}, TypeError, "finite number"),
    ({"cubes_table_only": 1}, TypeError, "true/false"),
    ([("drawer", 0)], TypeError, "mapping"),
])
def test_env_setup_errors(env_setup, error, match):
    with pytest.raises(error, match=match):
        check_env_setup(env_setup)
    with pytest.raises(error, match=match):
        sample_scene_setup(jax.random.key(0), env_setup)


# ---------------------------------------------------------------- experiment setup JSONs

# written as the original's calvin_exp_configs_examples/button_on.json and door_dont_right.json are
BUTTON_ON = """{
    "env_setup" : {"green_light" : 0},
    "use_neg" : false,
    "pos_examples": "/yourfolderhere/dataset/CalvinDD_validation_by_category_wcubes/button_on_20.hdf5",
    "loc_target": [
        -0.1183045814461375,
        -0.1144538267241942,
        0.4960556833337702
      ],
    "reset_poses": "/yourfolderhere/dataset/initial_calvin_robot_states_midpoint.json"
}"""
DOOR_DONT_RIGHT = """{
    "env_setup" : {"sliding_door" : 0.28, "cubes_table_only" : true},
    "use_neg" : true,
    "neg_examples": "by_category/door_right_20.hdf5",
    "pos_examples": null,
    "reset_poses": "initial_calvin_robot_states_midpoint.json"
}"""


@pytest.fixture
def dataset(tmp_path):
    root = tmp_path / "dataset"
    (root / "CalvinDD_validation_by_category_wcubes").mkdir(parents=True)
    (root / "CalvinDD_validation_by_category_wcubes" / "button_on_20.hdf5").write_bytes(b"")
    poses = np.random.default_rng(0).normal(size=(3, 15))
    (root / "initial_calvin_robot_states_midpoint.json").write_text(json.dumps({"robot_states": poses.tolist()}))
    return root, poses


def test_parse_original_format(tmp_path, dataset):
    root, poses = dataset
    path = tmp_path / "button_on.json"
    path.write_text(BUTTON_ON)
    setup = load_experiment_setup(str(path), path_prefixes={"/yourfolderhere/dataset": str(root)})
    assert isinstance(setup, ExperimentSetup)
    assert setup.env_setup == (("green_light", 0.0),) and setup.fixed_parts == {"green_light": 0.0}
    assert setup.pos_examples == str(root / "CalvinDD_validation_by_category_wcubes" / "button_on_20.hdf5")
    assert setup.use_neg is False and setup.neg_examples is None and setup.cubes_table_only is False
    assert setup.loc_target == pytest.approx((-0.1183045814461375, -0.1144538267241942, 0.4960556833337702))
    np.testing.assert_array_equal(load_reset_poses(setup.reset_poses), poses)
    assert float(sample_scene_setup(jax.random.key(1), setup.fixed_parts)[5]) == 0.0
    with pytest.raises(AttributeError):
        setup.use_neg = True  # frozen
    # without the files (the original's placeholders), when asked not to check
    unchecked = parse_experiment_setup(json.loads(BUTTON_ON), check_files=False)
    assert unchecked.reset_poses == "/yourfolderhere/dataset/initial_calvin_robot_states_midpoint.json"


def test_parse_relative_paths_and_negatives(tmp_path, dataset):
    root, _ = dataset
    (root / "by_category").mkdir()
    (root / "by_category" / "door_right_20.hdf5").write_bytes(b"")
    path = tmp_path / "door_dont_right.json"
    path.write_text(DOOR_DONT_RIGHT)
    setup = load_experiment_setup(str(path), base_dir=str(root))
    assert setup.env_setup == (("sliding_door", 0.28),) and setup.cubes_table_only is True
    assert setup.use_neg and setup.neg_examples == str(root / "by_category" / "door_right_20.hdf5")
    assert setup.pos_examples is None and setup.loc_target is None
    # relative paths default to the JSON's folder, where these files are not
    with pytest.raises(FileNotFoundError, match="neg_examples file not found: .*door_right_20.hdf5"):
        load_experiment_setup(str(path))


def _base():
    return {"env_setup": {}, "use_neg": False, "pos_examples": None, "reset_poses": None}


@pytest.mark.parametrize("change, error, match", [
    ({"env_setup": {"drawr": 0}}, ValueError, "unknown part 'drawr'"),
    ({"env_setup": {"green_light": "on"}}, TypeError, "green_light"),
    ({"env_setup": None}, TypeError, "env_setup"),
    ({"use_neg": "false"}, TypeError, "'use_neg' must be true/false"),
    ({"use_neg": True}, ValueError, "'neg_examples' is missing"),
    ({"pos_examples": 3}, TypeError, "'pos_examples' must be a file path"),
    ({"loc_target": [0.1, 0.2]}, TypeError, "'loc_target' must be a list of 3 numbers"),
    ({"loc_target": [0.1, 0.2, "z"]}, TypeError, "'loc_target'"),
    ({"reset_pose": None}, ValueError, "unknown key\\(s\\) \\['reset_pose'\\]"),
    ({"reset_poses": "missing_poses.json"}, FileNotFoundError, "reset_poses file not found: .*missing_poses.json"),
    ({"pos_examples": "/nowhere/pos.hdf5"}, FileNotFoundError, "pos_examples file not found: /nowhere/pos.hdf5"),
])
def test_parse_errors(tmp_path, change, error, match):
    config = {**_base(), **change}
    with pytest.raises(error, match=match):
        parse_experiment_setup(config, source="cfg.json", base_dir=str(tmp_path))


def test_parse_structural_errors(tmp_path):
    config = _base()
    del config["use_neg"]
    with pytest.raises(ValueError, match="missing key\\(s\\) \\['use_neg'\\]"):
        parse_experiment_setup(config)
    with pytest.raises(TypeError, match="JSON object"):
        parse_experiment_setup([1, 2])
    # unused negatives are not opened, as in the original
    ok = parse_experiment_setup({**_base(), "neg_examples": "/nowhere/neg.hdf5"})
    assert ok.neg_examples == "/nowhere/neg.hdf5" and not ok.use_neg
    with pytest.raises(FileNotFoundError, match="experiment setup file not found: .*nope.json"):
        load_experiment_setup(str(tmp_path / "nope.json"))
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_experiment_setup(str(bad))
    poses = tmp_path / "poses.json"
    poses.write_text(json.dumps({"robot_states": [[0.0] * 14]}))
    with pytest.raises(ValueError, match="\\[N, 15\\]"):
        load_reset_poses(str(poses))
    poses.write_text(json.dumps({"states": []}))
    with pytest.raises(ValueError, match="'robot_states'"):
        load_reset_poses(str(poses))
    with pytest.raises(FileNotFoundError, match="reset poses file not found"):
        load_reset_poses(str(tmp_path / "none.json"))


def test_bad_rollout_records_name_the_input():
    from dynaguide_jax.eval.behaviours import detect_behaviour
    scene, robot = np.zeros((5, 24)), np.zeros((5, 15))
    with pytest.raises(ValueError, match=r"scene_obs must be \[T >= 1, 24\]"):
        detect_behaviour(np.zeros((5, 23)), robot)
    with pytest.raises(ValueError, match=r"robot_obs must be \[T=5, >=3\]"):
        detect_behaviour(scene, np.zeros((4, 15)))
    with pytest.raises(FloatingPointError, match="scene_obs"):
        detect_behaviour(np.full((5, 24), np.nan), robot)
    with pytest.raises(ValueError, match=r"counted must be \[N, 12\]"):
        behaviour_distribution(None, np.zeros((2, 5)))
    with pytest.raises(ValueError, match=r"behaviour indices must be integers in \[0, 12\)"):
        behaviour_labels([20])
