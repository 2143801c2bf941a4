"""Training the diffusion policy in JAX: epsilon-prediction loss over random DDPM timesteps, Adam
at a constant 1e-4 without weight decay (robomimic's settings for the original's policies,
configs/diffusion_policy_image_calvin_ddim.json; AdamW + warm-up + cosine as an option), EMA
weights (diffusers' schedule), optional random crops and bf16 compute, orbax checkpoints that
resume exactly (same batches, same keys, same loss curve)."""
from __future__ import annotations

import dataclasses
import functools
import os
import time
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from dynaguide_jax._checks import DTYPE_NAMES, check_dtype_name, check_int, check_positive
from dynaguide_jax.diffusion.schedule import DDIMSchedule, add_noise
from dynaguide_jax.policy.diffusion_policy import DiffusionPolicy, PolicyNets
from dynaguide_jax.training import CheckpointManager, EMAConfig, ema_update, make_optimizer
from dynaguide_jax.training.checkpoints import read_run_json, restore_latest
from dynaguide_jax.training.optim import LR_SCHEDULES, OPTIMIZERS


@dataclasses.dataclass(frozen=True)
class PolicyTrainConfig:
    steps: int = 1000
    batch_size: int = 16
    learning_rate: float = 1e-4
    # the defaults are robomimic's: Adam at a constant rate
    optimizer: str = dataclasses.field(default="adam", metadata={"choices": OPTIMIZERS})
    lr_schedule: str = dataclasses.field(default="constant", metadata={"choices": LR_SCHEDULES})
    weight_decay: float = 0.0  # robomimic's L2 = 0
    warmup_steps: int = 0  # warmup_cosine only
    ema_decay: float = 0.9999
    ema_warmup: bool = False
    ema_power: float = 0.75
    # "bfloat16": mixed precision (fp32 params and optimizer)
    compute_dtype: str = dataclasses.field(default="float32", metadata={"choices": DTYPE_NAMES})
    checkpoint_every: int = 500
    keep_checkpoints: int = 3
    log_every: int = 10
    seed: int = 0

    def __post_init__(self):  # checked before a run directory is touched
        for name in ("steps", "batch_size", "checkpoint_every", "keep_checkpoints", "log_every"):
            check_int(f"PolicyTrainConfig.{name}", getattr(self, name))
        check_int("PolicyTrainConfig.seed", self.seed, minimum=0)
        check_int("PolicyTrainConfig.warmup_steps", self.warmup_steps, minimum=0)
        check_positive("PolicyTrainConfig.learning_rate", self.learning_rate)
        check_positive("PolicyTrainConfig.weight_decay", self.weight_decay, allow_zero=True)
        check_positive("PolicyTrainConfig.ema_power", self.ema_power)
        if not 0.0 <= self.ema_decay <= 1.0:
            raise ValueError(f"PolicyTrainConfig.ema_decay must be in [0, 1], got {self.ema_decay}")
        check_dtype_name("PolicyTrainConfig.compute_dtype", self.compute_dtype)
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"PolicyTrainConfig.optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"PolicyTrainConfig.lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")

    @property
    def ema(self) -> EMAConfig:
        return EMAConfig(decay=self.ema_decay, warmup=self.ema_warmup, power=self.ema_power)

    def make_optimizer(self):
        """``(optimizer, lr_schedule)`` for this run."""
        return make_optimizer(*_optimizer_settings(self))


def _optimizer_settings(cfg: PolicyTrainConfig) -> tuple:
    return cfg.optimizer, cfg.lr_schedule, cfg.learning_rate, cfg.steps, cfg.warmup_steps, cfg.weight_decay


class TrainResult(NamedTuple):
    params: dict
    ema_params: dict
    losses: list  # [(step, loss)] logged in this run directory (including before a resume)
    resumed_from: int | None


