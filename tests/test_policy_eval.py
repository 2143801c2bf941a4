"""``eval.policy``: open-loop agreement with demonstrations and closed-loop completion from play states."""
import numpy as np
import pytest

import jax
import jax.numpy as jnp

from dynaguide_jax.data.episodes import EpisodeData
from dynaguide_jax.envs import TabletopConfig, tabletop
from dynaguide_jax.eval.policy import (completion_from_play, format_policy_report, net_cosine, open_loop_agreement,
                                       segment_labels, segment_windows)
from dynaguide_jax.policy import PolicyConfig
from dynaguide_jax.policy.windows import policy_batch


def test_net_cosine_compares_the_summed_xyz_moves():
    a = np.zeros((3, 4, 7))
    a[0, :, 0] = 1.0  # +x
    a[1, :2, 1], a[1, 2:, 1] = 1.0, -0.5  # net +y
    b = a.copy()
    b[0, :, 0] = -2.0
    b[1, :, 6] = 5.0  # the gripper does not count
    np.testing.assert_allclose(net_cosine(a, b), [-1.0, 1.0, 0.0])  # row 2: no move -> 0
    np.testing.assert_allclose(net_cosine(a[:2], a[:2][:, :, [1, 0, 2, 3, 4, 5, 6]]), [0.0, 0.0], atol=1e-12)


def _windows(n=40, tp=16, seed=0):
    rng = np.random.default_rng(seed)
    actions = rng.uniform(-1, 1, (n, tp, 7)).astype(np.float32)
    actions[..., 6] = np.where(rng.random((n, tp)) < 0.5, -1.0, 1.0)
    obs = {"idx": np.repeat(np.arange(n, dtype=np.float32)[:, None, None], 2, axis=1)}  # [N, To, 1]
    return obs, actions, np.linspace(0, 1, n)


def test_open_loop_agreement_of_the_demonstrations_themselves_is_perfect_and_of_their_mirror_is_not():
    obs, actions, phase = _windows()
    table = jnp.asarray(actions)
    oracle = lambda o, k: table[o["idx"][:, 0, 0].astype(jnp.int32)]  # noqa: E731
    rep = open_loop_agreement(oracle, obs, actions, phase, jax.random.key(0), first=1, executed=14, phases=4,
                              batch=16)  # 40 windows: the last batch is padded
    assert rep["overall"]["n"] == 40 and sum(r["n"] for r in rep["by_phase"]) == 40 and len(rep["by_phase"]) == 4
    for row in (rep["overall"], *rep["by_phase"]):
        assert row["cosine_to_demo"] == pytest.approx(1.0) and row["cosine_to_resample"] == pytest.approx(1.0)
        assert row["gripper_agreement"] == 1.0 and row["mse"] == 0.0 and row["mse_mean_action"] > 0.1
    mirror = lambda o, k: -oracle(o, k)  # noqa: E731
    rep = open_loop_agreement(mirror, obs, actions, phase, jax.random.key(0), first=1, executed=14)
    assert rep["overall"]["cosine_to_demo"] == pytest.approx(-1.0) and rep["overall"]["gripper_agreement"] == 0.0
    assert rep["overall"]["cosine_to_resample"] == pytest.approx(1.0)
    assert rep["overall"]["cosine_to_demo_above_0.8"] == 0
    noisy = lambda o, k: oracle(o, k) + jax.random.normal(k, (o["idx"].shape[0], 16, 7))  # noqa: E731
    rep = open_loop_agreement(noisy, obs, actions, phase, jax.random.key(0), first=1, executed=14)
    assert 0.2 < rep["overall"]["cosine_to_resample"] < 0.95 and rep["overall"]["mse"] == pytest.approx(1.0, rel=0.15)
    assert "| all | 40 | 0." in format_policy_report({"open_loop": rep})


def test_open_loop_agreement_refuses_mismatched_inputs():
    obs, actions, phase = _windows()
    fn = lambda o, k: jnp.zeros((o["idx"].shape[0], 16, 7))  # noqa: E731
    with pytest.raises(ValueError, match=r"need the same N > 0, got \{'idx': 40\}, \(5, 16, 7\)"):
        open_loop_agreement(fn, obs, actions[:5], phase, jax.random.key(0), first=1, executed=14)
    with pytest.raises(ValueError, match="cannot execute 16 from index 1"):
        open_loop_agreement(fn, obs, actions, phase, jax.random.key(0), first=1, executed=16)
    with pytest.raises(ValueError, match="executed must be >= 1"):
        open_loop_agreement(fn, obs, actions, phase, jax.random.key(0), first=1, executed=0)
    short = lambda o, k: jnp.zeros((o["idx"].shape[0], 16, 6))  # noqa: E731
    with pytest.raises(ValueError, match=r"sample_fn returned chunks \(40, 16, 6\)"):
        open_loop_agreement(short, obs, actions, phase, jax.random.key(0), first=1, executed=14)


