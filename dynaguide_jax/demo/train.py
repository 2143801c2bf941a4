"""The demo's models, trained on the play dataset with the library's trainers.

- base policy: robomimic-style diffusion policy on the behaviour segments of the training split
  (``policy_obs="cameras"``: both cameras + robot_obs, the original's inputs; ``"state"``: robot_obs +
  scene_obs, which a 2-core CPU trains in minutes);
- GC policy: the same with a goal image (the static camera's segment-final frame, To = 1), as the
  original's configs/diffusion_policy_image_calvin_ddim_gc.json;
- dynamics model: cached DinoV2 patches + robot_obs + the clipped action chunk -> the patches of the
  segment's final frame (the original's target).
EMA weights follow the diffusers schedule with warm-up (robomimic's EMAModel, power 0.75), so
short CPU runs sample with a meaningful average.
"""
from __future__ import annotations

import os

import numpy as np

from dynaguide_jax.data.episodes import reduce_behaviour
from dynaguide_jax.data.rlds import dynamics_windows, read_policy_segments
from dynaguide_jax.demo.config import DemoConfig
from dynaguide_jax.dynamics import DynamicsConfig
from dynaguide_jax.envs.reset_states import ROBOT_ANGLES, SCENE_ANGLES
from dynaguide_jax.policy import DiffusionPolicy, PolicyConfig
from dynaguide_jax.policy.train import PolicyTrainConfig, train_policy
from dynaguide_jax.policy.windows import policy_batch
from dynaguide_jax.training import DynamicsTrainConfig, train_dynamics

GOAL_CAMERA = "rgb_static"
GOAL_KEY = "goal_static"  # the GC policy's goal: the static camera's frame at ``gc_goal_size``
CAMERAS = ("rgb_gripper", "rgb_static")
NORM_FLOOR = 0.01  # smallest scale of a standardised low-dim entry (m, rad or unit)
LOW_DIM_ANGLES = {"proprio": ROBOT_ANGLES, "scene": SCENE_ANGLES}  # standardised on the circle


