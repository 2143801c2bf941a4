"""The CPU demo: a steered sampling run end to end on the toy world (the README's main job).

Pipeline: render observations -> random-weight DinoV2 (small) -> train a small latent dynamics
model on toy transitions -> goal features from goal images -> sweep guidance scales with the
guided DDIM sampler over a Gaussian-mixture stand-in policy of ``behaviours`` prototypes -> report
how often each behaviour is chosen, the guidance metric and distances to the goal.

Honest scope: the encoder is untrained, the policy is an analytic stand-in, the world is a toy.
It shows the mechanism working and the code path users run, not the paper's numbers.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from dynaguide_jax import toyworld
from dynaguide_jax.baselines import sample_and_rank
from dynaguide_jax.diffusion import DDIMSchedule, sweep
from dynaguide_jax.dynamics import DynamicsConfig, init_dynamics, predict_future_patches
from dynaguide_jax.dynamics.fit import fit_dynamics
from dynaguide_jax.encoders import DinoV2Config, init_dinov2
from dynaguide_jax.guidance import DynaGuide, GoalSet, encode_cameras, goals_from_images
from dynaguide_jax.guidance import goals_from_trajectory_ends, min_goal_distance
from dynaguide_jax.policy import line_prototypes, mixture_eps, mixture_params, nearest_prototype


@dataclasses.dataclass(frozen=True)
class DemoConfig:
    seed: int = 0
    samples: int = 128
    behaviours: int = 4
    goal_behaviour: int = 1
    negative_behaviour: int | None = None
    scales: tuple[float, ...] = (0.0, 0.05, 0.1, 0.25, 0.5, 1.0)
    repeats: int = 4
    mode: str = "repeat"
    sigma: float = 1.0
    distance: str = "l2"
    goals_from: str = "images"  # "images" (paper: φ(g)) or "trajectories" (original code)
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


def build_models(cfg: DemoConfig):
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


def prepare_scene(cfg: DemoConfig, progress: bool = True) -> dict:
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


def sweep_scene(cfg: DemoConfig, scene: dict, seeds, sigmas=None):
    """One compiled call over cfg.scales x sigmas x seeds."""
    params = {"dynamics": scene["dyn_params"], "goals": scene["goals"], "sigma": cfg.sigma}
    res = sweep(mixture_eps, scene["policy"], jnp.zeros((cfg.samples, 1)), scene["guide"], params, scene["obs"],
                scales=list(cfg.scales), seeds=list(seeds), sigmas=sigmas, schedule=scene["schedule"],
                action_shape=(HORIZON, ACTION_DIM), repeats=cfg.repeats, mode=cfg.mode)
    res.actions.block_until_ready()
    return res


def goal_rates(cfg: DemoConfig, scene: dict, actions) -> np.ndarray:
    """Fraction of chunks nearest the goal behaviour, over the trailing ``[B, T, A]`` axes."""
    idx = nearest_prototype(scene["policy"], actions.reshape(-1, HORIZON, ACTION_DIM))
    hits = np.asarray(idx == cfg.goal_behaviour).reshape(actions.shape[:-3] + (actions.shape[-3],))
    return hits.mean(-1)


def run_demo(cfg: DemoConfig, progress: bool = True) -> dict:
    t0 = time.time()
    scene = prepare_scene(cfg, progress)
    policy, losses = scene["policy"], scene["losses"]
    mse, copy_mse, n = scene["mse"], scene["copy_mse"], cfg.samples
    t_sweep = time.time()
    res = sweep_scene(cfg, scene, [cfg.seed])
    t_sweep = time.time() - t_sweep

    rows = []
    for i, scale in enumerate(cfg.scales):
        actions = res.actions[i, 0, 0]
        chosen = np.bincount(np.asarray(nearest_prototype(policy, actions)), minlength=cfg.behaviours) / n
        feat_dist, end_dist = goal_distances(scene, actions)
        rows.append({
            "scale": float(scale),
            "goal_rate": float(chosen[cfg.goal_behaviour]),
            "negative_rate": None if cfg.negative_behaviour is None else float(chosen[cfg.negative_behaviour]),
            "behaviour_fractions": chosen.round(4).tolist(),
            "metric_mean": float(jnp.mean(res.metric[i, 0, 0])),
            "feature_distance_to_goals": feat_dist,
            "end_distance_to_goal": end_dist,
        })
    return {"gpc": run_gpc(cfg, scene) if cfg.gpc_samples else None,
        "label": "toy world, random-weight DinoV2 (small), dynamics trained in this run, "
                 "Gaussian-mixture stand-in policy; not the paper's results",
        "config": dataclasses.asdict(cfg),
        "dynamics_training": {"steps": cfg.train_steps, "first_loss": losses[0] if losses else None,
                              "last_loss": losses[-1] if losses else None, "held_out_mse": mse,
                              "copy_current_frame_mse": copy_mse},
        "rows": rows,
        "timing_s": {"total": time.time() - t0, "sweep_incl_compile": t_sweep},
        "device": str(jax.devices()[0]),
    }


def goal_distances(scene: dict, actions) -> tuple[float, float]:
    """Mean nearest-goal distance of the predicted features and of the simulated end positions."""
    obs = scene["obs"]
    ends = toyworld.step(obs["proprio"], actions)
    end_dist = jnp.min(jnp.linalg.norm(ends[:, None] - scene["goal_ends"][None], axis=-1), axis=1)
    z = predict_future_patches(scene["dyn"], scene["dyn_params"], obs["patches"], obs["proprio"], actions)
    return float(jnp.mean(min_goal_distance(z, scene["pos_feats"]))), float(jnp.mean(end_dist))


def run_gpc(cfg: DemoConfig, scene: dict) -> dict:
    """The sample-and-rank baseline on the same observation and dynamics model, ranked by
    ``cfg.gpc_score``; its row reports the LSE metric of the chosen chunks like the other rows."""
    params = {"dynamics": scene["dyn_params"], "goals": scene["goals"], "sigma": cfg.sigma}
    ranked = sample_and_rank(mixture_eps, scene["policy"], jnp.zeros((cfg.samples, 1)), scene["guide"], params,
                             scene["obs"], key=jax.random.key(cfg.seed), goals=scene["gpc_goals"],
                             score=cfg.gpc_score, num_samples=cfg.gpc_samples, schedule=scene["schedule"],
                             action_shape=(HORIZON, ACTION_DIM))
    chosen = np.bincount(np.asarray(nearest_prototype(scene["policy"], ranked.actions)), minlength=cfg.behaviours)
    metric = scene["guide"].metric(params, scene["obs"], ranked.actions)
    feat_dist, end_dist = goal_distances(scene, ranked.actions)
    return {"num_samples": cfg.gpc_samples, "score": cfg.gpc_score, "score_mean": float(ranked.score.mean()),
            "goal_rate": float(chosen[cfg.goal_behaviour] / cfg.samples),
            "behaviour_fractions": (chosen / cfg.samples).round(4).tolist(), "metric_mean": float(metric.mean()),
            "feature_distance_to_goals": feat_dist, "end_distance_to_goal": end_dist}


def run_sweep(cfg: DemoConfig, seeds, sigmas, progress: bool = True) -> dict:
    """Goal-behaviour rate for every (scale, σ) averaged over seeds: the paper's scale/σ sweeps."""
    scene = prepare_scene(cfg, progress)
    t = time.time()
    res = sweep_scene(cfg, scene, seeds, sigmas)
    seconds = time.time() - t
    rates = goal_rates(cfg, scene, res.actions)  # [S, Σ, N]
    return {"label": "toy world sweep (see `dynaguide demo --help`); not the paper's results",
            "config": dataclasses.asdict(cfg), "scales": list(map(float, cfg.scales)),
            "sigmas": list(map(float, sigmas)), "seeds": list(map(int, seeds)),
            "goal_rate_mean": rates.mean(-1).round(4).tolist(), "goal_rate_std": rates.std(-1).round(4).tolist(),
            "metric_mean": np.asarray(res.metric.mean(axis=(-1, -2))).round(4).tolist(),
            "chunks": int(np.prod(res.actions.shape[:-2])), "sweep_seconds_incl_compile": round(seconds, 2),
            "device": str(jax.devices()[0])}


