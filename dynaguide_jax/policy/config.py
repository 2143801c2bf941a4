"""Hyper-parameters of the robomimic-style image diffusion policy (paper defaults for CALVIN)."""
from __future__ import annotations

import dataclasses
import json
import math

from dynaguide_jax._checks import check_dtype_name, check_int


@dataclasses.dataclass(frozen=True)
class PolicyConfig:
    """Sizes of ``DiffusionPolicy``.

    ``obs_keys`` fixes the feature order (robomimic concatenates modalities in the order of the
    dataset's shape metadata). ``rgb_shapes`` maps each camera to its input ``(H, W)``;
    ``low_dim`` maps each low-dimensional key to its size. ``goal_rgb_keys`` makes the policy
    goal-conditioned (the GC baseline): those cameras' goal images are encoded by a separate
    encoder and appended to the condition. ``low_dim_norm`` holds ``(key, offset, scale)`` per
    low-dimensional key to standardise, ``(x - offset) / scale`` per entry, before it enters the
    condition; empty (robomimic's default, which feeds low-dim observations raw) for converted
    policies, set from the training data for the state policies trained here. ``low_dim_angles``
    names, per standardised key, the entries that are angles in radians: those enter as
    ``wrap(x - offset) / scale`` with ``wrap`` onto [-pi, pi), so an angle that crosses +-pi (the
    tcp's roll, near pi in CALVIN's layout) does not jump by 2 pi / scale between frames.
    ``low_dim_mlp``: hidden widths of an MLP (Dense + Mish per width) that maps a frame's low-dim
    inputs, concatenated after standardising, to ``low_dim_mlp[-1]`` features placed after the
    cameras' features. Empty (robomimic's, and every converted policy's): the low-dim inputs enter
    the condition as they are, and the UNet sees them only through its blocks' FiLM (one linear
    map each), which cannot draw the centimetre-sharp boundaries a state policy needs (when to stop
    above a button and go down).
    """

    action_dim: int = 7
    obs_keys: tuple[str, ...] = ("proprio", "eye_in_hand", "third_person")
    rgb_shapes: tuple[tuple[str, tuple[int, int]], ...] = (("eye_in_hand", (84, 84)),
                                                           ("third_person", (200, 200)))
    low_dim: tuple[tuple[str, int], ...] = (("proprio", 15),)
    goal_rgb_keys: tuple[str, ...] = ()
    low_dim_norm: tuple[tuple[str, tuple[float, ...], tuple[float, ...]], ...] = ()
    low_dim_angles: tuple[tuple[str, tuple[int, ...]], ...] = ()
    low_dim_mlp: tuple[int, ...] = ()
    obs_horizon: int = 2
    prediction_horizon: int = 16
    action_horizon: int = 8
    down_dims: tuple[int, ...] = (256, 512, 1024)
    kernel_size: int = 5
    n_groups: int = 8
    step_embed_dim: int = 256
    feature_dim: int = 64
    num_keypoints: int = 32
    backbone_widths: tuple[int, ...] = (64, 128, 256, 512)
    crop: tuple[int, int] | None = None
    dtype: str = "float32"

    def __post_init__(self):
        for name in ("action_dim", "obs_horizon", "prediction_horizon", "action_horizon", "kernel_size", "n_groups",
                     "step_embed_dim", "feature_dim", "num_keypoints"):
            check_int(f"PolicyConfig.{name}", getattr(self, name))
        if not self.obs_keys:
            raise ValueError("PolicyConfig.obs_keys is empty: the policy needs at least one observation")
        if not self.down_dims or not self.backbone_widths:
            raise ValueError(f"PolicyConfig.down_dims and backbone_widths must be non-empty, got {self.down_dims} and "
                             f"{self.backbone_widths}")
        for name in ("down_dims", "backbone_widths", "low_dim_mlp"):
            for i, d in enumerate(getattr(self, name)):
                check_int(f"PolicyConfig.{name}[{i}]", d)
        for d in self.down_dims:
            if d % self.n_groups:
                raise ValueError(f"PolicyConfig.down_dims {self.down_dims} must be divisible by "
                                 f"n_groups={self.n_groups} (group norm)")
        for k, hw in self.rgb_shapes:
            if len(hw) != 2:
                raise ValueError(f"PolicyConfig.rgb_shapes[{k!r}] must be (H, W), got {hw}")
            for d in hw:
                check_int(f"PolicyConfig.rgb_shapes[{k!r}]", d)
            if self.crop is not None and (self.crop[0] > hw[0] or self.crop[1] > hw[1]):
                raise ValueError(f"PolicyConfig.crop {self.crop} is larger than camera {k!r} {tuple(hw)}")
        for k, d in self.low_dim:
            check_int(f"PolicyConfig.low_dim[{k!r}]", d)
        check_dtype_name("PolicyConfig.dtype", self.dtype)
        rgb, low = dict(self.rgb_shapes), dict(self.low_dim)
        for entry in self.low_dim_norm:
            if len(entry) != 3 or entry[0] not in low:
                raise ValueError(f"PolicyConfig.low_dim_norm entries must be (low_dim key, offset, scale) with a key "
                                 f"of {sorted(low)}, got {str(entry)[:80]}")
            k, offset, scale = entry
            if len(offset) != low[k] or len(scale) != low[k]:
                raise ValueError(f"PolicyConfig.low_dim_norm[{k!r}] needs {low[k]} offsets and scales, got "
                                 f"{len(offset)} and {len(scale)}")
            if not all(math.isfinite(o) for o in offset) or not all(math.isfinite(v) and v > 0 for v in scale):
                raise ValueError(f"PolicyConfig.low_dim_norm[{k!r}]: offsets must be finite and scales finite and > 0")
        normed = {entry[0] for entry in self.low_dim_norm}
        angle_keys = [entry[0] if isinstance(entry, tuple) and entry else None for entry in self.low_dim_angles]
        for entry in self.low_dim_angles:
            if not isinstance(entry, tuple) or len(entry) != 2 or entry[0] not in normed \
                    or not isinstance(entry[1], tuple) or angle_keys.count(entry[0]) > 1:
                raise ValueError(f"PolicyConfig.low_dim_angles entries must be (key, tuple of entry indices), one per "
                                 f"key that low_dim_norm standardises ({sorted(normed)}), got {str(entry)[:80]}")
            k, idx = entry
            if not all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i < low[k] for i in idx) \
                    or len(set(idx)) != len(idx):
                raise ValueError(f"PolicyConfig.low_dim_angles[{k!r}]: indices must be distinct ints in [0, {low[k]}), "
                                 f"got {tuple(idx)}")
        unknown = [k for k in self.obs_keys if k not in rgb and k not in low]
        if unknown:
            raise ValueError(f"obs_keys {unknown} have neither an rgb shape nor a low_dim size")
        missing_goal = [k for k in self.goal_rgb_keys if k not in rgb]
        if missing_goal:
            raise ValueError(f"goal_rgb_keys {missing_goal} are not rgb observations")
        if self.prediction_horizon % (2 ** (len(self.down_dims) - 1)):
            raise ValueError(
                f"prediction_horizon {self.prediction_horizon} must be divisible by "
                f"2**{len(self.down_dims) - 1} (the UNet downsamples it)")
        if not 1 <= self.action_horizon <= self.prediction_horizon - self.obs_horizon + 1:
            raise ValueError("action_horizon must fit in the prediction after the observation frames")

    @property
    def rgb_keys(self) -> tuple[str, ...]:
        rgb = dict(self.rgb_shapes)
        return tuple(k for k in self.obs_keys if k in rgb)

    def keypoint_map(self, key: str) -> tuple[int, int]:
        """The (H, W) of the ResNet feature map SpatialSoftmax pools for rgb input ``key`` (after the crop).
        At (1, 1) every keypoint sits at the map's one position: the features do not depend on the image."""
        hw = self.crop if self.crop is not None else dict(self.rgb_shapes)[key]
        return tuple(feature_map_side(d, len(self.backbone_widths)) for d in hw)

    def blind_cameras(self) -> tuple[str, ...]:
        """The rgb inputs (observations and goals) whose keypoint map is 1 x 1, so the policy cannot see them."""
        keys = dict.fromkeys((*self.rgb_keys, *self.goal_rgb_keys))
        return tuple(k for k in keys if self.keypoint_map(k) == (1, 1))

    @property
    def obs_feature_dim(self) -> int:
        """Per-frame feature size of the observation encoder (goal features excluded)."""
        low = dict(self.low_dim)
        cams = sum(self.feature_dim for k in self.obs_keys if k in self.rgb_keys)
        low_keys = [k for k in self.obs_keys if k not in self.rgb_keys]
        if self.low_dim_mlp and low_keys:
            return cams + self.low_dim_mlp[-1]
        return cams + sum(low[k] for k in low_keys)

    @property
    def cond_dim(self) -> int:
        return self.obs_feature_dim * self.obs_horizon + self.feature_dim * len(self.goal_rgb_keys)

    def replace(self, **changes) -> "PolicyConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, data: dict) -> "PolicyConfig":
        def tuplify(x):
            return tuple(tuplify(v) for v in x) if isinstance(x, list) else x

        unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown PolicyConfig fields: {sorted(unknown)}")
        return cls(**{k: tuplify(v) for k, v in data.items()})

    @classmethod
    def preset(cls, name: str) -> "PolicyConfig":
        """``paper`` (CALVIN cameras, UNet 256/512/1024) or ``small`` (one 32 px camera, CPU tests)."""
        if name == "paper":
            return cls()
        if name == "small":
            return cls(obs_keys=("proprio", "camera"), rgb_shapes=(("camera", (32, 32)),),
                       low_dim=(("proprio", 4),), down_dims=(32, 64), n_groups=4, step_embed_dim=32,
                       feature_dim=16, num_keypoints=8, backbone_widths=(16, 16, 32, 32))
        raise ValueError(f"unknown policy preset {name!r}; choose 'paper' or 'small'")


def feature_map_side(side: int, num_stages: int) -> int:
    """Side of ``ResNet18Conv``'s output for an input ``side``: a stride-2 stem, a stride-2 max-pool and
    ``num_stages - 1`` stride-2 stages, each rounding up (total stride ``2 ** (num_stages + 1)``)."""
    for _ in range(num_stages + 1):
        side = -(-side // 2)
    return side
