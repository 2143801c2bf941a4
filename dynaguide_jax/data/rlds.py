"""Reading RLDS datasets (built by ``data_pipelines``) into training inputs.

``read_episodes`` gathers the chosen per-step fields of a split into an ``EpisodeData`` (low-dim
fields for any size; images only for data that fits in memory); ``read_policy_segments`` and
``dynamics_windows`` shape them for the policy and dynamics trainers. ``FrameStream`` presents one
image field as a sequential, sliceable array, so the feature cache encodes a split of any size
without holding its images. ``export_guidance_conditions`` writes per-behaviour goal sets,
``export_reset_poses`` the original's robot reset-pose lists.
"""
from __future__ import annotations

import json
import os
from collections import defaultdict

import numpy as np

from dynaguide_jax.data.episodes import EpisodeData, split_at_segments


def _builder(directory: str):
    import tensorflow_datasets as tfds

    try:
        return tfds.builder_from_directory(directory)
    except Exception as e:
        raise FileNotFoundError(f"{directory} is not a prepared RLDS dataset (build it first): {e}") from e


def _dataset(directory: str, split: str, fields=None):
    """``(builder, episodes)``; with ``fields``, images not among them are never decoded."""
    builder = _builder(directory)
    if split not in builder.info.splits:
        raise KeyError(f"{directory} has no split {split!r} (splits: {list(builder.info.splits)})")
    decoders = None
    if fields is not None:
        skip = _skip_images(builder.info.features["steps"].feature, set(fields))
        decoders = {"steps": skip} if skip else None
    return builder, builder.as_dataset(split=split, shuffle_files=False, decoders=decoders)


def _skip_images(features, fields: set, prefix: str = "") -> dict:
    """TFDS decoders leaving every image feature outside ``fields`` encoded: reading low-dim fields
    of a camera dataset then costs no image decoding (most of the time of a full read)."""
    import tensorflow_datasets as tfds

    out = {}
    for name, feat in features.items():
        path = prefix + name
        if isinstance(feat, tfds.features.FeaturesDict):
            sub = _skip_images(feat, fields, path + "/")
            if sub:
                out[name] = sub
        elif isinstance(feat, tfds.features.Image) and path not in fields:
            out[name] = tfds.decode.SkipDecoding()
    return out


def _field(step: dict, path: str):
    for part in path.split("/"):
        step = step[part]
    return step


def iterate_episodes(directory: str, split: str = "train", fields=("action",)):
    """Yields ``{field: [T, ...]}`` per episode, fields as slash paths (``observation/robot_obs``).

    Only the requested fields are decoded; steps are converted in batches, not one by one."""
    _, ds = _dataset(directory, split, fields)
    for ep in ds:
        parts = list(ep["steps"].batch(4096).as_numpy_iterator())  # batch preallocates: not the whole episode
        if parts:  # an empty episode has no batch
            yield {f: np.concatenate([_field(p, f) for p in parts]) for f in fields}


def read_episodes(directory: str, split: str = "train", obs_fields=("observation/robot_obs",),
                  action_field: str = "rel_action", rename: dict | None = None) -> EpisodeData:
    """Concatenate episodes into an ``EpisodeData`` (obs keys are the last path part or ``rename``)."""
    rename = rename or {}
    obs, actions, ends, n = defaultdict(list), [], [], 0
    for ep in iterate_episodes(directory, split, (*obs_fields, action_field)):
        for f in obs_fields:
            obs[rename.get(f, f.split("/")[-1])].append(ep[f])
        actions.append(ep[action_field].astype(np.float32))
        n += len(ep[action_field])
        ends.append(n)
    if not ends:
        raise ValueError(f"{directory} split {split!r} has no non-empty episodes")
    try:
        return EpisodeData(obs={k: np.concatenate(v) for k, v in obs.items()}, actions=np.concatenate(actions),
                           episode_ends=np.asarray(ends))
    except (ValueError, FloatingPointError) as e:  # name the dataset: NaN actions, obs of the wrong length
        raise type(e)(f"{directory} split {split!r}: {e}") from None


