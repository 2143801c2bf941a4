"""Episode start and end rules of the CALVIN experiments: reset states, the termination test, and
the experiment-setup JSONs that fix parts of the reset.

Follows the original (MaxDu17/DynaGuide ``core/calvin_utils.py`` and the rollout loop of
``run_dynaguide.py``):

- Reset (``generate_reset_state``): each adjustable articulated part (sliding door, drawer, switch,
  green light) starts at one END of its range, drawn with probability 1/2, unless the experiment's
  ``env_setup`` fixes its value (``{"green_light": 0}``, ``{"sliding_door": 0.28}``). The button and
  the lightbulb are written as 0; in CALVIN the lightbulb then follows the switch on the first
  simulator step. Block poses are not part of it (the simulator shuffles them).
- Termination (``check_state_difference``, ``for_display=False``): an episode ends when an
  adjustable part is on the other side of its range's midpoint than at the start, or when the end
  effector is within 6 cm of a block whose xy position moved more than 1 mm from the start.
  The rollout loop tests the observation the policy just acted on (``obs``, not ``next_obs``) and
  records observations up to and including it, so a rollout that ends at step ``t`` keeps ``t + 1``
  observations (see ``recorded_length``).

Range limits are the simulator's, hard-coded by the original (``[0, .27]``, ``[0, .16]``,
``[0, .09]``, ``[0, 1]``); "midpoint" is the original's ``(high - low) / 2``, the true midpoint
because every range starts at 0.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Mapping

import numpy as np

import jax
import jax.numpy as jnp

# scene_obs layout: [0] sliding door, [1] drawer, [2] button, [3] switch, [4] lightbulb, [5] green light,
# [6:9] red xyz, [9:12] red euler, [12:15] blue xyz, [15:18] blue euler, [18:21] pink xyz, [21:24] pink euler
SCENE_PARTS = ("sliding_door", "drawer", "button", "switch", "lightbulb", "green_light")
SCENE_DIM, ROBOT_DIM = 24, 15
# the entries of each layout that are angles (rad): robot_obs [3:6] tcp euler; scene_obs the blocks' euler angles
ROBOT_ANGLES = (3, 4, 5)
SCENE_ANGLES = (9, 10, 11, 15, 16, 17, 21, 22, 23)
# the parts a reset sets, in the original's order: name -> (scene_obs index, (low, high))
ADJUSTABLE_PARTS = {"sliding_door": (0, (0.0, 0.27)), "drawer": (1, (0.0, 0.16)), "switch": (3, (0.0, 0.09)),
                    "green_light": (5, (0.0, 1.0))}
ADJUSTABLE_INDEX = tuple(i for i, _ in ADJUSTABLE_PARTS.values())
ADJUSTABLE_MIDPOINT = tuple((hi - lo) / 2 for _, (lo, hi) in ADJUSTABLE_PARTS.values())
BLOCK_XYZ = {"red": 6, "blue": 12, "pink": 18}  # first scene_obs index of each block's position
# env_setup keys the reset sampler does not read; see ExperimentSetup.cubes_table_only
PASSIVE_SETUP_KEYS = ("cubes_table_only",)
TERMINATION_REACH = 0.06  # m, end effector to block centre
TERMINATION_BLOCK_MOVE = 0.001  # m, block xy displacement from the start


def check_env_setup(env_setup: Mapping, source: str = "env_setup") -> dict[str, float]:
    """The articulated values an ``env_setup`` fixes, ``{part: float}``, after checking it.

    Accepts the original's keys: the adjustable parts (numbers; ``green_light`` 0 or 1, the only
    states CALVIN's light accepts) and ``cubes_table_only`` (bool, not read here). Raises
    ``ValueError``/``TypeError`` naming ``source`` and the offending key otherwise.
    """
    if not isinstance(env_setup, Mapping):
        raise TypeError(f"{source}: expected a mapping of part name -> value, got {type(env_setup).__name__}")
    fixed = {}
    for name, value in env_setup.items():
        if name in PASSIVE_SETUP_KEYS:
            if not isinstance(value, bool):
                raise TypeError(f"{source}[{name!r}]: expected true/false, got {value!r}")
            continue
        if name not in ADJUSTABLE_PARTS:
            known = ", ".join((*ADJUSTABLE_PARTS, *PASSIVE_SETUP_KEYS))
            raise ValueError(f"{source}: unknown part {name!r}; expected one of {known}")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise TypeError(f"{source}[{name!r}]: expected a finite number, got {value!r}")
        if name == "green_light" and value not in (0, 1):
            raise ValueError(f"{source}['green_light']: expected 0 (off) or 1 (on), got {value!r}")
        fixed[name] = float(value)
    return fixed


def sample_scene_setup(key: jax.Array, env_setup: Mapping | None = None) -> jax.Array:
    """The articulated part of a reset ``scene_obs``: ``[6]`` (door, drawer, button, switch,
    lightbulb, green light), like the original's ``generate_reset_state(sim_hold=env_setup)[0][:6]``.

    Every adjustable part not fixed by ``env_setup`` is at its low or high limit with probability
    1/2 each; button and lightbulb are 0. ``env_setup`` is static (Python values, checked here);
    ``key`` may be traced, so ``jax.vmap(lambda k: sample_scene_setup(k, setup))(keys)`` gives a batch.
    """
    fixed = check_env_setup({} if env_setup is None else env_setup)
    upper = jax.random.bernoulli(key, 0.5, (len(ADJUSTABLE_PARTS),))
    parts = jnp.zeros((len(SCENE_PARTS),), jnp.float32)
    for j, (name, (idx, (lo, hi))) in enumerate(ADJUSTABLE_PARTS.items()):
        value = fixed[name] if name in fixed else jnp.where(upper[j], hi, lo)
        parts = parts.at[idx].set(value)
    return parts


def articulated_binaries(scene_0: jax.Array) -> jax.Array:
    """``[..., 4]`` bool: is each adjustable part past its midpoint in ``scene_0`` ``[..., >=6]``.

    The original gets these from ``generate_reset_state`` (the requested values) and checks them
    against the same midpoints (``articulated_binaries_from_start_state``), so they agree whenever
    the simulator realises the requested articulation, which CALVIN's joint resets do exactly.
    """
    scene_0 = jnp.asarray(scene_0)
    return scene_0[..., ADJUSTABLE_INDEX] > jnp.asarray(ADJUSTABLE_MIDPOINT, scene_0.dtype)


def episode_done(scene_t: jax.Array, robot_t: jax.Array, scene_0: jax.Array,
                 binaries: jax.Array | None = None) -> jax.Array:
    """The original's ``check_state_difference(scene_0, scene_t, robot_t[:3], binaries)``: bool ``[...]``.

    ``scene_t``/``scene_0`` ``[..., 24]``, ``robot_t`` ``[..., >=3]`` (tcp xyz first), broadcasting over
    leading axes (one step inside a ``lax.scan``, or a whole ``[T, 24]`` trajectory at once).
    ``binaries`` ``[..., 4]`` defaults to ``articulated_binaries(scene_0)``. True when an adjustable
    part crossed its midpoint (strictly) away from its start side, or the tcp is within 6 cm of a
    block whose xy moved more than 1 mm. The original's ``for_display`` variant is not ported.
    """
    scene_t, robot_t, scene_0 = jnp.asarray(scene_t), jnp.asarray(robot_t), jnp.asarray(scene_0)
    if binaries is None:
        binaries = articulated_binaries(scene_0)
    x = scene_t[..., ADJUSTABLE_INDEX]
    mid = jnp.asarray(ADJUSTABLE_MIDPOINT, x.dtype)
    crossed = jnp.where(binaries, x < mid, x > mid).any(-1)
    tcp = robot_t[..., :3]
    for p in BLOCK_XYZ.values():
        near = jnp.linalg.norm(tcp - scene_t[..., p:p + 3], axis=-1) < TERMINATION_REACH
        moved = jnp.linalg.norm(scene_t[..., p:p + 2] - scene_0[..., p:p + 2], axis=-1) > TERMINATION_BLOCK_MOVE
        crossed = crossed | (near & moved)
    return crossed


def recorded_length(done: jax.Array) -> jax.Array:
    """Observations the original's loop keeps for per-step done flags ``[..., T]``: the first done
    step + 1 (that observation is recorded, then the loop breaks), or ``T`` when none is done."""
    done = jnp.asarray(done, bool)
    return jnp.where(done.any(-1), jnp.argmax(done, axis=-1) + 1, done.shape[-1])


def sample_reset_pose(key: jax.Array, poses: jax.Array) -> jax.Array:
    """One robot reset pose ``[15]`` drawn uniformly from ``poses`` ``[N, 15]`` (the original's
    ``random.choice(initial_positions)``)."""
    poses = jnp.asarray(poses)
    return poses[jax.random.randint(key, (), 0, poses.shape[0])]


def _read_json(path: str, what: str):
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} file not found: {path}")
    with open(path) as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{what} {path}: not valid JSON ({e})") from None


def load_reset_poses(path: str) -> np.ndarray:
    """``[N, 15]`` float64 robot_obs reset poses from the original's JSON, ``{"robot_states": [[15 floats], ...]}``."""
    data = _read_json(path, "reset poses")
    if not isinstance(data, dict) or "robot_states" not in data:
        raise ValueError(f"reset poses file {path}: expected an object with a 'robot_states' list")
    try:
        poses = np.asarray(data["robot_states"], dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"reset poses file {path}: 'robot_states' must be a list of {ROBOT_DIM}-number lists") \
            from None
    if poses.ndim != 2 or poses.shape[1] != ROBOT_DIM or len(poses) == 0:
        raise ValueError(f"reset poses file {path}: 'robot_states' must be a non-empty [N, {ROBOT_DIM}] list, "
                         f"got shape {poses.shape}")
    return poses