def format_sweep(result: dict) -> str:
    head = "scale \\ sigma " + " ".join(f"{s:>8g}" for s in result["sigmas"])
    lines = [f"goal-behaviour rate, mean over {len(result['seeds'])} seeds "
             f"({result['chunks']} chunks in one call, {result['sweep_seconds_incl_compile']} s)", head]
    for scale, row in zip(result["scales"], result["goal_rate_mean"]):
        lines.append(f"{scale:>13g} " + " ".join(f"{v:>8.2f}" for v in row))
    return "\n".join(lines)


def save_sweep_plot(result: dict, path: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = np.asarray(result["goal_rate_mean"])
    fig, ax = plt.subplots(figsize=(1.2 * grid.shape[1] + 3, 0.5 * grid.shape[0] + 2))
    im = ax.imshow(grid, cmap="viridis", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(grid.shape[1]), [f"{s:g}" for s in result["sigmas"]])
    ax.set_yticks(range(grid.shape[0]), [f"{s:g}" for s in result["scales"]])
    ax.set_xlabel("σ (metric temperature)")
    ax.set_ylabel("guidance scale s")
    for (i, j), v in np.ndenumerate(grid):
        ax.text(j, i, f"{v:.2f}", ha="center", va="center", color="white" if v < 0.6 else "black", fontsize=8)
    fig.colorbar(im, label="goal-behaviour rate")
    ax.set_title("Steering success over the sweep")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def format_table(result: dict) -> str:
    cfg = result["config"]
    lines = [f"DynaGuide demo ({result['label']})",
             f"dynamics model: held-out MSE {result['dynamics_training']['held_out_mse']:.4f} "
             f"(copying the current frame: {result['dynamics_training']['copy_current_frame_mse']:.4f})",
             f"goal behaviour {cfg['goal_behaviour']} of {cfg['behaviours']}, {cfg['samples']} samples, "
             f"M={cfg['repeats']} ({cfg['mode']}), sigma={cfg['sigma']}, goals from {cfg['goals_from']}",
             "",
             f"{'scale':>6} {'goal rate':>9} {'metric':>8} {'feat dist':>9} {'end dist':>8}  behaviours"]
    for r in result["rows"]:
        lines.append(f"{r['scale']:>6.2f} {r['goal_rate']:>9.2f} {r['metric_mean']:>8.3f} "
                     f"{r['feature_distance_to_goals']:>9.3f} {r['end_distance_to_goal']:>8.3f}  "
                     + " ".join(f"{f:.2f}" for f in r["behaviour_fractions"]))
    base, best = result["rows"][0], max(result["rows"], key=lambda r: r["goal_rate"])
    gpc = result.get("gpc")
    if gpc:
        by = "mean L2 to goal-frame features" if gpc["score"] == "mean_l2" else "the metric"
        lines.append(f"{'GPC':>6} {gpc['goal_rate']:>9.2f} {gpc['metric_mean']:>8.3f} "
                     f"{gpc['feature_distance_to_goals']:>9.3f} {gpc['end_distance_to_goal']:>8.3f}  "
                     + " ".join(f"{f:.2f}" for f in gpc["behaviour_fractions"])
                     + f"   (sample-and-rank baseline: best of {gpc['num_samples']} unguided chunks by {by})")
    lines += ["", f"guidance moved the goal behaviour from {base['goal_rate']:.0%} (scale {base['scale']:g}) "
              f"to {best['goal_rate']:.0%} (scale {best['scale']:g})"]
    return "\n".join(lines)


def save_outputs(result: dict, out_dir: str) -> list[str]:
    """results.json, config.json and a plot of behaviour fractions per guidance scale."""
    os.makedirs(out_dir, exist_ok=True)
    paths = [os.path.join(out_dir, n) for n in ("results.json", "config.json", "behaviours.png")]
    with open(paths[0], "w") as f:
        json.dump(result, f, indent=2)
    with open(paths[1], "w") as f:
        json.dump(result["config"], f, indent=2)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    fracs = np.array([r["behaviour_fractions"] for r in rows])
    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(7, 4))
    bottom = np.zeros(len(rows))
    goal = result["config"]["goal_behaviour"]
    for b in range(fracs.shape[1]):
        label = f"behaviour {b}" + (" (goal)" if b == goal else "")
        ax.bar(x, fracs[:, b], bottom=bottom, label=label, edgecolor="black" if b == goal else None,
               linewidth=1.5 if b == goal else 0)
        bottom += fracs[:, b]
    ax.set_xticks(x, [f"{r['scale']:g}" for r in rows])
    ax.set_xlabel("guidance scale s")
    ax.set_ylabel("fraction of sampled chunks")
    ax.set_title("Which behaviour the steered policy picks")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    fig.tight_layout()
    fig.savefig(paths[2], dpi=120)
    plt.close(fig)
    return paths