def resize_frames(images: np.ndarray, size: int) -> np.ndarray:
    """``[..., H, H, 3]`` uint8 -> ``[..., size, size, 3]``: the mean of each ``H / size`` pixel block when
    ``size`` divides ``H``, each pixel repeated ``size / H`` times when ``H`` divides ``size``."""
    h = images.shape[-2]
    if h == size:
        return images
    if size > h and size % h == 0:
        return np.repeat(np.repeat(images, size // h, axis=-3), size // h, axis=-2)
    if size > h or h % size:
        raise ValueError(f"gc_goal_size {size} must divide the image size {h} or be a multiple of it")
    f = h // size
    x = images.reshape(*images.shape[:-3], size, f, size, f, 3).astype(np.float32).mean(axis=(-4, -2))
    return np.round(x).astype(np.uint8)


def read_policy_data(rlds: str, cfg: DemoConfig, goal_conditioned: bool, reduce: tuple | None = None):
    """Behaviour segments of the training split with the fields the policy reads. ``reduce =
    (behaviour, fraction, seed)`` keeps that behaviour's segments with probability ``fraction``
    (``data.episodes.reduce_behaviour``; ``data.reduced`` says how many stayed)."""
    cams = CAMERAS if cfg.policy_obs == "cameras" else (GOAL_CAMERA,) if goal_conditioned else ()
    fields = ("observation/robot_obs", "observation/scene_obs", *(f"observation/{c}" for c in cams))
    if reduce is not None:
        fields = (*fields, "behaviour")
    data = read_policy_segments(rlds, "train", fields, "rel_action",
                                rename={"observation/robot_obs": "proprio", "observation/scene_obs": "scene"})
    reduced = None
    if reduce is not None:
        labels = data.obs.pop("behaviour")[np.r_[0, data.episode_ends[:-1]]]
        data, reduced = reduce_behaviour(data, labels, *reduce)
    data.reduced = reduced
    if goal_conditioned:
        data.obs[GOAL_KEY] = resize_frames(data.obs[GOAL_CAMERA], cfg.gc_goal_size)
        if cfg.policy_obs != "cameras":
            del data.obs[GOAL_CAMERA]
    return data


def low_dim_norm(obs: dict, keys, floor: float = NORM_FLOOR, angles: dict | None = None) -> tuple:
    """``PolicyConfig.low_dim_norm`` from the training frames: per entry mean and standard deviation,
    the deviation floored at ``floor`` (entries that barely vary in play, e.g. the tcp's pitch, must
    not blow up when a rollout moves them a little). ``angles`` (``{key: entry indices}``, radians):
    those entries get the circular mean and the deviation of ``wrap(x - mean)``, as the policy
    applies them (``PolicyConfig.low_dim_angles``): the tcp's roll, which flips between +pi and -pi
    in play, has a deviation of ~0.03 rad, not pi."""
    angles = angles or {}
    out = []
    for k in keys:
        x = np.asarray(obs[k], np.float64).reshape(-1, obs[k].shape[-1])
        mean = x.mean(0)
        idx = list(angles.get(k, ()))
        if idx:
            a = x[:, idx]
            mean[idx] = np.arctan2(np.sin(a).mean(0), np.cos(a).mean(0))
        dev = x - mean
        dev[:, idx] = np.mod(dev[:, idx] + np.pi, 2 * np.pi) - np.pi
        std = np.sqrt((dev ** 2).mean(0))
        out.append((k, tuple(float(v) for v in mean), tuple(float(v) for v in np.maximum(std, floor))))
    return tuple(out)


def policy_config(cfg: DemoConfig, data, goal_conditioned: bool) -> PolicyConfig:
    rgb = {k: tuple(v.shape[1:3]) for k, v in data.obs.items() if v.ndim == 4}
    obs_keys = ("proprio", *CAMERAS) if cfg.policy_obs == "cameras" else ("proprio", "scene")
    low = tuple(k for k in obs_keys if k not in rgb)
    angles = {k: v for k, v in LOW_DIM_ANGLES.items() if k in low} if cfg.policy_obs_norm else {}
    pcfg = PolicyConfig(action_dim=7, obs_keys=obs_keys, rgb_shapes=tuple(rgb.items()),
                        low_dim=(("proprio", 15), ("scene", 24)),
                        low_dim_norm=low_dim_norm(data.obs, low, angles=angles) if cfg.policy_obs_norm else (),
                        low_dim_angles=tuple(angles.items()),
                        obs_horizon=1 if goal_conditioned else 2, action_horizon=14,
                        goal_rgb_keys=(GOAL_KEY,) if goal_conditioned else ())
    if cfg.policy_model == "small":
        pcfg = pcfg.replace(down_dims=(32, 64), n_groups=8, step_embed_dim=32, feature_dim=32,
                            num_keypoints=16, backbone_widths=(16, 16, 32, 32))
    if cfg.policy_down_dims:
        pcfg = pcfg.replace(down_dims=tuple(cfg.policy_down_dims))
    if cfg.policy_low_dim_mlp:
        pcfg = pcfg.replace(low_dim_mlp=tuple(cfg.policy_low_dim_mlp))
    return pcfg


def train_demo_policy(rlds: str, cfg: DemoConfig, run_dir: str, goal_conditioned: bool, progress: bool = True,
                      reduce: tuple | None = None):
    """Train (or resume) the base or GC policy into ``run_dir`` (``reduce``: see ``read_policy_data``)."""
    data = read_policy_data(rlds, cfg, goal_conditioned, reduce)
    pcfg = policy_config(cfg, data, goal_conditioned)
    tcfg = PolicyTrainConfig(steps=cfg.gc_steps if goal_conditioned else cfg.policy_steps,
                             batch_size=cfg.policy_batch, learning_rate=cfg.policy_lr, ema_warmup=True,
                             checkpoint_every=500, log_every=50, seed=cfg.seed + (1 if goal_conditioned else 0))
    batches = lambda step: policy_batch(data, pcfg, tcfg.batch_size, tcfg.seed, step, "last")  # noqa: E731
    result = train_policy(DiffusionPolicy(pcfg), batches, tcfg, run_dir, progress=progress)
    return {"segments": int(len(data.episode_ends)), "frames": int(data.num_frames), "reduced": data.reduced,
            "final_loss": float(result.losses[-1][1]) if result.losses else None}


def train_demo_dynamics(rlds: str, features, cfg: DemoConfig, run_dir: str, progress: bool = True):
    """Train (or resume) the latent dynamics model into ``run_dir`` on the cached features."""
    windows = dynamics_windows(rlds, "train", features, 16, ("observation/robot_obs",), "rel_action", "clip",
                               target="segment_end")
    model = DynamicsConfig.preset(cfg.dynamics_model).replace(
        feature_dim=features.shape[2], patches_per_camera=features.shape[1], action_dim=7, proprio_dim=15,
        horizon=16)
    tcfg = DynamicsTrainConfig(steps=cfg.dynamics_steps, global_batch=cfg.dynamics_batch,
                               learning_rate=cfg.dynamics_lr, noised=cfg.dynamics_noised, checkpoint_every=500,
                               log_every=50, seed=cfg.seed, async_checkpoints=False)
    info = {"source": "rlds", "rlds": os.path.abspath(rlds), "split": "train", "proprio_fields":
            ["observation/robot_obs"], "action_field": "rel_action",
            "action_transform": windows.action_transform.to_dict(), "target": windows.target}
    result = train_dynamics(model, lambda step, rows: windows.batch(step, tcfg.global_batch, tcfg.seed, rows), tcfg,
                            run_dir, progress=progress, data_info=info)
    return {"windows": int(windows.data.num_frames), "last_metrics": result.last_metrics}
