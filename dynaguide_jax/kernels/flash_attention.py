"""Flash attention WITH attention-probability dropout: Pallas kernels, forward and backward.

torch's ``TransformerEncoderLayer`` (the original's dynamics model) trains with dropout on the
attention probabilities; fused library kernels either drop it or (cuDNN through JAX) take the seed
as a compile-time constant, which repeats one mask every step. Here the mask is a counter-based
hash of ``(seed, batch*head, query position, key position)`` computed inside the kernels, so the
forward pass never stores it and the backward pass regenerates it bit for bit; a new seed per step
gives a new mask. ``dropout_keep_mask`` is the same hash over whole arrays, for the plain-JAX
reference and the tests. ``batch_offset`` is the first row's index in the global batch, so a batch
split over devices (``shard_map``) draws the masks of the unsplit batch.

Forward: one program per (batch*head, query block) runs the online softmax over key blocks; the
softmax normaliser uses the undropped probabilities and the dropped, rescaled ones multiply V, so
the output is ``dropout(softmax(q k^T / sqrt(d))) v`` exactly as torch's. Backward (FlashAttention-2):
one kernel per key block accumulates dK and dV over query blocks, one per query block accumulates
dQ, both from the saved log-sum-exp; ``rowsum(dO * O)`` is the softmax-gradient correction with or
without dropout. Lengths are padded to the blocks and head dims to a power of two (Triton's tensor
sizes, blocks of at least 16 rows for its dots); padded keys are masked, padded query rows are sliced
off.

``interpret=True`` runs the kernels through Pallas's interpreter (CPUs, tests); ``False`` compiles
them for NVIDIA GPUs (Triton). TPUs are not supported (Mosaic's block-shape rules differ).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

_NEG = -1e30  # masked logits: finite, so exp(_NEG - m) is 0 without inf - inf


def _mix32(x):
    """murmur3's 32-bit finaliser: every input bit flips each output bit with probability ~1/2."""
    x = x ^ (x >> 16)
    x = x * jnp.uint32(0x85EBCA6B)
    x = x ^ (x >> 13)
    x = x * jnp.uint32(0xC2B2AE35)
    return x ^ (x >> 16)


def _threshold(rate: float) -> int:
    return min(int(round(rate * 2.0 ** 32)), 2 ** 32 - 1)


def _keep(seed, bh, rows, cols, t_k: int, rate: float):
    """Keep flags for query positions ``rows`` x key positions ``cols`` (broadcasting int32 arrays)."""
    stream = _mix32(seed ^ _mix32(bh.astype(jnp.uint32) * jnp.uint32(0x9E3779B9) + jnp.uint32(1)))
    index = rows.astype(jnp.uint32) * jnp.uint32(t_k) + cols.astype(jnp.uint32)
    return _mix32(stream ^ _mix32(index)) >= jnp.uint32(_threshold(rate))


def dropout_keep_mask(seed, batch: int, heads: int, t_q: int, t_k: int, rate: float, batch_offset=0) -> jax.Array:
    """The kernels' keep flags as one ``[batch, heads, t_q, t_k]`` bool array (seed: uint32 ``[1]``)."""
    bh = batch_offset * heads + jnp.arange(batch * heads, dtype=jnp.int32).reshape(batch, heads, 1, 1)
    rows = jnp.arange(t_q, dtype=jnp.int32)[:, None]
    cols = jnp.arange(t_k, dtype=jnp.int32)[None, :]
    return _keep(jnp.asarray(seed, jnp.uint32).reshape(()), bh, rows, cols, t_k, rate)


def reference(q, k, v, seed=None, rate: float = 0.0, batch_offset=0) -> jax.Array:
    """Plain-JAX ``dropout(softmax(q k^T / sqrt(d))) v`` over ``[B, T, heads, d]`` with the kernels' mask."""
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32) * q.shape[-1] ** -0.5
    probs = jax.nn.softmax(logits, axis=-1)
    if rate > 0.0:
        keep = dropout_keep_mask(seed, q.shape[0], q.shape[2], q.shape[1], k.shape[1], rate, batch_offset)
        probs = jnp.where(keep, probs / (1.0 - rate), 0.0)
    return jnp.einsum("bhqk,bkhd->bqhd", probs.astype(v.dtype), v, preferred_element_type=jnp.float32).astype(q.dtype)


def _dot(a, b, trans_a: bool = False, trans_b: bool = False):
    dims = (((0 if trans_a else 1,), (1 if trans_b else 0,)), ((), ()))
    return jax.lax.dot_general(a, b, dims, preferred_element_type=jnp.float32)


def _positions(block: int, index):
    """Positions ``[block]`` of block number ``index``."""
    return block * index + jax.lax.broadcasted_iota(jnp.int32, (block,), 0)


