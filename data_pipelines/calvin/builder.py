"""TFDS builder: raw CALVIN splits -> RLDS episodes (one per contiguous play range).

Each step: ``observation {rgb_static, rgb_gripper, robot_obs, scene_obs}``, ``action`` (absolute),
``rel_action``, ``language_instruction`` ("" where none), ``behaviour`` / ``segment`` (the original's
segmentation, run once over all sorted frames of the split: ``segment`` is a split-wide index in
frame order, a segment may continue into the next play range, the trailing one is unlabelled "";
``episode_metadata/first_frame`` orders episodes), ``is_first`` / ``is_last`` / ``is_terminal``.
TFDS writes into an ``incomplete.*`` directory and renames it when every split is done, so an
interrupted or failed build never reads as a prepared dataset. Before a split yields anything, every
frame's arrays are checked (from the ``.npy`` headers) to have the shapes and dtypes of the dataset's
first frame, so a frame with, say, a differently sized ``rgb_static`` fails the build naming its file.

Build: ``dynaguide data build calvin RAW_DIR OUT_DIR`` (``RAW_DIR`` holds ``training/`` and/or
``validation/``).
"""
from __future__ import annotations

import os

import numpy as np
import tensorflow_datasets as tfds

from data_pipelines.progress import tfds_progress

from data_pipelines.calvin.raw import (CalvinFormatError, check_same_layout, episode_ranges, frame_path,
                                       language_by_frame, read_frame, scan_frame)
from data_pipelines.calvin.segmentation import per_step_labels, segment_play

SPLITS = {"training": "train", "validation": "validation"}


class CalvinRlds(tfds.core.GeneratorBasedBuilder):
    VERSION = tfds.core.Version("1.1.0")
    RELEASE_NOTES = {"1.0.0": "RLDS episodes with behaviour segmentation labels.",
                     "1.1.0": "Segmentation as in the original: one state machine over the whole split (segments "
                              "may span play ranges, split-wide segment ids); the frames after the last cut form "
                              "an unlabelled segment instead of segment -1."}

    def __init__(self, *, raw_dir: str | None = None, **kwargs):
        self.raw_dir = raw_dir
        self._layout = None  # (path, {key: (shape, dtype)}) of the first frame scanned, for every split
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        f = tfds.features
        step = f.FeaturesDict({
            "observation": f.FeaturesDict({
                "rgb_static": f.Image(shape=(None, None, 3)),
                "rgb_gripper": f.Image(shape=(None, None, 3)),
                "robot_obs": f.Tensor(shape=(15,), dtype=np.float32),
                "scene_obs": f.Tensor(shape=(24,), dtype=np.float32),
            }),
            "action": f.Tensor(shape=(7,), dtype=np.float32),
            "rel_action": f.Tensor(shape=(7,), dtype=np.float32),
            "language_instruction": f.Text(),
            "behaviour": f.Text(),
            "segment": f.Scalar(dtype=np.int32),
            "is_first": f.Scalar(dtype=np.bool_),
            "is_last": f.Scalar(dtype=np.bool_),
            "is_terminal": f.Scalar(dtype=np.bool_),
        })
        # written and read in generation order (chronological): segments continue across episodes
        features = f.FeaturesDict({
            "steps": f.Dataset(step),
            "episode_metadata": f.FeaturesDict({"first_frame": f.Scalar(dtype=np.int64),
                                                "last_frame": f.Scalar(dtype=np.int64)}),
        })
        return tfds.core.DatasetInfo(builder=self, description=__doc__, features=features, disable_shuffling=True)

    def _split_generators(self, dl_manager):
        if not self.raw_dir or not os.path.isdir(self.raw_dir):
            raise CalvinFormatError(f"raw CALVIN directory {self.raw_dir!r} does not exist")
        found = {name: os.path.join(self.raw_dir, folder) for folder, name in SPLITS.items()
                 if os.path.isdir(os.path.join(self.raw_dir, folder))}
        if not found:
            raise CalvinFormatError(f"{self.raw_dir} has neither training/ nor validation/")
        return {name: self._generate_examples(path) for name, path in found.items()}

    def _generate_examples(self, split_dir: str):
        language = language_by_frame(split_dir)
        ranges = episode_ranges(split_dir)
        seg_all, labels_all, self._layout = split_labels(split_dir, ranges, self._layout)
        offset = 0
        for first, last in ranges:
            frames = [read_frame(split_dir, i) for i in range(int(first), int(last) + 1)]
            n = len(frames)
            seg_index, labels = seg_all[offset:offset + n], labels_all[offset:offset + n]
            offset += n
            steps = [{
                "observation": {"rgb_static": fr["rgb_static"], "rgb_gripper": fr["rgb_gripper"],
                                "robot_obs": fr["robot_obs"].astype(np.float32),
                                "scene_obs": fr["scene_obs"].astype(np.float32)},
                "action": fr["actions"].astype(np.float32), "rel_action": fr["rel_actions"].astype(np.float32),
                "language_instruction": language.get(int(first) + j, ""), "behaviour": labels[j],
                "segment": int(seg_index[j]), "is_first": j == 0, "is_last": j == n - 1, "is_terminal": False,
            } for j, fr in enumerate(frames)]
            yield f"{int(first)}-{int(last)}", {"steps": steps, "episode_metadata": {"first_frame": int(first),
                                                                                   "last_frame": int(last)}}


def split_labels(split_dir: str, ranges, layout=None):
    """``(segment index, behaviour, layout)`` of every frame of the split's ``ranges`` (in order),
    from one segmentation pass over their sorted frames; decompresses only ``scene_obs`` /
    ``robot_obs``. The same pass checks that every frame stores each key with the shape and dtype of
    ``layout`` (``(path, specs)`` of a reference frame; default: the split's first frame), which it
    returns."""
    ids = [i for a, b in ranges for i in range(int(a), int(b) + 1)]
    scene, robot = [], []
    for i in ids:
        state, specs = scan_frame(split_dir, i, ("scene_obs", "robot_obs"))
        if layout is None:
            layout = (frame_path(split_dir, i), specs)
        else:
            check_same_layout(frame_path(split_dir, i), specs, *layout)
        scene.append(state["scene_obs"])
        robot.append(state["robot_obs"])
    seg, labels = per_step_labels(len(ids), segment_play(np.stack(scene), np.stack(robot)))
    return seg, labels, layout


def build_calvin(raw_dir: str, out_dir: str, progress: bool = True) -> str:
    """Build (or reuse a finished) RLDS dataset; returns its directory. ``progress``: TFDS's bars."""
    builder = CalvinRlds(raw_dir=os.path.abspath(raw_dir), data_dir=os.path.abspath(out_dir))
    with tfds_progress(progress):
        builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
            manual_dir=os.path.abspath(raw_dir)))
    return str(builder.data_path)
