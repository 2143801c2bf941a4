"""Closed loop in the built-in world: expert actions replayed through the compiled runner are
detected as their behaviour by the original's rules, and every method's policy function runs a
rollout of a (random-weight) diffusion policy end to end."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dynaguide_jax.envs import TabletopConfig, expert, reset, rollout_expert, with_start_condition
from dynaguide_jax.eval import methods
from dynaguide_jax.eval.behaviours import BEHAVIOURS, detect_behaviours
from dynaguide_jax.eval.rollout import EnvFns, LoopConfig, closed_loop, tabletop_env

CFG = TabletopConfig.small()


def test_expert_actions_through_the_runner_are_detected():
    names = ["button_on", "drawer_open", "door_left", "switch_on"]
    bs = [expert.BEHAVIOURS.index(n) for n in names]
    starts = [with_start_condition(reset(jax.random.key(i), CFG), b) for i, b in enumerate(bs)]
    plans = [np.asarray(rollout_expert(s, b, jax.random.key(10 + i), CFG, steps=70, images=False).actions)
             for i, (s, b) in enumerate(zip(starts, bs))]
    env = tabletop_env(CFG)
    # the "policy" replays the expert's actions: it reads the step counter from the observation
    timed = EnvFns(env.step, lambda s: {"t": s.t}, env.low_dim)
    table = jnp.asarray(np.stack(plans))  # [N, 70, 7]

    def replay(obs, key):
        t = obs["t"][:, -1]
        idx = jnp.clip(t[:, None] + jnp.arange(16)[None] - 1, 0, table.shape[1] - 1)  # chunk[1] runs at t
        return jnp.take_along_axis(table, idx[..., None], axis=1)

    states = jax.tree.map(lambda *x: jnp.stack(x), *starts)
    out = jax.jit(lambda s, k: closed_loop(timed, replay, s, k, LoopConfig(horizon=70)))(states, jax.random.key(0))
    np.testing.assert_allclose(out.actions, np.clip(table, -1, 1), atol=1e-6)
    det = detect_behaviours(out.scene_obs, out.robot_obs)
    assert [BEHAVIOURS[i] for i in np.asarray(det.index)] == names


@pytest.mark.slow
def test_every_method_runs_a_closed_loop_rollout():
    from dynaguide_jax.diffusion import DDIMSchedule
    from dynaguide_jax.dynamics import DynamicsConfig, init_dynamics
    from dynaguide_jax.encoders import DinoV2Config, init_dinov2
    from dynaguide_jax.guidance import DynaGuide, GoalSet
    from dynaguide_jax.policy import DiffusionPolicy, PolicyConfig

    small = PolicyConfig.preset("small")
    pcfg = small.replace(obs_keys=("proprio", "rgb_gripper", "rgb_static"), low_dim=(("proprio", 15),),
                         rgb_shapes=(("rgb_gripper", (CFG.gripper_size,) * 2), ("rgb_static", (CFG.static_size,) * 2)))
    policy = DiffusionPolicy(pcfg)
    params = policy.init(jax.random.key(0))
    gc_policy = DiffusionPolicy(pcfg.replace(obs_horizon=1, goal_rgb_keys=("rgb_static",)))
    gc_params = gc_policy.init(jax.random.key(1))
    schedule = DDIMSchedule(num_inference_steps=2)
    enc = DinoV2Config(hidden_size=32, num_layers=1, num_heads=2, pos_grid=2)
    dyn = DynamicsConfig.preset("small").replace(feature_dim=32, patches_per_camera=4, proprio_dim=15)
    gparams = {"dynamics": init_dynamics(dyn, jax.random.key(2)), "encoder": init_dinov2(enc, jax.random.key(3), 28),
               "goals": GoalSet.create(np.ones((3, 4 * 32), np.float32)), "sigma": 30.0}
    guide = DynaGuide(dynamics=dyn, encoder=enc, image_size=28)
    goal_imgs = np.zeros((3, CFG.static_size, CFG.static_size, 3), np.uint8)
    fns = {"base": methods.base_fn(policy, params, schedule),
           "dynaguide": methods.guided_fn(policy, params, schedule, guide, gparams, scale=1.5, repeats=2)}
    env = tabletop_env(CFG)
    states = jax.vmap(lambda k: reset(k, CFG))(jax.random.split(jax.random.key(5), 2))
    actions = {}
    for name, fn in fns.items():  # two full closed loops (each compiles the world, policy and guidance)
        out = jax.jit(lambda s, k, fn=fn: closed_loop(env, fn, s, k, LoopConfig(horizon=14)))(states,
                                                                                            jax.random.key(7))
        assert out.scene_obs.shape == (2, 15, 24) and np.isfinite(np.asarray(out.actions)).all(), name
        actions[name] = np.asarray(out.actions)
    assert not np.allclose(actions["base"], actions["dynaguide"])  # guidance moves the actions
    # the other methods on the observation stack the loop feeds them (To frames of the world)
    obs = jax.vmap(env.observe)(states)
    stack = {k: jnp.stack([v, v], axis=1) for k, v in obs.items()}
    key = jax.random.key(3)
    base = np.asarray(jax.jit(fns["base"])(stack, key))
    others = {"gc": methods.gc_fn(gc_policy, gc_params, schedule, goal_imgs),
              "gpc": methods.gpc_fn(policy, params, schedule, guide, gparams, np.ones((3, 4, 32), np.float32),
                                    num_samples=2),
              "itps": methods.itps_fn(policy, params, schedule, [0.1, -0.2, 0.5], scale=1.0, repeats=2)}
    for name, fn in others.items():
        view = {k: v[:, -1:] for k, v in stack.items()} if name == "gc" else stack
        chunk = np.asarray(jax.jit(fn)(view, key))
        assert chunk.shape == (2, 16, 7) and np.isfinite(chunk).all(), name
        assert not np.allclose(chunk, base), name
    with pytest.raises(ValueError, match="goal-conditioned"):
        methods.gc_fn(policy, params, schedule, goal_imgs)
