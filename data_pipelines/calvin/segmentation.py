"""Behaviour segmentation of CALVIN play data, as the original's ``calvin_to_labeled_hdf5.py`` does.

A state machine over consecutive ``scene_obs`` frames: an interaction starts when any part moves
(scaled position change or block rotation change > 0.001) and ends when everything is still again;
interactions shorter than 10 moving frames or segments shorter than 16 frames are stitched to the
next one, except that a change of the green light always ends a segment; touching a block within
5 cm of the end effector ends one at once. Each segment is labelled by comparing the scene at its
start and end (thresholds below). Quirk kept for fidelity: a block counts as displaced when any
coordinate *increased* by more than 1 cm (the original takes the norm of a boolean array).

Like the original, the machine runs once over all sorted frames of a split: its state and the
partial segment carry across play-range boundaries, and the frames after the last cut form a
final, unlabelled segment (behaviour "").
"""
from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation

BEHAVIOURS = ("button_on", "button_off", "switch_on", "switch_off", "drawer_open", "drawer_close", "door_left",
              "door_right", "red_displace", "blue_displace", "pink_displace", "red_lift", "blue_lift", "pink_lift",
              "other")
# scene_obs layout: [0] sliding door, [1] drawer, [2] button, [3] switch, [4] lightbulb, [5] green light,
# [6:9] red xyz, [9:12] red euler, [12:15] blue xyz, [15:18] blue euler, [18:21] pink xyz, [21:24] pink euler
SCALAR_PARTS = {"sliding_door": (0, 10.0), "drawer": (1, 10.0), "button": (2, 10.0), "switch": (3, 10.0),
                "lightbulb": (4, 0.0), "green_light": (5, 0.0)}
BLOCKS = {"red": (6, 9), "blue": (12, 15), "pink": (18, 21)}  # xyz start, euler start
ACTIVE_EPSILON = RELEASE_EPSILON = 0.001
MIN_LENGTH, MIN_MOVES = 16, 10


def frame_deltas(scene: np.ndarray) -> tuple[np.ndarray, dict]:
    """Per-frame change vs. the previous frame: ``[N, 12]`` scaled part deltas and rotations, plus
    the unscaled block-position deltas used by the lift rule."""
    prev = np.concatenate([scene[:1], scene[:-1]])
    cols, block_delta = [], {}
    for idx, scale in SCALAR_PARTS.values():
        cols.append(scale * np.abs(scene[:, idx] - prev[:, idx]))
    for name, (p, e) in BLOCKS.items():
        d = np.linalg.norm(scene[:, p:p + 3] - prev[:, p:p + 3], axis=1)
        block_delta[name] = d
        cols.append(d)
    for name, (p, e) in BLOCKS.items():
        cur = Rotation.from_euler("XYZ", scene[:, e:e + 3]).as_matrix()
        last = Rotation.from_euler("XYZ", prev[:, e:e + 3]).as_matrix()
        rel = Rotation.from_matrix(cur @ np.linalg.inv(last)).as_euler("XYZ")
        cols.append(np.linalg.norm(rel, axis=1))
    return np.stack(cols, axis=1), block_delta


def classify(start: np.ndarray, end: np.ndarray, moving: bool, block_delta_now: dict) -> str:
    """Label one segment from the scene at its start and end (the original's rule order)."""
    green, switch, drawer, door = 5, 3, 1, 0
    if end[green] > 0.8 and start[green] < 0.2:
        return "button_on"
    if end[green] < 0.2 and start[green] > 0.8:
        return "button_off"
    if end[switch] < 0.01 and start[switch] > 0.07:
        return "switch_off"
    if end[switch] > 0.07 and start[switch] < 0.01:
        return "switch_on"
    if end[drawer] < 0.05 and start[drawer] > 0.10:
        return "drawer_close"
    if end[drawer] > 0.10 and start[drawer] < 0.05:
        return "drawer_open"
    if end[door] < 0.05 and start[door] > 0.25:
        return "door_right"
    if end[door] > 0.25 and start[door] < 0.05:
        return "door_left"
    for name in ("red", "blue", "pink"):
        p = BLOCKS[name][0]
        if np.any(end[p:p + 3] - start[p:p + 3] > 0.01):
            return f"{name}_displace"
    for name in ("red", "pink", "blue"):
        if moving and block_delta_now[name] > ACTIVE_EPSILON:
            return f"{name}_lift"
    return "other"


def segment_play(scene_obs: np.ndarray, robot_obs: np.ndarray) -> list[tuple[int, int, str]]:
    """Segments ``(first, last_inclusive, behaviour)`` covering all frames of a split in order (every
    sorted frame, across play ranges); the last is the unlabelled rest ("") unless a cut ends it."""
    scene = np.asarray(scene_obs, np.float64)
    if scene.ndim != 2 or scene.shape[1] != 24 or len(scene) == 0:
        raise ValueError(f"scene_obs must be [N, 24] with N > 0, got {scene.shape}")
    if np.shape(robot_obs)[:1] != scene.shape[:1] or np.ndim(robot_obs) != 2:
        raise ValueError(f"robot_obs must be [N={len(scene)}, >=3], got {np.shape(robot_obs)}")
    deltas, block_delta = frame_deltas(scene)
    active = (deltas > ACTIVE_EPSILON).any(axis=1)
    released = ~(deltas > RELEASE_EPSILON).any(axis=1)
    segments, waiting, moving, moves, first, length = [], True, False, 0, 0, 0
    start_state = scene[0]
    for i in range(len(scene)):
        to_segment = False
        if moving:
            moves += 1
        if waiting and active[i]:
            moving, waiting = True, False
            if any(block_delta[b][i] > ACTIVE_EPSILON for b in BLOCKS):
                eef = robot_obs[i, :3]
                if any(np.linalg.norm(eef - scene[i, BLOCKS[b][0]:BLOCKS[b][0] + 3]) < 0.05 for b in BLOCKS):
                    to_segment = True
        elif moving and released[i]:
            waiting, moving = True, False
            to_segment = moves >= MIN_MOVES and length >= MIN_LENGTH
            moves = 0
            if scene[i, 5] != start_state[5]:  # a change of the green light always ends a segment
                to_segment = True
        length += 1
        if to_segment:
            behaviour = classify(start_state, scene[i], moving, {b: block_delta[b][i] for b in BLOCKS})
            start_state = scene[i]
            segments.append((first, i, behaviour))
            first, length = i + 1, 0
    if first < len(scene):
        segments.append((first, len(scene) - 1, ""))
    return segments


def per_step_labels(num_frames: int, segments) -> tuple[np.ndarray, list[str]]:
    """Segment index (-1 outside any segment) and behaviour label ("" outside or unlabelled) per frame."""
    index = np.full(num_frames, -1, np.int32)
    labels = [""] * num_frames
    for s, (a, b, name) in enumerate(segments):
        index[a:b + 1] = s
        labels[a:b + 1] = [name] * (b + 1 - a)
    return index, labels