def _scores(q, k, rows, cols, t_k: int, scale: float):
    s = _dot(q, k, trans_b=True) * scale
    return jnp.where(cols[None, :] < t_k, s, _NEG)


def _dropout_scale(seed, bh, rows, cols, t_k: int, rate: float):
    """``keep / (1 - rate)`` for one tile (float32), or None without dropout."""
    if rate == 0.0:
        return None
    return jnp.where(_keep(seed, bh, rows[:, None], cols[None, :], t_k, rate), 1.0 / (1.0 - rate), 0.0)


def _times(x, z):
    return x if z is None else x * z


def _fwd_kernel(bh, seed, qi, q_ref, k_ref, v_ref, o_ref, lse_ref, *, scale, rate, t_k, block_k):
    q = q_ref[...]
    bq = q.shape[0]
    rows = _positions(bq, qi)

    def body(j, carry):
        m, total, acc = carry
        keys = pl.ds(pl.multiple_of(j * block_k, block_k), block_k)
        cols = _positions(block_k, j)
        s = _scores(q, k_ref[keys, :], rows, cols, t_k, scale)
        m_new = jnp.maximum(m, jnp.max(s, axis=-1))
        alpha = jnp.exp(m - m_new)
        p = jnp.exp(s - m_new[:, None])
        total = alpha * total + jnp.sum(p, axis=-1)
        v = v_ref[keys, :]
        pd = _times(p, _dropout_scale(seed, bh, rows, cols, t_k, rate))
        return m_new, total, alpha[:, None] * acc + _dot(pd.astype(v.dtype), v)

    init = (jnp.full((bq,), _NEG, jnp.float32), jnp.zeros((bq,), jnp.float32),
            jnp.zeros(o_ref.shape, jnp.float32))
    m, total, acc = jax.lax.fori_loop(0, k_ref.shape[0] // block_k, body, init)
    o_ref[...] = (acc / total[:, None]).astype(o_ref.dtype)
    lse_ref[...] = m + jnp.log(total)


def _dkdv_kernel(bh, seed, ki, q_ref, k_ref, v_ref, do_ref, lse_ref, delta_ref, dk_ref, dv_ref, *,
                 scale, rate, t_k, block_q):
    k, v = k_ref[...], v_ref[...]
    bk = k.shape[0]
    cols = _positions(bk, ki)

    def body(i, carry):
        dk, dv = carry
        queries = pl.ds(pl.multiple_of(i * block_q, block_q), block_q)
        rows = _positions(block_q, i)
        q, do = q_ref[queries, :], do_ref[queries, :]
        p = jnp.exp(_scores(q, k, rows, cols, t_k, scale) - lse_ref[queries][:, None])
        z = _dropout_scale(seed, bh, rows, cols, t_k, rate)
        dv = dv + _dot(_times(p, z).astype(do.dtype), do, trans_a=True)
        ds = p * (_times(_dot(do, v, trans_b=True), z) - delta_ref[queries][:, None])
        return dk + _dot(ds.astype(q.dtype), q, trans_a=True) * scale, dv

    zeros = jnp.zeros(dk_ref.shape, jnp.float32)
    dk, dv = jax.lax.fori_loop(0, q_ref.shape[0] // block_q, body, (zeros, zeros))
    dk_ref[...] = dk.astype(dk_ref.dtype)
    dv_ref[...] = dv.astype(dv_ref.dtype)


def _dq_kernel(bh, seed, qi, q_ref, k_ref, v_ref, do_ref, lse_ref, delta_ref, dq_ref, *, scale, rate, t_k,
               block_k):
    q, do = q_ref[...], do_ref[...]
    bq = q.shape[0]
    rows = _positions(bq, qi)
    lse, delta = lse_ref[...][:, None], delta_ref[...][:, None]

    def body(j, dq):
        keys = pl.ds(pl.multiple_of(j * block_k, block_k), block_k)
        cols = _positions(block_k, j)
        k = k_ref[keys, :]
        p = jnp.exp(_scores(q, k, rows, cols, t_k, scale) - lse)
        dpd = _times(_dot(do, v_ref[keys, :], trans_b=True), _dropout_scale(seed, bh, rows, cols, t_k, rate))
        return dq + _dot((p * (dpd - delta)).astype(k.dtype), k) * scale

    dq = jax.lax.fori_loop(0, k_ref.shape[0] // block_k, body, jnp.zeros(dq_ref.shape, jnp.float32))
    dq_ref[...] = dq.astype(dq_ref.dtype)


def _per_row(kernel, group: int):
    """The kernel over the ``group`` batch*head rows of one program: one row each when compiled (group 1,
    the leading block dim squeezed), a loop over rows when interpreted (fewer, larger programs: the
    interpreter's cost grows with the number of programs times the buffers' size)."""
    def run(seed_ref, *refs):
        first = seed_ref[1] + (pl.program_id(0) * group).astype(jnp.uint32)
        block = pl.program_id(1)  # read here: the interpreter resolves program ids outside loops only
        if group == 1:
            return kernel(first, seed_ref[0], block, *refs)

        def body(g, carry):
            kernel(first + g.astype(jnp.uint32), seed_ref[0], block, *(r.at[g] for r in refs))
            return carry

        jax.lax.fori_loop(0, group, body, 0)

    return run


def _round_up(n: int, m: int) -> int:
    return -(-n // m) * m


def _block(requested: int, length: int) -> int:
    """Rows per block: the requested power of two, at least 16 (Triton's smallest dot), at most needed."""
    return min(requested, max(16, pl.next_power_of_2(length)))


def _to_blocks(x, length: int, dp: int):
    """``[B, T, H, d]`` -> ``[B*H, length, dp]`` (zero padded)."""
    b, t, h, d = x.shape
    x = jnp.swapaxes(x, 1, 2).reshape(b * h, t, d)
    return jnp.pad(x, ((0, 0), (0, length - t), (0, dp - d)))


def _interpret_group(rows: int, most: int = 64) -> int:
    return max(g for g in range(1, min(rows, most) + 1) if rows % g == 0)


class _Plan:
    """Padded sizes, rows per program and block specs of one call; ``dims = (B, Tq, Tk, heads, d)``."""

    def __init__(self, dims: tuple, block_q: int, block_k: int, interpret: bool):
        self.b, self.t_q, self.t_k, self.h, self.d = dims
        self.bq, self.bk = _block(block_q, self.t_q), _block(block_k, self.t_k)
        self.lq, self.lk = _round_up(self.t_q, self.bq), _round_up(self.t_k, self.bk)
        self.dp = max(16, pl.next_power_of_2(self.d))  # Triton tensors: powers of two
        self.scale = self.d ** -0.5
        self.bh = self.b * self.h
        self.group = _interpret_group(self.bh) if interpret else 1

    @property
    def _lead(self):
        return pl.squeezed if self.group == 1 else self.group

    def rows(self, block: int):
        return pl.BlockSpec((self._lead, block, self.dp), lambda b, i: (b, i, 0))

    def whole(self, length: int):
        return pl.BlockSpec((self._lead, length, self.dp), lambda b, i: (b, 0, 0))

    def vec(self, length: int, block: int | None = None):
        if block is None:
            return pl.BlockSpec((self._lead, length), lambda b, i: (b, 0))
        return pl.BlockSpec((self._lead, block), lambda b, i: (b, i))

    def grid(self, length: int, block: int) -> tuple:
        return self.bh // self.group, length // block

    seed = pl.BlockSpec((2,), lambda b, i: (0,))  # [seed, index of the first batch*head row] (uint32)


def _forward(q, k, v, seed, rate, dims, block_q, block_k, interpret):
    plan = _Plan(dims, block_q, block_k, interpret)
    qb, kb, vb = _to_blocks(q, plan.lq, plan.dp), _to_blocks(k, plan.lk, plan.dp), _to_blocks(v, plan.lk, plan.dp)
    o, lse = pl.pallas_call(
        _per_row(functools.partial(_fwd_kernel, scale=plan.scale, rate=rate, t_k=plan.t_k, block_k=plan.bk),
                 plan.group),
        grid=plan.grid(plan.lq, plan.bq),
        in_specs=[plan.seed, plan.rows(plan.bq), plan.whole(plan.lk), plan.whole(plan.lk)],
        out_specs=[plan.rows(plan.bq), plan.vec(plan.lq, plan.bq)],
        out_shape=[jax.ShapeDtypeStruct(qb.shape, q.dtype), jax.ShapeDtypeStruct((plan.bh, plan.lq), jnp.float32)],
        interpret=interpret,
    )(seed, qb, kb, vb)
    out = o[:, :plan.t_q, :plan.d].reshape(plan.b, plan.h, plan.t_q, plan.d)
    return jnp.swapaxes(out, 1, 2), (qb, kb, vb, o, lse)


def _backward(seed, rate, dims, block_q, block_k, interpret, blocks, g):
    plan = _Plan(dims, block_q, block_k, interpret)
    qb, kb, vb, o, lse = blocks
    dob = _to_blocks(g.astype(qb.dtype), plan.lq, plan.dp)
    delta = jnp.sum(dob.astype(jnp.float32) * o.astype(jnp.float32), axis=-1)
    common = dict(scale=plan.scale, rate=rate, t_k=plan.t_k)
    dk, dv = pl.pallas_call(
        _per_row(functools.partial(_dkdv_kernel, block_q=plan.bq, **common), plan.group),
        grid=plan.grid(plan.lk, plan.bk),
        in_specs=[plan.seed, plan.whole(plan.lq), plan.rows(plan.bk), plan.rows(plan.bk), plan.whole(plan.lq),
                  plan.vec(plan.lq), plan.vec(plan.lq)],
        out_specs=[plan.rows(plan.bk), plan.rows(plan.bk)],
        out_shape=[jax.ShapeDtypeStruct(kb.shape, kb.dtype), jax.ShapeDtypeStruct(vb.shape, vb.dtype)],
        interpret=interpret,
    )(seed, qb, kb, vb, dob, lse, delta)
    dq = pl.pallas_call(
        _per_row(functools.partial(_dq_kernel, block_k=plan.bk, **common), plan.group),
        grid=plan.grid(plan.lq, plan.bq),
        in_specs=[plan.seed, plan.rows(plan.bq), plan.whole(plan.lk), plan.whole(plan.lk), plan.rows(plan.bq),
                  plan.vec(plan.lq, plan.bq), plan.vec(plan.lq, plan.bq)],
        out_specs=plan.rows(plan.bq),
        out_shape=jax.ShapeDtypeStruct(qb.shape, qb.dtype),
        interpret=interpret,
    )(seed, qb, kb, vb, dob, lse, delta)

    def unblock(x, t):
        return jnp.swapaxes(x[:, :t, :plan.d].reshape(plan.b, plan.h, t, plan.d), 1, 2)

    return unblock(dq, plan.t_q), unblock(dk, plan.t_k), unblock(dv, plan.t_k)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6, 7, 8))
def _flash(q, k, v, seed, rate, dims, block_q, block_k, interpret):
    return _forward(q, k, v, seed, rate, dims, block_q, block_k, interpret)[0]


def _flash_fwd(q, k, v, seed, rate, dims, block_q, block_k, interpret):
    out, blocks = _forward(q, k, v, seed, rate, dims, block_q, block_k, interpret)
    return out, (seed, blocks)  # the padded blocks only: q, k, v are not kept twice


def _flash_bwd(rate, dims, block_q, block_k, interpret, saved, g):
    seed, blocks = saved
    return (*_backward(seed, rate, dims, block_q, block_k, interpret, blocks, g), None)


_flash.defvjp(_flash_fwd, _flash_bwd)


def flash_attention(q, k, v, *, dropout_rate: float = 0.0, seed=None, batch_offset=0, block_q: int = 64,
                    block_k: int = 64, interpret: bool = False) -> jax.Array:
    """``dropout(softmax(q k^T / sqrt(d))) v`` for q ``[B, Tq, heads, d]``, k / v ``[B, Tk, heads, d]``.

    ``seed`` (uint32 ``[1]``, e.g. ``jax.random.bits(key, (1,), jnp.uint32)``) picks the dropout mask;
    it is needed when ``dropout_rate > 0`` and ignored otherwise; ``batch_offset`` (int or int32 scalar):
    the global batch index of ``q``'s first row, for a batch split over devices. Matmuls run in the
    inputs' dtype and accumulate in float32; the softmax is float32. ``block_q`` / ``block_k`` are rows per program and
    per inner step (powers of two, at least 16; shorter sequences use one block). Interpreted, each
    program handles several batch*head rows (the interpreter's cost grows with the number of programs).
    """
    if q.ndim != 4 or k.shape != v.shape or k.ndim != 4 or (q.shape[0], q.shape[2:]) != (k.shape[0], k.shape[2:]):
        raise ValueError(f"q must be [B, Tq, heads, d] and k, v [B, Tk, heads, d] with the same B, heads, d; "
                         f"got {q.shape}, {k.shape}, {v.shape}")
    if not 0.0 <= dropout_rate < 1.0:
        raise ValueError(f"dropout_rate must be in [0, 1), got {dropout_rate!r}")
    for name, block in (("block_q", block_q), ("block_k", block_k)):
        if block < 16 or block & (block - 1):
            raise ValueError(f"{name} must be a power of two >= 16, got {block}")
    if dropout_rate > 0.0 and seed is None:
        raise ValueError("dropout_rate > 0 needs a seed (uint32 [1])")
    seed = jnp.zeros((1,), jnp.uint32) if seed is None else jnp.asarray(seed, jnp.uint32).reshape(1)
    first_row = (jnp.asarray(batch_offset, jnp.int32) * q.shape[2]).astype(jnp.uint32).reshape(1)
    dims = (q.shape[0], q.shape[1], k.shape[1], q.shape[2], q.shape[3])
    return _flash(q, k, v, jnp.concatenate([seed, first_row]), float(dropout_rate), dims, block_q, block_k,
                  interpret)
