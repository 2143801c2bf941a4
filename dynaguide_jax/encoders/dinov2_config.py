"""DinoV2 architecture hyper-parameters and the released presets."""
from __future__ import annotations

import dataclasses
import json

from dynaguide_jax.layers import check_attention


@dataclasses.dataclass(frozen=True)
class DinoV2Config:
    """ViT hyper-parameters of a DinoV2 backbone.

    ``pos_grid`` is the side of the pretrained position-embedding grid (37 for the released 518px
    models). ``interpolate_offset`` / ``interpolate_antialias`` select how position embeddings are
    resampled for other inputs, as each upstream implementation does it: the torch-hub models use
    ``scale_factor=(n + 0.1) / grid`` without antialias (registers: exact size, antialias); HF
    ``Dinov2Model`` uses the exact size without antialias, ``Dinov2WithRegistersModel`` with it.
    """

    hidden_size: int = 384
    num_layers: int = 12
    num_heads: int = 6
    patch_size: int = 14
    mlp_ratio: float = 4.0
    use_swiglu: bool = False
    num_registers: int = 0
    pos_grid: int = 37
    layer_norm_eps: float = 1e-6
    interpolate_offset: float = 0.1
    interpolate_antialias: bool = False
    dtype: str = "float32"
    attention: str = "xla"  # "cudnn" (NVIDIA, bf16) / "pallas" (keeps dropout): fused flash attention, layers.attend

    def __post_init__(self):
        check_attention(self.attention)
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size={self.hidden_size} must be divisible by num_heads={self.num_heads}"
            )
        for name in ("hidden_size", "num_layers", "num_heads", "patch_size", "pos_grid"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")

    @property
    def mlp_hidden(self) -> int:
        hidden = int(self.hidden_size * self.mlp_ratio)
        if self.use_swiglu:  # two thirds of the MLP width, rounded up to a multiple of 8
            hidden = (int(hidden * 2 / 3) + 7) // 8 * 8
        return hidden

    def replace(self, **changes) -> "DinoV2Config":
        return dataclasses.replace(self, **changes)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "DinoV2Config":
        data = json.loads(text)
        unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown DinoV2Config fields: {sorted(unknown)}")
        return cls(**data)

    @classmethod
    def preset(cls, name: str) -> "DinoV2Config":
        """``vits14``, ``vitb14``, ``vitl14``, ``vitg14`` and their ``_reg`` variants (hub defaults)."""
        base = name.removesuffix("_reg")
        if base not in _PRESETS:
            names = sorted(_PRESETS) + [n + "_reg" for n in sorted(_PRESETS)]
            raise ValueError(f"unknown DinoV2 preset {name!r}; choose from {names}")
        cfg = cls(**_PRESETS[base])
        if name.endswith("_reg"):
            cfg = cfg.replace(num_registers=4, interpolate_offset=0.0, interpolate_antialias=True)
        return cfg


_PRESETS = {
    "vits14": dict(hidden_size=384, num_layers=12, num_heads=6),
    "vitb14": dict(hidden_size=768, num_layers=12, num_heads=12),
    "vitl14": dict(hidden_size=1024, num_layers=24, num_heads=16),
    "vitg14": dict(hidden_size=1536, num_layers=40, num_heads=24, use_swiglu=True),
}
