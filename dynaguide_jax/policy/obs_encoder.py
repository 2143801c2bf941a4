"""robomimic's image observation encoder in Flax: per camera a ResNet18 conv trunk (BatchNorm
replaced by GroupNorm with channels // 16 groups, no pretraining), SpatialSoftmax keypoints,
a linear projection and ReLU; low-dim keys pass through; features concatenated in ``obs_keys``
order, observation frames flattened into the global condition."""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from dynaguide_jax.layers import compute_dtype
from dynaguide_jax.policy.config import PolicyConfig
from dynaguide_jax.policy.unet1d import mish


def group_norm(channels: int, dtype, name: str):
    return nn.GroupNorm(num_groups=channels // 16, epsilon=1e-5, dtype=dtype, name=name)


class BasicBlock(nn.Module):
    features: int
    stride: int
    dtype: jnp.dtype

    @nn.compact
    def __call__(self, x):
        conv = lambda s, name: nn.Conv(self.features, (3, 3), (s, s), padding=1, use_bias=False,  # noqa
                                       dtype=self.dtype, name=name)
        h = nn.relu(group_norm(self.features, self.dtype, "bn1")(conv(self.stride, "conv1")(x)))
        h = group_norm(self.features, self.dtype, "bn2")(conv(1, "conv2")(h))
        if self.stride != 1 or x.shape[-1] != self.features:
            x = nn.Conv(self.features, (1, 1), (self.stride, self.stride), use_bias=False, dtype=self.dtype,
                        name="downsample_conv")(x)
            x = group_norm(self.features, self.dtype, "downsample_bn")(x)
        return nn.relu(h + x)


class ResNet18Conv(nn.Module):
    """torchvision resnet18 without avgpool/fc, GroupNorm instead of BatchNorm; NHWC."""

    widths: tuple[int, ...] = (64, 128, 256, 512)
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        x = nn.Conv(self.widths[0], (7, 7), (2, 2), padding=3, use_bias=False, dtype=self.dtype, name="conv1")(x)
        x = nn.relu(group_norm(self.widths[0], self.dtype, "bn1")(x))
        x = nn.max_pool(x, (3, 3), (2, 2), padding=((1, 1), (1, 1)))
        for i, w in enumerate(self.widths):
            for j in range(2):
                stride = 2 if (i > 0 and j == 0) else 1
                x = BasicBlock(w, stride, self.dtype, name=f"layer{i + 1}_{j}")(x)
        return x


def keypoint_grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """SpatialSoftmax's fixed ``pos_x, pos_y`` ``[h*w]`` (meshgrid of linspace(-1, 1))."""
    px, py = np.meshgrid(np.linspace(-1.0, 1.0, w), np.linspace(-1.0, 1.0, h))
    return px.reshape(-1).astype(np.float32), py.reshape(-1).astype(np.float32)


class SpatialSoftmax(nn.Module):
    """1x1 conv to ``num_keypoints`` maps, softmax over space, expected (x, y) -> ``[B, K*2]``."""

    num_keypoints: int
    temperature: float = 1.0
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        b, h, w, _ = x.shape
        f = nn.Conv(self.num_keypoints, (1, 1), dtype=self.dtype, name="keypoints")(x)
        f = jnp.transpose(f, (0, 3, 1, 2)).reshape(b, self.num_keypoints, h * w).astype(jnp.float32)
        attention = jax.nn.softmax(f / self.temperature, axis=-1)
        px, py = keypoint_grid(h, w)
        xy = jnp.stack([attention @ px, attention @ py], axis=-1)  # [B, K, 2]
        return xy.reshape(b, self.num_keypoints * 2)


class VisualCore(nn.Module):
    config: PolicyConfig

    @nn.compact
    def __call__(self, images):
        c, dt = self.config, compute_dtype(self.config.dtype)
        x = ResNet18Conv(c.backbone_widths, dt, name="backbone")(images.astype(dt))
        x = SpatialSoftmax(c.num_keypoints, dtype=dt, name="pool")(x)
        return nn.relu(nn.Dense(c.feature_dim, dtype=dt, name="linear")(x).astype(jnp.float32))


def center_crop(images, crop: tuple[int, int]):
    h, w = images.shape[-3:-1]
    top, left = (h - crop[0]) // 2, (w - crop[1]) // 2
    return images[..., top : top + crop[0], left : left + crop[1], :]


def random_crop(key, images, crop: tuple[int, int]):
    """One random crop per image (robomimic's CropRandomizer in training), images ``[N, H, W, C]``."""
    n, h, w, c = images.shape
    kt, kl = jax.random.split(key)
    tops = jax.random.randint(kt, (n,), 0, h - crop[0] + 1)
    lefts = jax.random.randint(kl, (n,), 0, w - crop[1] + 1)
    one = lambda img, top, left: jax.lax.dynamic_slice(img, (top, left, 0), (crop[0], crop[1], c))  # noqa: E731
    return jax.vmap(one)(images, tops, lefts)


def wrap_to_pi(angles):
    """Angles in radians onto [-pi, pi)."""
    return jnp.mod(angles + jnp.pi, 2 * jnp.pi) - jnp.pi


def to_unit_float(images):
    """uint8 0..255 -> float 0..1 (robomimic's image processing); floats are taken as 0..1."""
    if jnp.issubdtype(images.dtype, jnp.integer):
        return images.astype(jnp.float32) / 255.0
    return images.astype(jnp.float32)


class ObservationEncoder(nn.Module):
    """``obs`` dict of ``[N, ...]`` arrays (images ``[N, H, W, 3]``) -> features ``[N, F]``."""

    config: PolicyConfig
    keys: tuple[str, ...]

    @nn.compact
    def __call__(self, obs, crop_key=None):
        c = self.config
        rgb, norm = dict(c.rgb_shapes), {k: (o, s) for k, o, s in c.low_dim_norm}
        angles = dict(c.low_dim_angles)
        feats, low = [], []
        for k in self.keys:
            x = obs[k]
            if k in norm:
                offset, scale = (jnp.asarray(v, jnp.float32) for v in norm[k])
                x = x.astype(jnp.float32) - offset
                if angles.get(k):
                    is_angle = np.isin(np.arange(x.shape[-1]), angles[k])
                    x = jnp.where(is_angle, wrap_to_pi(x), x)
                x = x / scale
            if k in rgb:
                x = to_unit_float(x)
                if c.crop is not None:
                    x = random_crop(crop_key, x, c.crop) if crop_key is not None else center_crop(x, c.crop)
                    crop_key = None if crop_key is None else jax.random.fold_in(crop_key, 1)
                x = VisualCore(c, name=k)(x)
            x = x.reshape(x.shape[0], -1).astype(jnp.float32)
            (low if c.low_dim_mlp and k not in rgb else feats).append(x)
        if low:  # the low-dim inputs through the MLP, after the cameras
            x = jnp.concatenate(low, axis=-1)
            for i, width in enumerate(c.low_dim_mlp):
                x = mish(nn.Dense(width, name=f"low_dim_mlp_{i}")(x))
            feats.append(x)
        return jnp.concatenate(feats, axis=-1)