def policy_loss(policy: DiffusionPolicy, schedule: DDIMSchedule, params, batch, key):
    """MSE between the true noise and the prediction at uniformly random training timesteps."""
    k_crop, k_t, k_eps = jax.random.split(key, 3)
    nets = policy.nets
    cond = nets.apply({"params": params}, batch["obs"], batch.get("goal"),
                      k_crop if policy.config.crop else None, method=PolicyNets.encode)
    actions = batch["actions"]
    t = jax.random.randint(k_t, (actions.shape[0],), 0, schedule.num_train_timesteps)
    eps = jax.random.normal(k_eps, actions.shape, jnp.float32)
    pred = nets.apply({"params": params}, add_noise(schedule, actions, eps, t), t, cond)
    return jnp.mean((pred - eps) ** 2)


def make_train_step(policy, schedule, optimizer, ema_cfg: EMAConfig):
    def step(state, batch, key):
        loss, grads = jax.value_and_grad(lambda p: policy_loss(policy, schedule, p, batch, key))(state["params"])
        updates, opt_state = optimizer.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        n = state["step"] + 1
        ema = ema_update(ema_cfg, state["ema"], params, n)
        return {"params": params, "opt_state": opt_state, "ema": ema, "step": n}, loss

    return jax.jit(step, donate_argnums=0)


@functools.lru_cache(maxsize=4)
def _cached_train_step(policy: DiffusionPolicy, schedule: DDIMSchedule, optimizer_settings: tuple, ema_cfg: EMAConfig):
    """One jitted step per (policy, schedule, optimizer settings, EMA): a resumed or repeated run in the
    same process reuses the compiled program instead of tracing and compiling it again."""
    return make_train_step(policy, schedule, make_optimizer(*optimizer_settings)[0], ema_cfg)


def train_policy(policy: DiffusionPolicy, batches: Callable[[int], dict], cfg: PolicyTrainConfig,
                 run_dir: str | os.PathLike, *, schedule: DDIMSchedule = DDIMSchedule(), init_params=None,
                 progress: bool = True, stop_after: int | None = None) -> TrainResult:
    """Train (or resume) into ``run_dir``. ``batches(step)`` must be deterministic in ``step``.

    ``stop_after`` ends the run early after that many total steps, as an interruption would
    (used by tests; a killed process behaves the same way thanks to the checkpoints).
    """
    if cfg.steps < 1 or cfg.batch_size < 1:
        raise ValueError("steps and batch_size must be positive")
    train_policy_obj = DiffusionPolicy(policy.config.replace(dtype=cfg.compute_dtype))
    optimizer, lr_schedule = cfg.make_optimizer()
    base_key = jax.random.key(cfg.seed)
    params = init_params if init_params is not None else policy.init(jax.random.fold_in(base_key, 10**6))
    params = jax.tree.map(jnp.asarray, params)
    # the EMA starts as a copy (diffusers); separate buffers, since the train step donates the state
    state = {"params": params, "opt_state": jax.jit(optimizer.init)(params), "ema": jax.tree.map(jnp.copy, params),
             "step": jnp.zeros((), jnp.int32)}
    mgr = CheckpointManager(run_dir, keep=cfg.keep_checkpoints)  # a full disk: one DiskFullError
    mgr.write_json("config.json", {"policy": policy.config.to_dict(), "train": dataclasses.asdict(cfg),
                                   "schedule": dataclasses.asdict(schedule)})
    resumed = mgr.latest_step
    if resumed is not None:
        # restored arrays come back committed to a device, fresh ones are not: as fresh host-backed
        # arrays they hit the train step's compiled program instead of compiling it a second time
        state = jax.tree.map(lambda x: jnp.asarray(np.asarray(x)), mgr.restore(state))
        mgr.truncate_metrics(resumed)
    start = int(state["step"])
    try:
        step_fn = _cached_train_step(train_policy_obj, schedule, _optimizer_settings(cfg), cfg.ema)
    except TypeError:  # an unhashable hand-built config: a step of its own
        step_fn = make_train_step(train_policy_obj, schedule, optimizer, cfg.ema)
    end = cfg.steps if stop_after is None else min(cfg.steps, stop_after)
    bar = tqdm(range(start, end), initial=start, total=cfg.steps, desc="train policy",
               disable=None if progress else True)
    t0, done = time.perf_counter(), 0
    for i in bar:
        batch = jax.tree.map(jnp.asarray, batches(i))
        state, loss = step_fn(state, batch, jax.random.fold_in(base_key, i))
        done += 1
        if (i + 1) % cfg.log_every == 0 or i + 1 == end:
            loss = float(loss)
            rate = done * cfg.batch_size / (time.perf_counter() - t0)
            mgr.log({"step": i + 1, "loss": loss, "lr": float(lr_schedule(i)), "samples_per_s": round(rate, 2)})
            bar.set_postfix(loss=f"{loss:.4f}", samples_s=f"{rate:.1f}")
        if (i + 1) % cfg.checkpoint_every == 0 or i + 1 == end:
            mgr.save(i + 1, state)
    mgr.close()
    losses = [(r["step"], r["loss"]) for r in mgr.metrics()]
    return TrainResult(state["params"], state["ema"], losses, resumed)