_CONFIG_KEYS = ("env_setup", "use_neg", "pos_examples", "neg_examples", "loc_target", "reset_poses")
_REQUIRED_KEYS = ("env_setup", "use_neg", "pos_examples", "reset_poses")  # the original indexes these unguarded


@dataclasses.dataclass(frozen=True)
class ExperimentSetup:
    """One experiment JSON of the original (``calvin_exp_configs_examples/*.json``), checked.

    ``env_setup`` holds the fixed articulated values as ``(part, value)`` pairs in the original's
    part order (``dict(setup.env_setup)`` for ``sample_scene_setup``). ``cubes_table_only`` is kept
    as written but, as in the original, nothing applies it: ``run_dynaguide.py`` passes
    ``env_setup`` only to ``generate_reset_state``, which ignores the key, and the simulator keeps
    its ``cubes_table_only=False`` default. ``neg_examples`` is read only when ``use_neg``.
    """
    env_setup: tuple[tuple[str, float], ...] = ()
    cubes_table_only: bool = False
    pos_examples: str | None = None
    use_neg: bool = False
    neg_examples: str | None = None
    loc_target: tuple[float, float, float] | None = None
    reset_poses: str | None = None
    source: str | None = None

    @property
    def fixed_parts(self) -> dict[str, float]:
        return dict(self.env_setup)


