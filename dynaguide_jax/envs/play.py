"""Play data for the tabletop world, as CALVIN's teleoperated play: one long stream of behaviours.

Each play stream starts from a reset (door and drawer at an end of their ranges, as the CALVIN
experiments reset them) and repeats: choose a behaviour at random among those FEASIBLE in the
current state (``door_left`` only while the door is right of its midpoint, ``button_on`` only with
the green light off and no block near the button, a block's push only if it stays in the block
area; see ``feasible``), with probability proportional to ``PlayConfig.weights``; run its scripted
expert (``expert.py``: waypoints with noise) until its plan is done or ``expert_cap`` steps; after a
lift, carry the block to a free spot and let it drop (``place``); then ``idle_steps`` frames of free
motion at a safe height (no part can move there, so the scene is still and the segmentation's
"still" rule separates consecutive interactions).

Recoveries (``PlayConfig.perturb_rate`` > 0, DART-style: Laskey et al. 2017): while an expert
approaches its part (before its first acting waypoint), a perturbation starts with probability
``perturb_rate`` per step and lasts ``perturb_steps`` steps: a constant push of ``perturb_size``
(action units) in a random direction (uniform on the sphere, the vertical part halved) is added to
the executed xyz action. The RECORDED action is the expert's own (the push left out): the expert
steers back towards its waypoint from wherever the push left the tcp, so the play shows the
corrections a policy needs once its own errors have put it off the demonstrated path, and never the
pushes. ``PlayChunk.perturbed`` marks the pushed steps.

While an expert acts on a part (``ACT_PHASES``: the waypoints along which the part moves) its speed
is capped at ``ACT_SPEED`` (x 0.8..1.2): the original's segmentation cuts only interactions with at
least 10 moving frames, and CALVIN's human play moves the parts slowly; travel between parts keeps
the expert's speed.

Pure JAX where it matters: one jitted program per chunk, ``vmap`` over the independent streams and
``lax.scan`` over steps, rendering afterwards in batches of ``render_batch`` frames. Step ``t`` of
stream ``s`` draws its randomness from ``fold_in(key_s, t)``, so the play is a function of the seed
and the config only, not of ``chunk_steps``. ``generate_play`` yields host (numpy) chunks of
``chunk_steps`` steps: a long play never holds all its images at once.

Recorded per step ``t`` (CALVIN's frame convention): ``robot_obs`` / ``scene_obs`` of the state
before the step, ``rel_actions`` (the relative action taken, in [-1, 1]), ``actions`` (the absolute
target it commands: tcp xyz + euler after adding the scaled relative action, and the gripper
command +-1, so ``rel_actions == clip((actions - robot_obs) / max_rel)`` exactly as CALVIN's
``to_relative_action``; it equals the pose after the step unless a solid stopped the tcp), the
images of the state before the step, and ``label``: the intended behaviour (index into
``BEHAVIOURS``; the lift's carry-and-drop counts as the lift) or ``IDLE`` (-1).
"""
from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterator
from typing import NamedTuple

import numpy as np

import jax
import jax.numpy as jnp

from dynaguide_jax.envs import expert as ex
from dynaguide_jax.envs import tabletop as tt

BEHAVIOURS = ex.BEHAVIOURS
ARTICULATED = BEHAVIOURS[:8]  # button, switch, drawer, door: the segmentation labels these by their parts
IDLE = -1
EXPERT, PLACE, IDLE_MODE = 0, 1, 2

# the waypoints (indices into each expert's plan in expert.py) along which the part moves, and the
# speed cap there (fraction of the maximal action): >= ~12 moving frames per interaction
ACT_PHASES = {"button": (3, 4), "switch": (4,), "drawer_open": (5,), "drawer_close": (3, 4), "door": (4,),
              "lift": (5,), "push": (3,)}
ACT_SPEED = {"button": 0.25, "switch": 0.1, "drawer_open": 0.4, "drawer_close": 0.4, "door": 0.5, "lift": 0.35,
             "push": 0.35}
