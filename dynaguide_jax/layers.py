"""Small building blocks shared by the ViT encoder and the dynamics transformer."""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from dynaguide_jax.kernels.flash_attention import flash_attention

ATTENTION_IMPLEMENTATIONS = ("xla", "cudnn", "pallas")


def check_attention(implementation: str) -> str:
    if implementation not in ATTENTION_IMPLEMENTATIONS:
        raise ValueError(f"attention must be one of {ATTENTION_IMPLEMENTATIONS}, got {implementation!r}")
    return implementation


def attend(q, k, v, *, dropout_rate: float = 0.0, dropout_rng=None, implementation: str = "xla") -> jax.Array:
    """Softmax attention over ``[B, T, heads, head_dim]`` q/k/v with scale ``1/sqrt(head_dim)``.

    ``implementation="xla"`` runs everywhere: ``jax.nn.dot_product_attention`` without dropout, the
    explicit softmax with attention-probability dropout (torch's MultiheadAttention in training).
    ``"cudnn"`` asks for cuDNN's fused (flash) kernel, forward and backward, on NVIDIA GPUs in
    bf16/fp16, without dropout only. ``"pallas"`` is this project's flash kernel
    (``kernels.flash_attention``), which keeps the dropout (a fresh mask per ``dropout_rng``), in any
    dtype: compiled on NVIDIA GPUs (Triton), run by Pallas's interpreter on CPUs (no Pallas compiler
    there: slow, for tests); not on TPUs.
    """
    if check_attention(implementation) == "pallas":
        rate = 0.0 if dropout_rng is None else dropout_rate
        seed = jnp.zeros((1,), jnp.uint32) if rate == 0.0 else jax.random.bits(dropout_rng, (1,), jnp.uint32)
        return _pallas_attention(q, k, v, rate, seed)
    if dropout_rng is None or dropout_rate == 0.0:
        if implementation == "cudnn" and q.dtype not in (jnp.bfloat16, jnp.float16):
            raise ValueError(f"attention='cudnn' needs bfloat16 or float16 compute, got {q.dtype}; use 'xla'")
        try:
            return jax.nn.dot_product_attention(q, k, v, implementation=implementation)
        except RuntimeError as e:
            if implementation != "cudnn":
                raise
            raise RuntimeError(f"attention='cudnn' needs an NVIDIA GPU with cuDNN (platform: "
                               f"{jax.default_backend()}): {e}; use attention='xla'") from e
    scale = q.shape[-1] ** -0.5
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k).astype(jnp.float32) * scale
    probs = jax.nn.softmax(logits, axis=-1)
    keep = jax.random.bernoulli(dropout_rng, 1.0 - dropout_rate, probs.shape)
    probs = jnp.where(keep, probs / (1.0 - dropout_rate), 0.0).astype(v.dtype)
    return jnp.einsum("bhqk,bkhd->bqhd", probs, v)


def pallas_interpreted() -> bool:
    """Whether ``attention="pallas"`` runs interpreted here (a CPU backend) rather than compiled (an NVIDIA GPU);
    other backends raise."""
    backend = jax.default_backend()
    if backend not in ("cpu", "gpu"):
        raise ValueError(f"attention='pallas' runs on NVIDIA GPUs (Triton) and, interpreted, on CPUs; this backend "
                         f"is {backend!r}: use attention='xla'")
    return backend == "cpu"


def _pallas_attention(q, k, v, rate: float, seed):
    """The Pallas kernel; under a mesh (``jax.set_mesh``, as the dynamics trainer sets it) the batch is split
    over all its axes with ``shard_map`` (XLA cannot partition a Pallas call itself), each shard drawing the
    unsplit batch's dropout masks."""
    interpret = pallas_interpreted()
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or mesh.size == 1:
        return flash_attention(q, k, v, dropout_rate=rate, seed=seed, interpret=interpret)
    if q.shape[0] % mesh.size:
        raise ValueError(f"attention='pallas' splits the batch over the mesh's {mesh.size} devices: batch "
                         f"{q.shape[0]} is not divisible by it")
    axes = tuple(mesh.axis_names)

    def local(q, k, v, seed):
        offset = jax.lax.axis_index(axes) * q.shape[0]
        return flash_attention(q, k, v, dropout_rate=rate, seed=seed, batch_offset=offset, interpret=interpret)

    rows, whole = jax.sharding.PartitionSpec(axes), jax.sharding.PartitionSpec()
    return jax.shard_map(local, in_specs=(rows, rows, rows, whole), out_specs=rows, check_vma=False)(q, k, v, seed)


class SelfAttention(nn.Module):
    """Multi-head self-attention with separate q/k/v/out projections (torch layout friendly)."""

    num_heads: int
    dtype: jnp.dtype = jnp.float32
    dropout_rate: float = 0.0
    implementation: str = "xla"  # see ``attend``

    project: bool = True  # False: return (heads concatenated, out kernel, out bias) for a fused epilogue

    @nn.compact
    def __call__(self, x, deterministic: bool = True):
        d = x.shape[-1]
        if d % self.num_heads:
            raise ValueError(f"width {d} is not divisible by num_heads={self.num_heads}")
        hd = d // self.num_heads
        dense = lambda name: nn.Dense(d, dtype=self.dtype, name=name)  # noqa: E731
        split = lambda t: t.reshape(*t.shape[:-1], self.num_heads, hd)  # noqa: E731
        q, k, v = (split(dense(n)(x)) for n in ("query", "key", "value"))
        rng = None
        if not deterministic and self.dropout_rate > 0.0:
            rng = self.make_rng("dropout")
        out = attend(q, k, v, dropout_rate=self.dropout_rate, dropout_rng=rng, implementation=self.implementation)
        out = out.reshape(*x.shape[:-1], d)
        if not self.project:
            return (out, *DenseParams(d, name="out")(d))
        return dense("out")(out)


class DenseParams(nn.Module):
    """``nn.Dense``'s parameters alone (same names, shapes, initialisers, hence the same initial values):
    ``(kernel [in, features], bias [features])`` for a kernel that applies them itself."""

    features: int

    @nn.compact
    def __call__(self, in_features: int):
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (in_features, self.features))
        return kernel, self.param("bias", nn.initializers.zeros_init(), (self.features,))


class LayerNormParams(nn.Module):
    """``nn.LayerNorm``'s parameters alone: ``(scale [features], bias [features])``."""

    @nn.compact
    def __call__(self, features: int):
        return (self.param("scale", nn.initializers.ones_init(), (features,)),
                self.param("bias", nn.initializers.zeros_init(), (features,)))


def compute_dtype(name: str) -> jnp.dtype:
    """Map a config string ('float32', 'bfloat16', 'float16') to a dtype, with a clear error."""
    try:
        return {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}[name]
    except KeyError:
        raise ValueError(f"dtype must be float32, bfloat16 or float16, got {name!r}") from None
