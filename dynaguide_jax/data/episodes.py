"""In-memory episodes: per-frame arrays concatenated over episodes, with their boundaries."""
from __future__ import annotations

import dataclasses

import numpy as np

from dynaguide_jax._checks import check_finite


@dataclasses.dataclass
class EpisodeData:
    """Per-frame arrays concatenated over episodes; ``episode_ends`` are exclusive cumulative ends."""

    obs: dict[str, np.ndarray]  # {key: [N, ...]} images uint8 [N, H, W, 3]
    actions: np.ndarray  # [N, A]
    episode_ends: np.ndarray  # [E]

    def __post_init__(self):
        if not isinstance(self.obs, dict):
            raise TypeError(f"obs must be a dict {{key: [N, ...] array}}, got {type(self.obs).__name__}")
        if not hasattr(self.actions, "shape"):
            self.actions = np.asarray(self.actions)
        if self.actions.ndim != 2:
            raise ValueError(f"actions must be [N, A], got shape {self.actions.shape}")
        n = len(self.actions)
        raw_ends = np.asarray(self.episode_ends)
        if raw_ends.size and raw_ends.dtype.kind not in "iu":
            raise TypeError(f"episode_ends must be integers, got dtype {raw_ends.dtype}: {raw_ends[:5]}")
        ends = raw_ends.astype(np.int64)
        if ends.ndim != 1 or len(ends) == 0 or ends[-1] != n or (np.diff(np.r_[0, ends]) <= 0).any():
            raise ValueError(f"episode_ends must be increasing, positive lengths, ending at {n} frames; "
                             f"got {ends[:5]}...")
        check_finite("actions", self.actions)
        for k, v in list(self.obs.items()):
            if not hasattr(v, "shape"):
                self.obs[k] = v = np.asarray(v)
            if v.ndim < 1 or len(v) != n:
                raise ValueError(f"obs[{k!r}] must be [N={n}, ...] (one row per action), got shape {v.shape}")
            check_finite(f"obs[{k!r}]", v)
        self.episode_ends = ends
        starts = np.r_[0, ends[:-1]]
        self.frame_start = np.repeat(starts, ends - starts)
        self.frame_end = np.repeat(ends, ends - starts)

    @property
    def num_frames(self) -> int:
        return len(self.actions)


def split_at_segments(data: EpisodeData, segment: np.ndarray) -> EpisodeData:
    """The same frames re-cut into one episode per behaviour segment (runs of equal ``segment [N]``).

    CALVIN's segmentation runs over a whole split, so a segment may span two play ranges: the old
    episode boundaries are dropped and only segment changes cut (frames must be in chronological
    order, as the builders write them). Each segment id must form one run: a split read out of
    order would silently glue unrelated frames into a segment."""
    seg = np.asarray(segment).reshape(-1)
    if len(seg) != data.num_frames:
        raise ValueError(f"segment ids cover {len(seg)} frames, the episodes have {data.num_frames}")
    cut = np.flatnonzero(seg[1:] != seg[:-1]) + 1
    run_ids = seg[np.r_[0, cut]]
    ids, runs = np.unique(run_ids[run_ids >= 0], return_counts=True)
    if (runs > 1).any():
        dup = ids[runs > 1][0]
        raise ValueError(f"segment {int(dup)} is split into several runs: the frames are not in chronological "
                         "order (a dataset written by an older builder? rebuild it)")
    return EpisodeData(obs=data.obs, actions=data.actions, episode_ends=np.r_[cut, data.num_frames])


def select_episodes(data: EpisodeData, keep) -> EpisodeData:
    """The episodes ``keep [E]`` (bool) marks, in order (at least one)."""
    keep = np.asarray(keep)
    if keep.shape != data.episode_ends.shape or keep.dtype != bool:
        raise ValueError(f"keep must be a bool [{len(data.episode_ends)}] mask (one per episode), got "
                         f"{keep.dtype} {keep.shape}")
    if not keep.any():
        raise ValueError("select_episodes: the mask keeps no episode")
    starts = np.r_[0, data.episode_ends[:-1]]
    frames = np.concatenate([np.arange(s, e) for s, e, k in zip(starts, data.episode_ends, keep) if k])
    lengths = (data.episode_ends - starts)[keep]
    return EpisodeData(obs={k: v[frames] for k, v in data.obs.items()}, actions=data.actions[frames],
                       episode_ends=np.cumsum(lengths))


def reduce_behaviour(data: EpisodeData, labels, behaviour: str, fraction: float, seed: int) -> tuple[EpisodeData, dict]:
    """Keep each episode labelled ``behaviour`` with probability ``fraction`` (seeded), every other one
    always: the original's reduced-data datasets (data_processing_calvin/calvin_to_labeled_hdf5.py drops
    a behaviour's demos at random while writing). ``labels [E]``: one name per episode. Returns the
    data and ``{"kept": k, "of": n}`` for that behaviour; at least one of its episodes stays."""
    labels = np.asarray([x.decode() if isinstance(x, bytes) else str(x) for x in labels])
    if labels.shape != data.episode_ends.shape:
        raise ValueError(f"labels must name every episode ({len(data.episode_ends)}), got {labels.shape}")
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    mine = labels == behaviour
    if not mine.any():
        raise ValueError(f"no episode of behaviour {behaviour!r} to reduce (labels: {sorted(set(labels.tolist()))})")
    draw = np.random.default_rng(seed).random(len(labels)) < fraction
    if not (draw & mine).any():  # the original's 1 % of CALVIN still holds demos; keep one here too
        draw[np.flatnonzero(mine)[0]] = True
    keep = ~mine | draw
    return select_episodes(data, keep), {"kept": int((mine & keep).sum()), "of": int(mine.sum())}
