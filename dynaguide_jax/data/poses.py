"""End-effector pose representations used by UMI-style policies.

Poses are ``[..., 6]`` (xyz + axis-angle) or 4x4 homogeneous matrices. ``relative`` expresses poses
in the frame of a base pose, ``inv(base) @ pose``; rotations are written in the 6-D form made of
the first two rows of the rotation matrix; a 10-D action is (xyz, rot6d, gripper width).
"""
from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation

from dynaguide_jax._checks import check_finite


def _array(name: str, x, tail: tuple[int, ...], layout: str) -> np.ndarray:
    """``x`` as float64 with trailing dims ``tail``; NaN / inf rejected (the name says which input)."""
    arr = np.asarray(x, np.float64)
    if arr.ndim < len(tail) or arr.shape[arr.ndim - len(tail):] != tail:
        raise ValueError(f"{name} must be {layout}, got shape {np.shape(x)}")
    check_finite(name, arr)
    return arr


def pose_to_mat(pose: np.ndarray, name: str = "pose") -> np.ndarray:
    """``[..., 6]`` xyz + axis-angle -> ``[..., 4, 4]``."""
    pose = _array(name, pose, (6,), "[..., 6] (xyz + axis-angle)")
    mat = np.zeros(pose.shape[:-1] + (4, 4))
    mat[..., :3, :3] = Rotation.from_rotvec(pose[..., 3:6].reshape(-1, 3)).as_matrix().reshape(pose.shape[:-1] + (3, 3))
    mat[..., :3, 3] = pose[..., :3]
    mat[..., 3, 3] = 1.0
    return mat


def mat_to_pose(mat: np.ndarray) -> np.ndarray:
    """``[..., 4, 4]`` -> ``[..., 6]`` xyz + axis-angle."""
    mat = _array("pose matrix", mat, (4, 4), "[..., 4, 4]")
    rotvec = Rotation.from_matrix(mat[..., :3, :3].reshape(-1, 3, 3)).as_rotvec().reshape(mat.shape[:-2] + (3,))
    return np.concatenate([mat[..., :3, 3], rotvec], axis=-1)


def rot6d(mat: np.ndarray) -> np.ndarray:
    """First two rows of the rotation block -> ``[..., 6]``."""
    mat = np.asarray(mat)  # dtype kept
    if mat.ndim < 2 or mat.shape[-2:] not in ((3, 3), (4, 4)):
        raise ValueError(f"rot6d matrix must be [..., 3, 3] or [..., 4, 4], got shape {mat.shape}")
    check_finite("rot6d matrix", mat)
    return mat[..., :2, :3].reshape(mat.shape[:-2] + (6,))


def rot6d_to_matrix(d6: np.ndarray) -> np.ndarray:
    """Gram-Schmidt on the two rows, third row by cross product. Rows that are zero or parallel
    (no rotation defined) raise ``ValueError`` instead of returning NaN."""
    d6 = _array("rot6d", d6, (6,), "[..., 6] (two rotation rows)")
    a1, a2 = d6[..., :3], d6[..., 3:6]
    n1 = np.linalg.norm(a1, axis=-1, keepdims=True)
    b1 = a1 / np.where(n1 > 0, n1, 1.0)
    b2 = a2 - np.sum(b1 * a2, axis=-1, keepdims=True) * b1
    n2 = np.linalg.norm(b2, axis=-1, keepdims=True)
    degenerate = (n1[..., 0] <= 1e-12) | (n2[..., 0] <= 1e-12 * np.maximum(1.0, np.linalg.norm(a2, axis=-1)))
    if degenerate.any():
        raise ValueError(f"rot6d has {int(degenerate.sum())} row pair(s) that are zero or parallel "
                         f"(first at index {tuple(int(i) for i in np.argwhere(degenerate)[0])}): no rotation")
    b2 = b2 / n2
    return np.stack([b1, b2, np.cross(b1, b2)], axis=-2)


def relative(pose_mat: np.ndarray, base_mat: np.ndarray) -> np.ndarray:
    """``inv(base) @ pose`` for ``[..., 4, 4]`` matrices."""
    pose_mat = _array("pose matrix", pose_mat, (4, 4), "[..., 4, 4]")
    base_mat = _array("base matrix", base_mat, (4, 4), "[..., 4, 4]")
    return np.linalg.inv(base_mat) @ pose_mat


def relative_actions(poses: np.ndarray, gripper: np.ndarray, base_pose: np.ndarray) -> np.ndarray:
    """Absolute chunk ``poses [T, 6]`` + ``gripper [T, 1]`` -> 10-D actions relative to ``base_pose``."""
    poses = _array("poses", poses, (6,), "[T, 6]")
    if poses.ndim != 2:
        raise ValueError(f"poses must be [T, 6], got shape {poses.shape}")
    base_pose = _array("base_pose", base_pose, (6,), "[6]")
    if base_pose.ndim != 1:
        raise ValueError(f"base_pose must be [6], got shape {base_pose.shape}")
    gripper = np.asarray(gripper, np.float64)
    if gripper.ndim < 1 or gripper.ndim > 2 or gripper.shape[0] != len(poses):
        raise ValueError(f"gripper must be [T={len(poses)}] or [T, 1] (T from the poses), got shape {gripper.shape}")
    check_finite("gripper", gripper)
    rel = relative(pose_to_mat(poses), pose_to_mat(base_pose, "base_pose"))
    return np.concatenate([rel[..., :3, 3], rot6d(rel), gripper.reshape(len(poses), -1)], axis=-1)


def absolute_from_relative(actions10: np.ndarray, base_pose: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of ``relative_actions``: ``(poses [T, 6], gripper [T, 1])``."""
    actions10 = np.asarray(actions10, np.float64)
    if actions10.ndim < 1 or actions10.shape[-1] < 10:
        raise ValueError(f"actions10 must be [..., 10] (xyz, rot6d, gripper), got shape {actions10.shape}")
    check_finite("actions10", actions10)
    mat = np.zeros(actions10.shape[:-1] + (4, 4))
    mat[..., :3, :3] = rot6d_to_matrix(actions10[..., 3:9])
    mat[..., :3, 3] = actions10[..., :3]
    mat[..., 3, 3] = 1.0
    return mat_to_pose(pose_to_mat(base_pose) @ mat), actions10[..., 9:]
