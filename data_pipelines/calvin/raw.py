"""Reading the raw CALVIN layout with errors that name the offending file.

A split folder (``training/``, ``validation/``) holds ``episode_XXXXXXX.npz`` frames,
``ep_start_end_ids.npy`` (``[E, 2]`` inclusive frame ranges of contiguous play) and optionally
``lang_annotations/auto_lang_ann.npy`` (a pickled dict: ``language.ann`` and ``info.indx``).
"""
from __future__ import annotations

import os
import zipfile

import numpy as np

FRAME_KEYS = {"actions": (7,), "rel_actions": (7,), "robot_obs": (15,), "scene_obs": (24,)}
IMAGE_KEYS = ("rgb_static", "rgb_gripper")


class CalvinFormatError(ValueError):
    """A raw CALVIN file is missing, unreadable or has unexpected content."""


def frame_path(split_dir: str, index: int) -> str:
    return os.path.join(split_dir, f"episode_{index:07d}.npz")


def read_frame(split_dir: str, index: int, keys=(*FRAME_KEYS, *IMAGE_KEYS)) -> dict[str, np.ndarray]:
    """The ``keys`` of one frame (all by default; only those are decompressed), checked."""
    return scan_frame(split_dir, index, keys, layout=False)[0]


def scan_frame(split_dir: str, index: int, keys=(), layout: bool = True):
    """``(arrays, specs)`` of one frame: the ``keys`` read and checked, and (``layout``) the shape
    and dtype of every key the builder writes (``FRAME_KEYS`` and ``IMAGE_KEYS``), read from the
    ``.npy`` headers without decompressing the arrays, and checked in the same way."""
    path = frame_path(split_dir, index)
    if not os.path.isfile(path):
        raise CalvinFormatError(f"{path}: frame {index} is missing")
    wanted = tuple(dict.fromkeys((*keys, *FRAME_KEYS, *IMAGE_KEYS) if layout else keys))
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in wanted if k not in z.files]
            if missing:
                raise CalvinFormatError(f"{path}: missing keys {missing}")
            frame = {k: z[k] for k in keys}
            specs = {k: (tuple(frame[k].shape), frame[k].dtype) if k in frame else _npy_spec(z, k)
                     for k in wanted if layout}
    except CalvinFormatError:
        raise
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
        raise CalvinFormatError(f"{path}: unreadable or corrupt ({e})") from e
    for k, (shape, dtype) in (specs if layout else {k: (v.shape, v.dtype) for k, v in frame.items()}).items():
        _check_array(path, k, tuple(shape), np.dtype(dtype))
    return frame, specs


def _npy_spec(z, key: str) -> tuple[tuple, np.dtype]:
    """Shape and dtype of ``key`` in an open ``.npz`` from its ``.npy`` header alone."""
    fmt = np.lib.format
    with z.zip.open(f"{key}.npy") as f:
        version = fmt.read_magic(f)
        shape, _, dtype = (fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0)(f)
    return tuple(shape), np.dtype(dtype)


def _check_array(path: str, key: str, shape: tuple, dtype: np.dtype) -> None:
    if key in FRAME_KEYS:
        if shape != FRAME_KEYS[key]:
            raise CalvinFormatError(f"{path}: {key} has shape {shape}, expected {FRAME_KEYS[key]}")
        if dtype.kind not in "fiu":
            raise CalvinFormatError(f"{path}: {key} has dtype {dtype}, expected a real number type")
    elif key in IMAGE_KEYS and (len(shape) != 3 or shape[-1] != 3 or dtype != np.uint8):
        raise CalvinFormatError(f"{path}: {key} must be uint8 [H, W, 3], got {dtype} {shape}")


def check_same_layout(path: str, specs: dict, ref_path: str, ref_specs: dict) -> None:
    """Every frame of a dataset stores each key with one shape and dtype (those of its first frame):
    raise naming the file, the key, the expected and the found shape and dtype."""
    for k, (shape, dtype) in specs.items():
        want = ref_specs.get(k)
        if want is not None and (shape, dtype) != want:
            raise CalvinFormatError(f"{path}: {k} has shape {shape} {dtype}, expected {want[0]} {want[1]} as in "
                                    f"{ref_path} (every frame must store a key with the same shape and dtype)")


def episode_ranges(split_dir: str) -> np.ndarray:
    path = os.path.join(split_dir, "ep_start_end_ids.npy")
    if not os.path.isfile(path):
        raise CalvinFormatError(f"{path} is missing: cannot find the episodes of this split")
    try:
        ranges = np.asarray(np.load(path, allow_pickle=False), np.int64)
    except (OSError, ValueError) as e:
        raise CalvinFormatError(f"{path}: unreadable ({e})") from e
    if ranges.ndim != 2 or ranges.shape[1] != 2 or len(ranges) == 0:
        raise CalvinFormatError(f"{path}: expected a non-empty [E, 2] array, got shape {ranges.shape}")
    bad = np.flatnonzero(ranges[:, 1] < ranges[:, 0])
    if len(bad):
        raise CalvinFormatError(f"{path}: episode {int(bad[0])} is empty (end {ranges[bad[0], 1]} < start "
                                f"{ranges[bad[0], 0]})")
    ranges = ranges[np.argsort(ranges[:, 0])]
    overlap = np.flatnonzero(ranges[1:, 0] <= ranges[:-1, 1])
    if len(overlap):
        a, b = ranges[overlap[0]], ranges[overlap[0] + 1]
        raise CalvinFormatError(f"{path}: frame ranges {a.tolist()} and {b.tolist()} overlap")
    return ranges


def language_by_frame(split_dir: str) -> dict[int, str]:
    """Frame index -> instruction, from ``auto_lang_ann.npy`` (first annotation covering a frame)."""
    path = os.path.join(split_dir, "lang_annotations", "auto_lang_ann.npy")
    if not os.path.isfile(path):
        return {}
    try:  # a pickled dict of lists and numpy arrays, as CALVIN ships it
        ann = np.load(path, allow_pickle=True).item()
        texts, spans = ann["language"]["ann"], ann["info"]["indx"]
    except Exception as e:
        raise CalvinFormatError(f"{path}: not a CALVIN language annotation file ({e})") from e
    if len(texts) != len(spans):
        raise CalvinFormatError(f"{path}: {len(texts)} instructions for {len(spans)} frame ranges")
    out: dict[int, str] = {}
    for text, (a, b) in zip(texts, spans):
        for i in range(int(a), int(b) + 1):
            out.setdefault(i, str(text))
    return out