def has_step_field(directory: str, path: str) -> bool:
    """Whether the dataset's steps carry ``path`` (e.g. ``behaviour``, ``observation/robot_obs``)."""
    feats = _builder(directory).info.features["steps"]
    for part in path.split("/"):
        if not hasattr(feats, "keys") or part not in feats.keys():
            return False
        feats = feats[part]
    return True


def read_policy_segments(directory: str, split: str, obs_fields, action_field: str = "rel_action",
                         rename: dict | None = None) -> EpisodeData:
    """A split's ``obs_fields`` (keys as in ``read_episodes``) and actions for policy training: one
    episode per behaviour segment where the steps carry a ``segment`` field (robomimic trains on one demo
    per CALVIN segment, not on play ranges), actions clipped to [-1, 1] as the original clips
    ``rel_actions`` for training."""
    segmented = has_step_field(directory, "segment")
    data = read_episodes(directory, split, (*obs_fields, *(("segment",) if segmented else ())), action_field,
                         rename=rename)
    if segmented:
        data = split_at_segments(data, data.obs.pop("segment"))
    data.actions = np.clip(data.actions, -1.0, 1.0)
    return data


def dynamics_windows(directory: str, split: str, features, horizon: int, proprio_fields=("observation/robot_obs",),
                     action_field: str = "rel_action", action_transform="none", labels: bool = False,
                     target: str = "segment_end"):
    """``DynamicsWindows`` over a split's cached features, proprio = the concatenated ``proprio_fields``.
    ``action_transform``: an ``ActionTransform`` or a mode name, fitted on this split's actions. With
    ``labels``, the per-step ``behaviour`` / ``segment`` fields come along in ``data.obs``. With
    ``target="segment_end"`` and a per-step ``segment`` field (CALVIN), the windows' episodes are the
    behaviour segments (they may span play ranges); without one (UMI), the dataset's episodes."""
    from dynaguide_jax.data.windows import TARGETS, ActionTransform, DynamicsWindows

    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
    segmented = has_step_field(directory, "segment")
    extra = ("behaviour", "segment") if labels else ("segment",) if segmented and target == "segment_end" else ()
    data = read_episodes(directory, split, (*proprio_fields, *extra), action_field)
    parts = [data.obs.pop(f.split("/")[-1]).reshape(data.num_frames, -1) for f in proprio_fields]
    data.obs["proprio"] = np.concatenate(parts, axis=1).astype(np.float32)
    if segmented and target == "segment_end":
        data = split_at_segments(data, data.obs["segment"] if labels else data.obs.pop("segment"))
    if isinstance(action_transform, str):
        action_transform = ActionTransform.fit(action_transform, data.actions)
    return DynamicsWindows(data, features, horizon, action_transform=action_transform, target=target)


class FrameStream:
    """One image field of a split as a read-once, in-order sliceable sequence of frames."""

    def __init__(self, directory: str, split: str, field: str):
        builder, _ = _dataset(directory, split)
        self._args = (directory, split, field)
        self._len = sum(1 for _ in self._frames())  # counting costs one pass; frames are not kept
        self._it, self._pos, self._buf = self._frames(), 0, []

    def _frames(self):
        for ep in iterate_episodes(self._args[0], self._args[1], (self._args[2],)):
            yield from ep[self._args[2]]

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, idx):
        if not isinstance(idx, slice) or (idx.step or 1) != 1:
            raise TypeError("FrameStream supports contiguous slices only")
        start, stop = idx.start or 0, min(idx.stop if idx.stop is not None else self._len, self._len)
        if start < self._pos:  # restart the pass (e.g. a resumed cache build starting mid-way)
            self._it, self._pos = self._frames(), 0
        while self._pos < start:
            next(self._it)
            self._pos += 1
        out = []
        while self._pos < stop:
            out.append(next(self._it))
            self._pos += 1
        return np.stack(out)


