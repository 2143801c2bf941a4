"""End-effector pose representations used by UMI-style policies.

Poses are ``[..., 6]`` (xyz + axis-angle) or 4x4 homogeneous matrices. ``relative`` expresses poses
in the frame of a base pose, ``inv(base) @ pose``; rotations are written in the 6-D form made of
the first two rows of the rotation matrix; a 10-D action is (xyz, rot6d, gripper width).
"""
from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation


def pose_to_mat(pose: np.ndarray) -> np.ndarray:
    pose = np.asarray(pose, np.float64)
    mat = np.zeros(pose.shape[:-1] + (4, 4))
    mat[..., :3, :3] = Rotation.from_rotvec(pose[..., 3:6].reshape(-1, 3)).as_matrix().reshape(pose.shape[:-1] + (3, 3))
    mat[..., :3, 3] = pose[..., :3]
    mat[..., 3, 3] = 1.0
    return mat


def mat_to_pose(mat: np.ndarray) -> np.ndarray:
    rotvec = Rotation.from_matrix(mat[..., :3, :3].reshape(-1, 3, 3)).as_rotvec().reshape(mat.shape[:-2] + (3,))
    return np.concatenate([mat[..., :3, 3], rotvec], axis=-1)


def rot6d(mat: np.ndarray) -> np.ndarray:
    """First two rows of the rotation block -> ``[..., 6]``."""
    return mat[..., :2, :3].reshape(mat.shape[:-2] + (6,))


def rot6d_to_matrix(d6: np.ndarray) -> np.ndarray:
    """Gram-Schmidt on the two rows, third row by cross product."""
    a1, a2 = d6[..., :3], d6[..., 3:6]
    b1 = a1 / np.linalg.norm(a1, axis=-1, keepdims=True)
    b2 = a2 - np.sum(b1 * a2, axis=-1, keepdims=True) * b1
    b2 = b2 / np.linalg.norm(b2, axis=-1, keepdims=True)
    return np.stack([b1, b2, np.cross(b1, b2)], axis=-2)


def relative(pose_mat: np.ndarray, base_mat: np.ndarray) -> np.ndarray:
    return np.linalg.inv(base_mat) @ pose_mat


def relative_actions(poses: np.ndarray, gripper: np.ndarray, base_pose: np.ndarray) -> np.ndarray:
    """Absolute chunk ``poses [T, 6]`` + ``gripper [T, 1]`` -> 10-D actions relative to ``base_pose``."""
    rel = relative(pose_to_mat(poses), pose_to_mat(base_pose))
    return np.concatenate([rel[..., :3, 3], rot6d(rel), np.asarray(gripper).reshape(len(poses), -1)], axis=-1)


def absolute_from_relative(actions10: np.ndarray, base_pose: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of ``relative_actions``: ``(poses [T, 6], gripper [T, 1])``."""
    mat = np.zeros(actions10.shape[:-1] + (4, 4))
    mat[..., :3, :3] = rot6d_to_matrix(actions10[..., 3:9])
    mat[..., :3, 3] = actions10[..., :3]
    mat[..., 3, 3] = 1.0
    return mat_to_pose(pose_to_mat(base_pose) @ mat), actions10[..., 9:]
