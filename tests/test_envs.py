"""The built-in tabletop world (dynaguide_jax.envs): layouts, action scaling, contact rules, toggles,
limits, determinism / vmap / jit, scripted experts for every behaviour, and visibility of every
state change in the rendered static image."""
import functools

import numpy as np
import pytest

import jax
import jax.numpy as jnp

from dynaguide_jax.envs import expert as ex
from dynaguide_jax.envs import render as rd
from dynaguide_jax.envs import tabletop as tt

CFG = tt.TabletopConfig.small()
DOWN = (np.pi, 0.0, np.pi / 2)
# blocks parked on the table, away from the parts: red, blue, pink (bottom-centre xyz, yaw 0)
BLOCKS = ((0.10, -0.09, 0.46), (0.20, -0.09, 0.46), (0.30, -0.09, 0.46))


def robot_vec(tcp, gripper=1.0, euler=DOWN):
    r = np.zeros(15, np.float32)
    r[:3], r[3:6], r[6], r[14] = tcp, euler, 0.08 if gripper > 0 else 0.0, gripper
    return r


def scene_vec(door=0.0, drawer=0.0, button=0.0, switch=0.0, green=0.0, blocks=BLOCKS, yaws=(0.0, 0.0, 0.0)):
    s = np.zeros(24, np.float32)
    s[:6] = door, drawer, button, switch, float(switch > tt.LIGHTBULB_ON), green
    for i, (xyz, yaw) in enumerate(zip(blocks, yaws)):
        s[6 + 6 * i:9 + 6 * i] = xyz
        s[11 + 6 * i] = yaw
    return s


def at(tcp, gripper=1.0, **scene):
    return tt.reset(jax.random.key(0), CFG, robot_obs=robot_vec(tcp, gripper), scene_obs=scene_vec(**scene))


def act(dx=0.0, dy=0.0, dz=0.0, gripper=1.0, orn=(0.0, 0.0, 0.0)):
    return np.asarray([dx, dy, dz, *orn, gripper], np.float32)


def drive(state, actions):
    """Step eagerly through ``actions``; returns the list of states (start first)."""
    states = [state]
    for a in actions:
        states.append(tt.step(states[-1], a, CFG))
    return states


def values(states, field):
    return np.asarray([np.asarray(getattr(s, field)) for s in states])


def transitions(x):
    return int(np.sum(np.abs(np.diff(np.asarray(x))) > 0.5))


# --- config, layouts, boundary checks -------------------------------------------------------------
def test_config_is_static_and_checked():
    assert hash(tt.TabletopConfig()) == hash(tt.TabletopConfig.paper())
    assert (tt.TabletopConfig().static_size, tt.TabletopConfig().gripper_size) == (200, 84)
    with pytest.raises(ValueError, match="static_size"):
        tt.TabletopConfig(static_size=0)
    with pytest.raises(ValueError, match="max_rel_pos"):
        tt.TabletopConfig(max_rel_pos=0.0)


def test_observation_layout_matches_calvin():
    robot = robot_vec((0.02586889, -0.2313129, 0.5712808), euler=(3.09045411, -0.02908596, 1.50013585))
    scene = scene_vec(door=0.1, drawer=0.05, switch=0.085, green=1.0, yaws=(0.3, -1.0, 2.0))
    s = tt.reset(jax.random.key(0), CFG, robot_obs=robot, scene_obs=scene)
    obs = tt.observe(s, CFG)
    assert obs["rgb_static"].shape == (64, 64, 3) and obs["rgb_static"].dtype == jnp.uint8
    assert obs["rgb_gripper"].shape == (32, 32, 3) and obs["rgb_gripper"].dtype == jnp.uint8
    r, sc = np.asarray(obs["robot_obs"]), np.asarray(obs["scene_obs"])
    assert r.shape == (15,) and sc.shape == (24,) and r.dtype == np.float32 and sc.dtype == np.float32
    np.testing.assert_allclose(r[:6], robot[:6], atol=1e-6)  # tcp xyz, euler
    assert r[6] == pytest.approx(0.08) and r[14] == 1.0  # gripper width, gripper action
    joints = r[7:14]  # the affine fit reproduces CALVIN's neutral joints closely at CALVIN's neutral pose
    np.testing.assert_allclose(joints, [-1.21779124, 1.03987629, 2.11978254, -2.34205014, -0.87015899, 1.64119093,
                                        0.55344928], atol=0.25)
    np.testing.assert_allclose(sc, scene, atol=1e-6)  # door, drawer, button, switch, bulb, green, 3 x (xyz, euler)
    assert sc[4] == 1.0  # the lightbulb follows the switch
    # a random reset is in range and the same for the same key
    s1, s2 = tt.reset(jax.random.key(5), CFG), tt.reset(jax.random.key(5), CFG)
    jax.tree.map(np.testing.assert_array_equal, s1, s2)
    o = np.asarray(tt.scene_obs(s1))
    assert 0 <= o[0] <= 0.28 and 0 <= o[1] <= 0.16 and o[3] in (0.0, 0.085) and o[5] in (0.0, 1.0)
    xy = o[[6, 7, 12, 13, 18, 19]].reshape(3, 2)
    assert np.all(xy >= [0.0, -0.15]) and np.all(xy <= [0.35, -0.03])


