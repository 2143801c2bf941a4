"""Adapter for the CALVIN simulator (calvin_env + pybullet, optional): one environment behind the
host-env interface the vector env drives (``reset(robot_obs, scene_obs) -> obs``, ``step(action) ->
obs``, ``low_dim() -> (robot_obs, scene_obs)``, ``close()``), with the observation names of the
built-in world (``eval.rollout.tabletop_env``): ``rgb_static`` [S, S, 3] uint8, ``rgb_gripper``
[G, G, 3] uint8, the robot state [15] under ``proprio_key`` and the scene state [24] under
``scene_key`` (float32).

Facts from the original's CALVIN rollouts (MaxDu17/DynaGuide ``configs/calvin.json``, its vendored
``calvin_env/envs/play_table_env.py``): scene D, the Panda with the longer fingers, a 200 px static
and an 84 px gripper camera, 240 Hz physics at a 30 Hz control rate; an action is CALVIN's 7-d
relative action (``[dx, dy, dz, droll, dpitch, dyaw, gripper]``, scaled by the robot's
``relative_to_absolute``) passed to ``env.step`` as a numpy array, its gripper entry binarised to
-1 / +1 (< 0 closes). Both calvin_env variants are handled: upstream CALVIN's obs dict (``rgb_obs``,
``robot_obs``, ``scene_obs``) and the original's vendored copy (``third_person`` / ``eye_in_hand``
channels-first floats in [0, 1], ``proprio``, ``states``). The original resets to its scene state
and lets the simulator shuffle the blocks; ``CalvinConfig.shuffle_blocks`` does the same (with
the environment's seeded generator), by default the blocks go where ``scene_obs`` puts them.
"""
from __future__ import annotations

import dataclasses
import importlib
import inspect
from pathlib import Path

import numpy as np

from dynaguide_jax._checks import check_int

ROBOT_OBS_DIM, SCENE_OBS_DIM, ACTION_DIM = 15, 24, 7
INSTALL_HINT = (
    "the CALVIN simulator is not installed: it needs the calvin_env package from the CALVIN sources "
    "with its scene assets (`git clone --recursive https://github.com/mees/calvin && cd calvin/calvin_env && "
    "pip install -e .`, or `pip install -e calvin/calvin_env` in a checkout of the original MaxDu17/DynaGuide, "
    "which vendors it) plus pybullet (`pip install pybullet`), or `pip install -e .[calvin]` for the Python "
    "dependencies")


class CalvinEnvMissing(ImportError):
    """calvin_env or pybullet cannot be imported; the message says how to install them."""


def import_calvin_env():
    """The ``calvin_env.envs.play_table_env`` module (imported on first use: calvin_env is optional)."""
    try:
        importlib.import_module("pybullet")
        return importlib.import_module("calvin_env.envs.play_table_env")
    except ImportError as e:
        raise CalvinEnvMissing(f"{INSTALL_HINT} ({type(e).__name__}: {e})") from e


@dataclasses.dataclass(frozen=True)
class CalvinConfig:
    """One CALVIN environment. ``root``: the calvin_env checkout holding ``conf/`` and ``data/``
    (default: the directory above the installed ``calvin_env`` package, as ``pip install -e`` leaves
    it). ``use_egl``: pybullet's EGL renderer (the original's setting, needs a GPU driver); without it
    pybullet's CPU TinyRenderer draws the images."""

    scene: str = "calvin_scene_D"
    robot: str = "panda_longer_finger"
    static_size: int = 200
    gripper_size: int = 84
    seed: int = 0
    shuffle_blocks: bool = False
    cubes_table_only: bool = False  # shuffled blocks only on the table (the original's block experiments)
    use_egl: bool = False
    bullet_time_step: int = 240
    control_freq: int = 30
    root: str | None = None

    def __post_init__(self):
        for name in ("static_size", "gripper_size", "bullet_time_step", "control_freq"):
            check_int(f"CalvinConfig.{name}", getattr(self, name))
        check_int("CalvinConfig.seed", self.seed, minimum=0)