def _segment_frames(directory: str, split: str, fields, offset: int = -1) -> dict:
    """``{segment: {field: value}}`` at one frame of every segment of a split: its last (``offset`` -1) or
    its ``offset``-th from its first (segments with fewer frames left out), a segment that continues into
    the next episode included (episodes ordered by ``episode_metadata/first_frame``)."""
    builder, ds = _dataset(directory, split, fields)
    feats = builder.info.features
    ordered = "episode_metadata" in feats.keys() and "first_frame" in feats["episode_metadata"].keys()
    runs = defaultdict(list)  # segment -> [(episode order, first index, frames, {field: the frames kept})]
    for n, ep in enumerate(ds):
        order = int(ep["episode_metadata"]["first_frame"]) if ordered else n
        parts = list(ep["steps"].batch(4096).as_numpy_iterator())
        if not parts:
            continue
        steps = {f: np.concatenate([_field(p, f) for p in parts]) for f in fields}
        seg = steps["segment"]
        for s in np.unique(seg[seg >= 0]).tolist():
            idx = np.flatnonzero(seg == s)
            if runs[s] and not ordered:
                raise ValueError(f"{directory} ({split}): segment {s} spans episodes but the dataset has no "
                                 "episode_metadata/first_frame to order them")
            take = idx[-1:] if offset < 0 else idx[:offset + 1]
            runs[s].append((order, int(idx[0]), len(idx), {f: steps[f][take] for f in fields}))
    out = {}
    for s, rs in runs.items():
        rs.sort(key=lambda r: r[:2])
        if offset < 0:
            out[s] = {f: rs[-1][3][f][-1] for f in fields}
            continue
        k = offset
        for _, _, length, kept in rs:
            if k < length:
                out[s] = {f: kept[f][k] for f in fields}
                break
            k -= length
    return out


def export_reset_poses(directory: str, out_dir: str, split: str = "validation",
                       proprio_field: str = "observation/robot_obs") -> dict:
    """The original's robot reset-pose lists (``reset_poses.POSE_SETS``, its JSON files) from the robot
    state ``POSE_FRAME`` frames into each segment of ``split``; a list with no pose is not written.
    Returns ``{list name: poses}``."""
    from dynaguide_jax.data.reset_poses import (POSE_FRAME, POSE_SETS, reset_pose_file, select_reset_poses,
                                                write_reset_poses)

    frames = _segment_frames(directory, split, (proprio_field, "behaviour", "segment"), POSE_FRAME)
    segs = sorted(frames)
    robot = np.stack([frames[s][proprio_field] for s in segs]) if segs else np.zeros((0, 15))
    labels = [frames[s]["behaviour"] for s in segs]
    os.makedirs(out_dir, exist_ok=True)
    counts = {}
    for name in POSE_SETS:
        poses = select_reset_poses(robot, labels, name)
        if len(poses):
            write_reset_poses(reset_pose_file(out_dir, name), poses)
        counts[name] = int(len(poses))
    return counts


