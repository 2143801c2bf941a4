"""Goal sets of an experiment's targets, built from one pool of per-behaviour goal files.

The pool (``export_goal_pool``) holds every goal segment of the validation play that survives the
original's 70 % draw, in its seeded order, with the scene state of the goal frame. A target takes
the first ``goals_per_behaviour`` of each of its positive (negative) behaviours, as the original's
``<behaviour>_20.hdf5`` / ``*_lift_80`` / combined files hold that many, then ``max_examples`` of the
positives. ``underspecify`` re-draws everything in a goal frame but the target's part. The arrays of
all targets are padded to one size with masks (``stack_target_goals``) so a method compiles once.
"""
from __future__ import annotations

import json
import os

import numpy as np

import jax
import jax.numpy as jnp

from dynaguide_jax.demo.train import resize_frames
from dynaguide_jax.envs import tabletop
from dynaguide_jax.envs.expert import loc_target
from dynaguide_jax.envs.reset_states import ADJUSTABLE_PARTS, BLOCK_XYZ
from dynaguide_jax.guidance import encode_cameras, goals_from_trajectory_ends
from experiments.spec import GOAL_BEHAVIOURS, Experiment, Target

POOL_CAMERA = "observation/rgb_static"
POOL_EXTRA = ("observation/scene_obs",)
# the scene_obs entries a behaviour's goal must keep (its part; the lights follow their controls)
KEPT_PARTS = {"button": (2, 5), "switch": (3, 4), "drawer": (1,), "door": (0,)}


def export_goal_pool(rlds: str, out_dir: str, seed: int, keep_fraction: float, log=print) -> dict:
    """Every behaviour's goal segments (no cap) into ``out_dir/goals_<behaviour>.npz``; behaviours the
    validation split lacks are taken from the training split. Writes ``pool.json`` last (the marker)."""
    from dynaguide_jax.data.rlds import export_goal_sets_with_fallback

    have, source = export_goal_sets_with_fallback(rlds, out_dir, GOAL_BEHAVIOURS, image_field=POOL_CAMERA, seed=seed,
                                                  keep_fraction=keep_fraction, max_per_behaviour=None,
                                                  extra_fields=POOL_EXTRA)
    elsewhere = [b for b in have if source.get(b) != "validation"]
    if elsewhere:
        log(f"  goal pool: no validation segment of {', '.join(elsewhere)}; taken from the training split where it "
            "has them")
    record = {"goals": have, "split": source, "seed": seed, "keep_fraction": keep_fraction}
    with open(os.path.join(out_dir, "pool.json"), "w") as f:
        json.dump(record, f, indent=2)
    return record


def goal_file(pool_dir: str, behaviour: str, ood: bool = False) -> str:
    """``goals_<behaviour>.npz`` (``goals_ood_<behaviour>.npz``: a low-quality set, the original's OOD_Goal files)."""
    return os.path.join(pool_dir, f"goals_{'ood_' if ood else ''}{behaviour}.npz")


def read_pool(pool_dir: str, behaviour: str, count: int, ood: bool = False) -> dict:
    """The first ``count`` goals of ``behaviour`` (fewer when the file has fewer)."""
    path = goal_file(pool_dir, behaviour, ood)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no goal file for behaviour {behaviour!r} ({path}): on the built-in world, generate "
                                "more play (--play-steps / --play-streams) or leave out the targets that need it; on "
                                "CALVIN, write it with `dynaguide data goals`")
    with np.load(path) as g:
        missing = [k for k in ("images", "proprio", "actions") if k not in g.files]
        if missing:
            raise ValueError(f"{path}: no {missing} (a goal file of `dynaguide data goals` holds images, proprio, "
                             "actions)")
        return {k: g[k][:count] for k in ("images", "proprio", "actions", "scene_obs") if k in g.files}


def _concat(parts: list[dict]) -> dict:
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def underspecify(goals: dict, behaviour: str, key: jax.Array, env: tabletop.TabletopConfig) -> dict:
    """The goal frames re-rendered with every part but ``behaviour``'s own (and, for a block goal,
    every block but that one) at a random state: the other joints uniform in their ranges, the
    green light on or off, the blocks at a fresh random layout. The robot stays where it was."""
    obj = behaviour.split("_")[0]
    keep = list(KEPT_PARTS.get(obj, ()))
    if obj in BLOCK_XYZ:
        keep += list(range(BLOCK_XYZ[obj], BLOCK_XYZ[obj] + 6))
    keep_mask = np.zeros(24, bool)
    keep_mask[keep] = True

    @jax.jit
    def redraw(k, robot, scene):
        k_world, k_parts = jax.random.split(k)
        other = tabletop.scene_obs(tabletop.reset(k_world, env))
        u = jax.random.uniform(k_parts, (4,))
        for j, (idx, (lo, hi)) in enumerate(ADJUSTABLE_PARTS.values()):
            value = jnp.round(u[j]) if idx == 5 else lo + (hi - lo) * u[j]
            other = other.at[idx].set(value)
        new_scene = jnp.where(jnp.asarray(keep_mask), scene, other)
        state = tabletop.reset(k_world, env, robot_obs=robot, scene_obs=new_scene)
        return tabletop.observe(state, env)["rgb_static"], new_scene

    keys = jax.random.split(key, len(goals["images"]))
    images, scenes = jax.vmap(redraw)(keys, jnp.asarray(goals["proprio"], jnp.float32),
                                      jnp.asarray(goals["scene_obs"], jnp.float32))
    return {**goals, "images": np.asarray(images), "scene_obs": np.asarray(scenes)}


