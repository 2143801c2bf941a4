"""Scripted experts for the tabletop world: one per behaviour, as waypoint sequences planned from
the state at the start, followed with noisy CALVIN relative actions. Pure JAX: ``expert_action``
runs inside ``lax.scan`` / ``jit`` / ``vmap`` (the behaviour may be a traced integer).

An ``ExpertState`` holds the plan (``NUM_WAYPOINTS`` waypoints, a gripper command and a dwell
time for each) and the progress through it. Each step the expert moves the tcp towards the current
waypoint with a proportional controller capped at a per-episode speed (0.7..1.0 of the maximal
action), adds Gaussian action noise, and moves on when the tcp is within ``REACH_TOL`` of the
waypoint for ``dwell`` steps (or after ``MAX_PHASE_STEPS`` steps, so a blocked waypoint cannot
stall it). Waypoints carry seeded jitter (travel height, approach points, push/lift distances),
so runs from one state differ with the key. The orientation is held pointing down at the start
yaw. Every plan first rises to a travel height (0.60..0.64 m) above all parts, then approaches,
acts, and retreats along an axis that does not move the part (e.g. backwards from the door handle).

``rollout_expert`` runs one expert for ``steps`` steps with ``lax.scan`` and returns the states,
actions and (optionally rendered) observations; ``with_start_condition`` puts the part a
behaviour acts on at the start of its range (door at 0 for ``door_left``, ...).
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np

import jax
import jax.numpy as jnp

from dynaguide_jax.envs import tabletop as tt

BEHAVIOURS = ("button_on", "button_off", "switch_on", "switch_off", "drawer_open", "drawer_close", "door_left",
              "door_right", "red_lift", "blue_lift", "pink_lift", "red_push", "blue_push", "pink_push")
BEHAVIOUR_INDEX = {name: i for i, name in enumerate(BEHAVIOURS)}
NUM_WAYPOINTS = 8
REACH_TOL = 0.006  # m, max-norm
MAX_PHASE_STEPS = 40
TRAVEL_Z = (0.60, 0.64)
_OPEN, _CLOSE = 1.0, -1.0


class ExpertState(NamedTuple):
    behaviour: jax.Array  # [] int32
    waypoints: jax.Array  # [K, 3]
    gripper: jax.Array  # [K] +1 open / -1 close while heading to (and dwelling at) each waypoint
    dwell: jax.Array  # [K] int32 steps to stay once reached
    phase: jax.Array  # [] int32 current waypoint
    hold: jax.Array  # [] int32 steps spent at the current waypoint
    timer: jax.Array  # [] int32 steps spent in the current phase
    speed: jax.Array  # [] max |action| on xyz
    yaw: jax.Array  # [] target tcp yaw


# --- plans as data ----------------------------------------------------------------------------------
# Every waypoint coordinate is a linear form in a few features of the start state and of seeded
# random numbers (``_features``): a dict {feature: coefficient}. The tables below are built once
# with numpy, and planning is one einsum, whatever the number of behaviours.
N_JITTER, N_UNIFORM = 12, 4
_BLOCK_FEATURES = ("x", "y", "z", "push_x", "push_y", "end_x", "end_y")
FEATURES = (("one", "tcp_x", "tcp_y", "travel_z", "lever_z", "drawer_y", "door_x")
            + tuple(f"u{i}" for i in range(N_UNIFORM)) + tuple(f"j{i}" for i in range(N_JITTER))
            + tuple(f"{b}_{f}" for b in tt.BLOCK_NAMES for f in _BLOCK_FEATURES))
_F = {name: i for i, name in enumerate(FEATURES)}


def _c(value=0.0, **terms):
    """A coordinate: constant ``value`` plus ``{feature: coefficient}`` terms."""
    return {"one": value, **terms}


def _articulated_plans():
    up = (_c(tcp_x=1), _c(tcp_y=1), _c(travel_z=1))
    plans = {}
    bx, by = tt.BUTTON_XY
    bxj, byj = _c(bx, j0=0.003), _c(by, j1=0.003)
    press = [up, (_c(bx), _c(by), _c(travel_z=1)), (bxj, byj, _c(0.505)), (bxj, byj, _c(0.478)),
             (_c(bx), _c(by), _c(0.56, u0=0.03))]
    for name in ("button_on", "button_off"):  # the same press; which one happens depends on the light
        plans[name] = (press, [_CLOSE] * 5, [0, 0, 0, 2, 0])
    lx, ly, lz0 = tt.SWITCH_LEVER
    for name, sign, end in (("switch_on", 1.0, tt.SWITCH_RANGE[1]), ("switch_off", -1.0, tt.SWITCH_RANGE[0])):
        # from beside the lever (below it to push it up, above it to push it down) to past the end
        z0 = _c(-sign * 0.006, lever_z=1)
        z1 = _c(lz0 + tt.SWITCH_GAIN * end + sign * 0.008, u1=sign * 0.01)
        front, xj, at = _c(ly - 0.085, j2=0.003), _c(lx, j3=0.003), _c(ly - 0.002)
        plans[name] = ([up, (_c(lx), front, _c(travel_z=1)), (_c(lx), front, z0), (xj, at, z0), (xj, at, z1),
                        (_c(lx), front, z1)], [_OPEN] * 6, [0] * 6)
    hx, _, hz = tt.DRAWER_HANDLE
    hxj, hy, z = _c(hx, j4=0.012), _c(drawer_y=1), _c(hz)
    front = _c(-0.06, drawer_y=1, j5=0.003)
    approach = [up, (hxj, front, _c(travel_z=1)), (hxj, front, z), (hxj, hy, z)]
    pulled = _c(tt.DRAWER_HANDLE[1] - tt.DRAWER_RANGE[1] - 0.012, u2=-0.01)  # grip, pull past the end, let go
    plans["drawer_open"] = (approach + [(hxj, hy, z), (hxj, pulled, z), (hxj, pulled, z), (hxj, pulled, _c(0.50))],
                            [_OPEN] * 4 + [_CLOSE, _CLOSE, _OPEN, _OPEN], [0, 0, 0, 0, 3, 0, 2, 0])
    pushed, back = _c(tt.DRAWER_HANDLE[1] + 0.017), _c(tt.DRAWER_HANDLE[1] + 0.017 - 0.08, u2=-0.02)
    plans["drawer_close"] = (approach + [(hxj, pushed, z), (hxj, back, z), (hxj, back, _c(0.50))], [_OPEN] * 7,
                             [0] * 7)
    front, yj = _c(tt.DOOR_HANDLE_Y - 0.065, j6=0.003), _c(tt.DOOR_HANDLE_Y, j7=0.003)
    zj = _c(tt.DOOR_HANDLE_Z, j8=0.012)
    for name, end in (("door_left", tt.DOOR_RANGE[1] + 0.012), ("door_right", tt.DOOR_RANGE[0] - 0.012)):
        dx, tx = _c(door_x=1), _c(tt.DOOR_HANDLE_X0 - end)  # drag the handle past the end of the range
        plans[name] = ([up, (dx, front, _c(travel_z=1)), (dx, front, zj), (dx, yj, zj), (tx, yj, zj), (tx, front, zj)],
                       [_OPEN] * 6, [0] * 6)
    for i, block in enumerate(tt.BLOCK_NAMES):
        hz_i = tt.BLOCK_HALF[i][2]
        x, y = _c(**{f"{block}_x": 1, "j9": 0.003}), _c(**{f"{block}_y": 1, "j10": 0.003})
        mid = _c(hz_i, **{f"{block}_z": 1, "j11": 0.003})
        lifted = _c(hz_i + 0.10, **{f"{block}_z": 1, "u3": 0.04})
        plans[f"{block}_lift"] = (  # open above it, descend around it, close, lift
            [up, (x, y, _c(travel_z=1)), (x, y, _c(2 * hz_i + 0.03, **{f"{block}_z": 1})), (x, y, mid), (x, y, mid),
             (x, y, lifted)], [_OPEN] * 4 + [_CLOSE] * 2, [0, 0, 0, 0, 4, 0])
    for i, block in enumerate(tt.BLOCK_NAMES):
        hz_i = tt.BLOCK_HALF[i][2]
        sx, sy = _c(**{f"{block}_push_x": 1}), _c(**{f"{block}_push_y": 1})
        ex_, ey = _c(**{f"{block}_end_x": 1}), _c(**{f"{block}_end_y": 1})
        mid = _c(hz_i, **{f"{block}_z": 1, "j11": 0.003})
        above = _c(hz_i + 0.10, **{f"{block}_z": 1})
        plans[f"{block}_push"] = (  # closed gripper down beside it, through it, up
            [up, (sx, sy, _c(travel_z=1)), (sx, sy, mid), (ex_, ey, mid), (ex_, ey, above)], [_CLOSE] * 5, [0] * 5)
    return plans


def _tables():
    plans = _articulated_plans()
    coef = np.zeros((len(BEHAVIOURS), NUM_WAYPOINTS, 3, len(FEATURES)), np.float32)
    gripper = np.zeros((len(BEHAVIOURS), NUM_WAYPOINTS), np.float32)
    dwell = np.zeros((len(BEHAVIOURS), NUM_WAYPOINTS), np.int32)
    for b, name in enumerate(BEHAVIOURS):
        points, grips, dwells = plans[name]
        n = len(points)
        assert len(grips) == len(dwells) == n <= NUM_WAYPOINTS, name
        for k in range(NUM_WAYPOINTS):  # pad by repeating the last waypoint
            for axis, coord in enumerate(points[min(k, n - 1)]):
                for feature, value in coord.items():
                    coef[b, k, axis, _F[feature]] += value
        gripper[b] = list(grips) + [grips[-1]] * (NUM_WAYPOINTS - n)
        dwell[b, :n] = dwells
    return coef, gripper, dwell


PLAN_COEF, PLAN_GRIPPER, PLAN_DWELL = _tables()


N_RANDOM = 2 + N_UNIFORM + N_JITTER  # uniforms an expert draws at the start (speed, travel height, u, j)


def _features(s: tt.TabletopState, r) -> jax.Array:
    """The plan features ``[len(FEATURES)]`` of start state ``s`` and uniform numbers ``r`` [N_RANDOM]."""
    half = jnp.asarray(tt.BLOCK_HALF, jnp.float32)
    # pushes start beside the block and go 5..8 cm past its centre, in the direction among +x, -x,
    # +y whose swept path (tcp start to the block's far side at the end) keeps clearest of the
    # other blocks (sideways preferred a little)
    u = r[2:2 + N_UNIFORM]
    travel = 0.05 + 0.03 * u[3]
    yaw = s.block_euler[:, 2]
    c, sn = jnp.abs(jnp.cos(yaw)), jnp.abs(jnp.sin(yaw))
    ext_x, ext_y = c * half[:, 0] + sn * half[:, 1], sn * half[:, 0] + c * half[:, 1]
    ext = jnp.stack([ext_x, ext_x, ext_y], -1)  # [3 blocks, 3 dirs]
    dirs = jnp.asarray([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0]])
    centre = s.block_pos[:, None, :2]
    starts = centre - dirs[None] * (ext + 0.035)[..., None]  # [3, 3 dirs, 2]
    fronts = centre + dirs[None] * (travel + ext)[..., None]
    seg = fronts - starts
    rel = s.block_pos[None, None, :, :2] - starts[:, :, None]  # [3, dirs, other, 2]
    along = jnp.clip(jnp.sum(rel * seg[:, :, None], -1) / jnp.sum(seg * seg, -1)[..., None], 0.0, 1.0)
    dist = jnp.linalg.norm(rel - along[..., None] * seg[:, :, None], axis=-1)
    radius = jnp.linalg.norm(half[:, :2], axis=-1)
    gap = dist - radius[None, None, :] - radius[:, None, None]
    gap = jnp.where(jnp.eye(3, dtype=bool)[:, None, :], jnp.inf, gap).min(-1) - 0.02 * (dirs[:, 1] > 0)
    pick = jax.nn.one_hot(jnp.argmax(gap, axis=-1), 3)  # [3, 3 dirs]
    start = jnp.einsum("bd,bdc->bc", pick, starts)
    end = s.block_pos[:, :2] + (pick @ dirs) * travel
    blocks = jnp.concatenate([s.block_pos, start, end], -1).reshape(-1)  # per block: x y z push_x push_y end_x end_y
    base = jnp.stack([jnp.float32(1.0), s.tcp_pos[0], s.tcp_pos[1],
                      TRAVEL_Z[0] + (TRAVEL_Z[1] - TRAVEL_Z[0]) * r[1],
                      tt.switch_lever(s.switch)[2], tt.drawer_handle(s.drawer)[1], tt.door_handle(s.door)[0]])
    return jnp.concatenate([base, u, 2.0 * r[2 + N_UNIFORM:] - 1.0, blocks])


def plan_waypoints(state: tt.TabletopState, behaviour, random) -> tuple:
    """``(waypoints [K, 3], gripper [K], dwell [K])`` of ``behaviour`` from ``state`` (one env) and
    uniform numbers ``random`` [N_RANDOM]."""
    behaviour = jnp.asarray(behaviour, jnp.int32)
    waypoints = jnp.asarray(PLAN_COEF)[behaviour] @ _features(state, random)
    return waypoints, jnp.asarray(PLAN_GRIPPER)[behaviour], jnp.asarray(PLAN_DWELL)[behaviour]


def expert_init(state: tt.TabletopState, behaviour, key) -> ExpertState:
    """Plan ``behaviour`` (an index into ``BEHAVIOURS``, may be traced) from ``state`` (one env)."""
    # one draw for everything: each jax.random call site costs compile time, a lot of it under vmap
    r = jax.random.uniform(key, (N_RANDOM,))
    waypoints, gripper, dwell = plan_waypoints(state, behaviour, r)
    return ExpertState(behaviour=jnp.asarray(behaviour, jnp.int32), waypoints=waypoints, gripper=gripper,
                       dwell=dwell, phase=jnp.int32(0), hold=jnp.int32(0), timer=jnp.int32(0),
                       speed=0.7 + 0.3 * r[0], yaw=state.tcp_euler[2])


def expert_action(state: tt.TabletopState, expert: ExpertState, key, config: tt.TabletopConfig = tt.TabletopConfig(),
                  noise: float = 0.05):
    """``(action [7], next ExpertState)`` for one env: advance the plan if the current waypoint is
    reached (and dwelt at), then head for the current waypoint. ``noise``: std of the Gaussian
    noise added to the xyz and orientation actions (in action units, 1 = ``max_rel_pos``)."""
    now = jax.nn.one_hot(expert.phase, NUM_WAYPOINTS, dtype=jnp.float32)  # one-hot, not gathers (vmap compile)
    err = now @ expert.waypoints - state.tcp_pos
    reached = jnp.max(jnp.abs(err)) < REACH_TOL
    hold = jnp.where(reached, expert.hold + 1, 0)
    done_here = (reached & (hold > now @ expert.dwell.astype(jnp.float32))) | (expert.timer >= MAX_PHASE_STEPS)
    last = NUM_WAYPOINTS - 1
    phase = jnp.where(done_here, jnp.minimum(expert.phase + 1, last), expert.phase)
    hold = jnp.where(done_here, 0, hold)
    timer = jnp.where(done_here, 0, expert.timer + 1)

    now = jax.nn.one_hot(phase, NUM_WAYPOINTS, dtype=jnp.float32)
    err = now @ expert.waypoints - state.tcp_pos
    n = noise * jax.random.normal(key, (6,))
    move = jnp.clip(err / config.max_rel_pos, -expert.speed, expert.speed) + n[:3]
    e = state.tcp_euler
    orn_err = jnp.stack([tt.wrap_angle(jnp.pi - e[0]), -e[1], tt.wrap_angle(expert.yaw - e[2])])
    turn = 0.5 * jnp.clip(orn_err / config.max_rel_orn, -1.0, 1.0) + n[3:]
    action = jnp.concatenate([jnp.clip(move, -1, 1), jnp.clip(turn, -1, 1), (now @ expert.gripper)[None]])
    return action, expert._replace(phase=phase.astype(jnp.int32), hold=hold.astype(jnp.int32),
                                   timer=timer.astype(jnp.int32))


# the part each articulated behaviour acts on and where it starts (block behaviours need nothing)
_START = {"button_on": ("green_light", 0.0), "button_off": ("green_light", 1.0),
          "switch_on": ("switch", tt.SWITCH_RANGE[0]), "switch_off": ("switch", tt.SWITCH_RANGE[1]),
          "drawer_open": ("drawer", tt.DRAWER_RANGE[0]), "drawer_close": ("drawer", tt.DRAWER_RANGE[1]),
          "door_left": ("door", tt.DOOR_RANGE[0]), "door_right": ("door", tt.DOOR_RANGE[1])}


def loc_target(behaviour: str) -> np.ndarray:
    """``[3]`` the position-guidance (ITPS) target of an articulated ``behaviour``, as the original's
    experiment JSON gives it (``loc_target``): where the tcp acts on the behaviour's part with the part
    at the start of its range, as the behaviour's experiment resets it (``tabletop.part_location``)."""
    if behaviour not in _START:
        raise ValueError(f"no position target for {behaviour!r}: articulated behaviours only ({list(_START)})")
    _, start = _START[behaviour]
    return np.asarray(tt.part_location(behaviour.split("_")[0], start), np.float32)  # button_on -> button, ...


