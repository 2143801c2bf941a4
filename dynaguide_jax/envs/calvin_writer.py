"""Write tabletop play (``play.py``) in the RAW CALVIN layout, so that the CALVIN reader, builder,
segmentation, goal-set export, feature cache and trainers run on it unchanged.

``<root>/training/`` and ``<root>/validation/`` (the first ``num_streams - validation_streams``
play streams train, the rest validate) each hold:

- ``episode_XXXXXXX.npz``, one per frame (``np.savez_compressed``), frame id ``stream * steps + t``
  (ids continue from training into validation, as CALVIN's splits use disjoint ids): ``actions``
  float64 (7,) (absolute target: tcp xyz, euler, gripper +-1), ``rel_actions`` float64 (7,) (in
  [-1, 1]), ``robot_obs`` float64 (15,), ``scene_obs`` float64 (24,), ``rgb_static`` uint8 [S, S, 3],
  ``rgb_gripper`` uint8 [G, G, 3]. With ``extra_keys=True`` also CALVIN's other sensors, as ZEROS of
  CALVIN's shapes and dtypes (the built-in world renders neither depth nor touch): ``depth_static``
  float32 [S, S], ``depth_gripper`` float32 [G, G], ``rgb_tactile`` uint8 (160, 120, 6),
  ``depth_tactile`` float32 (160, 120, 2); only for tools that load every key.
- ``ep_start_end_ids.npy``: int64 ``[E, 2]`` inclusive frame ranges of contiguous play. Each stream
  is split into ranges of about ``range_steps`` frames, cut at idle frames so no intended behaviour
  straddles a range (the segmentation runs across ranges anyway, as in CALVIN).
- ``lang_annotations/auto_lang_ann.npy``: the pickled dict CALVIN ships, ``{"language": {"ann": [str],
  "task": [str], "emb": float32 [N, 1, 384]}, "info": {"episodes": [], "indx": [(first, last)]}}``, one
  entry per intended behaviour that happened (``play.interactions``), spanning its frames, with
  CALVIN's task name and an instruction in CALVIN's style (``CALVIN_TASKS``; a push is named by its
  direction: +x right, -x left, +y "back", the last not a CALVIN task). ``emb`` is a stand-in (a
  fixed random unit vector per task, no sentence encoder here).
- ``scene_info.npy`` (``{"calvin_scene_D": [first, last]}``) and ``statistics.yaml`` (CALVIN's layout:
  mean / std of ``robot_obs`` and ``scene_obs``, ``act_min_bound`` / ``act_max_bound`` of ``actions``).

``<root>/play_config.json`` records the seed, the play config and per-split counts. Everything is
written into a hidden temporary folder beside ``root`` and renamed to ``root`` only when complete, so
an interrupted or failed write never looks finished (the temporary folder is removed on errors).
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import os
import shutil
import time
import uuid
import zlib

import numpy as np

from dynaguide_jax.envs import play as pl
from dynaguide_jax.envs import tabletop as tt

SPLITS = ("training", "validation")
TACTILE = (160, 120)
LANG_EMB_DIM = 384  # CALVIN's MiniLM sentence embeddings
CALVIN_TASKS = {
    "button_on": ("turn_on_led", "press the button to turn on the led light"),
    "button_off": ("turn_off_led", "press the button to turn off the led light"),
    "switch_on": ("turn_on_lightbulb", "use the switch to turn on the light bulb"),
    "switch_off": ("turn_off_lightbulb", "use the switch to turn off the light bulb"),
    "drawer_open": ("open_drawer", "pull the handle to open the drawer"),
    "drawer_close": ("close_drawer", "push the handle to close the drawer"),
    "door_left": ("move_slider_left", "push the sliding door to the left side"),
    "door_right": ("move_slider_right", "push the sliding door to the right side"),
    **{f"{c}_lift": (f"lift_{c}_block_table", f"lift the {c} block from the table") for c in ("red", "blue", "pink")},
}
PUSH_DIRECTIONS = {"right": "to the right", "left": "to the left", "back": "towards the back"}


def push_task(colour: str, start: np.ndarray, end: np.ndarray) -> tuple[str, str]:
    """CALVIN task name and instruction of a push from ``scene_obs`` ``start`` to ``end``."""
    p = 6 + 6 * ("red", "blue", "pink").index(colour)
    d = end[p:p + 2] - start[p:p + 2]
    way = ("right" if d[0] > 0 else "left") if abs(d[0]) >= abs(d[1]) else "back"
    return f"push_{colour}_block_{way}", f"push the {colour} block {PUSH_DIRECTIONS[way]}"


def task_embedding(task: str) -> np.ndarray:
    """A fixed unit vector ``[384]`` float32 per task name (stand-in for CALVIN's sentence embedding)."""
    v = np.random.default_rng(zlib.crc32(task.encode())).standard_normal(LANG_EMB_DIM)
    return (v / np.linalg.norm(v)).astype(np.float32)


def play_ranges(label: np.ndarray, range_steps: int) -> list[tuple[int, int]]:
    """Inclusive step ranges ``[(first, last)]`` covering one stream's ``label [T]``: a new range starts
    at the first idle frame at or after each multiple of ``range_steps`` (never inside a behaviour)."""
    n = len(label)
    starts, k = [0], range_steps
    idle = np.flatnonzero(np.asarray(label) == pl.IDLE)
    while k < n:
        after = idle[idle >= max(k, starts[-1] + 1)]
        if not len(after):
            break
        starts.append(int(after[0]))
        k = starts[-1] + range_steps
    return [(a, b - 1) for a, b in zip(starts, starts[1:] + [n])]


class CalvinPlayWriter:
    """Streams ``PlayChunk`` s (in order, as ``generate_play`` yields them) into the raw CALVIN layout
    at ``root`` (see the module doc); ``finish()`` completes it. Use as a context manager: an error
    inside removes the temporary folder and leaves ``root`` untouched.

    ``workers`` threads compress and write the frames of one chunk while the next is generated (at
    most two chunks in memory)."""

    def __init__(self, root: str, seed: int, config: pl.PlayConfig, validation_streams: int = 1,
                 range_steps: int = 500, extra_keys: bool = False, overwrite: bool = False, workers: int = 2):
        if not config.images:
            raise ValueError("PlayConfig.images is False: raw CALVIN frames need rgb_static and rgb_gripper")
        if not (isinstance(validation_streams, int) and 0 <= validation_streams < config.num_streams):
            raise ValueError(f"validation_streams must be an int in [0, num_streams={config.num_streams}), "
                             f"got {validation_streams!r}")
        if not (isinstance(range_steps, int) and range_steps >= 1):
            raise ValueError(f"range_steps must be a positive int, got {range_steps!r}")
        self.root = os.path.abspath(root)
        if os.path.exists(self.root) and not overwrite:
            raise FileExistsError(f"{self.root} already exists; pass overwrite=True to replace it")
        parent = os.path.dirname(self.root)
        os.makedirs(parent, exist_ok=True)
        self.tmp = os.path.join(parent, f".{os.path.basename(self.root)}.incomplete-{uuid.uuid4().hex[:8]}")
        self.seed, self.config, self.extra_keys, self.overwrite = seed, config, extra_keys, overwrite
        self.range_steps, self.n_val = range_steps, validation_streams
        s = config.num_streams
        self.split_of = ["training"] * (s - validation_streams) + ["validation"] * validation_streams
        for split in set(self.split_of):
            os.makedirs(os.path.join(self.tmp, split, "lang_annotations"))
        self.label = np.full((s, config.steps), pl.IDLE - 1, np.int32)  # IDLE - 1: not written yet
        self.scene = np.zeros((s, config.steps, 24), np.float32)
        self.robot = np.zeros((s, config.steps, 15), np.float32)
        self.action = np.zeros((s, config.steps, 7), np.float32)
        self.pool = concurrent.futures.ThreadPoolExecutor(max(1, workers))
        self.pending: list[concurrent.futures.Future] = []
        self.write_seconds = 0.0
        self.done = False

    def frame_id(self, stream: int, step: int) -> int:
        return stream * self.config.steps + step

    def _wait(self):
        for f in self.pending:
            f.result()  # re-raises a worker's error here
        self.pending = []

    def write(self, chunk: pl.PlayChunk) -> None:
        """Queue the frames of ``chunk`` for writing (waits for the previous chunk's first)."""
        t0 = time.perf_counter()
        self._wait()
        n_s, n_t = chunk.label.shape
        if n_s != self.config.num_streams or chunk.start + n_t > self.config.steps or chunk.rgb_static is None:
            raise ValueError(f"chunk of shape {chunk.label.shape} at step {chunk.start} (images: "
                             f"{chunk.rgb_static is not None}) does not fit a play of {self.config.num_streams} "
                             f"streams x {self.config.steps} steps with images")
        sl = slice(chunk.start, chunk.start + n_t)
        self.label[:, sl], self.scene[:, sl], self.robot[:, sl] = chunk.label, chunk.scene_obs, chunk.robot_obs
        self.action[:, sl] = chunk.actions
        for s in range(n_s):
            d = os.path.join(self.tmp, self.split_of[s])
            for t in range(n_t):
                frame = {"actions": chunk.actions[s, t].astype(np.float64),
                         "rel_actions": chunk.rel_actions[s, t].astype(np.float64),
                         "robot_obs": chunk.robot_obs[s, t].astype(np.float64),
                         "scene_obs": chunk.scene_obs[s, t].astype(np.float64),
                         "rgb_static": chunk.rgb_static[s, t], "rgb_gripper": chunk.rgb_gripper[s, t]}
                if self.extra_keys:
                    frame.update(self._extra(chunk.rgb_static.shape[2], chunk.rgb_gripper.shape[2]))
                path = os.path.join(d, f"episode_{self.frame_id(s, chunk.start + t):07d}.npz")
                self.pending.append(self.pool.submit(np.savez_compressed, path, **frame))
        self.write_seconds += time.perf_counter() - t0

    @staticmethod
    def _extra(static: int, gripper: int) -> dict:
        return {"depth_static": np.zeros((static, static), np.float32),
                "depth_gripper": np.zeros((gripper, gripper), np.float32),
                "rgb_tactile": np.zeros((*TACTILE, 6), np.uint8), "depth_tactile": np.zeros((*TACTILE, 2), np.float32)}

    def finish(self) -> dict:
        """Write the index files, rename the temporary folder to ``root``; returns the summary."""
        t0 = time.perf_counter()
        self._wait()
        missing = np.argwhere(self.label < pl.IDLE)
        if len(missing):
            s, t = missing[0]
            raise RuntimeError(f"play incomplete: {len(missing)} frames were never written (first: stream {s}, "
                               f"step {t}); nothing was moved to {self.root}")
        summary = {"seed": int(self.seed), "config": _config_dict(self.config),
                   "validation_streams": self.n_val, "range_steps": self.range_steps, "splits": {}}
        for split in SPLITS:
            streams = [s for s, name in enumerate(self.split_of) if name == split]
            if streams:
                summary["splits"][split] = self._write_index(split, streams)
        with open(os.path.join(self.tmp, "play_config.json"), "w") as f:
            json.dump(summary, f, indent=2)
        if os.path.exists(self.root):  # overwrite (checked in __init__): swap, then delete the old copy
            old = self.tmp.replace(".incomplete-", ".old-")
            os.rename(self.root, old)
            os.rename(self.tmp, self.root)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(self.tmp, self.root)
        self.done = True
        self.pool.shutdown()
        self.write_seconds += time.perf_counter() - t0
        summary["write_seconds"] = self.write_seconds
        return summary

    def _write_index(self, split: str, streams: list[int]) -> dict:
        d = os.path.join(self.tmp, split)
        ranges, texts, tasks, spans = [], [], [], []
        counts: dict[str, int] = {}
        for s in streams:
            ranges += [(self.frame_id(s, a), self.frame_id(s, b))
                       for a, b in play_ranges(self.label[s], self.range_steps)]
            for it in pl.interactions(self.label[s:s + 1], self.scene[s:s + 1]):
                counts[it.behaviour] = counts.get(it.behaviour, 0) + 1
                if not it.happened:
                    continue
                colour, what = it.behaviour.split("_")
                if what == "push":
                    after = min(it.last + 1, self.config.steps - 1)
                    task, text = push_task(colour, self.scene[s, it.first], self.scene[s, after])
                else:
                    task, text = CALVIN_TASKS[it.behaviour]
                texts.append(text)
                tasks.append(task)
                spans.append((self.frame_id(s, it.first), self.frame_id(s, it.last)))
        np.save(os.path.join(d, "ep_start_end_ids.npy"), np.asarray(ranges, np.int64))
        emb = np.stack([task_embedding(t) for t in tasks])[:, None] if tasks else np.zeros((0, 1, LANG_EMB_DIM),
                                                                                           np.float32)
        ann = {"language": {"ann": texts, "task": tasks, "emb": emb}, "info": {"episodes": [], "indx": spans}}
        np.save(os.path.join(d, "lang_annotations", "auto_lang_ann.npy"), ann, allow_pickle=True)
        first, last = ranges[0][0], ranges[-1][1]
        np.save(os.path.join(d, "scene_info.npy"), {"calvin_scene_D": [first, last]}, allow_pickle=True)
        robot = self.robot[streams].reshape(-1, 15).astype(np.float64)
        scene = self.scene[streams].reshape(-1, 24).astype(np.float64)
        action = self.action[streams].reshape(-1, 7).astype(np.float64)
        _write_statistics(os.path.join(d, "statistics.yaml"), robot, scene, action)
        frames = len(streams) * self.config.steps
        behaviour_frames = {pl.BEHAVIOURS[b]: int(np.sum(self.label[streams] == b)) for b in range(len(pl.BEHAVIOURS))}
        return {"frames": frames, "first": first, "last": last, "ranges": len(ranges), "annotations": len(texts),
                "interactions": counts, "behaviour_frames": behaviour_frames,
                "idle_frames": int(np.sum(self.label[streams] == pl.IDLE))}

    def abort(self) -> None:
        """Stop and remove the temporary folder (``root`` is left as it was)."""
        for f in self.pending:
            f.cancel()
        self.pool.shutdown(wait=True)
        self.pending = []
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> CalvinPlayWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if not self.done:
            self.abort()


def _config_dict(config: pl.PlayConfig) -> dict:
    out = dataclasses.asdict(config)
    out["weights"] = dict(zip(pl.BEHAVIOURS, config.weight_array.tolist()))
    return out


def _write_statistics(path: str, robot: np.ndarray, scene: np.ndarray, actions: np.ndarray) -> None:
    """CALVIN's ``statistics.yaml`` layout (NormalizeVector transforms and the action bounds)."""
    import yaml

    def normalize(x):
        return [{"_target_": "calvin_agent.utils.transforms.NormalizeVector",
                 "mean": [float(v) for v in x.mean(0)], "std": [float(v) for v in x.std(0)]}]
    stats = {"robot_obs": normalize(robot), "scene_obs": normalize(scene),
             "act_min_bound": [float(v) for v in actions.min(0)], "act_max_bound": [float(v) for v in actions.max(0)]}
    with open(path, "w") as f:
        yaml.safe_dump(stats, f, default_flow_style=None, sort_keys=False)


def write_play_calvin(root: str, seed: int, config: pl.PlayConfig = pl.PlayConfig(), validation_streams: int = 1,
                      range_steps: int = 500, extra_keys: bool = False, overwrite: bool = False, workers: int = 2,
                      progress: bool = False) -> dict:
    """Generate ``config``'s play with ``seed`` and write it to ``root`` in the raw CALVIN layout
    (atomically). Returns the summary also saved as ``root/play_config.json``, plus
    ``generate_seconds`` (play and rendering) and ``write_seconds`` (compressing and writing, the part
    not hidden behind generation)."""
    t0 = time.perf_counter()
    with CalvinPlayWriter(root, seed, config, validation_streams, range_steps, extra_keys, overwrite,
                          workers) as writer:
        for chunk in pl.generate_play(seed, config, progress=progress):
            writer.write(chunk)
        summary = writer.finish()
    summary["generate_seconds"] = time.perf_counter() - t0 - summary["write_seconds"]
    return summary


def tabletop_for_image_size(image_size: int) -> tt.TabletopConfig:
    """The built-in world with an ``image_size`` static camera; the gripper camera is CALVIN's 84 beside
    a 200 static camera, else half the static size."""
    gripper = 84 if image_size == 200 else image_size // 2
    return tt.TabletopConfig(static_size=image_size, gripper_size=gripper)


def play_weights(block_weight: float) -> tuple[float, ...]:
    """``PlayConfig.weights``: 1 for each articulated behaviour, ``block_weight`` for each block one."""
    if not (block_weight >= 0 and np.isfinite(block_weight)):
        raise ValueError(f"block_weight must be a finite number >= 0, got {block_weight!r}")
    return tuple(1.0 if b in pl.ARTICULATED else float(block_weight) for b in pl.BEHAVIOURS)


def write_world_play(root: str, seed: int, streams: int, steps: int, validation_streams: int = 1,
                     image_size: int = 64, overwrite: bool = False, progress: bool = False,
                     block_weight: float = 1.0, perturb_rate: float = 0.0) -> dict:
    """``streams`` play streams of ``steps`` frames in the built-in world (``tabletop_for_image_size``)
    written to ``root`` as raw CALVIN files (``write_play_calvin``; the last ``validation_streams``
    streams validate): the first stage of ``dynaguide demo`` and ``dynaguide data play``.
    ``block_weight``: how often the block behaviours (lift, push) are chosen relative to the
    articulated ones (1: all alike; < 1 gives the articulated parts more demonstrations per frame).
    ``perturb_rate``: the play's recoveries (``PlayConfig.perturb_rate``; 0: none)."""
    weights = None if block_weight == 1.0 else play_weights(block_weight)
    play = pl.PlayConfig(env=tabletop_for_image_size(image_size), num_streams=streams, steps=steps,
                         chunk_steps=min(250, steps), weights=weights, perturb_rate=perturb_rate)
    return write_play_calvin(root, seed, play, validation_streams=validation_streams, overwrite=overwrite,
                             progress=progress)