SAFE_Z = 0.585  # above every part's reach (door handle zone top 0.58): idle and place motion rise here first
IDLE_Z = (0.60, 0.70)
IDLE_AREA = ((-0.25, -0.30), (0.30, -0.08))  # xy of free-motion targets (in front of the cabinet)
BLOCK_SAFE = ((-0.02, -0.17), (0.40, -0.01))  # where pushes may end (the tcp reaches them from above)
BLOCK_REACH = ((-0.40, -0.185), (0.45, -0.008))  # where a block can be lifted (except over OVER_SOLID)
PLACE_AREA = ((0.0, -0.17), (0.38, -0.10))  # where lifted blocks are put down (in front: room to push them back)
# the button cap and the green lamp are solid: no lift of a block lying over them; no press while a
# block lies within BUTTON_CLEAR of the button (the closed gripper would land on it)
_BX, _BY = tt.BUTTON_XY
_LAMP_LO, _LAMP_HI = tt.LAMP_BOX
OVER_SOLID = (((_BX - 0.035, _BY - 0.035), (_BX + 0.035, _BY + 0.035)),
              ((_LAMP_LO[0] - 0.015, _LAMP_LO[1] - 0.015), (_LAMP_HI[0] + 0.015, _LAMP_HI[1] + 0.015)))
BUTTON_CLEAR = 0.03
PLACE_Z = 0.60


def _behaviour_key(name: str) -> str:
    part, what = name.split("_")
    if part in ("red", "blue", "pink"):
        return what
    return part if part in ("button", "switch", "door") else name


def _plan_lengths() -> np.ndarray:
    """Number of real (unpadded) waypoints of each plan: the plans are padded by repeating the last."""
    out = np.zeros(len(BEHAVIOURS), np.int32)
    for b in range(len(BEHAVIOURS)):
        n = ex.NUM_WAYPOINTS
        while n > 1 and (np.array_equal(ex.PLAN_COEF[b, n - 1], ex.PLAN_COEF[b, n - 2])
                         and ex.PLAN_GRIPPER[b, n - 1] == ex.PLAN_GRIPPER[b, n - 2] and ex.PLAN_DWELL[b, n - 1] == 0):
            n -= 1
        out[b] = n
    return out


PLAN_LENGTH = _plan_lengths()
_ACT_MASK = np.zeros((len(BEHAVIOURS), ex.NUM_WAYPOINTS), np.float32)
_ACT_SPEED = np.zeros(len(BEHAVIOURS), np.float32)
for _b, _name in enumerate(BEHAVIOURS):
    _ACT_MASK[_b, list(ACT_PHASES[_behaviour_key(_name)])] = 1.0
    _ACT_SPEED[_b] = ACT_SPEED[_behaviour_key(_name)]
_FIRST_ACT = np.argmax(_ACT_MASK > 0, axis=1).astype(np.int32)  # each plan's first acting waypoint


