"""A built-in tabletop world modelled on CALVIN's scene D, in pure JAX (no physics engine).

The world is a table with a two-compartment cabinet at the back whose sliding door covers one
compartment, a drawer under the table top at the front, a button (with a green lamp beside it), a
switch on the right-hand pillar (with a lightbulb on top), three blocks (red, blue, pink) and an end
effector (a parallel gripper). Coordinates are CALVIN's world frame in metres (z up, the robot base
at (-0.34, -0.46, 0.24), the table surface at z = 0.46), so CALVIN reset states and targets carry
over approximately (the original's ``loc_target`` of each experiment is within 3.5 cm of our
handles). ``reset`` -> ``TabletopState`` (a pytree of arrays), ``step(state, action, config)``,
``observe(state, config)``: everything jit/vmap-able, deterministic given the reset key.

Actions are CALVIN's 7-d RELATIVE actions ``(dx, dy, dz, droll, dpitch, dyaw, gripper)``: clipped
to [-1, 1], positions scaled by ``max_rel_pos`` = 0.02 m and angles by ``max_rel_orn`` = 0.05 rad
per step (calvin_env ``robot/robot.py``: ``Robot(max_rel_pos=0.02, max_rel_orn=0.05)``,
``relative_to_absolute``: ``rel_pos *= max_rel_pos * magic_scaling_factor_pos`` with the factors 1
in ``conf/robot/panda.yaml``; the same bounds as ``utils.to_relative_action``, which clips the
recorded relative actions to [-1, 1]), the gripper is ``-1`` (close) when ``action[6] < 0`` else
``+1`` (open), as ``PlayTableSimEnv.step``. The tcp follows its target exactly (no IK lag). NaN or
inf actions raise ``FloatingPointError`` in eager calls; inside jit/vmap (where values cannot be
inspected) non-finite entries are replaced by 0 (no motion, gripper open).

Contact rules (kinematic; the tcp is a point between the fingertips, ``TCP_MARGIN`` = 4 mm):

The handle zones are a few centimetres wide (as fingers close on a real handle anywhere along it,
not at one point): a learned policy needs BC-level, not scripted, precision to reach them. Measured
with a state diffusion policy trained on 100 expert drawer_open demos: 38 % success in the closed
loop with zones of half these sizes, 81 % with these.

- Motion: the tcp target is clipped to the workspace, then moved axis by axis (x, y, z), each axis
  stopping at the face of any solid it would enter: the table (z < 0.46 behind its front edge
  y = -0.20), the cabinet walls, top and back, the pillar, the lightbulb, the button base, the
  green lamp, and the sliding door panel. Blocks are solid from above only when the gripper is
  (nearly) closed; an open gripper descends around them. A held block cannot go below the table.
- Sliding door (scene_obs[0], 0..0.28 m; 0 = covers the right compartment, increasing = moving
  left, -x): moves only while the tcp is at its handle (within ``DOOR_ZONE`` of
  ``door_handle(door)``), by minus the tcp's x displacement. Moves in y or z do nothing.
- Drawer (scene_obs[1], 0..0.16 m, opens towards the robot, -y): moves only while the tcp is at
  its handle (``DRAWER_ZONE`` around ``drawer_handle(drawer)``), by minus the tcp's y
  displacement; pushing it in (+y) works with any gripper state, pulling it out (-y) only with the
  gripper closed on the handle (gripper action -1). Moves in x or z do nothing.
- Switch (scene_obs[3], 0..0.085): a lever on the pillar that moves only while the tcp is at it
  (``SWITCH_ZONE`` around ``switch_lever(switch)``), by the tcp's z displacement / ``SWITCH_GAIN``
  (0.35 m per unit: the lever travels 3 cm). The lightbulb (scene_obs[4]) is on exactly while the
  switch is past its midpoint, like CALVIN's ``Switch.step`` (a level, not a toggle).
- Button (scene_obs[2], depression 0..0.02 m): the cap is pushed down by the tcp from above (the
  depression is ``BUTTON_TOP - tcp z`` while the tcp is over the cap) and springs back when the tcp
  leaves; the cap is solid to sideways moves. The green light (scene_obs[5]) toggles when the
  depression first exceeds ``BUTTON_PRESS`` (as CALVIN's ``Button.step``, which toggles on the
  press) and cannot toggle again until the button is released below ``BUTTON_RELEASE``: exactly
  one toggle per press-and-release, robust to jitter at the threshold.
- Blocks (scene_obs[6:24], position = centre of the bottom face, as CALVIN's ~0.46 m on a 0.46 m
  table): a block is pushed when the tcp, at block height (below its top), enters its footprint
  expanded by ``FINGER`` (1 cm): the block moves along the face normal of least penetration until
  the tcp is on its boundary. An open gripper that descended around a block drags it with
  horizontal moves. Closing the gripper (action -1) with the tcp inside the block's footprint at
  block height and the fingers open wider than the block grasps it; it then moves rigidly with the
  tcp (yaw included) until the gripper opens, when it drops to the table (z = 0.46, flat). Blocks
  not held are confined to the table and cabinet area (``BLOCK_AREA_LO/HI``); blocks do not push
  each other (they may overlap).

Observations follow CALVIN's layouts exactly: ``robot_obs`` [15] = tcp xyz, tcp euler (wrapped
to [-pi, pi]), gripper opening width (0.08 open), 7 arm joints, gripper action; ``scene_obs`` [24]
= door, drawer, button, switch, lightbulb, green light, then xyz + euler of the red, blue and pink
blocks. The arm joints are not simulated: they are a fixed affine function of the tcp pose
(``JOINTS_FROM_POSE``, a least-squares fit to the 862 (pose, joints) pairs of the original's reset
pose files, RMSE ~0.1 rad), clipped to the Panda limits.
"""
from __future__ import annotations

import dataclasses
from typing import NamedTuple

import numpy as np

import jax
import jax.numpy as jnp

from dynaguide_jax._checks import check_finite, is_concrete
from dynaguide_jax.envs import render as rd