def with_start_condition(state: tt.TabletopState, behaviour) -> tt.TabletopState:
    """``state`` with the part ``behaviour`` acts on at the start of its range (e.g. the green
    light off for ``button_on``, the door at 0 for ``door_left``); blocks are left as they are.
    ``behaviour`` may be traced (one env; vmap for batches)."""
    behaviour = jnp.asarray(behaviour, jnp.int32)
    updates = {}
    for field in ("green_light", "switch", "drawer", "door"):
        value = getattr(state, field)
        for name, (f, start) in _START.items():
            if f == field:
                value = jnp.where(behaviour == BEHAVIOUR_INDEX[name], jnp.float32(start), value)
        updates[field] = value
    updates["lightbulb"] = (updates["switch"] > tt.LIGHTBULB_ON).astype(jnp.float32)
    return state._replace(**updates)


class ExpertRollout(NamedTuple):
    """``states``: TabletopState with a leading axis [T + 1] (the start first); ``actions`` [T, 7];
    ``observations``: ``observe`` of every state ([T + 1, ...] arrays; images only if rendered)."""
    states: tt.TabletopState
    actions: jax.Array
    observations: dict


def rollout_expert(state: tt.TabletopState, behaviour, key, config: tt.TabletopConfig = tt.TabletopConfig(),
                   steps: int = 120, images: bool = True, noise: float = 0.05) -> ExpertRollout:
    """Run the ``behaviour`` expert from ``state`` (one env) for ``steps`` steps in one ``lax.scan``.
    ``images=False`` skips rendering (only ``robot_obs`` / ``scene_obs``; render later with
    ``observe(rollout.states, config)``, which is what ``images=True`` does). ``behaviour``, ``key``
    and ``noise`` may be traced: vmap it over envs, behaviours or noise levels."""
    states, actions = _run_expert(state, behaviour, key, config, steps, noise)
    return ExpertRollout(states, actions, tt.observe(states, config, images=images))


@functools.partial(jax.jit, static_argnames=("config", "steps"))
def _run_expert(state, behaviour, key, config, steps, noise):
    k_init, k_run = jax.random.split(key)
    expert = expert_init(state, behaviour, k_init)

    def body(carry, k):
        s, e = carry
        action, e = expert_action(s, e, k, config, noise)
        s = tt.step(s, action, config)
        return (s, e), (s, action)

    _, (states, actions) = jax.lax.scan(body, (state, expert), jax.random.split(k_run, steps))
    states = jax.tree.map(lambda first, rest: jnp.concatenate([first[None], rest]), state, states)
    return states, actions
