"""Training windows for the dynamics model: ``(patches_t, proprio_t, a_t..a_{t+H-1}, target patches)``.

Two targets (``DynamicsWindows.target``):

- ``"segment_end"`` (default, the original's): the FINAL frame of the episode (behaviour segment)
  that ``t`` lies in, for every ``t`` of it; actions past the segment's end are zeros (orig:
  core/embedder_datasets.py ``MultiviewDataset(padding=True, pad_mode="zeros")``, as
  train_dynaguide.py builds it). The episodes must be the segments: ``split_at_segments`` re-cuts
  CALVIN's play ranges; toy-world and UMI episodes are one demonstration each.
- ``"horizon"``: the frame ``t + H``; only times whose ``t + H`` lies in the same episode are used.

Batches are a pure function of ``(seed, step)``: a resumed run continues the exact data stream, and
every process takes its own rows of the same global batch, so the global batch does not depend on
how many hosts read it.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from dynaguide_jax._checks import check_finite, check_int

from dynaguide_jax.data.episodes import EpisodeData

TARGETS = ("segment_end", "horizon")


class DynamicsWindows:
    def __init__(self, data: EpisodeData, features: np.ndarray, horizon: int, proprio_key: str | None = "proprio",
                 action_transform: ActionTransform | None = None, target: str = "segment_end"):
        """``features [N, C*P, D]``: per-frame encoder patches (e.g. a ``FeatureCache``'s array);
        ``action_transform`` maps dataset actions to the action space the model (and the policy it
        will guide) uses; ``target`` is ``"segment_end"`` or ``"horizon"`` (module doc)."""
        if target not in TARGETS:
            raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
        horizon = check_int("horizon", horizon)
        if not isinstance(data, EpisodeData):
            raise TypeError(f"data must be an EpisodeData, got {type(data).__name__}")
        if not hasattr(features, "shape"):
            features = np.asarray(features)
        if features.ndim != 3:
            raise ValueError(f"features must be [N, C*P, D] patch tokens per frame, got shape {features.shape}")
        if len(features) != data.num_frames:
            raise ValueError(f"features have {len(features)} frames, episodes have {data.num_frames}")
        if proprio_key is not None and proprio_key not in data.obs:
            raise KeyError(f"episodes have no {proprio_key!r} observation (keys: {sorted(data.obs)})")
        if proprio_key is not None and data.obs[proprio_key].ndim != 2:
            raise ValueError(f"obs[{proprio_key!r}] (proprio) must be [N, p], got shape {data.obs[proprio_key].shape}")
        if action_transform is not None and not isinstance(action_transform, ActionTransform):
            raise TypeError(f"action_transform must be an ActionTransform, got {type(action_transform).__name__}")
        self.data, self.features, self.horizon, self.proprio_key = data, features, horizon, proprio_key
        self.target = target
        if target == "segment_end":
            self.valid = np.arange(data.num_frames)
        else:
            self.valid = np.flatnonzero(np.arange(data.num_frames) + self.horizon < data.frame_end)
        if len(self.valid) == 0:
            raise ValueError(f"no episode is longer than the horizon {horizon}")
        self.action_transform = action_transform or ActionTransform()

    def batch(self, step: int, global_batch: int, seed: int = 0, rows: slice | None = None,
              feature_dtype=None) -> dict:
        """Training batch ``step`` (a function of ``(seed, step)``), or its ``rows``. Features keep the
        cache's dtype by default: the model casts them on the device, and converting float16 to
        float32 on the host would take most of the loader's time and double the bytes sent."""
        check_int("global_batch", global_batch)
        rng = np.random.default_rng([seed, step])
        t = self.valid[rng.integers(0, len(self.valid), global_batch)]
        return self.at(t if rows is None else t[rows], feature_dtype)

    def target_frame(self, t: np.ndarray) -> np.ndarray:
        """Index of the frame each window starting at ``t`` predicts."""
        t = np.asarray(t)
        return self.data.frame_end[t] - 1 if self.target == "segment_end" else t + self.horizon

    def at(self, t: np.ndarray, feature_dtype=np.float32) -> dict:
        """The windows starting at frames ``t [B]`` (each must be in ``valid``); ``feature_dtype=None``
        keeps the features' stored dtype."""
        t = np.asarray(t)
        if t.ndim != 1 or (t.size and t.dtype.kind not in "iu"):
            raise ValueError(f"t must be [B] integer frame indices, got {t.dtype} {t.shape}")
        if t.size and (t.min() < 0 or t.max() >= self.data.num_frames
                       or (self.target == "horizon" and (t + self.horizon >= self.data.frame_end[t]).any())):
            bad = t[~np.isin(t, self.valid)]
            raise ValueError(f"t: frames {bad[:5].tolist()} start no window ({self.target} target, horizon "
                             f"{self.horizon}, {self.data.num_frames} frames); valid starts are in .valid")
        idx = t[:, None] + np.arange(self.horizon)[None]
        end = self.data.frame_end[t][:, None]
        acts = self.action_transform(self.data.actions[np.minimum(idx, end - 1)])
        acts = np.where((idx < end)[..., None], acts, np.float32(0.0))  # zero-filled past the segment's end
        out = {"patches": np.asarray(self.features[t], feature_dtype), "actions": acts,
               "future_patches": np.asarray(self.features[self.target_frame(t)], feature_dtype)}
        if self.proprio_key is not None:
            out["proprio"] = self.data.obs[self.proprio_key][t].astype(np.float32)
        for name, rows in (("patches", t), ("future_patches", self.target_frame(t))):
            x = out[name]  # one cheap pass; the per-frame search only runs when something is wrong
            if x.dtype.kind == "f" and not _all_finite(x):
                bad = rows[~np.isfinite(x.reshape(len(x), -1)).all(-1)]
                raise FloatingPointError(f"features (the feature cache) of frame(s) {bad[:5].tolist()} contain "
                                         "NaN/inf: rebuild the cache (dynaguide data cache)")
        return out


def _all_finite(x: np.ndarray) -> bool:
    if x.dtype == np.float16 and x.size:  # exponent bits all ones = inf/NaN; ~15x faster than isfinite on float16
        return bool((np.ascontiguousarray(x).view(np.uint16) & 0x7FFF).max() < 0x7C00)
    return bool(np.isfinite(x).all())


ACTION_MODES = ("none", "clip", "minmax")


@dataclasses.dataclass(frozen=True)
class ActionTransform:
    """Dataset actions -> model actions: ``none``, ``clip`` to [-1, 1] (what the original and our
    policy training do with CALVIN's rel_actions) or ``minmax`` (``(a - offset) / scale``)."""

    mode: str = "none"
    scale: tuple[float, ...] | None = None
    offset: tuple[float, ...] | None = None

    def __post_init__(self):
        if self.mode not in ACTION_MODES:
            raise ValueError(f"action mode must be one of {ACTION_MODES}, got {self.mode!r}")
        if (self.mode == "minmax") != (self.scale is not None and self.offset is not None):
            raise ValueError("scale and offset are given with (and only with) mode 'minmax'")
        if self.mode == "minmax":
            scale, offset = np.asarray(self.scale, np.float64), np.asarray(self.offset, np.float64)
            if scale.ndim != 1 or scale.shape != offset.shape or scale.size == 0:
                raise ValueError(f"minmax scale and offset must be [A] sequences of one length, got "
                                 f"{scale.shape} and {offset.shape}")
            if not (np.isfinite(scale).all() and np.isfinite(offset).all() and (scale > 0).all()):
                raise ValueError(f"minmax scale must be finite and > 0 and offset finite, got scale "
                                 f"{scale.tolist()}, offset {offset.tolist()}")

    @classmethod
    def fit(cls, mode: str, actions: np.ndarray) -> "ActionTransform":
        if mode != "minmax":
            return cls(mode)
        stats = action_normalization(actions)
        return cls(mode, tuple(stats["scale"].tolist()), tuple(stats["offset"].tolist()))

    def __call__(self, actions: np.ndarray) -> np.ndarray:
        a = np.asarray(actions, np.float32)
        if self.mode == "clip":
            return np.clip(a, -1.0, 1.0)
        if self.mode == "minmax":
            if a.shape[-1:] != (len(self.scale),):
                raise ValueError(f"actions have {a.shape[-1:]} dims, the minmax transform {len(self.scale)}")
            return (a - np.float32(self.offset)) / np.float32(self.scale)
        return a

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ActionTransform":
        if not isinstance(d, dict) or "mode" not in d:
            raise ValueError(f"an action transform dict needs a 'mode' ({ACTION_MODES}), got {d!r}")
        return cls(d["mode"], *(None if d.get(k) is None else tuple(d[k]) for k in ("scale", "offset")))


def action_normalization(actions: np.ndarray) -> dict:
    """Min/max statistics mapping actions to [-1, 1] (robomimic's ``scale`` / ``offset`` form)."""
    actions = np.asarray(actions)
    if actions.ndim != 2 or len(actions) == 0:
        raise ValueError(f"actions must be a non-empty [N, A] array, got shape {actions.shape}")
    check_finite("actions", actions)
    lo, hi = actions.min(0), actions.max(0)
    scale = np.where(hi > lo, (hi - lo) / 2.0, 1.0).astype(np.float32)
    return {"scale": scale, "offset": ((hi + lo) / 2.0).astype(np.float32)}