def _side(behaviours, target: Target, pool_dir: str, quality: str, env, seed: int) -> dict:
    """``env``: the built-in world (underspecified goals are re-drawn in it), or None (CALVIN: they are
    read from ``goals_ood_<behaviour>.npz``)."""
    parts = []
    for b in behaviours:
        ood = quality == "underspecified" and env is None
        g = read_pool(pool_dir, b, target.goals_per_behaviour, ood=ood)
        if quality == "underspecified" and env is not None:
            if "scene_obs" not in g:
                raise ValueError(f"{goal_file(pool_dir, b)} has no scene_obs: underspecified goals re-draw the scene")
            key = jax.random.fold_in(jax.random.key(seed + 424242), GOAL_BEHAVIOURS.index(b))
            g = underspecify(g, b, key, env)
        parts.append({k: v for k, v in g.items() if k != "scene_obs"})
    return _concat(parts)


def itps_target(target: Target, env: tabletop.TabletopConfig | None) -> np.ndarray:
    """``[3]`` the target's position-guidance target, the original's ``loc_target``: in the built-in world
    (``env`` given) its part's location there (``envs.expert.loc_target``), on CALVIN (None) the value the
    target carries from the original's experiment JSON."""
    if env is not None:
        return loc_target(target.success[0])
    if target.loc_target is None:
        raise ValueError(f"target {target.name!r}: ITPS on CALVIN needs its loc_target (the original's experiment "
                         "JSON gives it)")
    return np.asarray(target.loc_target, np.float32)


def target_goals(target: Target, pool_dir: str, models, encoder_size: int, gc_goal_size: int | None, quality: str,
                 env: tabletop.TabletopConfig | None, seed: int) -> dict:
    """One target's goal arrays (unpadded): ``gc_images [K, g, g, 3]``, ``xyz [3]`` (``itps_target``, for
    targets with an ``itps_scale``),
    ``images``, ``pos_n`` / ``neg_n`` (set sizes) and, when ``models.dynamics`` is given, ``pos_dyn [K, F]``
    (the dynamics model's prediction at the goal trajectories' ends), ``pos_features [K, P, D]`` (encoder
    patches, GPC) and, with negatives, ``neg_dyn [J, F]``."""
    out = {}
    for side, names in (("pos", target.positives), ("neg", target.negatives)):
        if not names:
            continue
        g = _side(names, target, pool_dir, quality, env, seed)
        if side == "pos" and target.max_examples is not None:
            g = {k: v[:target.max_examples] for k, v in g.items()}
        out[f"{side}_n"] = len(g["images"])
        if models.dynamics is not None:
            patches = encode_cameras(models.encoder, models.encoder_params, jnp.asarray(g["images"])[:, None],
                                     encoder_size)
            out[f"{side}_dyn"] = np.asarray(goals_from_trajectory_ends(
                models.dynamics, models.dynamics_params, patches, jnp.asarray(g["proprio"], jnp.float32),
                jnp.asarray(g["actions"])))
            if side == "pos":
                out["pos_features"] = np.asarray(patches)
        if side == "pos":
            out["gc_images"] = resize_frames(g["images"], gc_goal_size or g["images"].shape[-2])
            out["images"] = g["images"]
    if target.itps_scale is not None:
        out["xyz"] = itps_target(target, env)
    return out


def stack_target_goals(per_target: list[dict]) -> dict:
    """Pad every target's sets to the largest and stack: ``{name: [T, K, ...]}`` plus ``pos_mask`` /
    ``neg_mask [T, K]`` (padding repeats a real row, so it stays finite, and is masked out)."""
    out = {}
    for side, keys in (("pos", ("pos_dyn", "pos_features", "gc_images")), ("neg", ("neg_dyn",))):
        present = [f"{side}_n" in g for g in per_target]
        if not any(present):
            continue
        if not all(present):
            raise ValueError(f"every target or none must have {side}itive goals")
        size = max(g[f"{side}_n"] for g in per_target)
        out[f"{side}_mask"] = np.stack([np.arange(size) < g[f"{side}_n"] for g in per_target])
        for k in keys:
            if k in per_target[0]:
                out[k] = np.stack([np.concatenate([g[k], np.repeat(g[k][:1], size - len(g[k]), 0)])
                                   for g in per_target])
    if "neg_dyn" not in out:
        out.pop("neg_mask", None)
    with_xyz = ["xyz" in g for g in per_target]
    if any(with_xyz) and not all(with_xyz):
        raise ValueError("every target or none must have an ITPS target (itps_scale)")
    if any(with_xyz):
        out["xyz"] = np.stack([g["xyz"] for g in per_target])
    return out


def goal_counts(experiment: Experiment, per_target: list[dict]) -> dict:
    return {t.name: {"positive": int(g.get("pos_n", 0)), "negative": int(g.get("neg_n", 0))}
            for t, g in zip(experiment.targets, per_target)}