@dataclasses.dataclass(frozen=True)
class PlayConfig:
    """Static play settings (hashable). ``weights``: one per ``BEHAVIOURS`` entry, relative: among the
    behaviours feasible in the current state, one is chosen with probability proportional to its
    weight (``None``: all equal; ``with_weights(door_left=0.01)`` makes one rare). ``steps`` per
    stream; ``chunk_steps`` steps are generated (and rendered) at a time; ``idle_steps`` (min, max)
    free-motion frames after each behaviour; ``expert_cap`` / ``place_cap`` bound a behaviour's and a
    put-down's steps; ``noise``: the experts' action noise (std, action units); ``perturb_rate``,
    ``perturb_steps`` (min, max) and ``perturb_size``: the recoveries (module docstring; 0: none)."""
    env: tt.TabletopConfig = tt.TabletopConfig()
    num_streams: int = 8
    steps: int = 4000
    chunk_steps: int = 200
    weights: tuple[float, ...] | None = None
    idle_steps: tuple[int, int] = (4, 16)
    expert_cap: int = 200
    place_cap: int = 100
    noise: float = 0.05
    perturb_rate: float = 0.0
    perturb_steps: tuple[int, int] = (4, 10)
    perturb_size: float = 0.6
    images: bool = True
    render_batch: int = 8

    def __post_init__(self):
        for name in ("num_streams", "steps", "chunk_steps", "expert_cap", "place_cap", "render_batch"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"PlayConfig.{name} must be a positive int, got {value!r}")
        lo, hi = self.idle_steps
        if not (isinstance(lo, int) and isinstance(hi, int) and 1 <= lo <= hi):
            raise ValueError(f"PlayConfig.idle_steps must be (min, max) ints with 1 <= min <= max, got "
                             f"{self.idle_steps!r}")
        if not self.noise >= 0:
            raise ValueError(f"PlayConfig.noise must be >= 0, got {self.noise!r}")
        if not 0 <= self.perturb_rate <= 1:
            raise ValueError(f"PlayConfig.perturb_rate must be a probability in [0, 1], got {self.perturb_rate!r}")
        lo, hi = self.perturb_steps
        if not (isinstance(lo, int) and isinstance(hi, int) and 1 <= lo <= hi):
            raise ValueError(f"PlayConfig.perturb_steps must be (min, max) ints with 1 <= min <= max, got "
                             f"{self.perturb_steps!r}")
        if not 0 < self.perturb_size <= 2:
            raise ValueError(f"PlayConfig.perturb_size must be in (0, 2] action units, got {self.perturb_size!r}")
        if self.weights is not None:
            w = np.asarray(self.weights, np.float64)
            if w.shape != (len(BEHAVIOURS),) or not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
                raise ValueError(f"PlayConfig.weights must be {len(BEHAVIOURS)} finite non-negative numbers (one per "
                                 f"behaviour: {', '.join(BEHAVIOURS)}) with a positive sum, got {self.weights!r}")
            object.__setattr__(self, "weights", tuple(float(x) for x in w))

    @classmethod
    def paper(cls, **overrides) -> PlayConfig:
        """CALVIN's image sizes (200 static, 84 gripper)."""
        return cls(**overrides)

    @classmethod
    def small(cls, **overrides) -> PlayConfig:
        """CPU preset: 64x64 / 32x32 images, 4 streams of 1000 steps."""
        return cls(**{"env": tt.TabletopConfig.small(), "num_streams": 4, "steps": 1000, **overrides})

    def with_weights(self, **weights: float) -> PlayConfig:
        """A copy whose weights are 1 except the named behaviours' (``door_left=0.01``)."""
        unknown = sorted(set(weights) - set(BEHAVIOURS))
        if unknown:
            raise ValueError(f"unknown behaviour(s) {unknown}; expected some of {', '.join(BEHAVIOURS)}")
        base = self.weights or (1.0,) * len(BEHAVIOURS)
        return dataclasses.replace(self, weights=tuple(float(weights.get(n, w)) for n, w in zip(BEHAVIOURS, base)))

    @property
    def weight_array(self) -> np.ndarray:
        return np.asarray(self.weights or (1.0,) * len(BEHAVIOURS), np.float32)


class PlayState(NamedTuple):
    """One stream's play state beside its ``TabletopState`` (leading stream axis under vmap)."""
    mode: jax.Array  # [] int32 EXPERT / PLACE / IDLE_MODE
    behaviour: jax.Array  # [] int32 the current (or last) behaviour
    expert: ex.ExpertState
    timer: jax.Array  # [] int32 steps in the current mode
    idle_len: jax.Array  # [] int32
    target: jax.Array  # [3] free-motion or put-down target
    yaw: jax.Array  # [] free-motion target yaw
    speed: jax.Array  # [] free-motion speed (fraction of the maximal action)
    act_speed: jax.Array  # [] the expert's speed cap while acting on its part
    push_left: jax.Array  # [] int32 steps left of the current perturbation (0: none)
    push: jax.Array  # [3] its push, added to the executed xyz action


class PlayChunk(NamedTuple):
    """``chunk_steps`` consecutive steps of every stream, host arrays with leading axes ``[S, T]``:
    ``robot_obs [S, T, 15]``, ``scene_obs [S, T, 24]``, ``rel_actions [S, T, 7]``, ``actions [S, T, 7]``
    (float32), ``label [S, T]`` int32, ``rgb_static [S, T, H, H, 3]`` / ``rgb_gripper [S, T, G, G, 3]``
    uint8 (``None`` when ``images`` is off); ``start``: the chunk's first step within the streams."""
    robot_obs: np.ndarray
    scene_obs: np.ndarray
    rel_actions: np.ndarray
    actions: np.ndarray
    label: np.ndarray
    rgb_static: np.ndarray | None
    rgb_gripper: np.ndarray | None
    start: int
    perturbed: np.ndarray | None = None