# --- parts and ranges (scene_obs units) ---------------------------------------------------------
TABLE_Z = 0.46
DOOR_RANGE = (0.0, 0.28)
DRAWER_RANGE = (0.0, 0.16)
SWITCH_RANGE = (0.0, 0.085)
BUTTON_TRAVEL = 0.02
BUTTON_PRESS, BUTTON_RELEASE = 0.012, 0.006
LIGHTBULB_ON = 0.5 * (SWITCH_RANGE[0] + SWITCH_RANGE[1])
SWITCH_GAIN = 0.35  # lever travel (m) per unit of switch state

# --- geometry (m, CALVIN world frame) ----------------------------------------------------------
WORKSPACE_LO = (-0.45, -0.45, 0.35)
WORKSPACE_HI = (0.45, 0.15, 0.80)
TCP_MARGIN = 0.004
FINGER = 0.01
GRIPPER_OPEN = 0.08  # CALVIN's gripper_opening_width when open (2 x 0.04 finger joint limit)
ORN_LIMIT = 0.6  # rad: roll about pi and pitch about 0 stay within this (the gripper points down)

DOOR_HANDLE_X0, DOOR_HANDLE_Y, DOOR_HANDLE_Z = 0.024, -0.018, 0.54  # handle at door = 0
DOOR_ZONE = (0.04, 0.03, 0.04)  # half extents; z kept below SAFE_Z in play.py
DOOR_PANEL_HALF_WIDTH = 0.11
DOOR_PANEL_X0 = 0.04  # panel centre at door = 0 (covers the right compartment)
DRAWER_HANDLE = (0.16, -0.215, 0.405)  # at drawer = 0; y decreases as the drawer opens
DRAWER_ZONE = (0.08, 0.04, 0.03)
SWITCH_LEVER = (0.28, 0.028, 0.55)  # at switch = 0; z increases by SWITCH_GAIN * switch
SWITCH_ZONE = (0.04, 0.04, 0.015)
BUTTON_XY = (-0.115, -0.115)
BUTTON_CAP_HALF = 0.02
BUTTON_BASE_TOP = 0.472
BUTTON_TOP = BUTTON_BASE_TOP + 0.023  # cap top at rest

BLOCK_NAMES = ("red", "blue", "pink")
BLOCK_HALF = ((0.035, 0.025, 0.025), (0.025, 0.025, 0.025), (0.045, 0.025, 0.025))  # CALVIN: middle, small, big
BLOCK_AREA_LO, BLOCK_AREA_HI = (-0.55, -0.185), (0.55, 0.19)  # where a block's xy may be
TABLE_SURFACE = ((0.0, -0.15), (0.35, -0.03))  # CALVIN scene D "table" surface: random block positions

# static solids: (lo, hi, colour); the tcp cannot enter them (expanded by TCP_MARGIN)
_WOOD, _CABINET = (0.74, 0.60, 0.44), (0.86, 0.84, 0.78)
STATIC_SOLIDS = (
    ((-0.60, -0.20, 0.43), (0.60, 0.30, 0.46), _WOOD),  # table top
    ((-0.58, -0.18, -0.50), (0.58, 0.28, 0.43), (0.50, 0.38, 0.28)),  # table body (drawer recess in front)
    ((-0.36, 0.02, 0.46), (-0.33, 0.24, 0.62), _CABINET),  # cabinet left wall
    ((-0.15, 0.02, 0.46), (-0.06, 0.24, 0.62), _CABINET),  # divider between the compartments
    ((0.14, 0.02, 0.46), (0.18, 0.24, 0.62), _CABINET),  # right wall
    ((-0.36, 0.20, 0.46), (0.18, 0.24, 0.62), (0.66, 0.64, 0.60)),  # back wall (darker: compartments read as open)
    ((-0.36, 0.00, 0.62), (0.18, 0.24, 0.66), _CABINET),  # cabinet top
    ((0.18, 0.04, 0.46), (0.36, 0.24, 0.66), (0.80, 0.78, 0.72)),  # pillar (switch on its front)
    ((0.25, 0.035, 0.52), (0.31, 0.04, 0.62), (0.96, 0.96, 0.96)),  # switch plate
    ((-0.15, -0.15, 0.46), (-0.08, -0.08, BUTTON_BASE_TOP), (0.93, 0.93, 0.93)),  # button base
)
LAMP_BOX = ((-0.225, -0.145, 0.46), (-0.165, -0.085, 0.52))  # green light, beside the button (solid)
LIGHTBULB_BOX = ((0.21, 0.045, 0.66), (0.33, 0.165, 0.725))  # on the pillar (solid)
COLORS = {
    "lamp_on": (0.15, 1.0, 0.25), "lamp_off": (0.36, 0.42, 0.37),
    "bulb_on": (1.0, 0.92, 0.15), "bulb_off": (0.66, 0.66, 0.62),
    "button": (0.12, 0.12, 0.14), "lever": (0.18, 0.18, 0.20),
    "door": (0.30, 0.33, 0.42), "handle": (0.08, 0.08, 0.09),
    "drawer_front": (0.08, 0.55, 0.55), "drawer_body": (0.55, 0.82, 0.78),
    "red": (0.86, 0.10, 0.10), "blue": (0.12, 0.30, 0.92), "pink": (0.96, 0.45, 0.72),
    "hand": (0.22, 0.22, 0.25), "finger": (0.62, 0.62, 0.66), "arm": (0.90, 0.90, 0.92),
}

# CALVIN's static camera (calvin_env conf/cameras/cameras/static.yaml)
STATIC_CAMERA = dict(eye=(2.871459009488717, -2.166602199425597, 2.555159848480571),
                     target=(-0.026242351159453392, -0.0302329882979393, 0.3920000493526459),
                     up=(0.4041403970338857, 0.22629790978217404, 0.8862616969685161), fov=10.0)