def test_bad_inputs_are_rejected():
    s = at((0.0, -0.25, 0.6))
    with pytest.raises(ValueError, match=r"action must be \[\.\.\., 7\]"):
        tt.step(s, np.zeros(6, np.float32), CFG)
    with pytest.raises(ValueError, match="batch shape"):
        tt.step(s, np.zeros((2, 7), np.float32), CFG)
    with pytest.raises(FloatingPointError, match="action"):
        tt.step(s, act(dx=np.nan), CFG)
    with pytest.raises(ValueError, match="robot_obs"):
        tt.reset(jax.random.key(0), CFG, robot_obs=np.zeros(14))
    with pytest.raises(ValueError, match="scene_obs"):
        tt.reset(jax.random.key(0), CFG, scene_obs=np.zeros((1, 24)))
    # traced: non-finite entries are zeroed (documented), never propagated into the state
    jitted = jax.jit(lambda st, a: tt.step(st, a, CFG))
    out = jitted(s, act(dx=np.nan, dy=np.inf, dz=0.5))
    ref = jitted(s, act(dz=0.5))
    jax.tree.map(np.testing.assert_array_equal, out, ref)


def test_action_scaling_is_calvins():
    s = at((0.0, -0.25, 0.6))
    s1 = tt.step(s, act(dx=1.0), CFG)
    np.testing.assert_allclose(np.asarray(s1.tcp_pos - s.tcp_pos), [0.02, 0, 0], atol=1e-6)  # max_rel_pos
    s2 = tt.step(s, act(dx=3.0, dy=-5.0, dz=0.5), CFG)  # clipped to [-1, 1] first
    np.testing.assert_allclose(np.asarray(s2.tcp_pos - s.tcp_pos), [0.02, -0.02, 0.01], atol=1e-6)
    s3 = tt.step(s, act(orn=(0.0, 0.4, 1.0)), CFG)  # max_rel_orn
    np.testing.assert_allclose(np.asarray(s3.tcp_euler - s.tcp_euler), [0, 0.02, 0.05], atol=1e-5)
    s4 = tt.step(s, act(gripper=-0.2), CFG)  # gripper: -1 when < 0
    assert float(s4.gripper_action) == -1.0 and float(s4.gripper_width) == pytest.approx(0.08 - CFG.gripper_speed)
    assert float(tt.step(s, act(gripper=0.0), CFG).gripper_action) == 1.0


# --- contact rules --------------------------------------------------------------------------------
def test_button_toggles_green_light_once_per_press():
    bx, by = tt.BUTTON_XY
    s = at((bx, by, 0.52), gripper=-1.0)
    down = [act(dz=-0.25, gripper=-1)] * 8  # to z 0.48: depression 0.015 > BUTTON_PRESS
    jitter = [act(dz=d, gripper=-1) for d in (0.15, -0.15, 0.2, -0.2, -0.5, 0.1, -0.1)]  # around the threshold
    up = [act(dz=0.5, gripper=-1)] * 5
    states = drive(s, down + jitter + up + down + [act(dz=-0.25, gripper=-1)] * 2 + up)
    green, button = values(states, "green_light"), values(states, "button")
    assert transitions(green) == 2 and green[len(down) + len(jitter)] == 1.0 and green[-1] == 0.0
    assert button.max() > tt.BUTTON_PRESS and button[-1] == 0.0 and np.all(button <= tt.BUTTON_TRAVEL)
    assert values(states, "tcp_pos")[:, 2].min() >= tt.BUTTON_BASE_TOP  # the base stops the tcp
    # sideways into the cap below its top: the cap is solid, nothing is pressed
    side = drive(at((bx + 0.06, by, 0.48)), [act(dx=-0.5)] * 6)
    assert values(side, "button").max() == 0.0 and transitions(values(side, "green_light")) == 0
    assert float(side[-1].tcp_pos[0]) > bx + tt.BUTTON_CAP_HALF
    # next to the cap (not over it), pressing down does nothing
    beside = drive(at((bx + 0.05, by, 0.52)), [act(dz=-0.5)] * 6)
    assert values(beside, "button").max() == 0.0 and transitions(values(beside, "green_light")) == 0


