"""Reading RLDS datasets (built by ``data_pipelines``) into training inputs.

``read_episodes`` gathers the chosen per-step fields of a split into an ``EpisodeData`` (low-dim
fields for any size; images only for data that fits in memory). ``FrameStream`` presents one image
field as a sequential, sliceable array, so the feature cache encodes a split of any size without
holding its images. ``export_guidance_conditions`` writes per-behaviour goal sets.
"""
from __future__ import annotations

import json
import os
from collections import defaultdict

import numpy as np

from dynaguide_jax.data.episodes import EpisodeData


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
    return EpisodeData(obs={k: np.concatenate(v) for k, v in obs.items()}, actions=np.concatenate(actions),
                       episode_ends=np.asarray(ends))


def has_step_field(directory: str, path: str) -> bool:
    """Whether the dataset's steps carry ``path`` (e.g. ``behaviour``, ``observation/robot_obs``)."""
    feats = _builder(directory).info.features["steps"]
    for part in path.split("/"):
        if not hasattr(feats, "keys") or part not in feats.keys():
            return False
        feats = feats[part]
    return True


def dynamics_windows(directory: str, split: str, features, horizon: int, proprio_fields=("observation/robot_obs",),
                     action_field: str = "rel_action", action_transform="none", labels: bool = False):
    """``DynamicsWindows`` over a split's cached features, proprio = the concatenated ``proprio_fields``.
    ``action_transform``: an ``ActionTransform`` or a mode name, fitted on this split's actions. With
    ``labels``, the per-step ``behaviour`` / ``segment`` fields come along in ``data.obs``."""
    from dynaguide_jax.data.windows import ActionTransform, DynamicsWindows

    extra = ("behaviour", "segment") if labels else ()
    data = read_episodes(directory, split, (*proprio_fields, *extra), action_field)
    parts = [data.obs.pop(f.split("/")[-1]).reshape(data.num_frames, -1) for f in proprio_fields]
    data.obs["proprio"] = np.concatenate(parts, axis=1).astype(np.float32)
    if isinstance(action_transform, str):
        action_transform = ActionTransform.fit(action_transform, data.actions)
    return DynamicsWindows(data, features, horizon, action_transform=action_transform)


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


def export_guidance_conditions(directory: str, out_dir: str, split: str = "validation",
                               image_field: str = "observation/rgb_static",
                               proprio_field: str = "observation/robot_obs", action_field: str = "rel_action",
                               horizon: int = 16, min_count: int = 1) -> dict[str, int]:
    """Per behaviour, the final frame of every labelled segment: ``goals_<behaviour>.npz`` with
    ``images [K, H, W, 3]`` (the paper's goal images), and the last observation's ``proprio``
    plus the ``actions [K, horizon, A]`` leading into it (for goals from the dynamics prediction at
    trajectory ends, as the original code builds them). Writes ``counts.json``; returns the counts."""
    groups = defaultdict(lambda: defaultdict(list))
    fields = (image_field, proprio_field, action_field, "behaviour", "segment")
    for ep in iterate_episodes(directory, split, fields):
        seg = ep["segment"]
        for s in np.unique(seg[seg >= 0]):
            idx = np.flatnonzero(seg == s)
            last = idx[-1]
            label = ep["behaviour"][last]
            name = label.decode() if isinstance(label, bytes) else str(label)
            window = np.clip(np.arange(last - horizon + 1, last + 1), idx[0], last)
            g = groups[name]
            g["images"].append(ep[image_field][last])
            g["proprio"].append(ep[proprio_field][last])
            g["actions"].append(ep[action_field][window])
    os.makedirs(out_dir, exist_ok=True)
    counts = {}
    for name, g in sorted(groups.items()):
        if len(g["images"]) < min_count:
            continue
        counts[name] = len(g["images"])
        np.savez_compressed(os.path.join(out_dir, f"goals_{name}.npz"),
                            **{k: np.stack(v) for k, v in g.items()})
    with open(os.path.join(out_dir, "counts.json"), "w") as f:
        json.dump(counts, f, indent=2, sort_keys=True)
    return counts