GRIPPER_CAMERA_FOV = 75.0  # conf/cameras/cameras/gripper.yaml
GRIPPER_CAMERA_OFFSET = (0.045, 0.0, -0.10)  # in the tool frame (tool z points from the hand to the fingertips)
GRIPPER_CAMERA_VIEW = (0.05, 0.0, 1.0)  # looks past the fingertips, tilted forward (tool +x)

# arm joints from the tcp pose: joints = [x, y, z, wrap(roll - pi), pitch, yaw, 1] @ JOINTS_FROM_POSE
JOINTS_FROM_POSE = np.array([
    [1.1616, 0.3597, -1.4714, 2.6124, -0.8462, -0.6339, -1.7217],
    [3.3588, -0.9751, -1.4193, 2.3770, 0.1445, 0.3112, 0.5509],
    [1.4275, 0.5092, 1.8863, 3.5947, 0.6278, -2.5362, -0.7973],
    [0.4417, 0.4590, -0.2284, 0.6984, 0.4861, -0.5414, -0.3343],
    [0.5176, -0.7228, -0.2951, 0.5747, 0.3106, -0.7233, -0.1243],
    [0.1353, 0.2086, 0.0222, 0.0597, -0.1721, -0.1581, -0.8840],
    [-1.3622, 0.2062, 0.6679, -3.9169, -0.9029, 3.3530, 2.5422]], np.float32)
JOINT_LOWER = (-2.8973, -1.7628, -2.8973, -3.0718, -2.8973, -0.0175, -2.8973)  # conf/robot/panda.yaml
JOINT_UPPER = (2.8973, 1.7628, 2.8973, -0.0698, 2.8973, 3.7525, 2.8973)

ROBOT_OBS_DIM, SCENE_OBS_DIM, ACTION_DIM = 15, 24, 7


def _aabbs(boxes):
    lo, hi = np.asarray([b[0] for b in boxes], np.float32), np.asarray([b[1] for b in boxes], np.float32)
    return lo, hi


# axis-aligned boxes that move with a part: (lo, hi) at rest, colour, and how lo and hi shift with
# (door, drawer, switch, button): [4, 3] per box; the button only lowers the cap's top
_BH = BUTTON_CAP_HALF
_MOVING = (  # name, lo, hi, colour
    ("cap", (BUTTON_XY[0] - _BH, BUTTON_XY[1] - _BH, BUTTON_BASE_TOP), (BUTTON_XY[0] + _BH, BUTTON_XY[1] + _BH,
                                                                        BUTTON_TOP), "button"),
    ("lever", (SWITCH_LEVER[0] - 0.01, SWITCH_LEVER[1] - 0.016, SWITCH_LEVER[2] - 0.012),
     (SWITCH_LEVER[0] + 0.01, SWITCH_LEVER[1] + 0.007, SWITCH_LEVER[2] + 0.012), "lever"),
    ("door", (DOOR_PANEL_X0 - DOOR_PANEL_HALF_WIDTH, 0.002, 0.465),
     (DOOR_PANEL_X0 + DOOR_PANEL_HALF_WIDTH, 0.018, 0.615), "door"),
    ("door_handle", (DOOR_HANDLE_X0 - 0.01, -0.03, 0.50), (DOOR_HANDLE_X0 + 0.01, 0.002, 0.58), "handle"),
    ("drawer_front", (0.04, -0.205, 0.34), (0.28, -0.19, 0.425), "drawer_front"),
    ("drawer_body", (0.05, -0.19, 0.34), (0.27, 0.03, 0.40), "drawer_body"),
    ("drawer_handle", (DRAWER_HANDLE[0] - 0.05, DRAWER_HANDLE[1] - 0.01, DRAWER_HANDLE[2] - 0.01),
     (DRAWER_HANDLE[0] + 0.05, DRAWER_HANDLE[1] + 0.01, DRAWER_HANDLE[2] + 0.01), "handle"),
)
_MOVING_NAMES = tuple(m[0] for m in _MOVING)
_MOVING_LO, _MOVING_HI = _aabbs([(m[1], m[2]) for m in _MOVING])
_SHIFT_LO = np.zeros((len(_MOVING), 4, 3), np.float32)
_SHIFT_HI = np.zeros((len(_MOVING), 4, 3), np.float32)
for _i, _m in enumerate(_MOVING):
    if _m[0].startswith("door"):
        _SHIFT_LO[_i, 0, 0] = _SHIFT_HI[_i, 0, 0] = -1.0
    elif _m[0].startswith("drawer"):
        _SHIFT_LO[_i, 1, 1] = _SHIFT_HI[_i, 1, 1] = -1.0
    elif _m[0] == "lever":
        _SHIFT_LO[_i, 2, 2] = _SHIFT_HI[_i, 2, 2] = SWITCH_GAIN
    elif _m[0] == "cap":
        _SHIFT_HI[_i, 3, 2] = -1.0
_STATIC_LO, _STATIC_HI = _aabbs([(s[0], s[1]) for s in STATIC_SOLIDS] + [LAMP_BOX, LIGHTBULB_BOX])
_STATIC_COLOR = np.asarray([s[2] for s in STATIC_SOLIDS] + [COLORS["lamp_off"], COLORS["bulb_off"]], np.float32)
_LAMP, _BULB = len(STATIC_SOLIDS), len(STATIC_SOLIDS) + 1  # their rows in the static arrays
_MOVING_COLOR = np.asarray([COLORS[m[3]] for m in _MOVING], np.float32)
# the gripper in the tool frame: (offset, half extents, colour); finger offsets scale with the opening
_GRIPPER = (((0.0, 1.0, -0.025), (0.009, 0.006, 0.025), "finger"),
            ((0.0, -1.0, -0.025), (0.009, 0.006, 0.025), "finger"),
            ((0.0, 0.0, -0.075), (0.02, 0.06, 0.025), "hand"),
            ((0.0, 0.0, -0.15), (0.022, 0.022, 0.05), "arm"))


