"""Robot reset poses picked from play segments as the original picks them.

The original's ArticulatedParts, MovableObjects and MultiObjectives runs start the robot from a
pose drawn from a JSON list (``calvin_exp_configs_examples/reset_poses/``), written by
``data_processing_calvin/retrieve_initial_robot_states.py``: for every labelled segment of the
segmented validation play (behaviour "other" skipped), the robot state 8 frames into the segment,
kept when the gripper is open (width >= 0.075) and the tcp high enough (z >= 0.53); the
"right_side_midpoint" list also keeps only x in [0, 0.35]. The script in the repository writes that
list; the "midpoint" list it ships is the same selection without the x condition (its 716 poses
span x -0.30..0.30, the right-side list's 373 poses x 0..0.30, both z >= 0.53 and width >= 0.075).
A segment shorter than 9 frames is skipped (the original skips those under 8 and would fail on 8).
"""
from __future__ import annotations

import json
import os

import numpy as np

POSE_FRAME = 8  # frames into the segment (orig: ``demo_grp["obs"]["proprio"][8]``)
MIN_GRIPPER_WIDTH = 0.075  # robot_obs[6]: the gripper open
MIN_TCP_Z = 0.53  # robot_obs[2]: above the parts
RIGHT_SIDE_X = (0.0, 0.35)  # robot_obs[0] of the right-side list
POSE_SETS = ("midpoint", "right_side_midpoint")
UNLABELLED = ("", "other")  # the builder's trailing segment and the segmentation's "other"


def _check_pose_set(name: str) -> None:
    if name not in POSE_SETS:
        raise ValueError(f"unknown reset-pose list {name!r} (one of {POSE_SETS})")


def reset_pose_file(directory: str, name: str) -> str:
    """The original's file name for reset-pose list ``name`` in ``directory``."""
    _check_pose_set(name)
    return os.path.join(directory, f"initial_calvin_robot_states_{name}.json")


def select_reset_poses(robot_obs: np.ndarray, behaviours, name: str) -> np.ndarray:
    """``robot_obs [N, 15]``: each segment's robot state ``POSE_FRAME`` frames in; ``behaviours [N]``
    their labels. Returns the poses ``[M, 15]`` of list ``name`` in segment order."""
    robot_obs = np.asarray(robot_obs, np.float64)
    if robot_obs.ndim != 2 or robot_obs.shape[1] != 15:
        raise ValueError(f"robot_obs must be [N, 15], got {robot_obs.shape}")
    labels = [b.decode() if isinstance(b, bytes) else str(b) for b in behaviours]
    if len(labels) != len(robot_obs):
        raise ValueError(f"{len(labels)} behaviours for {len(robot_obs)} robot states")
    _check_pose_set(name)
    keep = np.array([b not in UNLABELLED for b in labels], bool)
    keep &= (robot_obs[:, 6] >= MIN_GRIPPER_WIDTH) & (robot_obs[:, 2] >= MIN_TCP_Z)
    if name == "right_side_midpoint":
        keep &= (robot_obs[:, 0] >= RIGHT_SIDE_X[0]) & (robot_obs[:, 0] <= RIGHT_SIDE_X[1])
    return robot_obs[keep]


def write_reset_poses(path: str, poses: np.ndarray) -> None:
    """The original's JSON layout, ``{"robot_states": [[15 floats], ...]}`` (written atomically)."""
    with open(path + ".tmp", "w") as f:
        json.dump({"robot_states": np.asarray(poses, np.float64).tolist()}, f)
    os.replace(path + ".tmp", path)
