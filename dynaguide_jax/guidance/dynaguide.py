"""DynaGuide guidance: the metric of the latent dynamics model's prediction against goal sets."""
from __future__ import annotations

import dataclasses
import math

from dynaguide_jax._checks import check_finite
from dynaguide_jax.dynamics.config import DynamicsConfig
from dynaguide_jax.dynamics.context import MODES as PRECOMPUTE_MODES
from dynaguide_jax.dynamics.context import observation_context, predict_with_context
from dynaguide_jax.dynamics.model import predict_future_patches
from dynaguide_jax.encoders.dinov2 import DinoV2
from dynaguide_jax.encoders.dinov2_config import DinoV2Config
from dynaguide_jax.encoders.preprocess import preprocess
from dynaguide_jax.guidance.base import Guidance
from dynaguide_jax.guidance.metric import guidance_metric


def encode_cameras(encoder: DinoV2Config, encoder_params, images, image_size: int = 224):
    """Raw images ``[B, C, H, W, 3]`` (uint8 / 0..255) -> DinoV2 patches ``[B, C*P, D]``.

    Cameras are folded into the batch, so the encoder runs once for all of them.
    """
    if images.ndim != 5:
        raise ValueError(f"images must be [B, cameras, H, W, 3], got shape {images.shape}")
    b, c = images.shape[:2]
    x = preprocess(images.reshape(b * c, *images.shape[2:]), image_size)
    patches = DinoV2(encoder).apply({"params": encoder_params}, x)["patches"]
    return patches.reshape(b, c * patches.shape[1], patches.shape[2])


# what the original's temperatures (its --alpha, 15..40) are set for: ViT-S/14 at 224 px, 256 x 384 predicted features
PAPER_PREDICTED_FEATURES = 256 * 384


def paper_scaled_sigma(sigma, dynamics: DynamicsConfig):
    """The original's metric temperature ``sigma`` carried over to a model predicting fewer (or more)
    features: L2 distances between predictions whose entries differ alike grow as the square root of
    their count, so ``sigma * sqrt(F / (256 * 384))`` (``F`` = predicted tokens x feature dim) keeps the
    metric the original's: the same sharpness over the goals and the same gradient. 30 -> 7.5 for the
    small preset's 16 patches of 384 (56 px); the paper's model is unchanged. ``sigma`` may be traced."""
    return sigma * math.sqrt(dynamics.predicted_tokens * dynamics.feature_dim / PAPER_PREDICTED_FEATURES)


@dataclasses.dataclass(frozen=True)
class DynaGuide(Guidance):
    """Steer toward/away from goal features through the dynamics model.

    params: ``{"dynamics": ..., "goals": GoalSet, "sigma": float, "encoder": ... (only when
    observations are raw images)}``.
    obs / features: ``{"patches": [B, C*P, D]}`` or ``{"images": [B, C, H, W, 3]}``, plus
    ``"proprio": [B, p]`` when the dynamics model uses proprioception.
    precompute: ``"projections"`` / ``"attention"``: ``prepare`` also computes the dynamics model's
    action-independent work once (``dynamics.context``: layer 1's observation-token projections,
    and with "attention" their softmax sums among themselves) and every guidance evaluation reuses
    it; same predictions up to rounding. ``"none"``, and features never prepared: the plain model.
    """

    dynamics: DynamicsConfig
    encoder: DinoV2Config | None = None
    distance: str = "l2"
    image_size: int = 224
    precompute: str = "projections"

    def __post_init__(self):
        if self.precompute not in ("none", *PRECOMPUTE_MODES):
            raise ValueError(f"DynaGuide.precompute must be one of {('none', *PRECOMPUTE_MODES)}, "
                             f"got {self.precompute!r}")

    def prepare(self, params, obs):
        """Encode images once per sampling call (the original re-encoded at every step), and with
        ``precompute`` the dynamics model's observation work too."""
        feats = self._encode(params, obs)
        if self.precompute != "none" and "dynamics_context" not in feats:
            for name in ("patches", "proprio"):
                check_finite(f"dynamics model input {name}", feats.get(name))
            feats = dict(feats, dynamics_context=observation_context(
                self.dynamics, params["dynamics"], feats["patches"], feats.get("proprio"), self.precompute))
        return feats

    def _encode(self, params, obs):
        if "patches" in obs:
            return obs
        if "images" not in obs:
            raise KeyError("DynaGuide observations need 'patches' or 'images'")
        if self.encoder is None or "encoder" not in params:
            raise ValueError("raw images need DynaGuide(encoder=...) and params['encoder']")
        feats = dict(obs)
        feats["patches"] = encode_cameras(self.encoder, params["encoder"], feats.pop("images"),
                                          self.image_size)
        return feats

    def predict(self, params, features, actions):
        if "dynamics_context" in features:
            check_finite("dynamics model input actions", actions)
            return predict_with_context(self.dynamics, params["dynamics"], features["dynamics_context"], actions)
        return predict_future_patches(self.dynamics, params["dynamics"], features["patches"],
                                      features.get("proprio"), actions)

    def metric(self, params, features, actions):
        z = self.predict(params, features, actions)
        return guidance_metric(z, params["goals"], params["sigma"], self.distance)