def _path_field(config: dict, name: str, source: str) -> str | None:
    value = config.get(name)
    if value is not None and (not isinstance(value, str) or not value):
        raise TypeError(f"{source}: {name!r} must be a file path or null, got {value!r}")
    return value


def _resolve(path: str | None, base_dir: str, path_prefixes: Mapping[str, str]) -> str | None:
    if path is None:
        return None
    for old, new in path_prefixes.items():
        if path.startswith(old):
            path = new + path[len(old):]
            break
    return os.path.normpath(path if os.path.isabs(path) else os.path.join(base_dir, path))


def parse_experiment_setup(config: Mapping, source: str = "experiment setup", base_dir: str = ".",
                           path_prefixes: Mapping[str, str] | None = None, check_files: bool = True) -> ExperimentSetup:
    """Check a decoded experiment JSON and return it as an ``ExperimentSetup``.

    Keys as the original's: ``env_setup`` (object), ``use_neg`` (bool), ``pos_examples``,
    ``reset_poses`` (path or null) required; ``neg_examples`` (path or null, required when
    ``use_neg``) and ``loc_target`` ([x, y, z], position guidance only) optional; any other key is
    an error (a misspelt key would otherwise be silently ignored). Relative paths are resolved
    against ``base_dir``; ``path_prefixes`` rewrites leading path prefixes first (the originals
    point at ``/yourfolderhere/dataset/...``). With ``check_files``, every file the run would open
    must exist; ``FileNotFoundError`` names the key and the path.
    """
    if not isinstance(config, Mapping):
        raise TypeError(f"{source}: expected a JSON object, got {type(config).__name__}")
    unknown = [k for k in config if k not in _CONFIG_KEYS]
    if unknown:
        raise ValueError(f"{source}: unknown key(s) {unknown}; expected {list(_CONFIG_KEYS)}")
    missing = [k for k in _REQUIRED_KEYS if k not in config]
    if missing:
        raise ValueError(f"{source}: missing key(s) {missing}")
    env_setup = config["env_setup"]
    fixed = check_env_setup(env_setup, f"{source}: env_setup")
    table_only = env_setup.get("cubes_table_only", False)
    use_neg = config["use_neg"]
    if not isinstance(use_neg, bool):
        raise TypeError(f"{source}: 'use_neg' must be true/false, got {use_neg!r}")
    pos, neg, poses = (_path_field(config, k, source) for k in ("pos_examples", "neg_examples", "reset_poses"))
    if use_neg and neg is None:
        raise ValueError(f"{source}: 'use_neg' is true but 'neg_examples' is missing or null")
    loc = config.get("loc_target")
    if loc is not None:
        if (not isinstance(loc, (list, tuple)) or len(loc) != 3
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in loc)):
            raise TypeError(f"{source}: 'loc_target' must be a list of 3 numbers (x, y, z), got {loc!r}")
        loc = tuple(float(v) for v in loc)
    prefixes = dict(path_prefixes or {})
    pos, neg, poses = (_resolve(p, base_dir, prefixes) for p in (pos, neg, poses))
    if check_files:
        used = {"pos_examples": pos, "neg_examples": neg if use_neg else None, "reset_poses": poses}
        for name, path in used.items():
            if path is not None and not os.path.exists(path):
                raise FileNotFoundError(f"{source}: {name} file not found: {path}")
    return ExperimentSetup(env_setup=tuple((k, fixed[k]) for k in ADJUSTABLE_PARTS if k in fixed),
                           cubes_table_only=table_only, pos_examples=pos, use_neg=use_neg, neg_examples=neg,
                           loc_target=loc, reset_poses=poses, source=source)


def load_experiment_setup(path: str, base_dir: str | None = None, path_prefixes: Mapping[str, str] | None = None,
                          check_files: bool = True) -> ExperimentSetup:
    """Read and check one experiment JSON (see ``parse_experiment_setup``); relative paths inside it
    resolve against ``base_dir``, by default the JSON's own folder."""
    config = _read_json(path, "experiment setup")
    return parse_experiment_setup(config, source=path, base_dir=os.path.dirname(os.path.abspath(path))
                                  if base_dir is None else base_dir, path_prefixes=path_prefixes,
                                  check_files=check_files)
