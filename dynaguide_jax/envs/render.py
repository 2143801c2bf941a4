"""A small ray caster for scenes made of boxes, in pure JAX (jit/vmap-able, no Python control flow
on traced values).

Each pixel casts one ray from a pinhole camera against every box (the slab test in the box's own
frame, so boxes may be rotated), keeps the nearest hit and shades it flat per face: a Lambert term
from one directional light plus ambient light, or the box's own colour for emissive boxes (lamps).
Pixels that hit nothing get a vertical background gradient. The cost is ``pixels x boxes``; at
200x200 with ~30 boxes it is one fused XLA program of a few million lanes.

Conventions: world frame z up; a camera is ``Camera(origin, forward, right, up, tan_half_fov)``
with orthonormal axes; image row 0 is the top (``up`` side), column 0 the left (``-right``) side.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

# light direction (towards the light), ambient and diffuse weights: flat shading that keeps the
# three visible face orientations of a box distinguishable from the static camera
LIGHT_DIR = (0.35, -0.45, 0.82)
AMBIENT, DIFFUSE = 0.50, 0.55
BACKGROUND_TOP = (0.78, 0.80, 0.84)
BACKGROUND_BOTTOM = (0.42, 0.43, 0.46)
_NO_HIT = 1e9


class Camera(NamedTuple):
    """A pinhole camera: ``origin`` [3], unit ``forward`` / ``right`` / ``up`` [3], and
    ``tan_half_fov`` (tangent of half the vertical field of view; square images)."""
    origin: jax.Array
    forward: jax.Array
    right: jax.Array
    up: jax.Array
    tan_half_fov: jax.Array


class Boxes(NamedTuple):
    """``N`` oriented boxes: ``center`` [N, 3], ``half`` extents [N, 3], ``rot`` [N, 3, 3] (box frame
    -> world, columns are the box axes), ``color`` [N, 3] in 0..1, ``emissive`` [N] (1 = unshaded)."""
    center: jax.Array
    half: jax.Array
    rot: jax.Array
    color: jax.Array
    emissive: jax.Array


def _normalize(v):
    return v / jnp.linalg.norm(v, axis=-1, keepdims=True)


def look_at(eye, target, up_hint, fov_deg: float) -> Camera:
    """The camera at ``eye`` looking at ``target`` with vertical field of view ``fov_deg``; the image
    up direction is ``up_hint`` made orthogonal to the viewing direction (as pybullet's
    ``computeViewMatrix``)."""
    eye = jnp.asarray(eye, jnp.float32)
    forward = _normalize(jnp.asarray(target, jnp.float32) - eye)
    right = _normalize(jnp.cross(forward, jnp.asarray(up_hint, jnp.float32)))
    up = jnp.cross(right, forward)
    return Camera(eye, forward, right, up, jnp.tan(jnp.deg2rad(jnp.float32(fov_deg)) / 2))


def ray_directions(camera: Camera, size: int) -> jax.Array:
    """Unit ray directions ``[size * size, 3]`` through pixel centres, row-major from the top left."""
    coords = (jnp.arange(size, dtype=jnp.float32) + 0.5) / size * 2.0 - 1.0  # -1..1, left/top first
    v, u = jnp.meshgrid(-coords, coords, indexing="ij")  # v: +1 at the top row
    d = (camera.forward[None, None] + camera.tan_half_fov * (u[..., None] * camera.right + v[..., None] * camera.up))
    return _normalize(d.reshape(-1, 3))


def cast(boxes: Boxes, origin: jax.Array, dirs: jax.Array, near: float = 1e-3):
    """Nearest hit of each ray from ``origin`` [3] along ``dirs`` [P, 3]: ``(t [P], box index [P]
    int32, world normal [P, 3])``; ``t`` is ``_NO_HIT`` where a ray misses every box (a box the
    ray starts inside is not seen)."""
    o_local = jnp.einsum("nkj,nk->nj", boxes.rot, origin[None] - boxes.center)[None]  # R^T (o - c): [1, N, 3]
    d_local = jnp.einsum("pk,nkj->pnj", dirs, boxes.rot)  # R^T d: [P, N, 3]
    tiny = 1e-9
    d_safe = jnp.where(jnp.abs(d_local) < tiny, jnp.where(d_local < 0, -tiny, tiny), d_local)
    inv = 1.0 / d_safe
    t1 = (-boxes.half[None] - o_local) * inv
    t2 = (boxes.half[None] - o_local) * inv
    t_lo, t_hi = jnp.minimum(t1, t2), jnp.maximum(t1, t2)
    t_near, t_far = t_lo.max(-1), t_hi.min(-1)  # [P, N]
    hit = (t_far >= t_near) & (t_near > near)
    t = jnp.where(hit, t_near, _NO_HIT)
    idx = jnp.argmin(t, axis=-1)  # [P]
    t_best = jnp.take_along_axis(t, idx[:, None], axis=-1)[:, 0]
    lo_best = jnp.take_along_axis(t_lo, idx[:, None, None], axis=1)[:, 0]  # [P, 3]
    d_best = jnp.take_along_axis(d_local, idx[:, None, None], axis=1)[:, 0]
    axis = jnp.argmax(lo_best, axis=-1)  # the slab entered last is the face hit
    n_local = -jnp.sign(jnp.take_along_axis(d_best, axis[:, None], axis=-1)) * jax.nn.one_hot(axis, 3)
    normal = jnp.einsum("pkj,pj->pk", boxes.rot[idx], n_local)
    return t_best, idx.astype(jnp.int32), normal


def shade(boxes: Boxes, dirs, t, idx, normal) -> jax.Array:
    """uint8 colours ``[P, 3]`` of the hits of ``cast`` (background where nothing was hit)."""
    light = _normalize(jnp.asarray(LIGHT_DIR, jnp.float32))
    lambert = AMBIENT + DIFFUSE * jnp.clip(normal @ light, 0.0, 1.0)
    emissive = boxes.emissive[idx][:, None]
    color = boxes.color[idx] * jnp.where(emissive > 0, 1.0, lambert[:, None])
    up_amount = jnp.clip(dirs[:, 2:] * 2.0 + 0.5, 0.0, 1.0)
    background = (up_amount * jnp.asarray(BACKGROUND_TOP) + (1 - up_amount) * jnp.asarray(BACKGROUND_BOTTOM))
    rgb = jnp.where((t < _NO_HIT)[:, None], color, background)
    return jnp.clip(jnp.round(rgb * 255.0), 0, 255).astype(jnp.uint8)


def render(boxes: Boxes, camera: Camera, size: int) -> jax.Array:
    """``[size, size, 3]`` uint8 image of ``boxes`` seen by ``camera``."""
    return render_views(boxes, ((camera, size),))[0]


def render_views(boxes: Boxes, views) -> tuple:
    """Images ``[size, size, 3]`` uint8 of ``boxes`` from each ``(camera, size)`` of ``views``."""
    images = []
    for camera, size in views:
        dirs = ray_directions(camera, size)
        images.append(shade(boxes, dirs, *cast(boxes, camera.origin, dirs)).reshape(size, size, 3))
    return tuple(images)


def project(camera: Camera, points, size: int) -> jax.Array:
    """Pixel coordinates ``[..., 2]`` (row, column; fractional) of world ``points`` ``[..., 3]`` in a
    ``size`` x ``size`` image of ``camera`` (points behind the camera give meaningless values)."""
    rel = jnp.asarray(points, jnp.float32) - camera.origin
    depth = rel @ camera.forward
    u = (rel @ camera.right) / (depth * camera.tan_half_fov)
    v = (rel @ camera.up) / (depth * camera.tan_half_fov)
    return jnp.stack([(1 - v) / 2 * size - 0.5, (u + 1) / 2 * size - 0.5], axis=-1)