def _in_box(xy, box):
    lo, hi = jnp.asarray(box[0], jnp.float32), jnp.asarray(box[1], jnp.float32)
    return jnp.all((xy >= lo) & (xy <= hi), axis=-1)


def feasible(state: tt.TabletopState, plans: jax.Array) -> jax.Array:
    """``[len(BEHAVIOURS)]`` bool: which behaviours may start from ``state`` (one env), given every
    behaviour's planned waypoints ``plans [B, K, 3]`` (``expert.plan_waypoints``). Articulated parts:
    the part is on the side of its midpoint the behaviour starts from; the button also needs no block
    on or next to it. Blocks: liftable where reachable (``BLOCK_REACH``, not over the button cap or
    the lamp), pushable where the push ends inside ``BLOCK_SAFE``. Nothing starts while a block is
    held."""
    mid = lambda r: 0.5 * (r[0] + r[1])  # noqa: E731
    green = state.green_light > 0.5
    xy = state.block_pos[:, :2]
    radius = jnp.linalg.norm(jnp.asarray(tt.BLOCK_HALF, jnp.float32)[:, :2], axis=-1)
    button_free = jnp.all(jnp.linalg.norm(xy - jnp.asarray(tt.BUTTON_XY), axis=-1) > radius + BUTTON_CLEAR)
    articulated = jnp.stack([~green & button_free, green & button_free,
                             state.switch < mid(tt.SWITCH_RANGE), state.switch >= mid(tt.SWITCH_RANGE),
                             state.drawer < mid(tt.DRAWER_RANGE), state.drawer >= mid(tt.DRAWER_RANGE),
                             state.door < mid(tt.DOOR_RANGE), state.door >= mid(tt.DOOR_RANGE)])
    liftable = _in_box(xy, BLOCK_REACH) & ~_in_box(xy, OVER_SOLID[0]) & ~_in_box(xy, OVER_SOLID[1])
    # push plans: [.., 1] beside the block at travel height, [.., 3] the tcp's end; the block ends its
    # extent along the push + a finger beyond the tcp
    push = plans[11:14]
    direction = push[:, 3, :2] - push[:, 1, :2]
    direction = direction / jnp.maximum(jnp.linalg.norm(direction, axis=-1, keepdims=True), 1e-6)
    half = jnp.asarray(tt.BLOCK_HALF, jnp.float32)
    c, sn = jnp.abs(jnp.cos(state.block_euler[:, 2])), jnp.abs(jnp.sin(state.block_euler[:, 2]))
    extent = jnp.stack([c * half[:, 0] + sn * half[:, 1], sn * half[:, 0] + c * half[:, 1]], -1)
    block_end = push[:, 3, :2] + direction * (jnp.sum(jnp.abs(direction) * extent, -1, keepdims=True) + tt.FINGER)
    pushable = _in_box(xy, BLOCK_SAFE) & _in_box(block_end, BLOCK_SAFE)
    return jnp.concatenate([articulated, liftable, pushable]) & (state.held < 0)


def play_reset(key, config: PlayConfig) -> tuple[tt.TabletopState, PlayState]:
    """One stream's start: a random reset with the door and drawer at an end of their ranges, idling
    for a few steps. jit/vmap-able over ``key``."""
    k_reset, k_ends = jax.random.split(key)
    s = tt.reset(k_reset, config.env)
    u = jax.random.uniform(k_ends, (3,))
    s = s._replace(door=jnp.where(u[0] < 0.5, tt.DOOR_RANGE[0], tt.DOOR_RANGE[1]).astype(jnp.float32),
                   drawer=jnp.where(u[1] < 0.5, tt.DRAWER_RANGE[0], tt.DRAWER_RANGE[1]).astype(jnp.float32))
    expert = ex.expert_init(s, jnp.int32(0), k_ends)
    p = PlayState(mode=jnp.int32(IDLE_MODE), behaviour=jnp.int32(IDLE), expert=expert, timer=jnp.int32(0),
                  idle_len=(1 + jnp.floor(u[2] * config.idle_steps[0])).astype(jnp.int32),
                  target=s.tcp_pos.at[2].set(jnp.maximum(s.tcp_pos[2], IDLE_Z[0])), yaw=s.tcp_euler[2],
                  speed=jnp.float32(0.4), act_speed=jnp.float32(1.0), push_left=jnp.int32(0),
                  push=jnp.zeros(3, jnp.float32))
    return s, p


