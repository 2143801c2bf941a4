"""Reading UMI's ``dataset.zarr.zip`` replay buffer (zarr v2 layout in a zip store).

``data/`` holds per-frame arrays concatenated over episodes (``camera0_rgb`` one JPEG-XL frame per
chunk, codec ``imagecodecs_jpegxl``); ``meta/episode_ends`` holds cumulative episode ends.
"""
from __future__ import annotations

import os

import numpy as np

REQUIRED = {"camera0_rgb": 4, "robot0_eef_pos": 2, "robot0_eef_rot_axis_angle": 2, "robot0_gripper_width": 2,
            "robot0_demo_start_pose": 2, "robot0_demo_end_pose": 2}
WIDTHS = {"robot0_eef_pos": 3, "robot0_eef_rot_axis_angle": 3, "robot0_gripper_width": 1,
          "robot0_demo_start_pose": 6, "robot0_demo_end_pose": 6}


class UmiFormatError(ValueError):
    """The replay buffer is missing, unreadable or has unexpected content."""


def open_replay_buffer(path: str):
    """``(root group, episode_ends)`` after checking every array the builder reads."""
    if not os.path.isfile(path):
        raise UmiFormatError(f"{path} does not exist")
    try:
        import zarr
        from imagecodecs.numcodecs import register_codecs

        register_codecs()  # makes the imagecodecs_jpegxl compressor known to zarr
        root = zarr.open_group(store=zarr.storage.ZipStore(path, mode="r"), mode="r")
        data, meta = root["data"], root["meta"]
    except (KeyError, ValueError, OSError) as e:
        raise UmiFormatError(f"{path}: not a UMI replay buffer with data/ and meta/ groups ({e})") from e
    except Exception as e:  # zipfile.BadZipFile and zarr's own errors
        raise UmiFormatError(f"{path}: unreadable ({type(e).__name__}: {e})") from e
    keys = set(data.array_keys())
    missing = sorted(set(REQUIRED) - keys)
    if missing:
        raise UmiFormatError(f"{path}: data/ lacks {missing}")
    n = data["camera0_rgb"].shape[0]
    for k, ndim in REQUIRED.items():
        shape = data[k].shape
        if len(shape) != ndim or shape[0] != n or (k in WIDTHS and shape[1] != WIDTHS[k]):
            want = f"[{n}, {WIDTHS[k]}]" if k in WIDTHS else f"[{n}, H, W, 3]"
            raise UmiFormatError(f"{path}: data/{k} has shape {shape}, expected {want}")
    if data["camera0_rgb"].shape[-1] != 3:
        raise UmiFormatError(f"{path}: data/camera0_rgb must have 3 channels, got {data['camera0_rgb'].shape}")
    try:
        ends = np.asarray(meta["episode_ends"][:], np.int64)
    except KeyError:
        raise UmiFormatError(f"{path}: meta/episode_ends is missing") from None
    lengths = np.diff(np.r_[0, ends])
    if ends.ndim != 1 or len(ends) == 0 or ends[-1] != n:
        raise UmiFormatError(f"{path}: meta/episode_ends must end at the {n} frames of data/, got {ends[-3:]}")
    if (lengths <= 0).any():
        raise UmiFormatError(f"{path}: episode {int(np.argmax(lengths <= 0))} is empty "
                             "(meta/episode_ends not increasing)")
    return root, ends


def read_frames(root, path: str, start: int, stop: int, key: str):
    try:
        return np.asarray(root["data"][key][start:stop])
    except Exception as e:
        raise UmiFormatError(f"{path}: cannot decode data/{key}[{start}:{stop}] ({type(e).__name__}: {e})") from e