INFERENCE_WEIGHTS = ("robomimic", "ema", "train")


def inference_params(params: dict, ema_params: dict, weights: str = "robomimic") -> dict:
    """The parameters to sample with. ``"robomimic"``: the EMA noise-prediction net with the TRAINED
    observation (and goal) encoders, as robomimic's inference does (robomimic/algo/diffusion_policy.py
    ``_get_action_trajectory``: noise from ``self._shadow_nets``, features from
    ``self.nets["policy"]["obs_encoder"]``); ``"ema"``: EMA everywhere; ``"train"``: no EMA."""
    if weights not in INFERENCE_WEIGHTS:
        raise ValueError(f"weights must be one of {INFERENCE_WEIGHTS}, got {weights!r}")
    if weights != "robomimic":
        return ema_params if weights == "ema" else params
    return {k: ema_params[k] if k == "noise_pred_net" else v for k, v in params.items()}


def load_trained_policy(run_dir: str | os.PathLike, weights: str = "robomimic"):
    """``(DiffusionPolicy, params, schedule)`` from a ``train_policy`` run directory; ``weights`` as
    for ``inference_params`` (default: robomimic's EMA noise net + trained encoders)."""
    if weights not in INFERENCE_WEIGHTS:
        raise ValueError(f"weights must be one of {INFERENCE_WEIGHTS}, got {weights!r}")
    from dynaguide_jax.policy.config import PolicyConfig

    meta = read_run_json(run_dir, "policy", ("policy", "train", "schedule"))
    try:
        policy = DiffusionPolicy(PolicyConfig.from_dict(meta["policy"]))
        # runs written before the optimizer became a setting trained with AdamW + warm-up + cosine
        tcfg = PolicyTrainConfig(**{"optimizer": "adamw", "lr_schedule": "warmup_cosine", **meta["train"]})
        schedule = DDIMSchedule(**meta["schedule"])
    except (ValueError, TypeError, AttributeError) as e:
        raise ValueError(f"{os.path.join(os.fspath(run_dir), 'config.json')}: not a policy run config ({e})") from None
    optimizer, _ = tcfg.make_optimizer()

    def template():  # shapes only (jax.eval_shape): nothing is initialised or compiled
        params = policy.init(jax.random.key(0))
        return {"params": params, "opt_state": optimizer.init(params), "ema": params, "step": jnp.zeros((), jnp.int32)}
    state = restore_latest(run_dir, jax.eval_shape(template), "policy", keep=tcfg.keep_checkpoints)
    return policy, jax.tree.map(np.asarray, inference_params(state["params"], state["ema"], weights)), schedule