def calvin_root(config: CalvinConfig) -> Path:
    """The checkout with ``conf/`` and ``data/``; raises naming what is missing."""
    if config.root is not None:
        root = Path(config.root)
    else:
        root = Path(import_calvin_env().__file__).resolve().parents[2]
    for sub in (f"conf/scene/{config.scene}.yaml", f"conf/robot/{config.robot}.yaml", "conf/robot/panda.yaml",
                "conf/cameras/cameras/static.yaml", "conf/cameras/cameras/gripper.yaml", "data"):
        if not (root / sub).exists():
            raise FileNotFoundError(f"CALVIN checkout {root} has no {sub} (the scene configs and assets): set "
                                    f"CalvinConfig.root to a calvin_env checkout with conf/ and data/ ({INSTALL_HINT})")
    return root


def _yaml(path: Path) -> dict:
    from omegaconf import OmegaConf

    cfg = OmegaConf.to_container(OmegaConf.load(path))
    cfg.pop("defaults", None)
    return cfg


def env_kwargs(config: CalvinConfig) -> dict:
    """``PlayTableSimEnv`` keyword arguments (OmegaConf nodes, resolved) built from the checkout's
    own ``conf/``: scene, robot (``panda.yaml`` overlaid with the variant) and the two cameras."""
    from omegaconf import OmegaConf

    root = calvin_root(config)
    conf = root / "conf"
    robot = _yaml(conf / "robot" / "panda.yaml")
    if config.robot != "panda":
        robot.update(_yaml(conf / "robot" / f"{config.robot}.yaml"))
    cams = {name: _yaml(conf / "cameras" / "cameras" / f"{name}.yaml") for name in ("static", "gripper")}
    for name, size in (("static", config.static_size), ("gripper", config.gripper_size)):
        cams[name].update(width=size, height=size)
    tree = OmegaConf.create({"data_path": str(root / "data"), "robot": robot,
                             "scene": _yaml(conf / "scene" / f"{config.scene}.yaml"), "cameras": cams})
    tree = OmegaConf.create(OmegaConf.to_container(tree, resolve=True))
    return dict(robot_cfg=tree.robot, seed=config.seed, use_vr=False, bullet_time_step=config.bullet_time_step,
                cameras=tree.cameras, show_gui=False, scene_cfg=tree.scene, use_scene_info=True,
                use_egl=config.use_egl, control_freq=config.control_freq)