def test_switch_moves_only_along_its_axis_and_lights_the_bulb_once():
    lever = tuple(float(v) for v in tt.switch_lever(jnp.float32(0.0)))
    s = at(lever)
    sideways = drive(s, [act(dx=0.4), act(dx=-0.8), act(dy=-0.5), act(dy=0.5)])
    assert values(sideways, "switch").max() == 0.0
    states = drive(s, [act(dz=0.5)] * 6 + [act(dz=-0.2)])
    switch, bulb = values(states, "switch"), values(states, "lightbulb")
    assert switch[-2] == pytest.approx(tt.SWITCH_RANGE[1]) and transitions(bulb) == 1 and bulb[-1] == 1.0
    np.testing.assert_allclose(switch[1], 0.01 / tt.SWITCH_GAIN, rtol=1e-4)
    near = drive(at((lever[0], lever[1] - 0.045, lever[2])), [act(dz=0.5)] * 4)  # in front of the lever
    assert values(near, "switch").max() == 0.0


def test_door_moves_only_from_its_handle_along_x():
    handle = tuple(float(v) for v in tt.door_handle(jnp.float32(0.1)))
    s = at(handle, door=0.1)
    other_axes = drive(s, [act(dy=-0.5), act(dy=0.5), act(dz=0.5), act(dz=-1.0)])
    np.testing.assert_allclose(values(other_axes, "door"), 0.1, atol=1e-7)
    in_front = drive(at((handle[0], handle[1] - 0.04, handle[2]), door=0.1), [act(dx=-1.0)] * 4)
    above = drive(at((handle[0], handle[1], handle[2] + 0.06), door=0.1), [act(dx=-1.0)] * 4)
    np.testing.assert_allclose(values(in_front + above, "door"), 0.1, atol=1e-7)
    left = drive(s, [act(dx=-1.0)] * 3)
    np.testing.assert_allclose(float(left[-1].door), 0.16, atol=1e-6)  # follows the tcp: +0.02 per step
    right = drive(s, [act(dx=1.0)] * 8)
    assert float(right[-1].door) == 0.0  # clipped at the end of its range


def test_drawer_pulls_only_when_gripped_and_moves_only_along_y():
    handle = tuple(float(v) for v in tt.drawer_handle(jnp.float32(0.05)))
    s = at(handle, drawer=0.05)
    sideways = drive(s, [act(dx=0.5), act(dx=-0.5), act(dz=0.4), act(dz=-0.4)])
    np.testing.assert_allclose(values(sideways, "drawer"), 0.05, atol=1e-7)
    open_pull = drive(s, [act(dy=-1.0)] * 3)  # an open gripper slips off the handle
    np.testing.assert_allclose(values(open_pull, "drawer"), 0.05, atol=1e-7)
    pull = drive(s, [act(dy=-1.0, gripper=-1)] * 3)
    assert float(pull[-1].drawer) == pytest.approx(0.11, abs=1e-6)
    push = drive(s, [act(dy=1.0)] * 5)
    assert float(push[-1].drawer) == 0.0
    above = drive(at((handle[0], handle[1], handle[2] + 0.03), gripper=-1.0, drawer=0.05),
                  [act(dy=-1.0, gripper=-1)] * 3)
    np.testing.assert_allclose(values(above, "drawer"), 0.05, atol=1e-7)