def export_guidance_conditions(directory: str, out_dir: str, split: str = "validation",
                               image_field="observation/rgb_static", proprio_field: str = "observation/robot_obs",
                               action_field: str = "rel_action", horizon: int = 16, seed: int = 0,
                               keep_fraction: float = 0.7, max_per_behaviour: int | None = 20,
                               extra_fields=()) -> dict:
    """Per-behaviour goal sets as the original makes them (``goal_sets.select_goal_segments``: unlabelled
    segments skipped, ``*_displace`` dropped, each kept with probability ``keep_fraction``, then per
    behaviour a seeded shuffle capped at ``max_per_behaviour``).

    ``goals_<behaviour>.npz`` holds, at each goal segment's last frame: ``images [K, H, W, 3]`` (the
    first of ``image_field``, one path or several; the others as ``images_<name>``), ``proprio``,
    ``last_action`` (raw) and ``actions [K, horizon, A]``: the last action clipped to [-1, 1] and
    repeated, the chunk the original predicts from at a goal trajectory's last step (pad_mode "repeat"),
    and each of ``extra_fields`` at that frame under its last path part (e.g. ``scene_obs``).
    Writes ``counts.json`` (available / kept / capped / written per behaviour) and returns it."""
    from dynaguide_jax.data.goal_sets import select_goal_segments

    cameras = (image_field,) if isinstance(image_field, str) else tuple(image_field)
    if not cameras:
        raise ValueError("image_field names no image field")
    select_goal_segments({}, seed, keep_fraction, max_per_behaviour)  # argument errors before reading
    extra_fields = (extra_fields,) if isinstance(extra_fields, str) else tuple(extra_fields)
    ends = _segment_frames(directory, split, (*cameras, proprio_field, action_field, *extra_fields, "behaviour",
                                            "segment"))
    labels = {s: e["behaviour"].decode() if isinstance(e["behaviour"], bytes) else str(e["behaviour"])
              for s, e in ends.items()}
    chosen, counts = select_goal_segments(labels, seed, keep_fraction, max_per_behaviour)
    os.makedirs(out_dir, exist_ok=True)
    for name, segs in chosen.items():
        if not segs:
            continue
        goals = [ends[s] for s in segs]
        out = {"images" if i == 0 else f"images_{c.split('/')[-1]}": np.stack([g[c] for g in goals])
               for i, c in enumerate(cameras)}
        last = np.stack([g[action_field] for g in goals]).astype(np.float32)
        out.update(proprio=np.stack([g[proprio_field] for g in goals]), last_action=last,
                   actions=np.repeat(np.clip(last, -1.0, 1.0)[:, None], horizon, axis=1),
                   segment=np.asarray(segs, np.int64),
                   **{f.split("/")[-1]: np.stack([g[f] for g in goals]) for f in extra_fields})
        np.savez_compressed(os.path.join(out_dir, f"goals_{name}.npz"), **out)
    counts = {"split": split, **counts}
    with open(os.path.join(out_dir, "counts.json"), "w") as f:
        json.dump(counts, f, indent=2)
    return counts


def _with_fallback(export, written_in, path_of, names, out_dir: str, split: str,
                   fallback_split: str) -> tuple[dict, dict]:
    """``export(out_dir, split)``; each of ``names`` it wrote nothing of (``written_in(counts, name)``) is
    exported from ``fallback_split`` into ``out_dir/from_<fallback_split>`` and its file (``path_of(dir,
    name)``) moved into ``out_dir``. Returns ``(written, source)``: per name the count written (0 where
    neither split has one) and the split it came from."""
    counts = export(out_dir, split)
    written = {n: written_in(counts, n) for n in names}
    source = {n: split for n, k in written.items() if k}
    missing = [n for n, k in written.items() if k == 0]
    if missing:
        spare = os.path.join(out_dir, f"from_{fallback_split}")
        extra = export(spare, fallback_split)
        for n in missing:
            k = written_in(extra, n)
            if k:
                os.replace(path_of(spare, n), path_of(out_dir, n))
                written[n], source[n] = k, fallback_split
    return written, source


def export_goal_sets_with_fallback(directory: str, out_dir: str, behaviours, split: str = "validation",
                                   fallback_split: str = "train", **kw) -> tuple[dict, dict]:
    """``export_guidance_conditions`` on ``split``; each of ``behaviours`` it writes no goal of is taken from
    ``fallback_split`` instead (a short validation play may lack one). Returns ``(written, source)``:
    per behaviour the number of goals written (0 where neither split has one) and the split they came from."""
    return _with_fallback(lambda d, sp: export_guidance_conditions(directory, d, sp, **kw),
                          lambda c, b: c["behaviours"].get(b, {}).get("written", 0),
                          lambda d, b: os.path.join(d, f"goals_{b}.npz"), behaviours, out_dir, split, fallback_split)


def export_reset_poses_with_fallback(directory: str, out_dir: str, split: str = "validation",
                                     fallback_split: str = "train") -> tuple[dict, dict]:
    """``export_reset_poses`` on ``split``; a list it finds no pose for is taken from ``fallback_split``
    instead. Returns ``(written, source)`` per list, as ``export_goal_sets_with_fallback``."""
    from dynaguide_jax.data.reset_poses import POSE_SETS, reset_pose_file

    return _with_fallback(lambda d, sp: export_reset_poses(directory, d, sp), lambda c, n: c[n], reset_pose_file,
                          POSE_SETS, out_dir, split, fallback_split)