def _towards(state: tt.TabletopState, target, yaw, speed, gripper, noise, config):
    """A proportional move towards ``target`` (rising to ``SAFE_Z`` first), pointing down at ``yaw``."""
    low = state.tcp_pos[2] < SAFE_Z
    goal = jnp.where(low, state.tcp_pos.at[2].set(jnp.maximum(target[2], SAFE_Z + 0.02)), target)
    move = jnp.clip((goal - state.tcp_pos) / config.max_rel_pos, -speed, speed) + noise[:3]
    e = state.tcp_euler
    orn_err = jnp.stack([tt.wrap_angle(jnp.pi - e[0]), -e[1], tt.wrap_angle(yaw - e[2])])
    turn = 0.5 * jnp.clip(orn_err / config.max_rel_orn, -1.0, 1.0) + noise[3:]
    return jnp.concatenate([jnp.clip(move, -1, 1), jnp.clip(turn, -1, 1), jnp.asarray(gripper, jnp.float32)[None]])


def _place_target(state: tt.TabletopState, u):
    """A put-down spot in ``PLACE_AREA``: of 4 random candidates, the farthest from the other blocks."""
    lo, hi = jnp.asarray(PLACE_AREA[0]), jnp.asarray(PLACE_AREA[1])
    cand = lo + (hi - lo) * u.reshape(4, 2)
    others = jnp.where((jnp.arange(3) == state.held)[:, None], jnp.inf, state.block_pos[:, :2])
    gap = jnp.min(jnp.linalg.norm(cand[:, None] - others[None], axis=-1), axis=-1)
    xy = cand[jnp.argmax(gap)]
    return jnp.concatenate([xy, jnp.full((1,), PLACE_Z)])


