"""CALVIN adapter: obs mapping for both calvin_env variants, the install message when calvin_env is
missing, and (where calvin_env with its scene assets is installed) reset to a given state, stepping
and the vector env on the real simulator."""
import sys

import jax
import numpy as np
import pytest

from dynaguide_jax.envs import calvin
from dynaguide_jax.envs.calvin import CalvinConfig, CalvinEnvFactory, CalvinEnvMissing, CalvinHostEnv

JOINTS = [-1.21779206, 1.03987646, 2.11978261, -2.34205014, -0.87015947, 1.64119353, 0.55344866]  # scene D's
ROBOT = np.array([0.0] * 6 + [0.08] + JOINTS + [1.0])
SCENE = np.array([0.1, 0.05, 0, 0, 0, 1,  # door, drawer, button, switch, lightbulb, green light
                  0.05, -0.1, 0.46, 0, 0, 0.3, 0.15, -0.1, 0.46, 0, 0, 0, 0.28, -0.08, 0.46, 0, 0, 1.0])


def _calvin_skip_reason():
    try:
        calvin.calvin_root(CalvinConfig())
    except CalvinEnvMissing:
        return "calvin_env (CALVIN's simulator) and pybullet are not installed"
    except FileNotFoundError as e:
        return f"calvin_env is installed without its scene assets: {e}"
    return None


SKIP = _calvin_skip_reason()
needs_calvin = pytest.mark.skipif(SKIP is not None, reason=SKIP or "")


def test_missing_calvin_env_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "calvin_env", None)
    monkeypatch.setitem(sys.modules, "calvin_env.envs.play_table_env", None)
    for make in (calvin.import_calvin_env, CalvinHostEnv, lambda: CalvinEnvFactory()(0)):
        with pytest.raises(CalvinEnvMissing, match=r"calvin_env package from the CALVIN sources .*mees/calvin.*"
                                                   r"pip install pybullet"):
            make()


def test_a_checkout_without_assets_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"CALVIN checkout {tmp_path} has no conf/scene/calvin_scene_D.yaml"):
        calvin.calvin_root(CalvinConfig(root=str(tmp_path)))


def test_obs_of_both_calvin_env_variants_map_to_the_builtin_names():
    rng = np.random.default_rng(0)
    static, gripper = rng.integers(0, 256, (200, 200, 3), np.uint8), rng.integers(0, 256, (84, 84, 3), np.uint8)
    robot, scene = rng.normal(size=15), rng.normal(size=24)
    upstream = {"rgb_obs": {"rgb_static": static, "rgb_gripper": gripper}, "depth_obs": {}, "robot_obs": robot,
                "scene_obs": scene}
    vendored = {"third_person": np.transpose(static.astype(np.float32) / 255, (2, 0, 1)),
                "eye_in_hand": np.transpose(gripper.astype(np.float32) / 255, (2, 0, 1)), "proprio": robot,
                "states": scene}
    for obs in (upstream, vendored):
        out = calvin.map_obs(obs, "proprio", "scene")
        assert set(out) == {"rgb_static", "rgb_gripper", "proprio", "scene"}
        np.testing.assert_array_equal(out["rgb_static"], static)  # the [0, 1] floats map back exactly
        np.testing.assert_array_equal(out["rgb_gripper"], gripper)
        assert out["proprio"].dtype == np.float32 and out["scene"].dtype == np.float32
        np.testing.assert_allclose(out["scene"], scene, rtol=1e-6)
    with pytest.raises(ValueError, match="unknown calvin_env obs dict with keys"):
        calvin.map_obs({"robot_obs": robot})
    with pytest.raises(ValueError, match=r"robot_obs / scene_obs must be \[15\] / \[24\]"):
        calvin.map_obs({**upstream, "scene_obs": scene[:20]})


def test_actions_are_checked_and_the_gripper_binarised():
    a = np.array([0.1, 0, 0, 0, 0, 0, -0.2])
    np.testing.assert_array_equal(calvin.binarize_gripper(a)[-1], -1.0)
    assert a[-1] == -0.2  # a copy: calvin_env's step writes into its action
    assert calvin.binarize_gripper(np.zeros(7))[-1] == 1.0
    with pytest.raises(ValueError, match=r"action must be a CALVIN action vector \[7\], got shape \(6,\)"):
        calvin.binarize_gripper(np.zeros(6))


@needs_calvin
def test_real_calvin_resets_to_a_given_state_and_steps():
    env = CalvinHostEnv(CalvinConfig())
    try:
        obs = env.reset(ROBOT, SCENE)
        assert obs["rgb_static"].shape == (200, 200, 3) and obs["rgb_gripper"].shape == (84, 84, 3)
        assert obs["rgb_static"].dtype == np.uint8 and obs["rgb_static"].std() > 5
        np.testing.assert_allclose(obs["proprio"][7:14], JOINTS, atol=1e-3)
        np.testing.assert_allclose(obs["scene"][:6], SCENE[:6], atol=1e-3)
        np.testing.assert_allclose(obs["scene"][6:].reshape(3, 6)[:, :3], SCENE[6:].reshape(3, 6)[:, :3], atol=5e-3)
        robot0, scene0 = env.low_dim()
        np.testing.assert_array_equal(robot0, obs["proprio"])
        for _ in range(4):
            obs = env.step([1.0, 0, 0, 0, 0, 0, -0.3])  # +x at full scale, close the gripper
        assert obs["proprio"][0] > robot0[0] + 0.03 and obs["proprio"][14] == -1.0
        assert obs["proprio"][6] < robot0[6]  # closing
        np.testing.assert_allclose(obs["scene"][:2], SCENE[:2], atol=1e-3)
    finally:
        env.close()
    shuffled = CalvinHostEnv(CalvinConfig(shuffle_blocks=True, seed=1))
    try:
        obs = shuffled.reset(ROBOT, SCENE)
        assert np.abs(obs["scene"][6:8] - SCENE[6:8]).max() > 1e-2  # the blocks moved, the parts did not
        np.testing.assert_allclose(obs["scene"][:2], SCENE[:2], atol=1e-3)
    finally:
        shuffled.close()


@needs_calvin
def test_real_calvin_in_worker_processes_through_the_host_loop():
    from dynaguide_jax.envs.vector_env import VectorEnv
    from dynaguide_jax.eval.host_loop import host_closed_loop
    from dynaguide_jax.eval.rollout import LoopConfig

    def policy(obs, key):
        assert obs["rgb_static"].shape == (2, 2, 200, 200, 3) and obs["proprio"].shape == (2, 2, 15)
        return jax.numpy.zeros((2, 16, 7)).at[:, :, 0].set(0.5).at[:, :, 6].set(1.0)

    cfg = LoopConfig(horizon=3, obs_horizon=2, action_horizon=2)
    with VectorEnv(CalvinEnvFactory(), 2, timeout_s=120) as envs:
        out = host_closed_loop(envs, policy, np.stack([ROBOT] * 2), np.stack([SCENE] * 2), jax.random.key(0), cfg)
    assert out.robot_obs.shape == (2, 4, 15) and out.scene_obs.shape == (2, 4, 24) and out.actions.shape == (2, 3, 7)
    np.testing.assert_allclose(out.robot_obs[:, 0, 7:14], np.stack([JOINTS] * 2), atol=1e-3)
    assert (np.diff(out.robot_obs[:, :, 0], axis=1) > 0).all()
    np.testing.assert_allclose(out.robot_obs[0], out.robot_obs[1], atol=1e-6)  # same start, same sim
