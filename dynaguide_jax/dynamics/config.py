"""Latent dynamics model hyper-parameters (defaults: the paper's CALVIN model)."""
from __future__ import annotations

import dataclasses
import json

from dynaguide_jax._checks import check_dtype_name, check_int, check_positive
from dynaguide_jax.layers import check_attention


PALLAS_MODES = ("off", "on", "interpret")


@dataclasses.dataclass(frozen=True)
class DynamicsConfig:
    """Sizes of ``LatentDynamics``.

    Tokens: ``num_cameras * patches_per_camera`` DinoV2 patch tokens, one proprio token when
    ``proprio_dim`` is set, one action-chunk token. The action token is a per-step linear map to
    ``feature_dim // horizon`` channels flattened channel-major (the original's kernel-1 Conv1d),
    so ``feature_dim`` must be divisible by ``horizon``.
    """

    feature_dim: int = 384
    patches_per_camera: int = 256
    num_cameras: int = 1
    action_dim: int = 7
    horizon: int = 16
    proprio_dim: int | None = 15
    num_layers: int = 6
    num_heads: int = 8
    ffn_dim: int = 2048
    dropout: float = 0.1
    attention_dropout: float | None = None  # None: ``dropout``, as torch's layer; 0 allows fused attention
    attention: str = "xla"  # "cudnn" (NVIDIA, bf16) / "pallas" (keeps dropout): fused flash attention, layers.attend
    pallas: str = "off"  # "on" / "interpret" (CPU): fused Pallas layer epilogues (eval only), see kernels/
    layer_norm_eps: float = 1e-5
    num_predicted_tokens: int | None = None
    remat: bool = False  # recompute each layer's activations in the backward (less memory, ~1/3 more FLOPs)
    dtype: str = "float32"

    def __post_init__(self):
        for name in ("feature_dim", "patches_per_camera", "num_cameras", "action_dim", "horizon", "num_layers",
                     "num_heads", "ffn_dim"):
            check_int(f"DynamicsConfig.{name}", getattr(self, name))
        for name in ("proprio_dim", "num_predicted_tokens"):
            if getattr(self, name) is not None:
                check_int(f"DynamicsConfig.{name}", getattr(self, name))
        for name in ("dropout", "attention_dropout"):
            v = getattr(self, name)
            if v is not None and not (isinstance(v, (int, float)) and 0.0 <= v < 1.0):
                raise ValueError(f"DynamicsConfig.{name} must be in [0, 1), got {v!r}")
        check_positive("DynamicsConfig.layer_norm_eps", self.layer_norm_eps)
        check_dtype_name("DynamicsConfig.dtype", self.dtype)
        if self.feature_dim % self.horizon:
            raise ValueError(
                f"feature_dim={self.feature_dim} must be divisible by horizon={self.horizon} "
                "(the action token has feature_dim // horizon channels per step)"
            )
        if self.feature_dim % self.num_heads:
            raise ValueError(f"feature_dim={self.feature_dim} not divisible by num_heads={self.num_heads}")
        if self.predicted_tokens > self.num_cameras * self.patches_per_camera:
            raise ValueError("num_predicted_tokens exceeds the number of image tokens")
        check_attention(self.attention)
        if not isinstance(self.remat, bool):
            raise ValueError(f"DynamicsConfig.remat must be true or false, got {self.remat!r}")
        if self.pallas not in PALLAS_MODES:
            raise ValueError(f"DynamicsConfig.pallas must be one of {PALLAS_MODES}, got {self.pallas!r}")

    @property
    def attention_dropout_rate(self) -> float:
        return self.dropout if self.attention_dropout is None else self.attention_dropout

    @property
    def action_channels(self) -> int:
        return self.feature_dim // self.horizon

    @property
    def predicted_tokens(self) -> int:
        return self.num_predicted_tokens or self.patches_per_camera

    @property
    def num_tokens(self) -> int:
        return self.num_cameras * self.patches_per_camera + (self.proprio_dim is not None) + 1

    def replace(self, **changes) -> "DynamicsConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "DynamicsConfig":
        unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown DynamicsConfig fields: {sorted(unknown)}")
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def preset(cls, name: str) -> "DynamicsConfig":
        """``paper`` (CALVIN, ViT-S/14 at 224) or ``small`` (CPU demos and tests)."""
        presets = {
            "paper": cls(),
            "small": cls(feature_dim=64, patches_per_camera=16, num_layers=2, num_heads=4,
                         ffn_dim=128, dropout=0.0),
        }
        if name not in presets:
            raise ValueError(f"unknown dynamics preset {name!r}; choose from {sorted(presets)}")
        return presets[name]
