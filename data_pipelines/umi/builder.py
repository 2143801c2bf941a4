"""TFDS builder: UMI ``dataset.zarr.zip`` -> RLDS episodes.

Each step: ``observation {camera0_rgb, eef_pos, eef_rot_axis_angle, gripper_width,
eef_rot_wrt_start}`` (the rotation relative to the episode's start pose, in 6-D form, as UMI's
policy observes it), ``action_absolute`` (7: xyz, axis-angle, gripper: the pose at this step),
``action`` (10: the next pose in the frame of this one, xyz + rot6d, and the next gripper width;
whole chunks relative to the current pose come from ``dynaguide_jax.data.poses.relative_actions``),
``language_instruction`` (""), ``is_first`` / ``is_last`` / ``is_terminal``; episodes come back in the
buffer's order (``episode_metadata/episode``).
Build: ``dynaguide data build umi dataset.zarr.zip OUT_DIR``.
"""
from __future__ import annotations

import os

import numpy as np
import tensorflow_datasets as tfds

from data_pipelines.progress import tfds_progress
from data_pipelines.umi.raw import UmiFormatError, open_replay_buffer, read_frames
from dynaguide_jax.data.poses import pose_to_mat, relative, relative_actions, rot6d

LOW_DIM = ("robot0_eef_pos", "robot0_eef_rot_axis_angle", "robot0_gripper_width", "robot0_demo_start_pose")


class UmiRlds(tfds.core.GeneratorBasedBuilder):
    VERSION = tfds.core.Version("1.1.0")
    RELEASE_NOTES = {"1.0.0": "UMI replay buffer as RLDS with relative 10-d actions.",
                     "1.1.0": "Episodes written and read in the replay buffer's order (no shuffling)."}

    def __init__(self, *, zarr_path: str | None = None, **kwargs):
        self.zarr_path = zarr_path
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        f = tfds.features
        vec = lambda n: f.Tensor(shape=(n,), dtype=np.float32)  # noqa: E731
        step = f.FeaturesDict({
            "observation": f.FeaturesDict({"camera0_rgb": f.Image(shape=(None, None, 3)), "eef_pos": vec(3),
                                           "eef_rot_axis_angle": vec(3), "gripper_width": vec(1),
                                           "eef_rot_wrt_start": vec(6)}),
            "action_absolute": vec(7), "action": vec(10), "language_instruction": f.Text(),
            "is_first": f.Scalar(dtype=np.bool_), "is_last": f.Scalar(dtype=np.bool_),
            "is_terminal": f.Scalar(dtype=np.bool_),
        })
        # written and read in generation order: the replay buffer's (chronological) episode order
        features = f.FeaturesDict({"steps": f.Dataset(step),
                                   "episode_metadata": f.FeaturesDict({"episode": f.Scalar(dtype=np.int64)})})
        return tfds.core.DatasetInfo(builder=self, description=__doc__, features=features, disable_shuffling=True)

    def _split_generators(self, dl_manager):
        open_replay_buffer(self.zarr_path)  # fail before TFDS starts writing
        return {"train": self._generate_examples()}

    def _generate_examples(self):
        root, ends = open_replay_buffer(self.zarr_path)
        starts = np.r_[0, ends[:-1]]
        for e, (a, b) in enumerate(zip(starts, ends)):
            low = {k: read_frames(root, self.zarr_path, a, b, k).astype(np.float64) for k in LOW_DIM}
            images = read_frames(root, self.zarr_path, a, b, "camera0_rgb")
            poses = np.concatenate([low["robot0_eef_pos"], low["robot0_eef_rot_axis_angle"]], axis=1)
            mats = pose_to_mat(poses)
            wrt_start = rot6d(relative(mats, pose_to_mat(low["robot0_demo_start_pose"][0])))
            nxt = np.r_[np.arange(1, len(poses)), len(poses) - 1]
            grip = low["robot0_gripper_width"]
            steps = []
            for t in range(len(poses)):
                act = relative_actions(poses[nxt[t]][None], grip[nxt[t]][None], poses[t])[0]
                steps.append({
                    "observation": {"camera0_rgb": images[t], "eef_pos": poses[t, :3].astype(np.float32),
                                    "eef_rot_axis_angle": poses[t, 3:].astype(np.float32),
                                    "gripper_width": grip[t].astype(np.float32),
                                    "eef_rot_wrt_start": wrt_start[t].astype(np.float32)},
                    "action_absolute": np.r_[poses[t], grip[t]].astype(np.float32), "action": act.astype(np.float32),
                    "language_instruction": "", "is_first": t == 0, "is_last": t == len(poses) - 1,
                    "is_terminal": False,
                })
            yield f"episode_{e}", {"steps": steps, "episode_metadata": {"episode": e}}


def build_umi(zarr_path: str, out_dir: str, progress: bool = True) -> str:
    """Build (or reuse a finished) RLDS dataset; returns its directory. ``progress``: TFDS's bars."""
    if not os.path.isfile(zarr_path):
        raise UmiFormatError(f"{zarr_path} does not exist")
    builder = UmiRlds(zarr_path=os.path.abspath(zarr_path), data_dir=os.path.abspath(out_dir))
    with tfds_progress(progress):
        builder.download_and_prepare()
    return str(builder.data_path)