def test_blocks_are_pushed_at_block_height_and_lifted_when_gripped():
    red = np.asarray(BLOCKS[0])
    mid = red[2] + tt.BLOCK_HALF[0][2]
    above = drive(at((red[0] - 0.08, red[1], 0.53), gripper=-1.0), [act(dx=1.0, gripper=-1)] * 8)
    np.testing.assert_allclose(np.asarray(above[-1].block_pos), np.asarray(BLOCKS), atol=1e-7)
    pushed = drive(at((red[0] - 0.07, red[1], mid), gripper=-1.0), [act(dx=1.0, gripper=-1)] * 4)
    moved = np.asarray(pushed[-1].block_pos[0]) - red
    assert moved[0] > 0.03 and abs(moved[1]) < 1e-6 and abs(moved[2]) < 1e-6
    np.testing.assert_allclose(np.asarray(pushed[-1].block_pos[1:]), np.asarray(BLOCKS[1:]), atol=1e-7)
    # a closed gripper lands on top; an open one descends around the block, grips it and lifts it
    closed = drive(at((red[0], red[1], 0.53), gripper=-1.0), [act(dz=-1.0, gripper=-1)] * 4)
    assert float(closed[-1].tcp_pos[2]) >= red[2] + 2 * tt.BLOCK_HALF[0][2]
    np.testing.assert_allclose(np.asarray(closed[-1].block_pos[0]), red, atol=1e-7)
    grip_and_lift = [act(dz=-0.75)] * 3 + [act(gripper=-1)] * 3 + [act(dz=1.0, gripper=-1)] * 5
    lift = drive(at((red[0], red[1], 0.53)), grip_and_lift)
    assert int(lift[-1].held) == 0 and float(lift[-1].gripper_width) == pytest.approx(0.05)
    assert float(lift[-1].block_pos[0, 2]) - red[2] > 0.09
    assert np.linalg.norm(np.asarray(lift[-1].block_pos[0, :2]) - red[:2]) < 0.002
    dropped = tt.step(lift[-1], act(), CFG)
    assert int(dropped.held) == -1 and float(dropped.block_pos[0, 2]) == pytest.approx(tt.TABLE_Z)


# --- experts, limits, determinism, vmap, jit --------------------------------------------------------
EXPERT_STEPS = 140
GRID_KEYS = jax.random.split(jax.random.key(21), 3)


# without LLVM optimisation: this program compiles in half the time and runs in milliseconds anyway
@functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})
def _expert_grid(keys, noise):
    """Every behaviour's expert from every reset key, in one program (vmap over resets and
    behaviours, lax.scan over steps): ExpertRollout with leading axes [R, B]."""
    def one(key, b):
        k_reset, k_run = jax.random.split(key)
        s = ex.with_start_condition(tt.reset(k_reset, CFG), b)
        return ex.rollout_expert(s, b, k_run, CFG, EXPERT_STEPS, images=False, noise=noise)
    behaviours = jnp.arange(len(ex.BEHAVIOURS))
    return jax.vmap(jax.vmap(one, (None, 0)), (0, None))(keys, behaviours)


def _happened(scene, robot):
    """What changed over a trajectory by the original analysis' thresholds (vs the first row)."""
    first, d = scene[0], scene - scene[0]
    events = {"door": np.abs(d[:, 0]).max() > 0.05, "drawer": np.abs(d[:, 1]).max() > 0.05,
              "switch": np.abs(d[:, 3]).max() > 0.02, "green": np.abs(d[:, 5]).max() > 0.01}
    for name, p in (("red", 6), ("blue", 12), ("pink", 18)):
        moved = np.linalg.norm(scene[:, p:p + 3] - first[p:p + 3], axis=-1) > 0.001
        near = np.linalg.norm(robot[:, :3] - scene[:, p:p + 3], axis=-1) < 0.1
        events[name] = bool((moved & near).any())
    return events


def _assert_in_limits(states):
    for field, (lo, hi) in (("door", tt.DOOR_RANGE), ("drawer", tt.DRAWER_RANGE), ("switch", tt.SWITCH_RANGE),
                            ("button", (0.0, tt.BUTTON_TRAVEL)), ("gripper_width", (0.0, tt.GRIPPER_OPEN))):
        x = np.asarray(getattr(states, field))
        assert x.min() >= lo and x.max() <= hi, field
    tcp = np.asarray(states.tcp_pos)
    assert np.isfinite(tcp).all()
    assert np.all(tcp >= np.asarray(tt.WORKSPACE_LO) - 1e-6) and np.all(tcp <= np.asarray(tt.WORKSPACE_HI) + 1e-6)
    for lo, hi, _ in tt.STATIC_SOLIDS:  # the tcp never enters a solid
        inside = np.all((tcp > np.asarray(lo) + 1e-4) & (tcp < np.asarray(hi) - 1e-4), axis=-1)
        assert not inside.any()
    np.testing.assert_array_equal(np.asarray(states.lightbulb), np.asarray(states.switch) > tt.LIGHTBULB_ON)
    assert set(np.unique(np.asarray(states.green_light))) <= {0.0, 1.0}
    assert np.all(np.asarray(states.block_pos)[..., 2] >= tt.TABLE_Z - 1e-6)