@dataclasses.dataclass(frozen=True)
class TabletopConfig:
    """Static settings (hashable: pass as a static argument). Image sizes default to CALVIN's
    (200 static, 84 gripper); ``small()`` is a CPU preset. ``max_rel_pos`` / ``max_rel_orn`` are
    CALVIN's action scaling; ``gripper_speed`` is the change of opening width per step (m)."""
    static_size: int = 200
    gripper_size: int = 84
    max_rel_pos: float = 0.02
    max_rel_orn: float = 0.05
    gripper_speed: float = 0.02

    def __post_init__(self):
        for name in ("static_size", "gripper_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"TabletopConfig.{name} must be a positive int, got {value!r}")
        for name in ("max_rel_pos", "max_rel_orn", "gripper_speed"):
            if not getattr(self, name) > 0:
                raise ValueError(f"TabletopConfig.{name} must be > 0, got {getattr(self, name)!r}")

    @classmethod
    def paper(cls) -> TabletopConfig:
        return cls()

    @classmethod
    def small(cls) -> TabletopConfig:
        """64x64 static and 32x32 gripper images, for CPU runs."""
        return cls(static_size=64, gripper_size=32)


class TabletopState(NamedTuple):
    """The world's state (all float32 unless noted; leading batch axes allowed under vmap)."""
    tcp_pos: jax.Array  # [3]
    tcp_euler: jax.Array  # [3] roll, pitch, yaw (R = Rz(yaw) Ry(pitch) Rx(roll), as pybullet)
    gripper_width: jax.Array  # [] opening width, 0..GRIPPER_OPEN
    gripper_action: jax.Array  # [] last command, -1 close / +1 open
    door: jax.Array  # [] sliding door, DOOR_RANGE
    drawer: jax.Array  # [] DRAWER_RANGE
    button: jax.Array  # [] depression, 0..BUTTON_TRAVEL
    switch: jax.Array  # [] SWITCH_RANGE
    lightbulb: jax.Array  # [] 0/1
    green_light: jax.Array  # [] 0/1
    button_armed: jax.Array  # [] bool: released since the last toggle
    block_pos: jax.Array  # [3, 3] red, blue, pink: bottom-face centre
    block_euler: jax.Array  # [3, 3]
    held: jax.Array  # [] int32: index of the held block, -1 none
    grasp_offset: jax.Array  # [3] held block position - tcp, in the tcp's yaw frame
    grasp_yaw: jax.Array  # [] held block yaw - tcp yaw
    t: jax.Array  # [] int32 steps since reset


# --- small geometry helpers ----------------------------------------------------------------------
def wrap_angle(a):
    return (a + jnp.pi) % (2 * jnp.pi) - jnp.pi


def euler_to_matrix(euler):
    """``[..., 3]`` roll, pitch, yaw -> ``[..., 3, 3]`` = Rz(yaw) Ry(pitch) Rx(roll)."""
    r, p, y = euler[..., 0], euler[..., 1], euler[..., 2]
    cr, sr, cp, sp, cy, sy = jnp.cos(r), jnp.sin(r), jnp.cos(p), jnp.sin(p), jnp.cos(y), jnp.sin(y)
    row0 = jnp.stack([cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr], -1)
    row1 = jnp.stack([sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr], -1)
    row2 = jnp.stack([-sp, cp * sr, cp * cr], -1)
    return jnp.stack([row0, row1, row2], -2)


def _rot2(yaw):
    c, s = jnp.cos(yaw), jnp.sin(yaw)
    return jnp.stack([jnp.stack([c, -s], -1), jnp.stack([s, c], -1)], -2)


def door_handle(door):
    """tcp position at the door handle ``[3]``."""
    return jnp.stack([DOOR_HANDLE_X0 - door, jnp.full_like(door, DOOR_HANDLE_Y), jnp.full_like(door, DOOR_HANDLE_Z)])


def drawer_handle(drawer):
    """tcp position at the drawer handle ``[3]``."""
    x, y, z = DRAWER_HANDLE
    return jnp.stack([jnp.full_like(drawer, x), y - drawer, jnp.full_like(drawer, z)])


def switch_lever(switch):
    """tcp position at the switch lever ``[3]``."""
    x, y, z = SWITCH_LEVER
    return jnp.stack([jnp.full_like(switch, x), jnp.full_like(switch, y), z + SWITCH_GAIN * switch])


PARTS = ("button", "switch", "drawer", "door")


def part_location(part: str, value=0.0):
    """``[3]``: where the tcp acts on ``part`` (one of ``PARTS``) with the part's state at ``value``
    (scene_obs units; ignored for the button): the top of the button's cap, the switch lever, the
    drawer or door handle. The built-in world's counterpart of the original's ``loc_target`` (the
    position-guidance target in its experiment JSONs: CALVIN's handles, within 3.5 cm of these on each axis)."""
    value = jnp.asarray(value, jnp.float32)
    if part == "button":
        return jnp.asarray([*BUTTON_XY, BUTTON_TOP], jnp.float32)
    if part == "switch":
        return switch_lever(value)
    if part == "drawer":
        return drawer_handle(value)
    if part == "door":
        return door_handle(value)
    raise ValueError(f"part must be one of {PARTS}, got {part!r}")


def _in_zone(p, centre, half):
    return jnp.all(jnp.abs(p - centre) < jnp.asarray(half, jnp.float32))


def _block_arrays():
    half = jnp.asarray(BLOCK_HALF, jnp.float32)
    grip = 2 * jnp.minimum(half[:, 0], half[:, 1])  # finger opening that holds each block
    return half, grip


def _moving_aabbs(state):
    """lo, hi ``[len(_MOVING), 3]`` of the boxes that move with the door, drawer, switch and button."""
    parts = jnp.stack([state.door, state.drawer, state.switch, state.button])
    lo = jnp.asarray(_MOVING_LO) + jnp.einsum("k,nkj->nj", parts, jnp.asarray(_SHIFT_LO))
    hi = jnp.asarray(_MOVING_HI) + jnp.einsum("k,nkj->nj", parts, jnp.asarray(_SHIFT_HI))
    return lo, hi


_SOLID_MOVING = np.asarray([_MOVING_NAMES.index("door"), _MOVING_NAMES.index("cap")])
_SOLID_AXES = np.ones((len(_STATIC_LO) + 2, 3), bool)
_SOLID_AXES[-1, 2] = False  # the button cap is pushed, not blocking, from above


def _solids(state):
    """Axis-aligned solids for tcp motion: lo, hi ``[N, 3]`` (expanded by the margin) and which
    axes of motion each one blocks ``[N, 3]``: the static solids, the door panel, the button cap."""
    lo, hi = _moving_aabbs(state)
    lo = jnp.concatenate([jnp.asarray(_STATIC_LO), lo[_SOLID_MOVING]]) - TCP_MARGIN
    hi = jnp.concatenate([jnp.asarray(_STATIC_HI), hi[_SOLID_MOVING]]) + TCP_MARGIN
    return lo, hi, jnp.asarray(_SOLID_AXES)


def _move_axis(p, target, axis: int, lo, hi, active):
    """Move ``p`` along ``axis`` towards ``target``, stopping at the first face of a solid entered."""
    other_axes = np.arange(3) != axis  # static masks, not gathers: cheaper to compile under vmap
    overlap = jnp.all(((p > lo) & (p < hi)) | ~other_axes, axis=-1) & active[:, axis]
    x = p[axis]
    ahead_up = overlap & (x <= lo[:, axis])
    ahead_down = overlap & (x >= hi[:, axis])
    up_limit = jnp.min(jnp.where(ahead_up, lo[:, axis], jnp.inf))
    down_limit = jnp.max(jnp.where(ahead_down, hi[:, axis], -jnp.inf))
    new = jnp.where(target > x, jnp.minimum(target, up_limit), jnp.maximum(target, down_limit))
    return p.at[axis].set(new)


# --- dynamics ------------------------------------------------------------------------------------
def _step_single(s: TabletopState, action, config: TabletopConfig) -> TabletopState:
    action = jnp.where(jnp.isfinite(action), action, 0.0)
    a = jnp.clip(action.astype(jnp.float32), -1.0, 1.0)
    d_pos = a[:3] * config.max_rel_pos
    d_orn = a[3:6] * config.max_rel_orn
    grip_cmd = jnp.where(a[6] < 0, -1.0, 1.0).astype(jnp.float32)
    half, grip_width = _block_arrays()
    holding = s.held >= 0

    # orientation: the gripper keeps pointing down within ORN_LIMIT
    e = s.tcp_euler + d_orn
    roll = wrap_angle(jnp.pi + jnp.clip(wrap_angle(e[0] - jnp.pi), -ORN_LIMIT, ORN_LIMIT))
    pitch = jnp.clip(e[1], -ORN_LIMIT, ORN_LIMIT)
    euler = jnp.stack([roll, pitch, wrap_angle(e[2])])

    # translation, axis by axis against the solids
    target = jnp.clip(s.tcp_pos + d_pos, jnp.asarray(WORKSPACE_LO), jnp.asarray(WORKSPACE_HI))
    held_floor = TABLE_Z - s.grasp_offset[2] + TCP_MARGIN
    target = target.at[2].set(jnp.where(holding, jnp.maximum(target[2], held_floor), target[2]))
    lo, hi, active = _solids(s)
    p = s.tcp_pos
    for axis in range(3):
        p = _move_axis(p, target[axis], axis, lo, hi, active)
    # blocks are solid from above for a (nearly) closed gripper
    yaw = s.block_euler[:, 2]
    local_moved = jnp.einsum("bji,bj->bi", _rot2(yaw), (p[:2] - s.block_pos[:, :2]))
    over = jnp.all(jnp.abs(local_moved) < half[:, :2] + TCP_MARGIN, axis=-1)
    top = s.block_pos[:, 2] + 2 * half[:, 2]
    closed = s.gripper_width < grip_width + 0.005
    not_held = jnp.arange(3) != s.held
    solid_top = over & closed & not_held & (s.tcp_pos[2] >= top)
    p = p.at[2].set(jnp.maximum(p[2], jnp.max(jnp.where(solid_top, top + TCP_MARGIN, -jnp.inf))))
    d = p - s.tcp_pos

    # articulated parts, engaged by the tcp position at the start of the step
    at_door = _in_zone(s.tcp_pos, door_handle(s.door), DOOR_ZONE)
    door = jnp.clip(s.door - jnp.where(at_door, d[0], 0.0), *DOOR_RANGE)
    at_drawer = _in_zone(s.tcp_pos, drawer_handle(s.drawer), DRAWER_ZONE)
    pull_ok = (d[1] > 0) | (grip_cmd < 0)  # pushing in always, pulling out only with the handle gripped
    drawer = jnp.clip(s.drawer - jnp.where(at_drawer & pull_ok, d[1], 0.0), *DRAWER_RANGE)
    at_switch = _in_zone(s.tcp_pos, switch_lever(s.switch), SWITCH_ZONE)
    switch = jnp.clip(s.switch + jnp.where(at_switch, d[2] / SWITCH_GAIN, 0.0), *SWITCH_RANGE)
    lightbulb = (switch > LIGHTBULB_ON).astype(jnp.float32)
    on_cap = jnp.all(jnp.abs(p[:2] - jnp.asarray(BUTTON_XY)) < BUTTON_CAP_HALF)
    button = jnp.where(on_cap, jnp.clip(BUTTON_TOP - p[2], 0.0, BUTTON_TRAVEL), 0.0)
    pressed = button > BUTTON_PRESS
    toggle = s.button_armed & pressed
    green = jnp.where(toggle, 1.0 - s.green_light, s.green_light)
    armed = jnp.where(pressed, False, s.button_armed | (button < BUTTON_RELEASE))

    # blocks: push / drag (not held), grasp, carry, release
    local_start = jnp.einsum("bji,bj->bi", _rot2(yaw), (s.tcp_pos[:2] - s.block_pos[:, :2]))
    local_new = local_moved  # the tcp's xy has not changed since
    bottom = s.block_pos[:, 2]
    at_height_old = (s.tcp_pos[2] < top) & (s.tcp_pos[2] > bottom - 0.02)
    at_height_new = (p[2] < top) & (p[2] > bottom - 0.02)
    straddled = jnp.all(jnp.abs(local_start) < half[:, :2], axis=-1) & at_height_old
    reach = half[:, :2] + FINGER
    pen = reach - jnp.abs(local_new)
    touching = jnp.all(pen > 0, axis=-1) & at_height_new & at_height_old  # entered sideways, not from above
    ax = jnp.argmin(pen, axis=-1)
    shift_local = -jnp.sign(local_new) * pen * jax.nn.one_hot(ax, 2)
    push = jnp.einsum("bij,bj->bi", _rot2(yaw), shift_local)
    move_xy = jnp.where(straddled[:, None], d[None, :2], jnp.where(touching[:, None], push, 0.0))
    move_xy = jnp.where(not_held[:, None], move_xy, 0.0)
    block_pos = s.block_pos.at[:, :2].add(move_xy)

    graspable = (~holding & (grip_cmd < 0) & (s.gripper_width >= grip_width + 0.002)
                 & jnp.all(jnp.abs(local_new) <= half[:, :2], axis=-1)
                 & (p[2] >= bottom) & (p[2] <= top + 0.005))
    grasped = graspable.any()
    new_idx = jnp.argmax(graspable).astype(jnp.int32)
    tcp_yaw_rot = _rot3z(euler[2])
    pick = jax.nn.one_hot(new_idx, 3, dtype=jnp.float32)
    offset_new = tcp_yaw_rot.T @ (pick @ block_pos - p)
    grasp_offset = jnp.where(grasped, offset_new, s.grasp_offset)
    grasp_yaw = jnp.where(grasped, pick @ s.block_euler[:, 2] - euler[2], s.grasp_yaw)
    held = jnp.where(grasped, new_idx, s.held)
    release = (held >= 0) & (grip_cmd > 0)
    carried = (held >= 0) & ~release & (jnp.arange(3) == held)
    carry_pos = p + tcp_yaw_rot @ grasp_offset
    block_pos = jnp.where(carried[:, None], carry_pos[None], block_pos)
    block_euler = s.block_euler.at[:, 2].set(jnp.where(carried, wrap_angle(euler[2] + grasp_yaw), yaw))
    dropped = release & (jnp.arange(3) == held)
    block_pos = block_pos.at[:, 2].set(jnp.where(dropped, TABLE_Z, block_pos[:, 2]))
    block_euler = jnp.where(dropped[:, None], block_euler * jnp.asarray([0.0, 0.0, 1.0]), block_euler)
    confined = jnp.clip(block_pos[:, :2], jnp.asarray(BLOCK_AREA_LO), jnp.asarray(BLOCK_AREA_HI))
    block_pos = block_pos.at[:, :2].set(jnp.where(carried[:, None], block_pos[:, :2], confined))
    held = jnp.where(release, -1, held).astype(jnp.int32)

    held_grip = jax.nn.one_hot(held, 3, dtype=jnp.float32) @ grip_width  # 0 when nothing is held
    width_target = jnp.where(grip_cmd > 0, GRIPPER_OPEN, held_grip)
    width = s.gripper_width + jnp.clip(width_target - s.gripper_width, -config.gripper_speed, config.gripper_speed)

    return TabletopState(tcp_pos=p, tcp_euler=euler, gripper_width=width, gripper_action=grip_cmd, door=door,
                         drawer=drawer, button=button, switch=switch, lightbulb=lightbulb, green_light=green,
                         button_armed=armed, block_pos=block_pos, block_euler=block_euler, held=held,
                         grasp_offset=grasp_offset, grasp_yaw=grasp_yaw, t=s.t + 1)


def _rot3z(yaw):
    c, s = jnp.cos(yaw), jnp.sin(yaw)
    z, o = jnp.zeros_like(c), jnp.ones_like(c)
    return jnp.stack([jnp.stack([c, -s, z]), jnp.stack([s, c, z]), jnp.stack([z, z, o])])


def _vmap_n(fn, n: int):
    for _ in range(n):
        fn = jax.vmap(fn)
    return fn


def _batch_ndim(state: TabletopState) -> int:
    return np.ndim(state.tcp_pos) - 1


def _step_batched(state, action, config):
    return _vmap_n(lambda s, a: _step_single(s, a, config), action.ndim - 1)(state, action)


_step_jit = jax.jit(_step_batched, static_argnames=("config",))


def step(state: TabletopState, action, config: TabletopConfig = TabletopConfig()) -> TabletopState:
    """One control step: ``action`` ``[..., 7]`` (CALVIN relative action; leading axes = the state's
    batch axes). Raises ``ValueError`` for a wrong shape and ``FloatingPointError`` for NaN/inf
    values in eager calls; traced non-finite entries are zeroed."""
    if np.ndim(action) < 1 or np.shape(action)[-1] != ACTION_DIM:
        raise ValueError(f"action must be [..., {ACTION_DIM}] (CALVIN relative xyz, euler, gripper), "
                         f"got shape {np.shape(action)}")
    batch = np.shape(action)[:-1]
    if tuple(np.shape(state.tcp_pos)[:-1]) != tuple(batch):
        raise ValueError(f"action batch shape {batch} does not match the state's {np.shape(state.tcp_pos)[:-1]}")
    if is_concrete(action):
        check_finite("action", action)
    return _step_jit(state, jnp.asarray(action, jnp.float32), config)


# --- observations --------------------------------------------------------------------------------
def arm_joints(tcp_pos, tcp_euler):
    """The 7 arm joints reported in ``robot_obs``: an affine fit of the tcp pose (see module doc)."""
    feats = jnp.concatenate([tcp_pos, wrap_angle(tcp_euler[:1] - jnp.pi), tcp_euler[1:], jnp.ones((1,))])
    return jnp.clip(feats @ jnp.asarray(JOINTS_FROM_POSE), jnp.asarray(JOINT_LOWER), jnp.asarray(JOINT_UPPER))


def robot_obs(state: TabletopState) -> jax.Array:
    """CALVIN ``robot_obs`` ``[15]`` float32 of one state."""
    return jnp.concatenate([state.tcp_pos, wrap_angle(state.tcp_euler), state.gripper_width[None],
                            arm_joints(state.tcp_pos, state.tcp_euler), state.gripper_action[None]]).astype(jnp.float32)


def scene_obs(state: TabletopState) -> jax.Array:
    """CALVIN ``scene_obs`` ``[24]`` float32 of one state."""
    parts = jnp.stack([state.door, state.drawer, state.button, state.switch, state.lightbulb, state.green_light])
    blocks = jnp.concatenate([state.block_pos, wrap_angle(state.block_euler)], axis=-1).reshape(-1)
    return jnp.concatenate([parts, blocks]).astype(jnp.float32)


def scene_boxes(state: TabletopState) -> rd.Boxes:
    """Everything visible, as boxes for ``render.render`` (one state)."""
    f32 = jnp.float32
    lit = jnp.stack([state.green_light > 0.5, state.lightbulb > 0.5])
    color = jnp.asarray(_STATIC_COLOR)
    color = color.at[np.asarray([_LAMP, _BULB])].set(
        jnp.where(lit[:, None], jnp.asarray([COLORS["lamp_on"], COLORS["bulb_on"]]), color[np.asarray([_LAMP, _BULB])]))
    emissive = jnp.zeros(len(_STATIC_COLOR), f32).at[np.asarray([_LAMP, _BULB])].set(lit.astype(f32))
    lo, hi = _moving_aabbs(state)
    n_aa = len(_STATIC_COLOR) + len(_MOVING)
    aa_center = jnp.concatenate([jnp.asarray((_STATIC_LO + _STATIC_HI) / 2), (lo + hi) / 2])
    aa_half = jnp.concatenate([jnp.asarray((_STATIC_HI - _STATIC_LO) / 2), (hi - lo) / 2])

    block_half = jnp.asarray(BLOCK_HALF, f32)
    block_rot = euler_to_matrix(state.block_euler)
    block_center = state.block_pos + block_rot[:, :, 2] * block_half[:, 2:]

    r = euler_to_matrix(state.tcp_euler)
    offsets = jnp.asarray([g[0] for g in _GRIPPER], f32)
    offsets = offsets.at[:, 1].multiply(state.gripper_width / 2 + 0.006)
    grip_center = state.tcp_pos + offsets @ r.T
    grip_half = jnp.asarray([g[1] for g in _GRIPPER], f32)

    center = jnp.concatenate([aa_center, block_center, grip_center])
    half = jnp.concatenate([aa_half, block_half, grip_half])
    rot = jnp.concatenate([jnp.broadcast_to(jnp.eye(3, dtype=f32), (n_aa, 3, 3)), block_rot,
                           jnp.broadcast_to(r, (len(_GRIPPER), 3, 3))])
    colors = jnp.concatenate([color, jnp.asarray(_MOVING_COLOR), jnp.asarray([COLORS[n] for n in BLOCK_NAMES], f32),
                              jnp.asarray([COLORS[g[2]] for g in _GRIPPER], f32)])
    emissive = jnp.concatenate([emissive, jnp.zeros(len(_MOVING) + 3 + len(_GRIPPER), f32)])
    return rd.Boxes(center, half, rot, colors, emissive)


def static_camera() -> rd.Camera:
    return rd.look_at(STATIC_CAMERA["eye"], STATIC_CAMERA["target"], STATIC_CAMERA["up"], STATIC_CAMERA["fov"])


def gripper_camera(tcp_pos, tcp_euler) -> rd.Camera:
    """A camera on the hand, behind and above the fingertips, looking past them (tool frame)."""
    r = euler_to_matrix(tcp_euler)
    eye = tcp_pos + r @ jnp.asarray(GRIPPER_CAMERA_OFFSET, jnp.float32)
    view = r @ jnp.asarray(GRIPPER_CAMERA_VIEW, jnp.float32)
    return rd.look_at(eye, eye + view, r @ jnp.asarray([1.0, 0.0, 0.0]), GRIPPER_CAMERA_FOV)


def _observe_single(state: TabletopState, config: TabletopConfig, images: bool):
    out = {"robot_obs": robot_obs(state), "scene_obs": scene_obs(state)}
    if images:
        views = ((static_camera(), config.static_size),
                 (gripper_camera(state.tcp_pos, state.tcp_euler), config.gripper_size))
        out["rgb_static"], out["rgb_gripper"] = rd.render_views(scene_boxes(state), views)
    return out


def _observe_batched(state, config, images):
    return _vmap_n(lambda s: _observe_single(s, config, images), _batch_ndim(state))(state)


_observe_jit = jax.jit(_observe_batched, static_argnames=("config", "images"))


def observe(state: TabletopState, config: TabletopConfig = TabletopConfig(), images: bool = True) -> dict:
    """``{"rgb_static": [S, S, 3] uint8, "rgb_gripper": [G, G, 3] uint8, "robot_obs": [15] float32,
    "scene_obs": [24] float32}`` (with the state's leading batch axes); ``images=False`` skips the
    rendering (the two arrays only)."""
    return _observe_jit(state, config, images)


# --- reset ---------------------------------------------------------------------------------------
_N_CANDIDATES = 32  # random block layouts drawn at once; the first without overlap is used


def _sample_blocks(r):
    """Non-overlapping random block poses on CALVIN's table surface from uniform numbers ``r``
    [_N_CANDIDATES * 6 + 6]: ``pos [3, 3], euler [3, 3]``."""
    lo, hi = jnp.asarray(TABLE_SURFACE[0]), jnp.asarray(TABLE_SURFACE[1])
    xy = lo + (hi - lo) * r[:_N_CANDIDATES * 6].reshape(_N_CANDIDATES, 3, 2)
    radius = jnp.linalg.norm(jnp.asarray(BLOCK_HALF)[:, :2], axis=-1)
    dist = jnp.linalg.norm(xy[:, :, None] - xy[:, None, :], axis=-1)
    need = radius[:, None] + radius[None, :] + 0.005
    ok = jnp.all((dist >= need) | jnp.eye(3, dtype=bool), axis=(1, 2))
    rest = r[_N_CANDIDATES * 6:]
    fallback = jnp.stack([jnp.asarray([0.05, 0.175, 0.30])[jnp.argsort(rest[3:])], jnp.full((3,), -0.09)], -1)
    xy = jnp.where(ok.any(), xy[jnp.argmax(ok)], fallback)
    yaw = -jnp.pi + 2 * jnp.pi * rest[:3]  # CALVIN: initial_orn "any"
    pos = jnp.concatenate([xy, jnp.full((3, 1), TABLE_Z)], -1)
    euler = jnp.stack([jnp.zeros(3), jnp.zeros(3), yaw], -1)
    return pos.astype(jnp.float32), euler.astype(jnp.float32)


def _check_obs(name, x, dim):
    if x is None:
        return None
    if np.shape(x) != (dim,):
        raise ValueError(f"{name} must be a CALVIN {name} vector [{dim}], got shape {np.shape(x)}")
    if is_concrete(x):
        check_finite(name, x)
    return jnp.asarray(x, jnp.float32)


def reset(key, config: TabletopConfig = TabletopConfig(), robot_obs=None, scene_obs=None) -> TabletopState:
    """A start state: random (a function of ``key`` only) where ``robot_obs`` [15] / ``scene_obs``
    [24] (CALVIN layouts) are not given. Given values are clipped into this world's ranges; the
    lightbulb follows the switch (as after CALVIN's first step), the green light is rounded to
    0/1, the arm joints and a block's roll/pitch are not used (blocks rest flat).

    Random: tcp uniform in x [-0.25, 0.30], y [-0.30, -0.05], z [0.53, 0.65], pointing down
    (roll pi and pitch 0, each +-0.05 rad) with yaw 1.1..1.9 rad and the gripper open; door and
    drawer uniform in their ranges, switch and green light each at an end (probability 1/2),
    button up; blocks on CALVIN's table surface (x 0..0.35, y -0.15..-0.03) without overlap, yaw
    uniform. ``config`` is unused today (kept for presets that change the scene). jit/vmap over
    ``key`` (and the obs) as usual.
    """
    del config
    return _reset_jit(key, _check_obs("robot_obs", robot_obs, ROBOT_OBS_DIM),
                      _check_obs("scene_obs", scene_obs, SCENE_OBS_DIM))


@jax.jit
def _reset_jit(key, robot, scene) -> TabletopState:
    # one draw for everything (each jax.random call site costs compile time, a lot under vmap)
    r = jax.random.uniform(key, (11 + _N_CANDIDATES * 6 + 6,))
    if robot is None:
        lo, hi = jnp.asarray([-0.25, -0.30, 0.53]), jnp.asarray([0.30, -0.05, 0.65])
        tcp = lo + (hi - lo) * r[:3]
        euler = jnp.stack([jnp.pi + 0.1 * (r[3] - 0.5), 0.1 * (r[4] - 0.5), 1.1 + 0.8 * r[5]])
        width, grip = jnp.float32(GRIPPER_OPEN), jnp.float32(1.0)
    else:
        tcp, euler, width, grip = robot[:3], robot[3:6], robot[6], jnp.where(robot[14] < 0, -1.0, 1.0)
    tcp = jnp.clip(tcp, jnp.asarray(WORKSPACE_LO), jnp.asarray(WORKSPACE_HI))
    euler = jnp.stack([wrap_angle(jnp.pi + jnp.clip(wrap_angle(euler[0] - jnp.pi), -ORN_LIMIT, ORN_LIMIT)),
                       jnp.clip(euler[1], -ORN_LIMIT, ORN_LIMIT), wrap_angle(euler[2])])
    if scene is None:
        u = r[6:10]
        door, drawer = u[0] * DOOR_RANGE[1], u[1] * DRAWER_RANGE[1]
        switch = jnp.where(u[2] < 0.5, SWITCH_RANGE[0], SWITCH_RANGE[1])
        green = jnp.where(u[3] < 0.5, 0.0, 1.0)
        button = jnp.float32(0.0)
        block_pos, block_euler = _sample_blocks(r[11:])
    else:
        door, drawer = jnp.clip(scene[0], *DOOR_RANGE), jnp.clip(scene[1], *DRAWER_RANGE)
        button, switch = jnp.clip(scene[2], 0.0, BUTTON_TRAVEL), jnp.clip(scene[3], *SWITCH_RANGE)
        green = jnp.where(scene[5] > 0.5, 1.0, 0.0)
        blocks = scene[6:].reshape(3, 6)
        block_pos = blocks[:, :3].at[:, :2].set(jnp.clip(blocks[:, :2], jnp.asarray(BLOCK_AREA_LO),
                                                         jnp.asarray(BLOCK_AREA_HI)))
        block_euler = blocks[:, 3:] * jnp.asarray([0.0, 0.0, 1.0])
    f32 = jnp.float32
    return TabletopState(
        tcp_pos=tcp.astype(f32), tcp_euler=euler.astype(f32),
        gripper_width=jnp.clip(jnp.asarray(width, f32), 0.0, GRIPPER_OPEN), gripper_action=jnp.asarray(grip, f32),
        door=jnp.asarray(door, f32), drawer=jnp.asarray(drawer, f32), button=jnp.asarray(button, f32),
        switch=jnp.asarray(switch, f32), lightbulb=(switch > LIGHTBULB_ON).astype(f32),
        green_light=jnp.asarray(green, f32), button_armed=jnp.asarray(button < BUTTON_RELEASE),
        block_pos=block_pos.astype(f32), block_euler=block_euler.astype(f32), held=jnp.int32(-1),
        grasp_offset=jnp.zeros((3,), f32), grasp_yaw=f32(0.0), t=jnp.int32(0))
