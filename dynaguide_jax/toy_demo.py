"""The point-reaching toy world's scene for the exact-epsilon tests (GPC, guidance).

Render observations -> random-weight DinoV2 (small) -> train a small latent dynamics model on toy
transitions -> goal features from goal images -> guided DDIM over a Gaussian-mixture stand-in
policy of ``behaviours`` prototypes, whose epsilon is exact, so which behaviour a chunk came from is
measurable. Not the paper's experiment: that is ``dynaguide demo`` (``dynaguide_jax.demo``) and
``dynaguide experiment``.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from dynaguide_jax import toyworld
from dynaguide_jax.diffusion import DDIMSchedule
from dynaguide_jax.dynamics import DynamicsConfig, init_dynamics, predict_future_patches
from dynaguide_jax.dynamics.fit import fit_dynamics
from dynaguide_jax.encoders import DinoV2Config, init_dinov2
from dynaguide_jax.guidance import DynaGuide, GoalSet, encode_cameras, goals_from_images
from dynaguide_jax.guidance import goals_from_trajectory_ends
from dynaguide_jax.policy import line_prototypes, mixture_params, nearest_prototype


@dataclasses.dataclass(frozen=True)
class ToySceneConfig:
    seed: int = 0
    samples: int = 128
    behaviours: int = 4
    goal_behaviour: int = 1
    negative_behaviour: int | None = None
    scales: tuple[float, ...] = (0.0, 0.05, 0.1, 0.25, 0.5, 1.0)
    repeats: int = 4
    mode: str = dataclasses.field(default="repeat", metadata={"choices": ("repeat", "renoise")})
    sigma: float = 1.0
    distance: str = dataclasses.field(default="l2", metadata={"choices": ("l2", "squared_l2")})
    # "images" (paper: φ(g)) or "trajectories" (original code)
    goals_from: str = dataclasses.field(default="images", metadata={"choices": ("images", "trajectories")})
    num_goals: int = 5
    gpc_samples: int = 5  # the sample-and-rank baseline: best of N base-policy chunks (0: skip)
    gpc_score: str = "mean_l2"  # its ranking: "mean_l2" (original code) or "metric" (the LSE metric)
    train_steps: int = 1000
    batch_size: int = 64
    learning_rate: float = 1e-3
    image_size: int = 56
    dot_radius: float = 12.0
    out_dir: str = "runs/demo"

    def __post_init__(self):
        if not 0 <= self.goal_behaviour < self.behaviours:
            raise ValueError(f"goal_behaviour must be in [0, {self.behaviours}), got {self.goal_behaviour}")
        if self.negative_behaviour is not None and not 0 <= self.negative_behaviour < self.behaviours:
            raise ValueError(f"negative_behaviour must be in [0, {self.behaviours})")
        if self.negative_behaviour == self.goal_behaviour:
            raise ValueError("negative_behaviour must differ from goal_behaviour")
        if self.goals_from not in ("images", "trajectories"):
            raise ValueError(f"goals_from must be 'images' or 'trajectories', got {self.goals_from!r}")
        if self.gpc_score not in ("mean_l2", "metric"):
            raise ValueError(f"gpc_score must be 'mean_l2' or 'metric', got {self.gpc_score!r}")
        if self.samples < 1 or self.train_steps < 0 or self.num_goals < 1 or not self.scales or self.gpc_samples < 0:
            raise ValueError("samples, num_goals and scales must be positive; train_steps >= 0")


HORIZON, ACTION_DIM = 16, 7


def build_models(cfg: ToySceneConfig):
    enc = DinoV2Config(hidden_size=64, num_layers=2, num_heads=4, pos_grid=cfg.image_size // 14)
    dyn = DynamicsConfig(feature_dim=64, patches_per_camera=(cfg.image_size // 14) ** 2, action_dim=ACTION_DIM,
                         horizon=HORIZON, proprio_dim=2, num_layers=2, num_heads=4, ffn_dim=256, dropout=0.0)
    keys = jax.random.split(jax.random.key(cfg.seed), 2)
    return enc, init_dinov2(enc, keys[0], cfg.image_size), dyn, init_dynamics(dyn, keys[1])


def make_batches(cfg, enc, enc_params, prototypes):
    bg = toyworld.background(cfg.image_size)

    @jax.jit
    def batch(key):
        k1, k2 = jax.random.split(key)
        start = jax.random.uniform(k1, (cfg.batch_size, 2), minval=-0.5, maxval=0.5)
        actions = toyworld.random_chunks(k2, cfg.batch_size, HORIZON, ACTION_DIM, prototypes)
        end = toyworld.step(start, actions)
        imgs = jnp.stack([toyworld.render(start, cfg.image_size, cfg.dot_radius, bg),
                          toyworld.render(end, cfg.image_size, cfg.dot_radius, bg)], axis=1)  # [B, 2, H, W, 3]
        feats = encode_cameras(enc, enc_params, imgs, cfg.image_size)  # [B, 2P, D]
        p = feats.shape[1] // 2
        return {"patches": feats[:, :p], "proprio": start, "actions": actions, "future_patches": feats[:, p:]}

    base = jax.random.key(cfg.seed + 1)
    return lambda i: batch(jax.random.fold_in(base, i))


def prepare_scene(cfg: ToySceneConfig, progress: bool = True) -> dict:
    """Everything up to sampling: models, a trained dynamics model, the observation and the goals."""
    schedule = DDIMSchedule()
    prototypes = line_prototypes(cfg.behaviours, HORIZON, ACTION_DIM)
    policy = mixture_params(prototypes, schedule)
    enc, enc_params, dyn, dyn_params = build_models(cfg)
    batches = make_batches(cfg, enc, enc_params, prototypes)
    dyn_params, losses = fit_dynamics(dyn, dyn_params, batches, steps=cfg.train_steps,
                                      key=jax.random.key(cfg.seed + 2), learning_rate=cfg.learning_rate,
                                      schedule=schedule, progress=progress)
    held_out = batches(10**6)
    pred = predict_future_patches(dyn, dyn_params, held_out["patches"], held_out["proprio"], held_out["actions"])
    mse = float(jnp.mean((pred - held_out["future_patches"]) ** 2))
    copy_mse = float(jnp.mean((held_out["patches"] - held_out["future_patches"]) ** 2))

    start = jnp.zeros((1, 2))
    bg = toyworld.background(cfg.image_size)
    obs_img = toyworld.render(start, cfg.image_size, cfg.dot_radius, bg)
    patches = encode_cameras(enc, enc_params, obs_img[:, None], cfg.image_size)
    rng = np.random.default_rng(cfg.seed)

    def goal_features(behaviour):
        chunks = prototypes[behaviour][None] + 0.05 * rng.normal(size=(cfg.num_goals, HORIZON, ACTION_DIM))
        chunks = jnp.asarray(chunks, jnp.float32)
        ends = toyworld.step(jnp.repeat(start, cfg.num_goals, 0), chunks)
        end_imgs = toyworld.render(ends, cfg.image_size, cfg.dot_radius, bg)
        if cfg.goals_from == "images":
            feats = goals_from_images(enc, enc_params, end_imgs, cfg.image_size)
        else:  # the original: predict from each trajectory's final frame with its last action repeated
            end_patches = encode_cameras(enc, enc_params, end_imgs[:, None], cfg.image_size)
            feats = goals_from_trajectory_ends(dyn, dyn_params, end_patches, ends, chunks[:, -1])
        return feats, ends

    pos_feats, goal_ends = goal_features(cfg.goal_behaviour)
    neg_feats = None if cfg.negative_behaviour is None else goal_features(cfg.negative_behaviour)[0]
    goals = GoalSet.create(pos_feats, neg_feats)
    # GPC's goals are always encoder features of the goal final frames (the original's state_embedding)
    gpc_goals = pos_feats if cfg.goals_from == "images" else goals_from_images(
        enc, enc_params, toyworld.render(goal_ends, cfg.image_size, cfg.dot_radius, bg), cfg.image_size)
    n = cfg.samples
    return {"schedule": schedule, "policy": policy, "dyn": dyn, "dyn_params": dyn_params, "goals": goals,
            "pos_feats": pos_feats, "goal_ends": goal_ends, "gpc_goals": gpc_goals, "losses": losses, "mse": mse,
            "copy_mse": copy_mse,
            "guide": DynaGuide(dynamics=dyn, distance=cfg.distance),
            "obs": {"patches": jnp.repeat(patches, n, 0), "proprio": jnp.repeat(start, n, 0)}}


def goal_rates(cfg: ToySceneConfig, scene: dict, actions) -> np.ndarray:
    """Fraction of chunks nearest the goal behaviour, over the trailing ``[B, T, A]`` axes."""
    idx = nearest_prototype(scene["policy"], actions.reshape(-1, HORIZON, ACTION_DIM))
    hits = np.asarray(idx == cfg.goal_behaviour).reshape(actions.shape[:-3] + (actions.shape[-3],))
    return hits.mean(-1)
