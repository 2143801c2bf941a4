"""ConditionalUnet1D (Chi et al., Diffusion Policy) in Flax, channels-last ``[B, T, C]``.

FiLM-conditioned residual 1-D conv blocks, sinusoidal step embedding, a down path (stride-2
convs), two mid blocks and an up path (stride-2 transposed convs) with skip connections, GroupNorm
and Mish, laid out as robomimic builds it (its up path upsamples at every level it keeps).
"""
from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from dynaguide_jax.layers import compute_dtype


def mish(x):
    return x * jnp.tanh(jax.nn.softplus(x))


def sinusoidal_embedding(t, dim: int):
    """``[B] -> [B, dim]``: ``[sin(t w), cos(t w)]`` with ``w_i = exp(-i log(1e4) / (dim/2 - 1))``."""
    half = dim // 2
    freqs = jnp.exp(jnp.arange(half, dtype=jnp.float32) * -(math.log(10000.0) / (half - 1)))
    arg = t.astype(jnp.float32)[:, None] * freqs[None]
    return jnp.concatenate([jnp.sin(arg), jnp.cos(arg)], axis=-1)


class Conv1d(nn.Module):
    """1-D convolution as one matmul over stacked shifted windows (``kernel [k, in, out]``, the
    layout of ``nn.Conv``). XLA's CPU convolution is ~20x slower than a matmul for the UNet's
    short, wide sequences (T <= 16, up to 1024 channels); GPUs and TPUs run the matmul well too."""

    features: int
    kernel_size: int
    stride: int = 1
    padding: int = 0
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        k = self.param("kernel", nn.initializers.lecun_normal(), (self.kernel_size, x.shape[-1], self.features))
        b = self.param("bias", nn.initializers.zeros, (self.features,))
        xp = jnp.pad(x.astype(self.dtype), ((0, 0), (self.padding, self.padding), (0, 0)))
        t_out = (xp.shape[1] - self.kernel_size) // self.stride + 1
        span = self.stride * (t_out - 1) + 1
        windows = jnp.stack([xp[:, i : i + span : self.stride] for i in range(self.kernel_size)], axis=2)
        return jnp.einsum("btkc,kco->bto", windows, k.astype(self.dtype)) + b.astype(self.dtype)


class ConvTranspose1d(nn.Module):
    """torch ``ConvTranspose1d(c, c, 4, stride=2, padding=1)``: doubles the length.

    ``kernel`` is stored ``[k, in, out]`` (torch's ``[in, out, k]`` transposed); the transposed
    convolution is a stride-1 convolution of the 2x-dilated input with the flipped kernel.
    """

    features: int
    kernel_size: int = 4
    stride: int = 2
    padding: int = 1
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        k = self.param("kernel", nn.initializers.lecun_normal(), (self.kernel_size, x.shape[-1], self.features))
        b = self.param("bias", nn.initializers.zeros, (self.features,))
        pad = self.kernel_size - 1 - self.padding
        y = jax.lax.conv_general_dilated(
            x.astype(self.dtype), jnp.flip(k, 0).astype(self.dtype), window_strides=(1,), padding=[(pad, pad)],
            lhs_dilation=(self.stride,), dimension_numbers=("NWC", "WIO", "NWC"))
        return y + b.astype(self.dtype)


class Conv1dBlock(nn.Module):
    features: int
    kernel_size: int
    n_groups: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        x = Conv1d(self.features, self.kernel_size, padding=self.kernel_size // 2, dtype=self.dtype, name="conv")(x)
        x = nn.GroupNorm(num_groups=self.n_groups, epsilon=1e-5, dtype=self.dtype, name="norm")(x)
        return mish(x)


class ConditionalResidualBlock1D(nn.Module):
    features: int
    kernel_size: int
    n_groups: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, cond):
        h = Conv1dBlock(self.features, self.kernel_size, self.n_groups, self.dtype, name="block0")(x)
        film = nn.Dense(2 * self.features, dtype=self.dtype, name="cond_encoder")(mish(cond))
        scale, bias = film[:, None, : self.features], film[:, None, self.features :]
        h = scale * h + bias
        h = Conv1dBlock(self.features, self.kernel_size, self.n_groups, self.dtype, name="block1")(h)
        if x.shape[-1] != self.features:
            x = Conv1d(self.features, 1, dtype=self.dtype, name="residual_conv")(x)
        return h + x


class ConditionalUnet1D(nn.Module):
    """``apply(params, sample[B, T, A], timestep (scalar or [B]), global_cond[B, G]) -> [B, T, A]``."""

    input_dim: int
    down_dims: tuple[int, ...] = (256, 512, 1024)
    kernel_size: int = 5
    n_groups: int = 8
    step_embed_dim: int = 256
    dtype: str = "float32"

    @nn.compact
    def __call__(self, sample, timestep, global_cond):
        dt = compute_dtype(self.dtype)
        b = sample.shape[0]
        t = jnp.broadcast_to(jnp.asarray(timestep), (b,))
        d = self.step_embed_dim
        emb = nn.Dense(4 * d, dtype=dt, name="step_fc1")(sinusoidal_embedding(t, d))
        emb = nn.Dense(d, dtype=dt, name="step_fc2")(mish(emb))
        cond = jnp.concatenate([emb, global_cond.astype(emb.dtype)], axis=-1)
        block = lambda f, name: ConditionalResidualBlock1D(f, self.kernel_size, self.n_groups, dt, name=name)  # noqa
        x, skips = sample.astype(dt), []
        levels = len(self.down_dims)
        for i, f in enumerate(self.down_dims):
            x = block(f, f"down{i}_res0")(x, cond)
            x = block(f, f"down{i}_res1")(x, cond)
            skips.append(x)
            if i < levels - 1:
                x = Conv1d(f, 3, stride=2, padding=1, dtype=dt, name=f"down{i}_downsample")(x)
        for i in range(2):
            x = block(self.down_dims[-1], f"mid{i}")(x, cond)
        for i, f in enumerate(reversed(self.down_dims[:-1])):
            x = jnp.concatenate([x, skips.pop()], axis=-1)
            x = block(f, f"up{i}_res0")(x, cond)
            x = block(f, f"up{i}_res1")(x, cond)
            if i < levels - 1:  # robomimic keeps the upsample on every up level
                x = ConvTranspose1d(f, dtype=dt, name=f"up{i}_upsample")(x)
        x = Conv1dBlock(self.down_dims[0], self.kernel_size, self.n_groups, dt, name="final_block")(x)
        x = Conv1d(self.input_dim, 1, dtype=dt, name="final_conv")(x)
        return x.astype(jnp.float32)