def test_experts_succeed_for_every_behaviour():
    out = _expert_grid(GRID_KEYS, 0.05)
    scene, robot = np.asarray(out.observations["scene_obs"]), np.asarray(out.observations["robot_obs"])
    _assert_in_limits(out.states)
    assert np.abs(np.asarray(out.actions)).max() <= 1.0
    part_of = {"button": "green", "switch": "switch", "drawer": "drawer", "door": "door", "red": "red", "blue": "blue",
               "pink": "pink"}
    for r in range(scene.shape[0]):
        for b, name in enumerate(ex.BEHAVIOURS):
            sc, ro = scene[r, b], robot[r, b]
            start, end = sc[0], sc[-1]
            events = _happened(sc, ro)
            target = part_of[name.split("_")[0]]
            assert events[target], (r, name, events)
            assert not any(v for k, v in events.items() if k != target), (r, name, events)  # nothing else moved
            if name == "button_on":
                assert (start[5], end[5]) == (0.0, 1.0) and transitions(sc[:, 5]) == 1
            elif name == "button_off":
                assert (start[5], end[5]) == (1.0, 0.0) and transitions(sc[:, 5]) == 1
            elif name.startswith("switch"):
                assert end[3] - start[3] == pytest.approx(0.085 if name == "switch_on" else -0.085, abs=0.01)
                assert end[4] == (1.0 if name == "switch_on" else 0.0) and transitions(sc[:, 4]) == 1
            elif name.startswith("drawer"):
                assert end[1] - start[1] == pytest.approx(0.16 if name == "drawer_open" else -0.16, abs=0.01)
            elif name.startswith("door"):  # moved > 0.05 and across the midpoint
                mid = sum(tt.DOOR_RANGE) / 2
                assert (start[0] < mid < end[0]) if name == "door_left" else (end[0] < mid < start[0])
            elif name.endswith("lift"):
                p = 6 + 6 * ("red", "blue", "pink").index(target)
                assert end[p + 2] - start[p + 2] > 0.05


def test_limits_hold_under_random_actions():
    out = _expert_grid(GRID_KEYS, 3.0)  # the same program; noise this large makes the actions random
    _assert_in_limits(out.states)
    actions = np.asarray(out.actions)
    assert np.abs(actions).max() <= 1.0 and np.mean(np.abs(actions[..., :6]) > 0.9) > 0.5


def test_deterministic_vmap_equals_loop_and_jit_equals_eager():
    out = _expert_grid(GRID_KEYS, 0.05)
    again = _expert_grid(GRID_KEYS, 0.05)
    # same key, same values (XLA's CPU threading may reorder a float sum: 1 ulp, seen under load)
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-6), out, again)
    other = _expert_grid(jax.random.split(jax.random.key(22), 3), 0.05)
    assert not np.array_equal(np.asarray(out.actions), np.asarray(other.actions))
    # the compiled program (vmap over resets and behaviours, scan over steps) equals eager steps, per env
    for r, name in ((0, "drawer_open"), (2, "red_lift")):
        b = ex.BEHAVIOUR_INDEX[name]
        traj = jax.tree.map(lambda x: np.asarray(x[r, b]), out.states)
        actions = np.asarray(out.actions[r, b])
        s = ex.with_start_condition(tt.reset(jax.random.split(GRID_KEYS[r])[0], CFG), b)
        for t in range(EXPERT_STEPS + 1):
            jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y[t], atol=1e-5), s, traj)
            if t < EXPERT_STEPS:
                s = tt.step(s, actions[t], CFG)
    # leading batch axes on state and action step every env at once
    start = jax.tree.map(lambda x: x[:, 0, 0], out.states)
    batched = tt.step(start, out.actions[:, 0, 0], CFG)
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y[:, 0, 1], atol=1e-6), batched, out.states)
    # observe on a batch equals observe per env
    obs_b = tt.observe(start, CFG, images=False)
    for i in range(len(GRID_KEYS)):
        obs_i = tt.observe(jax.tree.map(lambda x: x[i], start), CFG, images=False)
        for name in obs_i:
            np.testing.assert_allclose(obs_b[name][i], obs_i[name], atol=1e-6)


