"""Sharded, resumable training of the latent dynamics model on any number of devices and hosts.

One jitted step over a ``("data", "fsdp")`` mesh (``training.mesh``): the global batch is split over
all devices, parameters are replicated or FSDP-sharded, XLA inserts the collectives. Each process
feeds its own rows of the global batch (``jax.make_array_from_process_local_data``); multi-host
runs call ``jax.distributed.initialize`` first (see ``init_distributed``). Batches and PRNG keys
are functions of the step, so orbax checkpoints (async, newest N kept) resume the exact data
stream. Process 0 writes ``metrics.jsonl``, TensorBoard events (``tb/``) and the progress bar.
"""
from __future__ import annotations

import dataclasses
import os
import sys
import time
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax
from tqdm.auto import tqdm

from dynaguide_jax._checks import DTYPE_NAMES, check_dtype_name, check_int, check_positive
from dynaguide_jax.diffusion.schedule import DDIMSchedule
from dynaguide_jax.dynamics.config import DynamicsConfig
from dynaguide_jax.dynamics.fit import dynamics_update
from dynaguide_jax.dynamics.model import flops_per_sample, init_dynamics
from dynaguide_jax.layers import ATTENTION_IMPLEMENTATIONS, check_attention
from dynaguide_jax.training.checkpoints import CheckpointManager, read_run_json, restore_latest
from dynaguide_jax.training.mesh import global_batch, make_mesh, param_sharding, process_rows, replicated
from dynaguide_jax.training.prefetch import Prefetcher

INPUT_BOUND_FRAC = 0.2  # above this share of waiting for batches, the run says it is input-bound


@dataclasses.dataclass(frozen=True)
class DynamicsTrainConfig:
    steps: int = 1000
    global_batch: int = 16
    learning_rate: float = 1e-4  # Adam, as the original
    fsdp: int = 1
    compute_dtype: str = dataclasses.field(default="float32", metadata={"choices": DTYPE_NAMES})
    # the original's --noised action augmentation: opt-in there, and its CALVIN recipe (README) leaves it off
    noised: bool = False
    checkpoint_every: int = 500
    keep_checkpoints: int = 3
    async_checkpoints: bool = True
    log_every: int = 10
    seed: int = 0
    peak_tflops: float = 0.0  # per device; > 0 adds model FLOP utilisation to the metrics
    prefetch: int = 2  # batches read and sent to the devices ahead, on background threads (0: in the loop)
    attention: str = dataclasses.field(default="xla", metadata={
        "choices": ATTENTION_IMPLEMENTATIONS,
        "help": "attention kernel of the training step: pallas = a fused flash kernel that keeps the attention "
                "dropout (NVIDIA GPUs; interpreted on CPUs, slow), cudnn = fused only where --attention-dropout is 0 "
                "(NVIDIA, bf16), xla = explicit (everywhere)"})
    remat: bool = dataclasses.field(default=False, metadata={
        "help": "recompute each layer's activations in the backward: less memory for larger batches, ~1/3 more "
                "FLOPs; same results"})

    def __post_init__(self):  # checked before a run directory is touched
        for name in ("steps", "global_batch", "fsdp", "checkpoint_every", "keep_checkpoints", "log_every"):
            check_int(f"DynamicsTrainConfig.{name}", getattr(self, name))
        check_int("DynamicsTrainConfig.seed", self.seed, minimum=0)
        check_int("DynamicsTrainConfig.prefetch", self.prefetch, minimum=0)
        check_positive("DynamicsTrainConfig.learning_rate", self.learning_rate)
        check_positive("DynamicsTrainConfig.peak_tflops", self.peak_tflops, allow_zero=True)
        check_dtype_name("DynamicsTrainConfig.compute_dtype", self.compute_dtype)
        check_attention(self.attention)


class DynamicsTrainResult(NamedTuple):
    params: dict
    losses: list
    resumed_from: int | None
    last_metrics: dict