def _play_step(s: tt.TabletopState, p: PlayState, key, config: PlayConfig):
    """One step of one stream: ``(next state, next PlayState, record, state before the step)``."""
    env = config.env
    k_act, k_init, k_misc = jax.random.split(key, 3)
    u = jax.random.uniform(k_misc, (20,))
    noise = config.noise * jax.random.normal(k_act, (6,))
    holding = s.held >= 0

    # 1) mode transitions, in order: expert done -> place (holding) or idle; place done -> idle;
    #    idle done -> a new behaviour
    e = p.expert
    wp = jax.nn.one_hot(e.phase, ex.NUM_WAYPOINTS, dtype=jnp.float32) @ e.waypoints
    reached = jnp.max(jnp.abs(wp - s.tcp_pos)) < ex.REACH_TOL
    complete = (e.phase >= jnp.asarray(PLAN_LENGTH)[p.behaviour] - 1) & reached
    expert_done = (p.mode == EXPERT) & (complete | (p.timer >= config.expert_cap))
    lo_i, hi_i = config.idle_steps
    idle_len = (lo_i + jnp.floor(u[0] * (hi_i - lo_i + 1))).astype(jnp.int32)
    lo, hi = jnp.asarray(IDLE_AREA[0]), jnp.asarray(IDLE_AREA[1])
    idle_target = jnp.concatenate([lo + (hi - lo) * u[1:3], IDLE_Z[0] + (IDLE_Z[1] - IDLE_Z[0]) * u[3:4]])
    idle_yaw = 1.1 + 0.8 * u[4]
    to_place = expert_done & holding
    to_idle = expert_done & ~holding
    mode = jnp.where(to_place, PLACE, jnp.where(to_idle, IDLE_MODE, p.mode))
    timer = jnp.where(expert_done, 0, p.timer)
    target = jnp.where(to_place, _place_target(s, u[5:13]), jnp.where(to_idle, idle_target, p.target))
    yaw, speed = jnp.where(to_idle, idle_yaw, p.yaw), jnp.where(expert_done, 0.4 + 0.4 * u[13], p.speed)
    length = jnp.where(expert_done, idle_len, p.idle_len)

    place_done = (mode == PLACE) & ((~holding & (s.gripper_action > 0)) | (timer >= config.place_cap))
    mode = jnp.where(place_done, IDLE_MODE, mode)
    timer = jnp.where(place_done, 0, timer)
    target, yaw = jnp.where(place_done, idle_target, target), jnp.where(place_done, idle_yaw, yaw)

    idle_done = (mode == IDLE_MODE) & (timer >= length)
    r = jax.random.uniform(k_init, (ex.N_RANDOM,))  # what expert_init(s, b, k_init) draws
    plans = jax.vmap(lambda b: ex.plan_waypoints(s, b, r)[0])(jnp.arange(len(BEHAVIOURS)))
    w = jnp.asarray(config.weight_array) * feasible(s, plans)
    cum = jnp.cumsum(w)
    choice = jnp.minimum(jnp.sum(cum < u[14] * cum[-1]), len(BEHAVIOURS) - 1).astype(jnp.int32)
    start = idle_done & (cum[-1] > 0)  # (something is always feasible: one end of each articulated part)
    new_expert = ex.expert_init(s, choice, k_init)
    expert = jax.tree.map(lambda a, b: jnp.where(start, a, b), new_expert, e)
    behaviour = jnp.where(start, choice, p.behaviour)
    act_speed = jnp.where(start, jnp.asarray(_ACT_SPEED)[choice] * (0.8 + 0.4 * u[15]), p.act_speed)
    mode = jnp.where(start, EXPERT, mode)
    timer = jnp.where(start, 0, timer)

    # 2) the action of the current mode
    expert_act, stepped = ex.expert_action(s, expert, k_act, env, config.noise)
    acting = (jax.nn.one_hot(stepped.phase, ex.NUM_WAYPOINTS) @ jnp.asarray(_ACT_MASK)[behaviour]) > 0
    expert_act = expert_act.at[:3].set(jnp.where(acting, jnp.clip(expert_act[:3], -act_speed, act_speed),
                                                 expert_act[:3]))
    near = jnp.max(jnp.abs(target - s.tcp_pos)) < 0.01
    place_act = _towards(s, target, s.tcp_euler[2], speed, jnp.where(near, 1.0, -1.0), noise, env)
    idle_act = _towards(s, target, yaw, speed, 1.0, noise, env)
    action = jnp.where(mode == EXPERT, expert_act, jnp.where(mode == PLACE, place_act, idle_act))
    expert = jax.tree.map(lambda a, b: jnp.where(mode == EXPERT, a, b), stepped, expert)

    # 3) recoveries: a push starts while the expert approaches (before its first acting waypoint) and
    #    ends early when the mode changes; the executed action has it, the record has not
    approaching = (mode == EXPERT) & (stepped.phase < jnp.asarray(_FIRST_ACT)[behaviour])
    lo_p, hi_p = config.perturb_steps
    begin = approaching & (p.push_left == 0) & (u[16] < config.perturb_rate)
    z, azimuth = 2.0 * u[18] - 1.0, 2.0 * jnp.pi * u[19]  # uniform on the sphere, then half as steep:
    r_xy = jnp.sqrt(1 - z * z)  # a push down from the travel height must not reach the parts below
    direction = jnp.stack([r_xy * jnp.cos(azimuth), r_xy * jnp.sin(azimuth), 0.5 * z])
    push_left = jnp.where(begin, (lo_p + jnp.floor(u[17] * (hi_p - lo_p + 1))).astype(jnp.int32), p.push_left)
    push_left = jnp.where(approaching, push_left, 0)
    push = jnp.where(begin, config.perturb_size * direction, p.push)
    perturbed = push_left > 0
    executed = action.at[:3].set(jnp.where(perturbed, jnp.clip(action[:3] + push, -1, 1), action[:3]))

    # 4) record the state before the step, then step
    absolute = jnp.concatenate([s.tcp_pos + action[:3] * env.max_rel_pos,
                                tt.wrap_angle(s.tcp_euler + action[3:6] * env.max_rel_orn),
                                jnp.where(action[6] < 0, -1.0, 1.0)[None]])
    record = {"robot_obs": tt.robot_obs(s), "scene_obs": tt.scene_obs(s), "rel_actions": action,
              "actions": absolute, "label": jnp.where(mode == IDLE_MODE, IDLE, behaviour).astype(jnp.int32),
              "perturbed": perturbed}
    nxt = tt.step(s, executed, env)
    p = PlayState(mode=mode.astype(jnp.int32), behaviour=behaviour.astype(jnp.int32), expert=expert,
                  timer=(timer + 1).astype(jnp.int32), idle_len=length.astype(jnp.int32), target=target,
                  yaw=yaw, speed=speed, act_speed=act_speed,
                  push_left=jnp.maximum(push_left - 1, 0).astype(jnp.int32), push=push)
    return nxt, p, record, s