def _image(x, name: str) -> np.ndarray:
    """uint8 [H, W, 3]; the vendored env's channels-first floats in [0, 1] are mapped back."""
    x = np.asarray(x)
    if x.dtype != np.uint8:
        if x.ndim == 3 and x.shape[0] == 3:
            x = np.moveaxis(x, 0, -1)
        x = np.clip(np.rint(x.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)
    if x.ndim != 3 or x.shape[-1] != 3:
        raise ValueError(f"CALVIN image {name} must be [H, W, 3] (or [3, H, W] floats), got shape {x.shape}")
    return x


def map_obs(obs: dict, proprio_key: str = "proprio", scene_key: str = "scene") -> dict:
    """A calvin_env obs dict (upstream: ``rgb_obs`` / ``robot_obs`` / ``scene_obs``; the original's
    vendored copy: ``third_person`` / ``eye_in_hand`` / ``proprio`` / ``states``) -> the built-in
    world's names."""
    if "rgb_obs" in obs:
        rgb = obs["rgb_obs"]
        static, gripper, robot, scene = rgb.get("rgb_static"), rgb.get("rgb_gripper"), obs.get("robot_obs"), \
            obs.get("scene_obs")
    elif "third_person" in obs:
        static, gripper, robot, scene = obs["third_person"], obs.get("eye_in_hand"), obs.get("proprio"), \
            obs.get("states")
    else:
        raise ValueError(f"unknown calvin_env obs dict with keys {sorted(obs)}: expected rgb_obs/robot_obs/scene_obs "
                         "or the original's third_person/eye_in_hand/proprio/states")
    for name, value in (("rgb_static", static), ("rgb_gripper", gripper), ("robot_obs", robot), ("scene_obs", scene)):
        if value is None:
            raise ValueError(f"calvin_env obs has no {name} (keys {sorted(obs)}): the static and gripper cameras "
                             "must be on")
    robot, scene = np.asarray(robot, np.float32), np.asarray(scene, np.float32)
    if robot.shape != (ROBOT_OBS_DIM,) or scene.shape != (SCENE_OBS_DIM,):
        raise ValueError(f"calvin_env robot_obs / scene_obs must be [{ROBOT_OBS_DIM}] / [{SCENE_OBS_DIM}] (scene D, "
                         f"euler angles), got {robot.shape} / {scene.shape}")
    return {"rgb_static": _image(static, "rgb_static"), "rgb_gripper": _image(gripper, "rgb_gripper"),
            proprio_key: robot, scene_key: scene}


def check_vector(name: str, x, dim: int) -> np.ndarray:
    x = np.asarray(x, np.float64)
    if x.shape != (dim,):
        raise ValueError(f"{name} must be a CALVIN {name} vector [{dim}], got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} contains non-finite values")
    return x


def binarize_gripper(action) -> np.ndarray:
    """A copy of the 7-d relative action with the gripper entry at -1 (< 0, close) or +1 (open), as the
    original's ``env.step`` does (calvin_env asserts exactly +-1)."""
    a = check_vector("action", action, ACTION_DIM).copy()
    a[-1] = -1.0 if a[-1] < 0 else 1.0
    return a


class CalvinHostEnv:
    """One PlayTableSimEnv in this process (numpy in, numpy out)."""

    def __init__(self, config: CalvinConfig = CalvinConfig(), proprio_key: str = "proprio", scene_key: str = "scene"):
        module = import_calvin_env()
        kwargs = env_kwargs(config)
        params = inspect.signature(module.PlayTableSimEnv.__init__).parameters
        if "cubes_table_only" in params:  # the original's vendored copy deletes a tactile camera entry
            kwargs["cameras"]["tactile"] = {}
        self.config, self.keys = config, (proprio_key, scene_key)
        self.env = module.PlayTableSimEnv(**kwargs)
        self._obs = None

    def _observe(self) -> dict:
        self._obs = map_obs(self.env.get_obs(), *self.keys)
        return self._obs

    def reset(self, robot_obs, scene_obs) -> dict:
        """Put the robot and the scene at ``robot_obs`` [15] / ``scene_obs`` [24] (blocks shuffled
        instead with ``shuffle_blocks``), one physics step as calvin_env's reset does."""
        robot = check_vector("robot_obs", robot_obs, ROBOT_OBS_DIM)
        scene = check_vector("scene_obs", scene_obs, SCENE_OBS_DIM)
        env = self.env
        env.scene.reset(scene)
        if self.config.shuffle_blocks:
            if self.config.cubes_table_only:
                if "table_only" not in inspect.signature(env.scene.reset_movable_objects).parameters:
                    raise ValueError("cubes_table_only needs the original's vendored calvin_env (upstream CALVIN's "
                                     "scene cannot keep shuffled blocks on the table)")
                env.scene.reset_movable_objects(table_only=True)
            else:
                env.scene.reset_movable_objects()
        env.robot.reset(robot)
        env.p.stepSimulation(physicsClientId=env.cid)
        return self._observe()

    def step(self, action) -> dict:
        if self._obs is None:
            raise RuntimeError("CalvinHostEnv.step before reset")
        obs, *_ = self.env.step(binarize_gripper(action))
        self._obs = map_obs(obs, *self.keys)
        return self._obs

    def low_dim(self) -> tuple[np.ndarray, np.ndarray]:
        """``(robot_obs [15], scene_obs [24])`` of the current state."""
        if self._obs is None:
            raise RuntimeError("CalvinHostEnv.low_dim before reset")
        return self._obs[self.keys[0]], self._obs[self.keys[1]]

    def close(self) -> None:
        env, self.env = getattr(self, "env", None), None
        if env is not None:
            env.close()
            env.cid = -1  # calvin_env's __del__ closes again; a second disconnect would raise


@dataclasses.dataclass(frozen=True)
class CalvinEnvFactory:
    """Picklable recipe for ``VectorEnv``: worker ``i`` builds a ``CalvinHostEnv`` seeded ``config.seed + i``."""

    config: CalvinConfig = CalvinConfig()
    proprio_key: str = "proprio"
    scene_key: str = "scene"

    def __call__(self, index: int) -> CalvinHostEnv:
        config = dataclasses.replace(self.config, seed=self.config.seed + index)
        return CalvinHostEnv(config, self.proprio_key, self.scene_key)