def init_distributed(coordinator: str, num_processes: int, process_id: int) -> None:
    """Join a multi-process run; call before anything touches a device. CPU hosts talk through gloo
    (the setting only concerns the CPU backend, so it is safe on GPU/TPU hosts too)."""
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes, process_id=process_id)


def make_train_step(config: DynamicsConfig, optimizer, schedule: DDIMSchedule | None, total_steps: int,
                    state_sharding, mesh):
    def step(state, batch, key):
        progress = state["step"].astype(jnp.float32) / total_steps
        params, opt_state, loss = dynamics_update(config, optimizer, schedule, state["params"], state["opt_state"],
                                                  batch, key, progress)
        return {"params": params, "opt_state": opt_state, "step": state["step"] + 1}, loss

    jitted = jax.jit(step, donate_argnums=0, out_shardings=(state_sharding, replicated(mesh)))

    def run(state, batch, key):
        with jax.set_mesh(mesh):  # traced under the mesh: a Pallas attention kernel splits the batch over it
            return jitted(state, batch, key)

    return run


def train_dynamics(config: DynamicsConfig, batches: Callable[[int, slice], dict], cfg: DynamicsTrainConfig,
                   run_dir: str | os.PathLike, *, mesh=None, schedule: DDIMSchedule = DDIMSchedule(),
                   init_params=None, progress: bool = True, stop_after: int | None = None,
                   data_info: dict | None = None) -> DynamicsTrainResult:
    """Train (or resume) into ``run_dir``. ``batches(step, rows)`` returns this process's ``rows`` of
    global batch ``step`` (numpy dict: patches, proprio, actions, future_patches). ``data_info``
    (JSON-able: where the data came from, the action transform) is kept in ``config.json`` so the
    model can later be evaluated and used on the same inputs."""
    mesh = mesh or make_mesh(cfg.fsdp)
    if cfg.global_batch % mesh.devices.size:
        raise ValueError(f"global_batch {cfg.global_batch} must be divisible by {mesh.devices.size} devices")
    model_cfg = config.replace(dtype=cfg.compute_dtype, attention=cfg.attention, remat=cfg.remat)
    optimizer = optax.adam(cfg.learning_rate)
    base_key = jax.random.key(cfg.seed)
    params = init_params if init_params is not None else init_dynamics(config, jax.random.fold_in(base_key, 10**6))
    p_shard = param_sharding(mesh, params)
    params = jax.device_put(params, p_shard)
    # moments follow their parameter's sharding; scalars (step counts) are replicated on the mesh
    opt_state = jax.tree.map(
        lambda x: x if len(x.sharding.device_set) == mesh.devices.size else jax.device_put(x, replicated(mesh)),
        jax.jit(optimizer.init)(params))
    state = {"params": params, "opt_state": opt_state,
             "step": jax.device_put(jnp.zeros((), jnp.int32), replicated(mesh))}
    state_sharding = jax.tree.map(lambda x: x.sharding, state)
    mgr = CheckpointManager(run_dir, keep=cfg.keep_checkpoints, async_save=cfg.async_checkpoints)
    lead = jax.process_index() == 0
    if lead:  # the run's writes go through mgr: a full disk is one DiskFullError naming the run directory
        mgr.write_json("config.json", {"dynamics": config.to_dict(), "train": dataclasses.asdict(cfg),
                                       "data": data_info or {}, "mesh": dict(mesh.shape),
                                       "processes": jax.process_count()})
    resumed = mgr.latest_step
    if resumed is not None:
        state = mgr.restore(state)
        if lead:
            mgr.truncate_metrics(resumed)
    step_fn = make_train_step(model_cfg, optimizer, schedule if cfg.noised else None, cfg.steps, state_sharding, mesh)
    writer = mgr.attach(_tensorboard(mgr.directory)) if lead else None  # closed by mgr.close()
    rows = process_rows(cfg.global_batch)
    start, end = int(state["step"]), cfg.steps if stop_after is None else min(cfg.steps, stop_after)
    bar = tqdm(range(start, end), initial=start, total=cfg.steps, desc="train dynamics",
               disable=None if (progress and lead) else True)
    flops = 3 * flops_per_sample(config)  # forward + backward (activations and weights)
    # throughput over each logging interval; the run's first step (it compiles) is not counted
    t_mark, since, waited, metrics, warned_input = None, 0, 0.0, {}, False
    loader = Prefetcher(lambda i: global_batch(mesh, batches(i, rows)), range(start, end), cfg.prefetch)
    with loader:
        for i, batch in zip(bar, loader):
            state, loss = step_fn(state, batch, jax.random.fold_in(base_key, i))
            if t_mark is None:
                jax.block_until_ready(loss)
                t_mark, waited = time.perf_counter(), loader.waited_s
            else:
                since += 1
            if (i + 1) % cfg.log_every == 0 or i + 1 == end:
                loss, now = float(loss), time.perf_counter()
                metrics = {"step": i + 1, "loss": loss}
                if since:
                    rate = since * cfg.global_batch / (now - t_mark)
                    metrics.update(samples_per_s=round(rate, 2), model_tflop_s=round(rate * flops / 1e12, 4),
                                   input_wait_frac=round((loader.waited_s - waited) / (now - t_mark), 4))
                    if cfg.peak_tflops > 0:
                        metrics["mfu"] = round(metrics["model_tflop_s"] / (cfg.peak_tflops * mesh.devices.size), 4)
                t_mark, since, waited = now, 0, loader.waited_s
                if lead:
                    if not warned_input and metrics.get("input_wait_frac", 0.0) > INPUT_BOUND_FRAC:
                        warned_input = True
                        tqdm.write(f"train dynamics: the step waited for its batch {metrics['input_wait_frac']:.0%} "
                                   f"of the time (input-bound): raise --prefetch (now {cfg.prefetch}) or keep the "
                                   "feature cache in page cache / on faster storage", file=sys.stderr)
                    mgr.log(metrics)
                    for k, v in metrics.items():
                        if k != "step":
                            writer.add_scalar(f"train/{k}", v, i + 1)
                    bar.set_postfix(loss=f"{loss:.4f}", samples_s=metrics.get("samples_per_s", "-"))
            if (i + 1) % cfg.checkpoint_every == 0 or i + 1 == end:
                mgr.save(i + 1, state)
    mgr.close()
    losses = [(r["step"], r["loss"]) for r in mgr.metrics()] if lead else []
    return DynamicsTrainResult(state["params"], losses, resumed, metrics)