# --- rendering ------------------------------------------------------------------------------------
def test_every_state_change_is_visible_where_the_part_is():
    parked = (-0.30, -0.38, 0.70)  # the gripper out of the way (front left)
    base = dict(door=0.0, drawer=0.0, switch=0.0, green=0.0)
    lifted = tuple(BLOCKS[i] if i != 1 else (0.20, -0.09, 0.56) for i in range(3))
    pushed_red = ((0.16, -0.09, 0.46),) + BLOCKS[1:]
    pushed_pink = BLOCKS[:2] + ((0.30, -0.15, 0.46),)
    variants = {  # name: (scene kwargs, world point of the part)
        "door": (dict(base, door=0.28), (0.04, 0.0, 0.54)),
        "drawer": (dict(base, drawer=0.16), (0.16, -0.30, 0.40)),
        "green_light": (dict(base, green=1.0), (-0.195, -0.115, 0.49)),
        "switch_lightbulb": (dict(base, switch=0.085), (0.27, 0.13, 0.70)),
        "red_push": (dict(base, blocks=pushed_red), (0.13, -0.09, 0.485)),
        "blue_lift": (dict(base, blocks=lifted), (0.20, -0.09, 0.53)),
        "pink_push": (dict(base, blocks=pushed_pink), (0.30, -0.12, 0.485)),
    }
    robot = robot_vec(parked)
    scenes = [scene_vec(**base)] + [scene_vec(**kw) for kw, _ in variants.values()]
    images = np.stack([np.asarray(tt.observe(tt.reset(jax.random.key(0), CFG, robot_obs=robot, scene_obs=sc),
                                             CFG)["rgb_static"]) for sc in scenes]).astype(np.int32)
    size = CFG.static_size
    camera = tt.static_camera()
    rows, cols = np.mgrid[:size, :size]
    for i, (name, (_, point)) in enumerate(variants.items(), start=1):
        changed = np.abs(images[i] - images[0]).max(-1) > 40
        assert changed.sum() >= 12, (name, changed.sum())  # >= 0.3% of the image, clearly changed
        r, c = np.asarray(rd.project(camera, jnp.asarray(point), size))
        assert 0 <= r < size and 0 <= c < size, name
        near = (rows - r) ** 2 + (cols - c) ** 2 < (0.2 * size) ** 2
        assert changed[near].sum() >= 0.6 * changed.sum(), name  # the change is where the part is


def test_expert_trajectories_render_their_outcome():
    """``observe`` over a whole expert trajectory (what ``rollout_expert(images=True)`` returns):
    the lamp lit by button_on and the bulb lit by switch_on show in the static camera."""
    out = _expert_grid(GRID_KEYS, 0.05)
    for name, point in (("button_on", (-0.195, -0.115, 0.49)), ("switch_on", (0.27, 0.13, 0.70))):
        states = jax.tree.map(lambda x: x[1, ex.BEHAVIOUR_INDEX[name], ::20], out.states)  # every 20th step
        frames = EXPERT_STEPS // 20 + 1
        obs = tt.observe(states, CFG)
        assert obs["rgb_static"].shape == (frames, 64, 64, 3) and obs["rgb_static"].dtype == jnp.uint8
        assert obs["rgb_gripper"].shape == (frames, 32, 32, 3)
        for t in (0, frames - 1):  # equals observe of each state alone
            single = tt.observe(jax.tree.map(lambda x: x[t], states), CFG)
            for key in single:
                np.testing.assert_allclose(obs[key][t], single[key], atol=1e-6 if key.endswith("obs") else 0)
        r, c = np.asarray(rd.project(tt.static_camera(), jnp.asarray(point), CFG.static_size)).round().astype(int)
        first, last = (np.asarray(obs["rgb_static"][t], np.int32)[r - 1:r + 2, c - 1:c + 2] for t in (0, -1))
        assert np.abs(last - first).max(-1).mean() > 60, name  # the light came on