def _step_config(config: PlayConfig) -> PlayConfig:
    """The fields a play step reads (the rest set to fixed values): one compiled play program serves
    configs that differ only in streams, length, chunking or images."""
    return dataclasses.replace(config, num_streams=1, steps=1, chunk_steps=1, images=False, render_batch=1)


# without LLVM's optimisation passes: half the compile time (~7 s instead of ~13 s on 2 CPU cores);
# the play runs ~3x slower, still ~10k steps/s per core, far below the rendering's cost
@functools.partial(jax.jit, static_argnames=("config", "steps"), compiler_options={"xla_backend_optimization_level": 0})
def _play_chunk(carry, stream_keys, start, config: PlayConfig, steps: int):
    """``steps`` steps of every stream from ``carry`` (vmap over streams, scan over steps): the next
    carry, the records ``[S, T, ...]`` and the states before each step (for rendering)."""
    def stream(carry_1, key):
        def body(c, t):
            s, p = c
            s, p, record, before = _play_step(s, p, jax.random.fold_in(key, t), config)
            return (s, p), (record, before)
        return jax.lax.scan(body, carry_1, start + jnp.arange(steps, dtype=jnp.uint32))

    carry, (records, states) = jax.vmap(stream)(carry, stream_keys)
    return carry, records, states


_RENDER_CALL = 16  # render_batch x this many frames per call of the compiled renderer


@functools.partial(jax.jit, static_argnames=("env", "batch"))
def _render_frames(states: tt.TabletopState, env: tt.TabletopConfig, batch: int):
    obs = jax.lax.map(lambda st: tt.observe(st, env, images=True), states, batch_size=batch)
    return obs["rgb_static"], obs["rgb_gripper"]


def _render(states: tt.TabletopState, env: tt.TabletopConfig, batch: int) -> tuple[np.ndarray, np.ndarray]:
    """``rgb_static [S, T, H, H, 3]``, ``rgb_gripper [S, T, G, G, 3]`` (host) of states ``[S, T]``:
    ``batch`` frames at a time (vmapped; the ray caster's intermediates are ``pixels x boxes`` per
    frame), ``batch * _RENDER_CALL`` per call of one compiled program, whatever the chunk."""
    n = states.t.shape[:2]
    # sliced on the host: an eager device slice compiles one program per offset
    flat = jax.tree.map(lambda x: np.asarray(x).reshape(-1, *x.shape[2:]), jax.device_get(states))
    total = int(np.prod(n))
    static, gripper, call = [], [], batch * _RENDER_CALL
    for i in range(0, total, call):
        piece = jax.tree.map(lambda x: x[i:i + call], flat)
        short = call - piece.t.shape[0]
        if short:  # pad the last piece (repeat its last frame) to the compiled size
            piece = jax.tree.map(lambda x: np.concatenate([x, np.repeat(x[-1:], short, 0)]), piece)
        images = _render_frames(piece, env, batch)  # queued: fetched once, after the last piece
        static.append((images[0], call - short))
        gripper.append((images[1], call - short))
    static, gripper = ([x[:keep] for x, keep in jax.device_get(parts)] for parts in (static, gripper))
    return (np.concatenate(static).reshape(*n, *static[0].shape[1:]),
            np.concatenate(gripper).reshape(*n, *gripper[0].shape[1:]))


@functools.partial(jax.jit, static_argnames=("config", "streams"))
def _play_start(key, config: PlayConfig, streams: int):
    keys = jax.random.split(key, streams)
    pairs = jax.vmap(jax.random.split)(keys)  # [S, 2]: reset, steps
    return jax.vmap(lambda k: play_reset(k, config))(pairs[:, 0]), pairs[:, 1]