def _tensorboard(directory: str):
    from tensorboardX import SummaryWriter

    return SummaryWriter(os.path.join(directory, "tb"))


def read_run_config(run_dir: str | os.PathLike) -> dict:
    """The ``config.json`` a ``train_dynamics`` run wrote (model, training and data settings)."""
    return read_run_json(run_dir, "dynamics", ("dynamics", "train"))


def load_trained_dynamics(run_dir: str | os.PathLike) -> tuple[DynamicsConfig, dict]:
    """``(config, params)`` of the newest checkpoint of a ``train_dynamics`` run (on one device)."""
    meta = read_run_config(run_dir)
    path = os.path.join(os.fspath(run_dir), "config.json")
    try:
        config = DynamicsConfig.from_dict(meta["dynamics"])
        learning_rate = float(meta["train"]["learning_rate"])
    except (KeyError, ValueError, TypeError) as e:
        raise ValueError(f"{path}: not a dynamics run config ({type(e).__name__}: {e})") from None
    def template():  # shapes only (jax.eval_shape): nothing is initialised or compiled
        params = init_dynamics(config, jax.random.key(0))
        return {"params": params, "opt_state": optax.adam(learning_rate).init(params), "step": jnp.zeros((), jnp.int32)}
    state = restore_latest(run_dir, jax.eval_shape(template), "dynamics")
    return config, jax.tree.map(jax.device_get, state["params"])