def test_segment_windows_are_the_training_windows_at_evenly_spaced_frames():
    rng = np.random.default_rng(1)
    data = EpisodeData(obs={"proprio": rng.normal(size=(50, 4)).astype(np.float32)},
                       actions=rng.normal(size=(50, 7)).astype(np.float32), episode_ends=np.array([20, 31, 50]))
    cfg = PolicyConfig(obs_keys=("proprio",), rgb_shapes=(), low_dim=(("proprio", 4),))
    obs, actions, phase = segment_windows(data, cfg, 50)  # every frame
    assert obs["proprio"].shape == (50, 2, 4) and actions.shape == (50, 16, 7)
    np.testing.assert_allclose(phase[[0, 19, 20, 30, 31, 49]], [0, 1, 0, 1, 0, 1])
    np.testing.assert_array_equal(obs["proprio"][0], data.obs["proprio"][[0, 0]])  # padded with the first frame
    np.testing.assert_array_equal(actions[19], data.actions[[18] + [19] * 15])  # and the last
    ref = policy_batch(data, cfg, 8, 0, 0)  # the same convention as the windows the policy trains on
    for o, a in zip(ref["obs"]["proprio"], ref["actions"]):
        t = int(np.flatnonzero((data.obs["proprio"] == o[-1]).all(-1))[0])
        np.testing.assert_array_equal(obs["proprio"][t], o)
        np.testing.assert_array_equal(actions[t], a)
    assert len(segment_windows(data, cfg, 10)[2]) == 10
    assert segment_labels(np.array([b"x"] * 19 + [b"drawer_open"] + ["door_left"] * 30, object), [20, 50]) == \
        ["drawer_open", "door_left"]


def test_completion_from_play_counts_first_behaviours_and_refuses_bad_inputs():
    env = TabletopConfig(static_size=32, gripper_size=16)
    states = jax.vmap(lambda k: tabletop.reset(k, env))(jax.random.split(jax.random.key(0), 30))
    robot = np.array(jax.vmap(tabletop.robot_obs)(states))
    scene = np.array(jax.vmap(tabletop.scene_obs)(states))
    labels, ends = ["drawer_open", "red_lift", "door_left"], np.array([10, 20, 30])
    still = lambda o, k: jnp.zeros((o["proprio"].shape[0], 16, 7)).at[..., 6].set(1.0)  # noqa: E731
    rep = completion_from_play(still, env, robot, scene, labels, ends, jax.random.key(1), fractions=(0.0, 0.5),
                               horizon=14, repeats=3)
    assert rep["segments"] == 2 and [r["fraction"] for r in rep["by_fraction"]] == [0.0, 0.5]
    for row in rep["by_fraction"]:  # standing still does nothing, from every state
        assert row["n"] == 6 and row["same"] == 0.0 and row["none"] == 1.0 and row["detected"] == {"no_behavior": 1.0}
        assert set(row["per_behaviour"]) == {"drawer_open", "door_left"}
    # a policy that pushes +y from the open drawer's handle closes it: counted for the drawer_close segment only
    robot[:], scene[:] = robot[0], scene[0]
    scene[:, 1] = 0.16
    robot[:, :3] = np.asarray(tabletop.drawer_handle(jnp.float32(0.16)))
    push = lambda o, k: jnp.zeros((o["proprio"].shape[0], 16, 7)).at[..., 1].set(1.0).at[..., 6].set(1.0)  # noqa
    pushed = completion_from_play(push, env, robot, scene, ["door_left", "drawer_close", "red_lift"], ends,
                                  jax.random.key(1), fractions=(0.5,), horizon=28, repeats=2, batch=3)
    (row,) = pushed["by_fraction"]
    assert row["n"] == 4 and row["same"] == 0.5 and row["none"] == 0.0 and row["detected"] == {"drawer_close": 1.0}
    assert row["per_behaviour"] == {"door_left": {"n": 2, "same": 0.0, "none": 0.0},
                                    "drawer_close": {"n": 2, "same": 1.0, "none": 0.0}}
    assert "| 0.50 | 6 | 0% | 100% |" in format_policy_report({"open_loop": {"overall": {
        "n": 1, "cosine_to_demo": 1.0, "cosine_to_demo_above_0.8": 1.0, "cosine_to_resample": 1.0,
        "gripper_agreement": 1.0, "mse": 0.0, "mse_mean_action": 0.0}, "by_phase": []}, "completion": rep})
    for kw, msg in ((dict(fractions=(1.0,)), r"fractions must be in \[0, 1\)"), (dict(fractions=()), "fractions"),
                    (dict(labels=labels[:2]), "2 segment labels for 3 segments"),
                    (dict(labels=["red_lift"] * 3), "no articulated segments"),
                    (dict(fractions=(float("nan"),)), "fractions must be")):
        args = dict(labels=labels, fractions=(0.5,))
        args.update(kw)
        with pytest.raises(ValueError, match=msg):
            completion_from_play(still, env, robot, scene, args["labels"], ends, jax.random.key(1),
                                 fractions=args["fractions"], horizon=14)