def generate_play(seed: int, config: PlayConfig = PlayConfig(), progress: bool = False) -> Iterator[PlayChunk]:
    """Yield ``config.steps`` steps of ``config.num_streams`` play streams in chunks of
    ``config.chunk_steps`` steps (host arrays; see ``PlayChunk``). Deterministic per ``seed`` and
    config (and independent of ``chunk_steps``). ``progress``: a progress bar (tqdm) over steps."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int, got {seed!r}")
    step_config = _step_config(config)
    carry, stream_keys = _play_start(jax.random.key(int(seed)), step_config, config.num_streams)
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=config.steps * config.num_streams, unit="frame", desc="play")
    try:
        for start in range(0, config.steps, config.chunk_steps):
            # always a whole chunk (one compiled program); the steps past the end are dropped
            n = min(config.chunk_steps, config.steps - start)
            carry, rec, states = _play_chunk(carry, stream_keys, jnp.uint32(start), step_config, config.chunk_steps)
            rec = jax.tree.map(lambda x: x[:, :n], jax.device_get(rec))
            if config.images:
                states = jax.tree.map(lambda x: x[:, :n], jax.device_get(states))
                rec["rgb_static"], rec["rgb_gripper"] = _render(states, config.env, config.render_batch)
            yield PlayChunk(robot_obs=rec["robot_obs"], scene_obs=rec["scene_obs"], rel_actions=rec["rel_actions"],
                            actions=rec["actions"], label=rec["label"], rgb_static=rec.get("rgb_static"),
                            rgb_gripper=rec.get("rgb_gripper"), start=start, perturbed=rec["perturbed"])
            if bar is not None:
                bar.update(n * config.num_streams)
    finally:
        if bar is not None:
            bar.close()


def collect_play(seed: int, config: PlayConfig = PlayConfig(), progress: bool = False) -> PlayChunk:
    """The whole play as one ``PlayChunk`` (for short plays; long ones: iterate ``generate_play``)."""
    chunks = list(generate_play(seed, config, progress))
    cat = lambda name: None if getattr(chunks[0], name) is None else np.concatenate(  # noqa: E731
        [getattr(c, name) for c in chunks], axis=1)
    return PlayChunk(**{f: cat(f) for f in PlayChunk._fields if f != "start"}, start=0)


# --- host-side analysis of the labels -------------------------------------------------------------
class Interaction(NamedTuple):
    stream: int
    first: int  # step of the behaviour's first frame
    last: int  # its last frame (inclusive)
    behaviour: str
    happened: bool  # its effect is in the scene at ``last + 1`` (or at ``last`` for the final one)


def behaviour_happened(name: str, start: np.ndarray, end: np.ndarray) -> bool:
    """Did ``name`` happen between ``scene_obs`` ``start`` and ``end`` [24]? Articulated parts by the
    segmentation's thresholds (e.g. the door from < 0.05 to > 0.25), lifts by a rise of > 3 cm at
    some point (pass the highest frame as ``end``), pushes by > 1 cm of xy displacement."""
    part, what = name.split("_")
    if part in ("red", "blue", "pink"):
        p = 6 + 6 * tt.BLOCK_NAMES.index(part)
        if what == "lift":
            return bool(end[p + 2] - start[p + 2] > 0.03)
        return bool(np.linalg.norm(end[p:p + 2] - start[p:p + 2]) > 0.01)
    idx, low, high = {"button": (5, 0.2, 0.8), "switch": (3, 0.01, 0.07), "drawer": (1, 0.05, 0.10),
                      "door": (0, 0.05, 0.25)}[part]
    forward = what in ("on", "open", "left")
    return bool((start[idx] < low and end[idx] > high) if forward else (start[idx] > high and end[idx] < low))


def interactions(label: np.ndarray, scene_obs: np.ndarray) -> list[Interaction]:
    """The intended behaviours of a play: runs of one label (``label [S, T]``, ``scene_obs [S, T, 24]``)."""
    out = []
    for s in range(label.shape[0]):
        lab = np.asarray(label[s])
        change = np.flatnonzero(np.diff(lab) != 0) + 1
        for a, b in zip(np.r_[0, change], np.r_[change, len(lab)]):
            if lab[a] == IDLE:
                continue
            name = BEHAVIOURS[int(lab[a])]
            after = min(b, len(lab) - 1)
            end = scene_obs[s, after]
            if name.endswith("lift"):
                p = 6 + 6 * tt.BLOCK_NAMES.index(name.split("_")[0])
                end = scene_obs[s, a + int(np.argmax(scene_obs[s, a:after + 1, p + 2]))]
            out.append(Interaction(s, int(a), int(b - 1), name, behaviour_happened(name, scene_obs[s, a], end)))
    return out
